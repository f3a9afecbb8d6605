"""Catalog sync through the real Dagster jobs against the sandbox: the three methods, the deletion guard,
overlap skipping, a mid-sync failure with a clean recovery, and bad feed files."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import dagster as dg
import pytest

from kobi_cpas_tests.dagster_fixtures import requested_tenants, tick_schedule
from kobi_cpas_tests.sync_harness import CATALOG, TENANT, SyncHarness, synced_world_fixtures

__all__ = ["CATALOG", "TENANT", "SyncHarness"]  # where other test modules used to import them from

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]


@pytest.fixture
def harness(kobi_env, pg_instance, tmp_path, monkeypatch):
    def make(**sync):
        return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch, **sync)

    return make


world, synced = synced_world_fixtures(300)  # 300 items replaced once per module


def test_three_methods_end_to_end(synced):
    h = synced(batch_chunk_size=40)  # 300 items replaced
    h.assert_catalog_equals_desired()
    assert h.requests("product_feed.uploads.create") == 1

    # one new item, one content change, K volatile-only changes
    k = 97
    h.write_feed(
        300,
        "UPDATE f SET title = title || ' (2026 edition)' WHERE id = (SELECT min(id) FROM f);"
        f"UPDATE f SET price = '1.00 TRY', sale_price = NULL, sale_price_effective_date = NULL WHERE id IN (SELECT id FROM f ORDER BY id DESC LIMIT {k});"
        "INSERT INTO f SELECT * REPLACE ('NEW-1' AS id, NULL AS item_group_id) FROM f LIMIT 1;"
        # two in-stock items leave the feed: retained out of stock (a volatile-only change), counted as removed
        f"DELETE FROM f WHERE id IN (SELECT id FROM f WHERE availability = 'in stock' AND id NOT IN "
        f"(SELECT id FROM f ORDER BY id DESC LIMIT {k}) ORDER BY id DESC LIMIT 2);",
    )
    h.admin.clear_requests()
    update = h.run("catalog_update_job")
    assert update.success
    # The run's log holds its Meta traffic as one line (the requests by status and the peak usage), not a line
    # per request.
    lines = [e.user_message for e in h.instance.all_logs(update.run_id) if e.dagster_event is None]
    (traffic,) = [line for line in lines if line.startswith("Meta: ")]
    sent = len(h.admin.requests())
    assert traffic.startswith(f"Meta: {sent} requests (200 x {sent}); peak usage "), traffic
    assert not [line for line in lines if " -> 200 " in line or line.startswith(("Meta GET", "Meta POST"))]
    (snap,) = [
        e.materialization.metadata
        for e in update.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("feed_snapshot")
    ]
    counts = {
        k: snap[k].value for k in ("new", "changed", "volatile_only", "removed", "dropped_from_catalog")
    }
    assert counts == {"new": 1, "changed": 1, "volatile_only": k + 2, "removed": 2, "dropped_from_catalog": 0}
    # a third of the rows changed: the whole feed was validated again (see feeds.incremental)
    assert snap["rows_validated"].value == 299 and snap["ingest"].value == "full"
    assert set(snap["seconds_by_stage"].value) == {
        "ingest",
        "feed_tables",
        "replace_view",
        "item_state",
        "commit",
        "publish",
    }
    assert h.requests("product_feed.uploads.create") == 1  # exactly one update upload...
    assert h.run("catalog_batch_job").success
    assert h.requests("catalog.items_batch") == math.ceil((k + 2) / 40)  # ...and ceil(K / chunk) batch calls
    assert h.requests("product_feed.uploads.create") == 1  # unchanged items never sent
    # batches finish ~2 minutes later at Meta; the status job confirms them
    h.admin.advance_clock(130)
    assert h.run("catalog_sync_status_job").success
    h.assert_catalog_equals_desired()
    methods = [(m, s) for m, s, _, _ in h.syncs()]
    assert methods.count(("batch", "finished")) == math.ceil((k + 2) / 40)
    assert ("update", "finished") in methods
    # re-running every sync sends nothing more: idempotent
    h.admin.clear_requests()
    for job in ("catalog_update_job", "catalog_batch_job"):
        assert h.run(job).success
    assert h.requests("catalog.items_batch") == 0 and h.requests("product_feed.uploads.create") == 0


def test_a_feed_edited_in_a_few_rows_is_validated_from_those_rows(synced):
    """The next snapshot of a big feed re-validates only the rows whose content changed; the edit reaches Meta."""
    h = synced()
    h.write_feed(300, "UPDATE f SET title = 'Linen shirt, new cut' WHERE id = (SELECT min(id) FROM f)")
    update = h.run("catalog_update_job")
    assert update.success
    (snap,) = [
        e.materialization.metadata
        for e in update.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("feed_snapshot")
    ]
    assert snap["rows_validated"].value == 1 and snap["changed"].value == 1
    assert snap["ingest"].value == "lines"  # one line per item: compared by lines (feeds.incremental_lines)
    at_meta = h.meta_items()
    assert at_meta[min(at_meta)]["title"] == "Linen shirt, new cut"
    h.assert_catalog_equals_desired()


def test_rich_text_description_and_video_reach_meta(synced):
    """Catalog Integration step 2's commerce fields are validated and sent, not dropped as unknown columns;
    a malformed video is a warning and the item is still sent (Meta reports an unfetchable video on the item)."""
    h = synced()
    video = '[{"url": "https://cdn.example.com/v/1.mp4", "tag": ["360"]}]'
    h.write_feed(
        300,
        "ALTER TABLE f ADD COLUMN rich_text_description VARCHAR; ALTER TABLE f ADD COLUMN video VARCHAR;"
        "UPDATE f SET rich_text_description = '<p>Soft <b>linen</b>, 200 thread count</p>', "
        f"video = '{video}' WHERE id = (SELECT min(id) FROM f);"
        "UPDATE f SET video = 'https://cdn.example.com/v/2.mp4' WHERE id = (SELECT max(id) FROM f);",
    )
    assert h.run("catalog_update_job").success
    at_meta = h.meta_items()
    first, last = min(at_meta), max(at_meta)
    assert at_meta[first]["rich_text_description"] == "<p>Soft <b>linen</b>, 200 thread count</p>"
    assert at_meta[first]["video"] == video
    assert at_meta[last]["video"] == "https://cdn.example.com/v/2.mp4"
    with h.wh.connect() as con:
        warned = con.execute(
            "SELECT retailer_id, field, severity FROM main.feed_item_issues WHERE tenant_id = ? AND code = ?",
            [h.tenant, "invalid_video"],
        ).fetchall()
    assert warned == [(last, "video", "warning")]


def test_feed_items_carry_typed_prices_beside_the_text(synced):
    from decimal import Decimal

    h = synced()

    def rows():
        with h.wh.connect() as con:
            return con.execute(
                "SELECT price, price_amount, currency, sale_price, sale_price_amount, quantity_to_sell_on_facebook, "
                "quantity FROM main.feed_items WHERE tenant_id = ?",
                [h.tenant],
            ).fetchall()

    def check(found):
        assert len(found) == 300
        for price, amount, cur, sale, sale_amount, qty_text, qty in found:
            assert (amount, cur) == (Decimal(price.split()[0]), price.split()[1])
            assert sale_amount == (Decimal(sale.split()[0]) if sale else None)
            assert qty == (int(qty_text) if qty_text else None)
        assert any(r[4] is not None for r in found) and any(r[6] is not None for r in found)

    check(rows())
    # rows stored before the typed columns existed get them at the next snapshot, even of an unchanged feed
    with h.wh.connect() as con:
        con.execute(
            "UPDATE main.feed_items SET price_amount = NULL, currency = NULL, sale_price_amount = NULL, "
            "quantity = NULL WHERE tenant_id = ?",
            [h.tenant],
        )
    assert h.run("catalog_update_job").success
    check(rows())


def test_deletion_guard_blocks_then_override(synced):
    h = synced(retention_days=0, max_delete_share=0.05)  # 300 items replaced
    h.write_feed(300, "DELETE FROM f WHERE id IN (SELECT id FROM f ORDER BY id LIMIT 40)")  # ~13 % gone
    h.admin.clear_requests()
    blocked = h.run("catalog_replace_job")
    assert not blocked.success
    evals = [e for e in blocked.get_asset_check_evaluations() if e.check_name == "replace_deletion_guard"]
    assert evals and not evals[0].passed
    assert "would delete 40 of 300" in evals[0].description
    assert h.requests("product_feed.uploads.create") == 0
    assert len(h.meta_items()) == 300  # nothing deleted
    ok = h.run("catalog_replace_job", tags={"kobi/override_deletion_guard": "true"})
    assert ok.success
    assert len(h.meta_items()) == 260


def test_broken_feed_blocks_replace_and_names_the_file(synced):
    h = synced()  # 300 items replaced
    h.feed.write_text("id\ttitle\n1\tx\n", encoding="utf-8")  # tab-separated in a csv feed, columns missing
    h.admin.clear_requests()
    res = h.run("catalog_replace_job")
    assert not res.success
    ev = next(e for e in res.get_asset_check_evaluations() if e.check_name == "feed_file_readable")
    assert not ev.passed and str(h.feed) in ev.description and TENANT in ev.description
    assert h.requests("product_feed.uploads.create") == 0
    assert len(h.meta_items()) == 300


def test_mid_sync_failure_then_clean_recovery(synced):
    h = synced(batch_chunk_size=25)  # 300 items replaced
    # quantity 777 exists nowhere in the generated feed, so exactly these 100 items change
    h.write_feed(
        300,
        "UPDATE f SET availability = 'in stock', quantity_to_sell_on_facebook = '777' "
        "WHERE id IN (SELECT id FROM f WHERE sale_price IS NULL ORDER BY id LIMIT 100)",
    )
    # the 3rd batch call fails hard (non-retryable), after two chunks went out
    h.admin.script_faults(
        [{"kind": "pass"}, {"kind": "pass"}, {"kind": "bad_request", "message": "simulated outage"}],
        route="catalog.items_batch",
    )
    failed = h.run("catalog_batch_job")
    assert not failed.success
    assert h.requests("catalog.items_batch") == 3
    h.admin.clear_faults()
    h.admin.clear_requests()
    assert h.run("catalog_batch_job").success
    assert h.requests("catalog.items_batch") == 2  # only the 50 items never sent: 2 chunks of 25
    h.admin.advance_clock(130)
    assert h.run("catalog_sync_status_job").success
    h.assert_catalog_equals_desired()
    sent = sum(n for m, s, n, _ in h.syncs() if m == "batch" and s == "finished")
    assert sent == 100  # every volatile change applied exactly once


def test_schedule_skips_tenant_with_a_running_sync(harness):
    from kobi_cpas.defs.catalog_sync.schedules import catalog_batch_schedule

    h = harness()
    tick = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    requests = tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    assert requested_tenants(requests) == [TENANT]
    assert requests[0].tags["kobi/fleet"] == "batch"
    run = dg.DagsterRun(
        job_name="catalog_replace_job",
        run_id=str(uuid.uuid4()),
        tags={"kobi/catalog_shard": TENANT},
        status=dg.DagsterRunStatus.STARTED,
    )
    h.instance.add_run(run)
    skipped = tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    assert isinstance(skipped, dg.SkipReason)
    assert TENANT in skipped.skip_message and "still in progress" in skipped.skip_message
    assert "avoid overlapping" in skipped.skip_message


def test_a_stale_cached_feed_id_is_rediscovered_not_fatal(synced):
    """A feed id Kobi recorded may disappear at Meta (feed deleted in Commerce Manager, sandbox restarted).
    A feed with Kobi's name that the state does not record is never adopted silently: someone else may be
    uploading to it. The sync stops, naming it, and a person adopts it with the run tag."""
    h = synced()  # 300 items replaced
    with h.wh.connect() as con:
        (real,) = con.execute("SELECT feed_id FROM sync_state.feeds WHERE tenant_id = ?", [TENANT]).fetchone()
        con.execute("UPDATE sync_state.feeds SET feed_id = '9999999999999999' WHERE tenant_id = ?", [TENANT])
    h.write_feed(301)
    h.admin.clear_requests()
    blocked = h.run("catalog_replace_job")
    assert not blocked.success
    failure = " ".join(
        str(e.event_specific_data.error.message) for e in blocked.all_events if e.is_step_failure
    )
    assert real in failure and TENANT in failure and CATALOG in failure and "kobi/adopt_feed" in failure
    assert h.requests("product_feed.uploads.create") == 0 and h.requests("catalog.product_feeds.create") == 0
    with h.wh.connect() as con:  # nothing recorded for the tenant while blocked
        assert (
            con.execute("SELECT feed_id FROM sync_state.feeds WHERE tenant_id = ?", [TENANT]).fetchall() == []
        )
    result = h.run("catalog_replace_job", tags={"kobi/adopt_feed": real})
    assert result.success
    # found again by its name in the catalog, not created twice; the record points at it again
    assert h.requests("catalog.product_feeds.create") == 0
    assert h.requests("product_feed.uploads.create") == 1
    with h.wh.connect() as con:
        assert con.execute(
            "SELECT feed_id FROM sync_state.feeds WHERE tenant_id = ?", [TENANT]
        ).fetchall() == [(real,)]
    h.assert_catalog_equals_desired()


def test_schedule_skips_tenant_with_a_request_still_processing_at_meta(harness):
    from kobi_cpas.defs.catalog_sync.schedules import catalog_batch_schedule

    h = harness()
    tick = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    # what an update run leaves when Meta is still processing its upload (published at the run's end)
    with h.wh.connect() as con:
        con.execute(
            "INSERT INTO catalog_syncs (sync_id, tenant_id, catalog_id, method, shard, started_at, status) "
            "VALUES ('u1', ?, ?, 'update', 0, now(), 'processing')",
            [TENANT, CATALOG],
        )
        h.wh.publish(con)
    skipped = tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    assert isinstance(skipped, dg.SkipReason)
    assert f"{TENANT}: 1 update request(s) still processing at Meta" in skipped.skip_message
    with h.wh.connect() as con:  # Meta finished it (the status job records that): the tenant is due again
        con.execute("UPDATE catalog_syncs SET status = 'finished', finished_at = now() WHERE sync_id = 'u1'")
        h.wh.publish(con)
    requests = tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    assert requested_tenants(requests) == [TENANT]
