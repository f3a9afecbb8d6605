"""The after-sync diagnostics skip the stage / merge when it cannot change a problem: every table then ends
exactly as the full stage + merge + summary + health would leave it (same ``now``), and the full path still
runs whenever a problem could appear, move or resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from kobi_cpas.diagnostics import after_sync
from kobi_cpas.diagnostics.collect import FetchedSyncErrors, SyncRef, sync_ref
from kobi_cpas.diagnostics.lifecycle import merge_problems
from kobi_cpas.diagnostics.summary import build_health, build_summary
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.test_diagnostics_support import TENANT, add_sync
from kobi_cpas_tests.test_sandbox_catalog_feeds import CATALOG
from kobi_cpas_tests.warehouse_template import seed_work_database

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GROUP_MISMATCH = {
    "_n": 0,
    "id": "err-1",
    "summary": "Group Mismatch for Property: shipping.",
    "description": "Items in one group disagree on shipping.",
    "severity": "fatal",
    "error_priority": "HIGH",
    "total_count": 1,
    "samples": {"data": [{"row_number": 3, "retailer_id": "sku-3"}]},
}


def _feed_validation_problem(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """An open kobi_feed_validation problem with its summary and health rows, as the hourly poll leaves them."""
    con.execute(
        """INSERT INTO diag_state.staged_problems (tenant_id, catalog_id, retailer_id, level, source, error_type,
             field, variant, priority, severity, title, description, message, reported_at)
           VALUES (?, ?, 'sku-9', 'item', 'kobi_feed_validation', 'INVALID_PRICE', 'price', '', 'HIGH', 'error',
                   'Invalid price', 'The price is not a number.', 'price: abc', ?)""",
        [TENANT, CATALOG, now],
    )
    con.execute(
        "INSERT INTO diag_state.staged_sources VALUES (?, ?, 'kobi_feed_validation', NULL, false, ?)",
        [TENANT, CATALOG, now],
    )
    merge_problems(con, TENANT, CATALOG, now)
    build_summary(con, TENANT, CATALOG, now)
    build_health(con, TENANT, CATALOG, now)


def _scenario(con: duckdb.DuckDBPyConnection, name: str) -> list[FetchedSyncErrors]:
    """Write the scenario's state; return what Meta reported for the sync(s) just finished."""
    if name in ("open_feed_problem", "earlier_upload_error"):
        add_sync(con, "r-1", "replace", T0 - timedelta(hours=2), upload_session_id="s-1", errors=1)
        after_sync.apply_sync_errors(
            con,
            TENANT,
            CATALOG,
            FetchedSyncErrors(sync_ref(con, "r-1"), "finished", upload_errors=[GROUP_MISMATCH]),
            now=T0 - timedelta(hours=2),
        )
    if name == "earlier_upload_error":
        # The problem was resolved since, but the stored error is still in the lookback window.
        con.execute(
            "UPDATE main.catalog_diagnostics SET resolved_at = ?, is_open = false", [T0 - timedelta(hours=1)]
        )
    if name in ("feed_validation_open", "open_feed_problem"):
        _feed_validation_problem(con, T0 - timedelta(hours=1))
    if name == "left_over_stage":
        con.execute(
            "INSERT INTO diag_state.staged_sources VALUES (?, ?, 'meta_item_check', NULL, false, ?)",
            [TENANT, CATALOG, T0 - timedelta(hours=1)],
        )
    con.execute(
        "INSERT INTO main.feed_items (tenant_id, snapshot_id, retailer_id) VALUES (?, 's', 'sku-1'), (?, 's', 'sku-2')",
        [TENANT, TENANT],
    )
    add_sync(con, "r-2", "replace", T0 - timedelta(minutes=5), upload_session_id="s-2")
    add_sync(con, "b-1", "batch", T0 - timedelta(minutes=4), handle="h-1")
    return [
        FetchedSyncErrors(sync_ref(con, "r-2"), "finished"),
        FetchedSyncErrors(sync_ref(con, "b-1"), "finished"),
    ]


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    names = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name IN ('main', 'diag_state') ORDER BY ALL"
    ).fetchall()
    assert ("main", "catalog_diagnostics") in names and ("diag_state", "poll_log") in names
    return {f"{s}.{t}": con.execute(f"SELECT * FROM {s}.{t} ORDER BY ALL").fetchall() for s, t in names}


def _run(tmp: Path, name: str, full: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list, int]:
    """The tables after applying the scenario's syncs (``full``: the quiet path switched off), the reports,
    and how many times the full merge ran for them."""
    wh = Warehouse(seed_work_database(tmp / name / ("full" if full else "quiet") / "k.duckdb"), schema=SCHEMA)
    merges = []
    real_merge = after_sync.merge_problems
    with monkeypatch.context() as m:
        if full:
            m.setattr(after_sync, "_quiet_merge", lambda *a, **k: None)
        m.setattr(after_sync, "merge_problems", lambda *a, **k: merges.append(1) or real_merge(*a, **k))
        with wh.connect() as con:
            fetched = _scenario(con, name)
            merges.clear()
            reports = [
                after_sync.apply_sync_errors(con, TENANT, CATALOG, f, now=T0 + timedelta(seconds=i))
                for i, f in enumerate(fetched)
            ]
            return _tables(con), reports, len(merges)


@pytest.mark.parametrize(
    "name", ["fresh", "feed_validation_open", "left_over_stage", "open_feed_problem", "earlier_upload_error"]
)
def test_quiet_path_leaves_every_table_as_the_full_merge(tmp_path, monkeypatch, name):
    full_tables, full_reports, full_merges = _run(tmp_path, name, True, monkeypatch)
    quiet_tables, quiet_reports, quiet_merges = _run(tmp_path, name, False, monkeypatch)
    assert full_merges == 2
    # A left-over stage is merged by the first sync, after which nothing can change; a stored upload error of
    # the lookback window may become current again for either sync.
    assert quiet_merges == {"left_over_stage": 1, "open_feed_problem": 2, "earlier_upload_error": 2}.get(
        name, 0
    )
    for table, rows in full_tables.items():
        assert quiet_tables[table] == rows, table
    assert [r.merge.as_dict() for r in quiet_reports] == [r.merge.as_dict() for r in full_reports]
    assert [r.as_metadata() for r in quiet_reports] == [r.as_metadata() for r in full_reports]
    polls = [r for r in quiet_tables["diag_state.poll_log"] if r[3] >= T0 and r[2] in after_sync.SYNC_SOURCES]
    assert sorted((r[2], r[4]) for r in polls) == sorted([("batch_request", "ok"), ("feed_upload", "ok")] * 2)
    health = quiet_tables["main.catalog_health"]
    assert len(health) == 1 and health[0][-1] == T0 + timedelta(seconds=1)  # observed by the last sync
    if name in ("feed_validation_open", "open_feed_problem"):
        assert {r[-1] for r in quiet_tables["main.catalog_diagnostics_summary"]} == {
            T0 + timedelta(seconds=1)
        }


def test_a_clean_replace_resolves_the_open_upload_problem_of_its_shard(tmp_path, monkeypatch):
    tables, reports, merges = _run(tmp_path, "open_feed_problem", False, monkeypatch)
    assert merges == 2 and reports[0].merge.resolved == 1
    (problem,) = [r for r in tables["main.catalog_diagnostics"] if "GROUP_MISMATCH" in r]
    assert T0 in problem and False in problem  # resolved_at = the clean sync's now, is_open false


def test_fetched_errors_must_be_those_of_the_stored_sync(tmp_path):
    wh = Warehouse(seed_work_database(tmp_path / "k.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        add_sync(con, "r-1", "replace", T0, upload_session_id="s-1")
        stale = SyncRef("r-1", TENANT, CATALOG, "batch", 0, T0, "finished", None, "h-9")
        with pytest.raises(ValueError, match="not the request"):
            after_sync.apply_sync_errors(con, TENANT, CATALOG, FetchedSyncErrors(stale, "finished"), now=T0)
        with pytest.raises(ValueError, match="belongs to tenant"):
            after_sync.apply_sync_errors(
                con, "other", CATALOG, FetchedSyncErrors(sync_ref(con, "r-1"), "finished"), now=T0
            )
        assert con.execute("SELECT count(*) FROM diag_state.sync_errors_fetched").fetchone() == (0,)
