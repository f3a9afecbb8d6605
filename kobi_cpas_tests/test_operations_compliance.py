"""sync_compliance: each requirement of Meta's quality bar per tenant flips to 'breached' when its method stops,
with one 15-minute tick of slack, and names what is in flight or failed; last successes come from real Dagster
materializations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from kobi_cpas.defs.operations.assets import sync_compliance
from kobi_cpas.defs.operations.common import failed_runs, last_successes
from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME, tenant_partitions
from kobi_cpas.operations.compliance import REQUIREMENTS, FailedRun, LastSuccess, build_compliance
from kobi_cpas.operations.tables import SYNC_COMPLIANCE
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource
from kobi_cpas.sync.tables import CATALOG_SYNCS
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.warehouse_template import seed_work_database

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute(SYNC_COMPLIANCE.ddl("main.sync_compliance"))
    c.execute(CATALOG_SYNCS.ddl("main.catalog_syncs"))
    yield c
    c.close()


def _status(con, tenant: str = "t1") -> dict[str, tuple]:
    return {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT requirement, status, within_requirement, pending FROM main.sync_compliance "
            "WHERE tenant_id = ? ORDER BY requirement",
            [tenant],
        ).fetchall()
    }


def test_a_stopped_method_flips_to_breached_after_its_interval_plus_one_tick(con):
    all_at_t0 = [LastSuccess("t1", r.name, T0) for r in REQUIREMENTS]
    assert build_compliance(con, ["t1", "t2"], all_at_t0, [], T0 + timedelta(minutes=5)) == 10
    assert {s for s, *_ in _status(con).values()} == {"ok"}
    assert {s for s, *_ in _status(con, "t2").values()} == {"never"}
    assert not any(w for _, w, _ in _status(con, "t2").values())

    # The batch stops: 15 min required + 15 min slack is still ok, one second later it is breached.
    build_compliance(con, ["t1"], all_at_t0, [], T0 + timedelta(minutes=30))
    assert _status(con)["volatile_batch"][:2] == ("ok", True)
    build_compliance(con, ["t1"], all_at_t0, [], T0 + timedelta(minutes=30, seconds=1))
    status = _status(con)
    assert status["volatile_batch"][:2] == ("breached", False)
    assert {k: v[0] for k, v in status.items() if k != "volatile_batch"} == {
        "delta_update": "ok",
        "diagnostics": "ok",
        "full_replace": "ok",
        "insights": "ok",
    }
    assert con.execute("SELECT count(*) FROM main.sync_compliance WHERE tenant_id = 't2'").fetchone() == (0,)

    # Update and diagnostics (1 h) breach after 75 min, the replace and insights (24 h) only after 24 h 15 min.
    build_compliance(con, ["t1"], all_at_t0, [], T0 + timedelta(minutes=76))
    assert {k for k, v in _status(con).items() if v[0] == "breached"} == {
        "volatile_batch",
        "delta_update",
        "diagnostics",
    }
    build_compliance(con, ["t1"], all_at_t0, [], T0 + timedelta(hours=24, minutes=16))
    assert {v[0] for v in _status(con).values()} == {"breached"}
    row = con.execute(
        "SELECT age_seconds, due_at, required_every_seconds FROM main.sync_compliance "
        "WHERE requirement = 'full_replace'"
    ).fetchone()
    assert row == (float(24 * 3600 + 16 * 60), T0 + timedelta(hours=24, minutes=15), 24 * 3600)


def test_pending_names_requests_at_meta_and_a_failure_after_the_last_success(con):
    con.execute(
        "INSERT INTO main.catalog_syncs (sync_id, tenant_id, catalog_id, method, shard, started_at, status) "
        "VALUES ('s1', 't1', 'c', 'batch', 0, ?, 'processing'), ('s2', 't1', 'c', 'batch', 0, ?, 'finished'), "
        "('s3', 't2', 'c', 'batch', 0, ?, 'submitted')",
        [T0 + timedelta(minutes=20), T0, T0],
    )
    successes = [LastSuccess("t1", r.name, T0) for r in REQUIREMENTS]
    failures = [
        FailedRun("t1", "volatile_batch", "run-old", T0 - timedelta(minutes=5)),  # before the success
        FailedRun("t1", "volatile_batch", "run-new", T0 + timedelta(minutes=35)),
        FailedRun("t1", "delta_update", "run-before", T0 - timedelta(hours=1)),
    ]
    build_compliance(con, ["t1"], successes, failures, T0 + timedelta(minutes=40))
    status = _status(con)
    assert status["volatile_batch"] == (
        "breached",
        False,
        "1 request(s) still processing at Meta since 2026-12-03 12:20 UTC; "
        "last run run-new failed at 2026-12-03 12:35 UTC",
    )
    assert status["delta_update"] == ("ok", True, None)


def test_last_success_is_read_from_real_materializations(tmp_path):
    """The asset reads the tenant's own partition only; the materializations it reads, fed to the pure
    function at a later time, flip the stopped method to breached; a failed run after it is named."""
    tenants = load_registry(DEFAULT_REGISTRY).registry.tenant_ids
    fresh, other = tenants[0], tenants[1]
    wh = WarehouseResource(duckdb_path=str(seed_work_database(tmp_path / "k.duckdb")))
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(TENANT_PARTITIONS_NAME, [fresh, other])
        for r in REQUIREMENTS:
            partition = (
                f"{datetime.now(UTC).date()}|{fresh}" if r.asset_key == "shared_item_metrics" else fresh
            )
            instance.report_runless_asset_event(dg.AssetMaterialization(r.asset_key, partition=partition))
        # A success of another tenant's partition counts for nobody else.
        instance.report_runless_asset_event(dg.AssetMaterialization("price_stock_batch", partition=other))

        @dg.asset(name="price_stock_batch", partitions_def=tenant_partitions)
        def failing_batch() -> None:
            raise RuntimeError("Meta unavailable")

        # A failed run of the batch job, as its schedule launches it.
        job = dg.define_asset_job("catalog_batch_job", selection=[failing_batch.key])
        failed = (
            dg.Definitions(assets=[failing_batch], jobs=[job])
            .resolve_job_def("catalog_batch_job")
            .execute_in_process(instance=instance, partition_key=fresh, raise_on_error=False)
        )
        assert not failed.success

        result = dg.materialize(
            [sync_compliance],
            instance=instance,
            resources={"registry": TenantRegistryResource(path=str(DEFAULT_REGISTRY)), "warehouse": wh},
        )
        assert result.success
        rows = Warehouse(wh.duckdb_path, schema=SCHEMA)
        published = {
            (t, req): (s, p)
            for t, req, s, p in duckdb.connect(str(rows.analyst_path), read_only=True)
            .execute("SELECT tenant_id, requirement, status, pending FROM sync_compliance")
            .fetchall()
        }
        assert len(published) == 5 * len(tenants)
        assert {published[(fresh, r.name)][0] for r in REQUIREMENTS} == {"ok"}
        assert f"last run {failed.run_id} failed" in published[(fresh, "volatile_batch")][1]
        assert published[(other, "volatile_batch")][0] == "ok"
        assert {published[(other, r.name)][0] for r in REQUIREMENTS if r.name != "volatile_batch"} == {
            "never"
        }

        later = datetime.now(UTC) + timedelta(minutes=31)
        successes = last_successes(instance, [fresh], later)
        assert {s.requirement for s in successes} == {r.name for r in REQUIREMENTS}
        c = duckdb.connect()
        c.execute(SYNC_COMPLIANCE.ddl("main.sync_compliance"))
        c.execute(CATALOG_SYNCS.ddl("main.catalog_syncs"))
        build_compliance(c, [fresh], successes, failed_runs(instance, [fresh], later), later)
        assert _status(c, fresh)["volatile_batch"][0] == "breached"
        assert {v[0] for k, v in _status(c, fresh).items() if k != "volatile_batch"} == {"ok"}
