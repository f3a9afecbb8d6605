"""The catalog sync harness of the end-to-end tests, and "synced worlds": a tenant after its first successful
replace, built once per module with ``world_snapshot`` and restored exactly before each test.

A synced world's tenant keeps its registry and feed in the world's live directory (restored with the
warehouse files), so a test gets the state a fresh harness would have after ``write_feed(n)`` and a successful
``catalog_replace_job`` without paying for the warehouse migration and the first run. Sync settings passed to
``SyncedWorld.harness`` rewrite the registry, which every run re-reads.

In a test module::

    pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

    @pytest.fixture(scope="module")
    def world150(build_world_snapshot):
        return build_synced_world(build_world_snapshot, 150)

    def test_x(world150, restore_world, monkeypatch):
        h = world150.harness(restore_world, monkeypatch, batch_chunk_size=10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import pytest
import yaml

from kobi_cpas.feeds.generator import generate_feed
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.dagster_fixtures import KobiEnv

# world_snapshot is a pytest plugin: test modules load it with pytest_plugins, and importing it here first would
# keep pytest from rewriting its asserts
if TYPE_CHECKING:
    from kobi_cpas_tests.world_snapshot import RestoredWorld, WorldSnapshot

    BuildWorld = Callable[[str, Callable[[KobiEnv, dg.DagsterInstance], None]], WorldSnapshot]

__all__ = ["CATALOG", "TENANT", "SyncHarness", "SyncedWorld", "build_synced_world", "synced_world_fixtures"]


TENANT = "anatolia_home"
CATALOG = "2000000000000001"
SUBDIR = "tenant"  # the synced tenant's registry and feed, under the world's live directory


class SyncHarness:
    def __init__(
        self,
        kobi_env: KobiEnv,
        instance: dg.DagsterInstance,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        tenant_id: str = TENANT,
        **sync: object,
    ) -> None:
        self.env = kobi_env
        self.tenant = tenant_id
        self.admin = kobi_env.sandbox.admin
        self.instance = instance
        self.feed = tmp_path / "feed.csv"
        self.registry_path = tmp_path / "tenants.yaml"
        self.set_sync(**sync)
        monkeypatch.setenv("KOBI_CPAS_TENANTS", str(self.registry_path))
        self.defs = kobi_env.defs()
        instance.add_dynamic_partitions("tenant", [tenant_id])
        self.wh = Warehouse(kobi_env.analyst_path, schema=SCHEMA)
        self.admin.catalog_config(problem_rate_scale=0)

    def set_sync(self, **sync: object) -> None:
        """(Re)write the registry: the demo's first tenant as this tenant, its feed, the demo sync settings
        updated with ``sync``. Every run re-reads it."""
        demo = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
        tenant = demo["tenants"][0]
        tenant["tenant_id"] = self.tenant
        tenant["feed"] = {"source": str(self.feed), "format": "csv"}
        tenant["sync"] = {**tenant.get("sync", {}), **sync}
        self.registry_path.write_text(yaml.safe_dump({"tenants": [tenant]}))

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
        assert set(meta) == set(desired), (
            "only at Meta",
            sorted(set(meta) - set(desired))[:10],
            "only desired",
            sorted(set(desired) - set(meta))[:10],
        )
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


@dataclass(frozen=True)
class SyncedWorld:
    """A world whose tenant ``tenant`` had ``n`` generated items replaced into its catalog successfully."""

    snapshot: WorldSnapshot
    n: int
    tenant: str = TENANT

    @property
    def dir(self) -> Path:
        return self.snapshot.live / SUBDIR

    def harness(
        self,
        restore_world: Callable[[WorldSnapshot], RestoredWorld],
        monkeypatch: pytest.MonkeyPatch,
        **sync: object,
    ) -> SyncHarness:
        """Restore the world and return the tenant's harness on it, with the sync settings ``sync``."""
        world = restore_world(self.snapshot)
        # The same environment as the world's setup (warehouse, registry path, sandbox): KobiEnv.defs() gives
        # back the definitions that setup built.
        return SyncHarness(world.env, world.instance, self.dir, monkeypatch, self.tenant, **sync)


def build_synced_world(build_world_snapshot: BuildWorld, n: int, tenant_id: str = TENANT) -> SyncedWorld:
    """Build (with the module's ``build_world_snapshot``, so call it from a module fixture) a world where
    ``write_feed(n)`` and a first ``catalog_replace_job`` of the demo sync settings succeeded."""

    def setup(env: KobiEnv, instance: dg.DagsterInstance) -> None:
        # the analyst file is <live>/data/kobi_cpas.duckdb; the tenant's files go to <live>/<SUBDIR>
        d = Path(env.analyst_path).parent.parent / SUBDIR
        d.mkdir(parents=True)
        with pytest.MonkeyPatch.context() as mp:
            h = SyncHarness(env, instance, d, mp, tenant_id)
            h.write_feed(n)
            result = h.run("catalog_replace_job")
            assert result.success, f"the world's first replace of {n} items failed"
            assert len(h.meta_items()) == n, "the world's first replace did not reach Meta"

    return SyncedWorld(snapshot=build_world_snapshot(f"synced{n}", setup), n=n, tenant=tenant_id)


def synced_world_fixtures(
    n: int,
) -> tuple[Callable[..., SyncedWorld], Callable[..., Callable[..., SyncHarness]]]:
    """The module fixtures ``world`` (``n`` items replaced once per module) and ``synced`` (``synced(**sync)``: the
    tenant restored to that state, with ``sync`` settings, for one test). In a test module::

        world, synced = synced_world_fixtures(200)
    """

    @pytest.fixture(scope="module")
    def world(build_world_snapshot: BuildWorld) -> SyncedWorld:
        return build_synced_world(build_world_snapshot, n)

    @pytest.fixture
    def synced(
        world: SyncedWorld, restore_world: Callable[..., RestoredWorld], monkeypatch: pytest.MonkeyPatch
    ) -> Callable[..., SyncHarness]:
        def make(**sync: object) -> SyncHarness:
            return world.harness(restore_world, monkeypatch, **sync)

        return make

    return world, synced


def sync_demo_catalogs(kobi_env: Any, instance: Any, tenants: Sequence[str] | None = None) -> None:
    """A world setup: the demo tenants (``tenants``: only those; the registry is every tenant's) with their feeds
    synced to the sandbox (feed_items exist for rules, previews and product joins)."""
    from kobi_cpas.devenv.pipeline import materialize_all

    report = materialize_all(
        kobi_env.defs(),
        instance,
        tenants=tenants,
        on_progress=lambda m: None,
        stages=[
            ["tenant_registry"],
            ["feed_snapshot", "replace_feed_plan", "replace_feed_upload", "catalog_syncs"],
        ],
    )
    assert report.ok, report.runs
