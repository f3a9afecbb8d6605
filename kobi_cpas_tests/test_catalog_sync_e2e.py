"""Catalog sync through the real Dagster jobs against the sandbox: the three methods, the deletion guard,
overlap skipping, a mid-sync failure with a clean recovery, and bad feed files."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from kobi_cpas.feeds.generator import generate_feed
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.dagster_fixtures import tick_schedule

TENANT = "anatolia_home"
CATALOG = "2000000000000001"


class SyncHarness:
    def __init__(
        self, kobi_env, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch, tenant_id=TENANT, **sync
    ):
        self.env = kobi_env
        self.tenant = tenant_id
        self.admin = kobi_env.sandbox.admin
        self.instance = instance
        self.feed = tmp_path / "feed.csv"
        demo = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
        tenant = demo["tenants"][0]
        tenant["tenant_id"] = tenant_id
        tenant["feed"] = {"source": str(self.feed), "format": "csv"}
        tenant["sync"] = {**tenant.get("sync", {}), **sync}
        reg = tmp_path / "tenants.yaml"
        reg.write_text(yaml.safe_dump({"tenants": [tenant]}))
        monkeypatch.setenv("KOBI_CPAS_TENANTS", str(reg))
        self.defs = kobi_env.defs()
        instance.add_dynamic_partitions("tenant", [tenant_id])
        self.wh = Warehouse(kobi_env.analyst_path, schema=SCHEMA)
        self.admin.catalog_config(problem_rate_scale=0)

    def write_feed(self, n: int = 300, sql_edit: str | None = None) -> None:
        generate_feed(self.feed, n, seed=7)
        if sql_edit:
            con = duckdb.connect()
            con.execute(f"CREATE TABLE f AS SELECT * FROM read_csv('{self.feed}', all_varchar=true)")
            con.execute(sql_edit)
            con.execute(f"COPY f TO '{self.feed}' (HEADER, DELIMITER ',')")
            con.close()

    def run(self, job: str, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, partition_key=self.tenant, tags=tags or {}, raise_on_error=False
        )

    def meta_items(self) -> dict[str, dict]:
        return self.admin.catalog_items(CATALOG)

    def desired(self) -> dict[str, dict]:
        with self.wh.connect() as con:
            cur = con.execute("SELECT * FROM sync_state.desired_items WHERE tenant_id = ?", [self.tenant])
            cols = [d[0] for d in cur.description]
            return {r[cols.index("id")]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}

    def syncs(self) -> list[tuple]:
        with self.wh.connect() as con:
            return con.execute(
                "SELECT method, status, items_sent, errors_count FROM catalog_syncs ORDER BY started_at"
            ).fetchall()

    def assert_catalog_equals_desired(self) -> None:
        meta, desired = self.meta_items(), self.desired()
        assert set(meta) == set(desired)
        for rid, d in desired.items():
            for f in (
                "title",
                "price",
                "sale_price",
                "availability",
                "quantity_to_sell_on_facebook",
                "brand",
            ):
                assert (meta[rid].get(f) or None) == d[f], (rid, f, meta[rid].get(f), d[f])

    def requests(self, route: str) -> int:
        return self.admin.count_requests(route=route)


@pytest.fixture
def harness(kobi_env, pg_instance, tmp_path, monkeypatch):
    def make(**sync):
        return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch, **sync)

    return make


def test_three_methods_end_to_end(harness):
    h = harness(batch_chunk_size=40)
    h.write_feed(300)
    assert h.run("catalog_replace_job").success
    h.assert_catalog_equals_desired()
    assert h.requests("product_feed.uploads.create") == 1

    # one new item, one content change, K volatile-only changes
    k = 97
    h.write_feed(
        300,
        "UPDATE f SET title = title || ' (2026 edition)' WHERE id = (SELECT min(id) FROM f);"
        f"UPDATE f SET price = '1.00 TRY', sale_price = NULL, sale_price_effective_date = NULL WHERE id IN (SELECT id FROM f ORDER BY id DESC LIMIT {k});"
        "INSERT INTO f SELECT * REPLACE ('NEW-1' AS id, NULL AS item_group_id) FROM f LIMIT 1;",
    )
    h.admin.clear_requests()
    assert h.run("catalog_update_job").success
    assert h.requests("product_feed.uploads.create") == 1  # exactly one update upload...
    assert h.run("catalog_batch_job").success
    assert h.requests("catalog.items_batch") == math.ceil(k / 40)  # ...and ceil(K / chunk) batch calls
    assert h.requests("product_feed.uploads.create") == 1  # unchanged items never sent
    # batches finish ~2 minutes later at Meta; the status job confirms them
    h.admin.advance_clock(130)
    assert h.run("catalog_sync_status_job").success
    h.assert_catalog_equals_desired()
    methods = [(m, s) for m, s, _, _ in h.syncs()]
    assert methods.count(("batch", "finished")) == math.ceil(k / 40)
    assert ("update", "finished") in methods
    # re-running every sync sends nothing more: idempotent
    h.admin.clear_requests()
    for job in ("catalog_update_job", "catalog_batch_job"):
        assert h.run(job).success
    assert h.requests("catalog.items_batch") == 0 and h.requests("product_feed.uploads.create") == 0


def test_deletion_guard_blocks_then_override(harness):
    h = harness(retention_days=0, max_delete_share=0.05)
    h.write_feed(300)
    assert h.run("catalog_replace_job").success
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


def test_broken_feed_blocks_replace_and_names_the_file(harness):
    h = harness()
    h.write_feed(100)
    assert h.run("catalog_replace_job").success
    h.feed.write_text("id\ttitle\n1\tx\n", encoding="utf-8")  # tab-separated in a csv feed, columns missing
    h.admin.clear_requests()
    res = h.run("catalog_replace_job")
    assert not res.success
    ev = next(e for e in res.get_asset_check_evaluations() if e.check_name == "feed_file_readable")
    assert not ev.passed and str(h.feed) in ev.description and TENANT in ev.description
    assert h.requests("product_feed.uploads.create") == 0
    assert len(h.meta_items()) == 100


def test_mid_sync_failure_then_clean_recovery(harness):
    h = harness(batch_chunk_size=25)
    h.write_feed(200)
    assert h.run("catalog_replace_job").success
    # quantity 777 exists nowhere in the generated feed, so exactly these 100 items change
    h.write_feed(
        200,
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
    assert [r.partition_key for r in requests] == [TENANT]
    assert requests[0].tags["kobi/catalog_shard"] == TENANT
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


def test_a_stale_cached_feed_id_is_rediscovered_not_fatal(harness):
    """A feed id Kobi recorded may disappear at Meta (feed deleted in Commerce Manager, sandbox restarted).
    A feed with Kobi's name that the state does not record is never adopted silently: someone else may be
    uploading to it. The sync stops, naming it, and a person adopts it with the run tag."""
    h = harness()
    h.write_feed(120)
    assert h.run("catalog_replace_job").success
    with h.wh.connect() as con:
        (real,) = con.execute("SELECT feed_id FROM sync_state.feeds WHERE tenant_id = ?", [TENANT]).fetchone()
        con.execute("UPDATE sync_state.feeds SET feed_id = '9999999999999999' WHERE tenant_id = ?", [TENANT])
    h.write_feed(121)
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
