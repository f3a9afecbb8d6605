"""Fleet runs of the batch cadence: one run syncs several due tenants through the same steps as their own runs,
records each tenant's materializations and check results on its partition, isolates a tenant's failure, never
syncs a catalog another process is syncing, and the batch schedule launches them per group of due tenants."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
import pytest
import yaml

from kobi_cpas.defs.catalog_sync.fleet import FLEET_OP, FLEET_TAG, fleet_tenants
from kobi_cpas.defs.operations.common import failed_runs, last_successes
from kobi_cpas.feeds.generator import generate_feed
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.resources import CatalogSyncResource
from kobi_cpas.sync.shard_lock import ShardBusy, ShardHold
from kobi_cpas_tests.dagster_fixtures import KobiEnv, tick_schedule
from kobi_cpas_tests.pg_fixtures import REPO_ROOT

if TYPE_CHECKING:
    from kobi_cpas_tests.world_snapshot import WorldSnapshot

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

A, B, C = "anatolia_home", "bosphorus_outdoor", "cappadocia_ceramics"
CATALOGS = {A: "2000000000000001", B: "2000000000000002", C: "2000000000000003"}
N = 40


class Fleet:
    """The three demo tenants, each with a generated CSV feed in ``tmp``, replaced once into its catalog.

    ``Fleet.setup`` builds that world (once per module, see ``world_snapshot``); a ``Fleet`` on a restored world
    finds its registry and feeds where the setup left them."""

    def __init__(
        self,
        kobi_env: KobiEnv,
        instance: dg.DagsterInstance,
        tmp: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.env, self.instance, self.tmp = kobi_env, instance, tmp
        self.registry = tmp / "tenants.yaml"
        monkeypatch.setenv("KOBI_CPAS_TENANTS", str(self.registry))
        self.admin = kobi_env.sandbox.admin
        self.defs = kobi_env.defs()  # on a restored world: the ones its setup built

    @classmethod
    def setup(cls, kobi_env: KobiEnv, instance: dg.DagsterInstance) -> None:
        """The world: the registry and feeds in ``<live>/fleet``, each tenant replaced once, 10 minutes on."""
        tmp = Path(kobi_env.analyst_path).parent.parent / "fleet"
        tmp.mkdir()
        doc = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
        for t in doc["tenants"]:
            t["feed"] = {"source": str(tmp / f"{t['tenant_id']}.csv"), "format": "csv"}
        (tmp / "tenants.yaml").write_text(yaml.safe_dump(doc))
        with pytest.MonkeyPatch.context() as mp:
            fleet = cls(kobi_env, instance, tmp, mp)
            fleet.admin.catalog_config(problem_rate_scale=0)
            instance.add_dynamic_partitions("tenant", list(CATALOGS))
            for tenant in CATALOGS:
                generate_feed(fleet.feed(tenant), N, seed=7)
                assert fleet.run_job("catalog_replace_job", tenant).success, tenant
            fleet.admin.advance_clock(600)

    def feed(self, tenant: str) -> Path:
        return self.tmp / f"{tenant}.csv"

    def set_prices(self, tenant: str, price: str, n: int = 5) -> list[str]:
        """Change the price of ``n`` of the feed's items that Meta has; their ids."""
        ids = sorted(self.admin.catalog_items(CATALOGS[tenant]))[:n]
        con = duckdb.connect()
        path = self.feed(tenant)
        con.execute(f"CREATE TABLE f AS SELECT * FROM read_csv('{path}', all_varchar=true)")
        con.execute(f"UPDATE f SET price = '{price}' WHERE id IN ({', '.join(repr(i) for i in ids)})")
        con.execute(f"COPY f TO '{path}' (HEADER, DELIMITER ',')")
        con.close()
        return ids

    def run_job(self, job: str, tenant: str) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, partition_key=tenant, raise_on_error=False
        )

    def run_fleet(self, tenants: list[str], method: str = "batch") -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("catalog_fleet_job").execute_in_process(
            instance=self.instance,
            run_config={"ops": {FLEET_OP: {"config": {"tenants": tenants, "method": method}}}},
            raise_on_error=False,
        )

    def prices_at_meta(self, tenant: str, ids: list[str]) -> set[str]:
        items = self.admin.catalog_items(CATALOGS[tenant])
        return {items[i]["price"] for i in ids}

    def batch_calls(self, tenant: str) -> int:
        return len(
            [r for r in self.admin.requests(route="catalog.items_batch") if CATALOGS[tenant] in r["path"]]
        )


@pytest.fixture(scope="module")
def fleet_world(build_world_snapshot) -> WorldSnapshot:
    return build_world_snapshot("fleet", Fleet.setup)


@pytest.fixture
def fleet(fleet_world, restore_world, monkeypatch) -> Fleet:
    world = restore_world(fleet_world)
    return Fleet(world.env, world.instance, fleet_world.live / "fleet", monkeypatch)


def _materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    found = [e.materialization for e in result.all_events if e.is_step_materialization]
    return {m.partition: dict(m.metadata) for m in found if m.asset_key == dg.AssetKey(asset)}


def _checks(result: dg.ExecuteInProcessResult, name: str) -> dict[str, bool]:
    return {e.partition: e.passed for e in result.get_asset_check_evaluations() if e.check_name == name}


def test_one_run_syncs_each_tenant_on_its_partition_and_isolates_a_failed_one(fleet):
    ids = {t: fleet.set_prices(t, f"99{n}{n}.00 TRY") for n, t in enumerate((A, B), start=1)}
    fleet.feed(C).write_text(
        "this is not a feed\x00\x01"
    )  # unreadable: its snapshot fails, its batch never runs
    fleet.admin.clear_requests()

    result = fleet.run_fleet([A, B, C])

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert (
        failure is not None and f"{C}:" in failure.description and "feed_file_readable" in failure.description
    )
    assert A not in failure.description and B not in failure.description
    # the compliance view holds only the failed tenant's volatile batch up by this run
    now = datetime.now(UTC)
    failures = {f.tenant_id: f for f in failed_runs(fleet.instance, list(CATALOGS), now)}
    assert {(f.requirement, f.run_id) for f in failures.values()} == {("volatile_batch", result.run_id)}
    successes = last_successes(fleet.instance, list(CATALOGS), now)
    success = {s.tenant_id: s.at for s in successes if s.requirement == "volatile_batch"}
    held_up = {
        t for t, f in failures.items() if f.failed_at > success.get(t, datetime.min.replace(tzinfo=UTC))
    }
    assert held_up == {C}
    # each tenant's own materializations and checks, on its partition
    assert set(_materialized(result, "feed_snapshot")) == {A, B, C}
    batches = _materialized(result, "price_stock_batch")
    assert set(batches) == {A, B}
    assert {t: batches[t]["items_sent"].value for t in (A, B)} == {A: 5, B: 5}
    assert set(_materialized(result, "catalog_syncs")) == {A, B}
    assert _checks(result, "feed_file_readable") == {A: True, B: True, C: False}
    assert fleet.batch_calls(A) == 1 and fleet.batch_calls(B) == 1 and fleet.batch_calls(C) == 0
    latest = fleet.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("price_stock_batch"), asset_partitions=[B]), limit=1
    )
    assert latest.records[0].run_id == result.run_id

    # Meta applies the handles; a status fleet run confirms them (nothing sent), the next batch sends nothing twice
    fleet.admin.advance_clock(130)
    status = fleet.run_fleet([A, B], method="status")
    assert status.success
    assert set(_materialized(status, "catalog_syncs")) == {A, B} and not _materialized(
        status, "price_stock_batch"
    )
    assert fleet.prices_at_meta(A, ids[A]) == {"9911.00 TRY"} and fleet.prices_at_meta(B, ids[B]) == {
        "9922.00 TRY"
    }
    with fleet.env.resources()["warehouse"].connection() as con:
        pending = con.execute(
            "SELECT count(*) FROM main.catalog_syncs WHERE status IN ('submitted', 'processing')"
        ).fetchone()
    assert pending == (0,)
    again = fleet.run_fleet([A, B])
    assert again.success
    assert fleet.batch_calls(A) == 1 and fleet.batch_calls(B) == 1
    assert _materialized(again, "price_stock_batch")[A]["items_sent"].value == 0
    # every run of this process (the tenants' own replace runs, the fleet runs) gave its locks back
    workdir = fleet.env.resources()["catalog_sync"].workdir
    for tenant in CATALOGS:
        _hold_in_other_process(workdir, tenant).communicate("")


HOLDER = """
import sys
from kobi_cpas.sync.shard_lock import ShardHold
with ShardHold(sys.argv[1], sys.argv[2]) as hold:
    hold.acquire(0)
    print("held", flush=True)
    sys.stdin.read()
"""


def _hold_in_other_process(workdir: str, tenant: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, workdir, tenant],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_tenant_another_process_is_syncing_is_skipped_and_its_own_run_waits(fleet, monkeypatch):
    ids = fleet.set_prices(A, "9999.00 TRY")
    fleet.set_prices(B, "9998.00 TRY")
    fleet.admin.clear_requests()
    workdir = fleet.env.resources()["catalog_sync"].workdir
    holder = _hold_in_other_process(workdir, B)
    try:
        result = fleet.run_fleet([A, B])
        assert result.success  # a busy tenant is not a failure: the next tick takes it
        assert fleet.batch_calls(A) == 1 and fleet.batch_calls(B) == 0
        assert set(_materialized(result, "price_stock_batch")) == {A}
        # a diagnostics poll syncs nothing: it takes no lock and polls the busy tenant too, on its partition
        polled = fleet.run_fleet([A, B], method="diagnostics")
        assert polled.success and set(_materialized(polled, "catalog_diagnostics")) == {A, B}
        assert {e.partition for e in polled.get_asset_check_evaluations()} == {A, B}
        assert not _materialized(polled, "price_stock_batch") and fleet.batch_calls(B) == 0
        # a tenant's own run waits for the holder, bounded, then fails naming the tenant and the lock, having
        # sent nothing
        monkeypatch.setenv("KOBI_CPAS_SHARD_WAIT_SECONDS", "0.3")
        fleet.defs = fleet.env.defs()
        own = fleet.run_job("catalog_batch_job", B)
        assert not own.success and fleet.batch_calls(B) == 0
        failure = next(e for e in own.all_events if e.is_step_failure).step_failure_data.user_failure_data
        assert (
            failure is not None
            and f"tenant '{B}'" in failure.description
            and ".sync.lock" in failure.description
        )
    finally:
        holder.communicate("")
    fleet.admin.advance_clock(130)
    assert fleet.run_fleet([A, B]).success  # free again: B synced now
    assert fleet.batch_calls(B) == 1
    assert fleet.prices_at_meta(A, ids) == {"9999.00 TRY"}


def test_the_lock_is_held_by_a_tenants_run_for_its_whole_length(tmp_path):
    """A tenant's run keeps its lock from its first sync step to its end (re-entered by its next steps), so a
    fleet run in another process never syncs that catalog in between."""
    resource = CatalogSyncResource(workdir=str(tmp_path))
    log = dg.get_dagster_logger()
    resource.hold_shard(A, log)
    resource.hold_shard(A, log)  # a later step of the same run
    probe = [sys.executable, "-c", HOLDER.replace("hold.acquire(0)", "hold.acquire(0.2)"), str(tmp_path), A]
    busy = subprocess.run(probe, cwd=REPO_ROOT, input="", capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and "ShardBusy" in busy.stderr
    resource.teardown_after_execution(dg.build_init_resource_context())
    free = subprocess.run(probe, cwd=REPO_ROOT, input="", capture_output=True, text=True, timeout=60)
    assert free.returncode == 0 and free.stdout.strip() == "held"
    other = _hold_in_other_process(str(tmp_path), C)  # another process's hold is seen here too
    try:
        with pytest.raises(ShardBusy):
            ShardHold(tmp_path, C).acquire(0)
    finally:
        other.communicate("")


def test_the_batch_schedule_launches_one_run_per_group_of_due_tenants(fleet):
    from kobi_cpas.defs.catalog_sync.schedules import catalog_batch_schedule

    tick = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    resources = fleet.env.resources(fleet.registry, batch_tenants_per_run=2)
    requests = tick_schedule(catalog_batch_schedule, fleet.instance, resources, scheduled_execution_time=tick)
    assert [r.run_config["ops"][FLEET_OP]["config"]["tenants"] for r in requests] == [[A, B], [C]]
    assert all(r.tags[FLEET_TAG] == "batch" and r.partition_key is None for r in requests)
    assert len({r.run_key for r in requests}) == 2
    # a fleet run still holding C: C is not put in a second one
    running = dg.DagsterRun(
        job_name="catalog_fleet_job",
        run_id=str(uuid.uuid4()),
        tags={FLEET_TAG: "batch"},
        run_config=requests[1].run_config,
        status=dg.DagsterRunStatus.STARTED,
    )
    fleet.instance.add_run(running)
    assert fleet_tenants(running) == [C]
    again = tick_schedule(catalog_batch_schedule, fleet.instance, resources, scheduled_execution_time=tick)
    assert [r.run_config["ops"][FLEET_OP]["config"]["tenants"] for r in again] == [[A, B]]
