"""World snapshots: the sandbox restores a named snapshot exactly, and the per-module snapshot fixtures give
every test the same warehouse files, Dagster database and sandbox whatever the tests before it changed."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas_tests.sandbox_fixtures import SandboxHandle
from meta_sandbox import SandboxAdminError

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

CATALOG = "2000000000000001"


def _sandbox_view(sandbox: SandboxHandle) -> dict:
    admin = sandbox.admin
    return {
        "state": admin.state(),
        "feeds": admin.state("product_feeds"),
        "faults": admin.faults(),
        "requests": admin.requests(),
        "now": admin.now(),
        "config": admin._call("GET", "/config"),
    }


def _fault_draws(meta_client, admin) -> list[int]:
    """How often the first fault rule has fired after each of 8 reads (a seeded rate rule)."""
    fired = []
    for _ in range(8):
        with contextlib.suppress(MetaAPIError):  # an injected 500, after the client's retries
            meta_client.get(f"{CATALOG}/product_feeds")
        fired.append(admin.faults()[0]["fired"])
    return fired


def test_sandbox_snapshot_restores_everything_exactly(sandbox, meta_client):
    admin = sandbox.admin
    meta_client.post(f"{CATALOG}/product_feeds", data={"name": "before"})
    admin.freeze_clock(True)
    admin.advance_clock(3600)
    admin.add_fault("http_500", route="catalog.product_feeds.list", rate=0.5, seed=3)
    admin.configure(app_secret="snap-secret")
    admin.save_snapshot("t")
    saved = _sandbox_view(sandbox)
    # what happens next depends on the snapshot: the next created id, the fault's random draws
    after_save = meta_client.post(f"{CATALOG}/product_feeds", data={"name": "next"})["id"]
    seq_after_save = admin.requests()[-1]["seq"]
    draws = _fault_draws(meta_client, admin)
    assert draws[-1] > 0  # the rule fired, so its random state mattered
    admin.advance_clock(60)
    admin.reset()
    admin.clear_faults()
    assert _sandbox_view(sandbox) != saved

    admin.restore_snapshot("t")
    assert _sandbox_view(sandbox) == saved
    again = meta_client.post(f"{CATALOG}/product_feeds", data={"name": "next"})["id"]
    assert again == after_save
    assert admin.requests()[-1]["seq"] == seq_after_save  # the log's sequence continues from the snapshot
    assert _fault_draws(meta_client, admin) == draws
    # a snapshot serves any number of restores (one per test): the second one is as exact as the first
    admin.restore_snapshot("t")
    assert _sandbox_view(sandbox) == saved
    assert meta_client.post(f"{CATALOG}/product_feeds", data={"name": "next"})["id"] == after_save
    assert _fault_draws(meta_client, admin) == draws

    admin.delete_snapshot("t")
    with pytest.raises(SandboxAdminError, match="no sandbox snapshot"):
        admin.restore_snapshot("t")


@dg.asset
def probe() -> int:
    return 1


def _setup(env, instance: dg.DagsterInstance) -> None:
    con = duckdb.connect(str(env.analyst_path))
    con.execute("CREATE TABLE marks AS SELECT 'setup' AS who")
    con.close()
    instance.add_dynamic_partitions("tenant", ["setup"])
    assert dg.materialize([probe], instance=instance).success
    env.sandbox.admin._call("POST", "/catalog_config", json={"problem_rate_scale": 0})
    env.sandbox.admin.clear_requests()
    env.sandbox.admin.advance_clock(7 * 86400)


@pytest.fixture(scope="module")
def small_world(build_world_snapshot):
    return build_world_snapshot("small", _setup)


@pytest.fixture
def world(small_world, restore_world):
    return restore_world(small_world)


def _observe_then_mutate(world, who: str) -> None:
    """Asserts the setup's state, then changes every part of it (as a test would)."""
    env, instance = world.env, world.instance
    con = duckdb.connect(str(env.analyst_path))
    assert con.execute("SELECT who FROM marks").fetchall() == [("setup",)]
    con.execute("INSERT INTO marks VALUES (?)", [who])
    con.close()
    assert instance.get_dynamic_partitions("tenant") == ["setup"]
    assert len(instance.get_runs()) == 1
    assert instance.get_latest_materialization_event(dg.AssetKey("probe")) is not None
    instance.add_dynamic_partitions("tenant", [who])
    assert dg.materialize([probe], instance=instance).success
    admin = env.sandbox.admin
    assert admin.requests() == []
    assert admin._call("GET", "/catalog_config")["problem_rate_scale"] == 0
    assert admin.now() - datetime.now(UTC) > timedelta(days=6)  # the setup moved the clock on
    admin.reset()
    admin.add_fault("http_500", times=1)


@pytest.mark.parametrize("who", ["first", "second", "third"])
def test_each_test_starts_from_the_snapshot(world, who):
    _observe_then_mutate(world, who)
