"""The after-sync diagnostics never hold the DuckDB work connection across a Meta call: through the real sync
jobs (the upload steps' ``run_sync`` and the status job's ``catalog_syncs``), every HTTP request made on behalf
of ``kobi_cpas.diagnostics`` is sent while no connection to the work database is attached."""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from kobi_cpas.warehouse import host
from kobi_cpas_tests.sync_harness import SyncHarness


def _watch_meta_calls(monkeypatch, work_path: Path) -> list[tuple[str, int]]:
    """Record (url, connections attached to the work database) for each request sent from diagnostics code."""
    seen: list[tuple[str, int]] = []
    real_send = requests.Session.send
    path = str(work_path.resolve())

    def send(self, request, **kwargs):
        frame = sys._getframe(1)
        while frame is not None:
            if "kobi_cpas/diagnostics/" in frame.f_code.co_filename.replace("\\", "/"):
                seen.append((request.url, host._attached.get(path, ("", 0))[1]))
                break
            frame = frame.f_back
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    return seen


def test_after_sync_meta_calls_happen_with_the_work_database_closed(
    kobi_env, pg_instance, tmp_path, monkeypatch
):
    h = SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch)
    # Meta warns about items without a category: the upload has errors to read and merge.
    h.write_feed(
        40, "UPDATE f SET google_product_category = NULL WHERE id IN (SELECT id FROM f ORDER BY id LIMIT 3)"
    )
    seen = _watch_meta_calls(monkeypatch, h.wh.work_path)
    assert h.run("catalog_replace_job").success
    h.write_feed(40, "UPDATE f SET price = '7.00 TRY' WHERE id IN (SELECT id FROM f ORDER BY id LIMIT 4)")
    assert h.run("catalog_batch_job").success
    h.admin.advance_clock(130)  # the batch finishes at Meta; the status job confirms it and reads its errors
    assert h.run("catalog_sync_status_job").success

    urls = [u for u, _ in seen]
    assert any("/errors" in u for u in urls), urls  # the replace upload's errors, every priority
    assert any("check_batch_request_status" in u for u in urls), urls  # the batch, read by the status job
    held = [(u, n) for u, n in seen if n]
    assert held == [], "Meta called while the work database was open"
    with h.wh.connect() as con:
        warned = con.execute(
            "SELECT count(*) FROM main.catalog_diagnostics WHERE source = 'feed_upload' AND is_open"
        ).fetchone()
    assert warned == (3,)
