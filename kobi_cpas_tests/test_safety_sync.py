"""The sync methods cannot damage a catalog and cannot wait forever, through the real Dagster jobs against the
sandbox: two tenants on one catalog never share a feed, Meta's surplus deletions are caught and block the next
replace until a person confirms, a feed losing most of its items flips nothing unconfirmed, a batch Meta refuses
or ends badly (or never resolves) becomes terminal and its items are re-sent, and stale upload files go."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from kobi_cpas.registry.loader import load_registry
from kobi_cpas.sync import methods
from kobi_cpas.sync.guards import OVERRIDE_TAG
from kobi_cpas.sync.methods import SyncBlocked, SyncContext
from kobi_cpas.sync.shrink_guard import OVERRIDE_SHRINK_TAG
from kobi_cpas_tests.sync_harness import CATALOG, TENANT, SyncHarness, synced_world_fixtures

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

OTHER = "anatolia_outlet"  # a second tenant wrongly configured on the same catalog


N = 200  # items of the synced world


world, synced = synced_world_fixtures(N)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for e in result.all_events:
        if e.is_step_failure:
            data = e.event_specific_data
            parts.append(str(data.error.message if data.error else ""))
            if data.user_failure_data is not None:
                parts.append(str(data.user_failure_data.description))
    return " ".join(parts)


def check(result: dg.ExecuteInProcessResult, name: str = "replace_deletion_guard"):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def syncs(h: SyncHarness, method: str) -> list[dict]:
    with h.wh.connect() as con:
        cur = con.execute(
            "SELECT * FROM main.catalog_syncs WHERE tenant_id = ? AND method = ? ORDER BY started_at",
            [h.tenant, method],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def inflight(h: SyncHarness) -> int:
    with h.wh.connect() as con:
        return con.execute(
            "SELECT count(*) FROM sync_state.inflight_items WHERE tenant_id = ?", [h.tenant]
        ).fetchone()[0]


def feed_id_of(h: SyncHarness) -> str:
    with h.wh.connect() as con:
        return con.execute("SELECT feed_id FROM sync_state.feeds WHERE tenant_id = ?", [h.tenant]).fetchone()[
            0
        ]


# -- 1. one feed per tenant; Meta's deletions checked against the plan ------------------------------------------


def test_two_tenants_on_one_catalog_never_delete_each_others_items(synced, monkeypatch):
    a = synced()  # N items replaced
    a_feed = feed_id_of(a)
    before = a.meta_items()
    assert len(before) == N

    # its own registry file: the registry's shared-catalog check is bypassed
    b_dir = a.registry_path.parent.parent / "b"
    b_dir.mkdir()
    b = SyncHarness(a.env, a.instance, b_dir, monkeypatch, tenant_id=OTHER)
    b.write_feed(80, "UPDATE f SET id = 'OUT-' || id, item_group_id = 'OUT-' || item_group_id")
    a.admin.clear_requests()
    for job, tags in (
        ("catalog_replace_job", {}),
        ("catalog_update_job", {}),
        # adopting another tenant's feed is refused even when asked for
        ("catalog_replace_job", {"kobi/adopt_feed": a_feed}),
    ):
        res = b.run(job, tags=tags)
        assert not res.success, job
        text = failure_text(res)
        assert OTHER in text and CATALOG in text and a_feed in text and "Kobi primary feed" in text, text
        assert f"tenant '{TENANT}'" in text
    assert a.requests("product_feed.uploads.create") == 0
    assert a.meta_items() == before  # item by item, every field
    with a.wh.connect() as con:
        assert con.execute(
            "SELECT count(*) FROM sync_state.feeds WHERE tenant_id = ?", [OTHER]
        ).fetchone() == (0,)

    # the first tenant keeps syncing normally
    a.write_feed(N + 1)
    assert a.run("catalog_replace_job").success
    assert len(a.meta_items()) == N + 1 and feed_id_of(a) == a_feed


def _plant_items_in_feed(h: SyncHarness, client, feed_id: str, n: int) -> None:
    """Another party uploads ``n`` items of its own into Kobi's feed (update_only, so nothing is deleted)."""
    rows = list(csv.DictReader(io.StringIO(h.feed.read_text())))[:n]
    for i, row in enumerate(rows):
        row["id"] = f"FOREIGN-{i}"
        row["item_group_id"] = ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    upload = client.post(
        f"{feed_id}/uploads",
        data={"update_only": "true"},
        files={"file": ("other.csv", buf.getvalue().encode(), "text/csv")},
    )["id"]
    for _ in range(10):
        if client.get(upload, params={"fields": "id,end_time"}).get("end_time"):
            break
    assert {f"FOREIGN-{i}" for i in range(n)} <= set(h.meta_items())


def test_surplus_deletions_are_recorded_and_block_the_next_replace(synced, meta_client):
    h = synced()  # N items replaced
    _plant_items_in_feed(h, meta_client, feed_id_of(h), 7)

    # the replace itself goes out (it is Kobi's feed), and Meta reports 7 deletions Kobi never planned
    assert h.run("catalog_replace_job").success
    last = syncs(h, "replace")[-1]
    assert last["status"] == "finished_with_surplus_deletions" and last["items_deleted"] == 7
    assert "7 SURPLUS deletions" in last["message"] and "planned at most 0" in last["message"]
    with h.wh.connect() as con:
        cur = con.execute(
            "SELECT * FROM main.catalog_diagnostics WHERE tenant_id = ? AND source = 'kobi_sync_guard'",
            [TENANT],
        )
        cols = [d[0] for d in cur.description]
        problems = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    assert len(problems) == 1
    p = problems[0]
    assert (p["priority"], p["error_type"], p["level"], p["is_open"]) == (
        "HIGH",
        "SURPLUS_DELETIONS",
        "catalog",
        True,
    )
    assert OVERRIDE_TAG in p["call_to_action"] and p["cta_source"] == "kobi"
    assert last["sync_id"] in p["description"] and p["reported_count"] == 7

    # the next replace is blocked by the deletion guard, which names the surplus; nothing is uploaded
    h.admin.clear_requests()
    blocked = h.run("catalog_replace_job")
    assert not blocked.success
    ev = check(blocked)
    assert not ev.passed and "7 SURPLUS deletions" in ev.description and last["sync_id"] in ev.description
    assert ev.metadata["unconfirmed_surplus_deletions"].value == 7
    assert h.requests("product_feed.uploads.create") == 0

    # a person confirms with the override tag: the replace runs and the problem resolves
    assert h.run("catalog_replace_job", tags={OVERRIDE_TAG: "true"}).success
    with h.wh.connect() as con:
        assert con.execute(
            "SELECT is_open, resolved_at IS NOT NULL FROM main.catalog_diagnostics WHERE source = 'kobi_sync_guard'"
        ).fetchall() == [(False, True)]
    assert syncs(h, "replace")[-1]["status"] == "finished"
    assert h.run("catalog_replace_job").success  # no longer blocked
    h.assert_catalog_equals_desired()


# -- 2. retention flips count like deletions ----------------------------------------------------------------------


def test_a_feed_losing_most_items_flips_nothing_unconfirmed(synced):
    h = synced(max_delete_share=0.05)  # retention keeps removed items 90 days as out of stock
    h.admin.freeze_clock(True)
    assert N == 200  # write_feed(200) and a successful replace
    before = h.meta_items()
    gone = sorted(before)[:120]  # 60 % of the feed disappears
    # those already out of stock with quantity 0 are not flipped by retention
    flips = sum(
        1
        for rid in gone
        if (before[rid].get("availability"), before[rid].get("quantity_to_sell_on_facebook"))
        != ("out of stock", "0")
    )
    assert flips > 0.05 * 200
    h.write_feed(200, "DELETE FROM f WHERE id IN (SELECT id FROM f ORDER BY id LIMIT 120)")
    shrink = {OVERRIDE_SHRINK_TAG: "true"}  # past the snapshot-level hold: the sync guards must stop it
    h.admin.clear_requests()
    for job in ("catalog_batch_job", "catalog_update_job"):
        res = h.run(job, tags=shrink)
        assert not res.success, job
        text = failure_text(res)
        assert f"flip {flips} of 200 live items to out of stock" in text and TENANT in text, text
    res = h.run("catalog_replace_job", tags=shrink)
    assert not res.success
    ev = check(res)
    assert not ev.passed and f"delete 0 of 200 live items and flip {flips} to out of stock" in ev.description
    assert ev.metadata["retention_flips"].value == flips
    h.admin.advance_clock(130)
    assert h.run("catalog_sync_status_job").success
    assert h.requests("catalog.items_batch") == 0 and h.requests("product_feed.uploads.create") == 0
    assert h.meta_items() == before  # no item flipped at Meta

    # confirmed by a person: the batch sends the flips
    assert h.run("catalog_batch_job", tags={**shrink, OVERRIDE_TAG: "true"}).success
    h.admin.advance_clock(130)
    assert h.run("catalog_sync_status_job").success
    after = h.meta_items()
    assert all(after[rid]["availability"] == "out of stock" for rid in gone)
    h.assert_catalog_equals_desired()


# -- 3. a batch Meta refuses, ends badly, or never resolves ---------------------------------------------------------


def _price_change(h: SyncHarness, n: int, qty: str, extra_sql: str = "") -> None:
    h.write_feed(
        N,
        f"UPDATE f SET availability = 'in stock', quantity_to_sell_on_facebook = '{qty}' "
        f"WHERE id IN (SELECT id FROM f WHERE sale_price IS NULL ORDER BY id LIMIT {n});" + extra_sql,
    )


def _resent_and_applied(h: SyncHarness, first: dict) -> None:
    """The next batch sends the released items again and they reach Meta."""
    assert inflight(h) == 0
    h.admin.clear_requests()
    assert h.run("catalog_batch_job").success
    assert h.requests("catalog.items_batch") == 1
    assert syncs(h, "batch")[-1]["items_sent"] == first["items_sent"]
    h.admin.advance_clock(130)
    assert h.run("catalog_sync_status_job").success
    assert syncs(h, "batch")[-1]["status"] == "finished"
    h.assert_catalog_equals_desired()


def test_a_batch_handle_meta_refuses_is_terminal_and_its_items_are_resent(synced):
    h = synced()  # N items replaced
    h.admin.freeze_clock(True)
    _price_change(h, 30, "701")
    assert h.run("catalog_batch_job").success
    (first,) = syncs(h, "batch")
    h.admin.add_fault(
        "bad_request",
        route="catalog.check_batch_request_status",
        rate=1.0,
        message="(#100) Param handle: no batch request with this handle",
    )
    assert h.run("catalog_sync_status_job").success
    (rec,) = syncs(h, "batch")
    assert rec["status"] == "failed" and first["handle"] in rec["message"] and "(#100)" in rec["message"]
    assert inflight(h) == 0
    # the other methods are no longer held by it (a feed upload waits for a batch still processing)
    _price_change(
        h,
        30,
        "701",
        "UPDATE f SET title = title || ' v2' WHERE id = (SELECT min(id) FROM f WHERE sale_price IS NOT NULL)",
    )
    h.admin.clear_requests()
    assert h.run("catalog_update_job").success
    assert h.requests("product_feed.uploads.create") == 1
    h.admin.clear_faults()
    _resent_and_applied(h, first)


@pytest.mark.parametrize("status", ["error", "canceled"])
def test_a_batch_meta_ends_without_finishing_is_terminal_and_resent(synced, status):
    h = synced()  # N items replaced
    h.admin.freeze_clock(True)
    _price_change(h, 40, "702")
    assert h.run("catalog_batch_job").success
    (first,) = syncs(h, "batch")
    h.admin.end_batch(first["handle"], status, applied_share=0.5 if status == "error" else 0.0)
    assert h.run("catalog_sync_status_job").success
    (rec,) = syncs(h, "batch")
    assert rec["status"] == "failed" and f"status {status}" in rec["message"] and inflight(h) == 0
    _price_change(h, 40, "702", "UPDATE f SET title = title || ' v2' WHERE id = (SELECT max(id) FROM f)")
    h.admin.clear_requests()
    assert h.run("catalog_update_job").success  # not held: it would otherwise wait for the batch
    assert h.requests("product_feed.uploads.create") == 1
    _resent_and_applied(h, first)


def _ctx_at(h, tenant, meta_client, tmp_path, offset: timedelta) -> SyncContext:
    """A sync context whose clock reads now + ``offset`` (to age requests without waiting)."""
    t = datetime.now(UTC) + offset
    return SyncContext(
        tenant=tenant,
        client=meta_client,
        warehouse=h.wh,
        workdir=tmp_path / "w",
        poll_interval=0,
        poll_timeout=0,
        now=lambda: t,
    )


def test_a_batch_that_never_resolves_expires_after_its_max_age(synced, meta_client, tmp_path):
    h = synced()  # N items replaced
    h.admin.freeze_clock(True)  # Meta never finishes the batch
    _price_change(h, 25, "703")
    assert h.run("catalog_batch_job").success
    (first,) = syncs(h, "batch")
    tenant = load_registry(h.registry_path).tenants[0]

    def ctx_at(offset: timedelta) -> SyncContext:
        return _ctx_at(h, tenant, meta_client, tmp_path, offset)

    # an hour later it still holds the feeds (they would overlap it), and says until when
    assert methods.resolve_pending(ctx_at(timedelta(hours=1)), wait=False) == []
    with pytest.raises(SyncBlocked, match="at most 2:00:00"):
        methods.run_update(ctx_at(timedelta(hours=1)))
    assert syncs(h, "batch")[0]["status"] == "processing"
    # past the max age (2 h by default) it is given up
    (resolved,) = methods.resolve_pending(ctx_at(timedelta(hours=2, minutes=1)), wait=False)
    assert resolved.status == "expired"
    rec = syncs(h, "batch")[0]
    assert rec["status"] == "expired" and "2:00:00" in rec["message"] and TENANT in rec["message"]
    assert h.run("catalog_update_job").success
    _resent_and_applied(h, first)


# -- 4. upload files of killed runs ----------------------------------------------------------------------------------


def test_stale_upload_files_are_removed_by_the_next_sync(synced):
    h = synced()  # N items replaced
    workdir = Path(h.env.analyst_path).parent / ".kobi_work" / "feeds" / TENANT
    stale = workdir / f"{TENANT}-update-20260101T000000-deadbeef.csv"
    unrelated = workdir / f"{TENANT}-notes.csv"  # not an upload file: kept
    other_tenant = workdir / f"{OTHER}-update-20260101T000000-deadbeef.csv"
    for p in (stale, unrelated, other_tenant):
        p.write_text("id,title\n1,x\n")
    assert h.run("catalog_update_job").success
    assert not stale.exists() and unrelated.exists() and other_tenant.exists()
    assert [p.name for p in workdir.glob(f"{TENANT}-*-*T*-*.csv")] == []


def test_an_upload_session_meta_never_finishes_or_refuses_is_terminal(synced, meta_client, tmp_path):
    h = synced()  # N items replaced
    tenant = load_registry(h.registry_path).tenants[0]

    def ctx_at(offset: timedelta) -> SyncContext:
        return _ctx_at(h, tenant, meta_client, tmp_path, offset)

    h.admin.catalog_config(upload_pending_polls=100000)  # Meta never finishes
    (rec,) = methods.run_replace(ctx_at(timedelta(0)))
    assert rec.status == "processing" and inflight(h) == N
    assert methods.resolve_pending(ctx_at(timedelta(hours=5)), wait=False) == []
    (expired,) = methods.resolve_pending(ctx_at(timedelta(hours=6, minutes=1)), wait=False)
    assert expired.status == "expired" and inflight(h) == 0
    assert "6:00:00" in syncs(h, "replace")[-1]["message"]

    # a session Meta no longer knows (error 100, unknown object) ends at once
    (rec,) = methods.run_replace(ctx_at(timedelta(0)))
    h.admin.add_fault(
        "error",
        route="feed_upload.get",
        rate=1.0,
        code=100,
        subcode=33,
        message="Unsupported get request. Object with ID does not exist",
    )
    (failed,) = methods.resolve_pending(ctx_at(timedelta(0)), wait=False)
    assert failed.status == "failed" and rec.upload_session_id in (failed.message or "") and inflight(h) == 0
    h.admin.clear_faults()
    h.admin.catalog_config(upload_pending_polls=1)
    assert h.run("catalog_replace_job").success  # nothing holds the tenant any more
    h.assert_catalog_equals_desired()
