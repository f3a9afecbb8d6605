"""Fixtures that run the real code location: env vars pointing at the sandbox and a temp warehouse, a Postgres
backed Dagster instance, and a helper to build the definitions under that environment."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.sandbox_fixtures import SANDBOX_API_VERSION, SANDBOX_TOKEN, SandboxHandle


@dataclass
class KobiEnv:
    analyst_path: Path
    registry_path: Path
    token: str
    sandbox: SandboxHandle

    def defs(self) -> dg.Definitions:
        from kobi_cpas.definitions import defs

        return defs()


@pytest.fixture
def kobi_env(tmp_path: Path, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> KobiEnv:
    analyst = tmp_path / "data" / "kobi_cpas.duckdb"
    monkeypatch.setenv("KOBI_CPAS_DUCKDB_PATH", str(analyst))
    monkeypatch.setenv("KOBI_CPAS_TENANTS", str(DEFAULT_REGISTRY))
    monkeypatch.setenv("META_GRAPH_API_URL", sandbox.url)
    monkeypatch.setenv("META_API_VERSION", SANDBOX_API_VERSION)
    monkeypatch.setenv("META_ACCESS_TOKEN", SANDBOX_TOKEN)
    monkeypatch.setenv("KOBI_CPAS_POLL_SECONDS", "0.05")
    monkeypatch.setenv("KOBI_CPAS_META_BACKOFF_SCALE", "0.001")
    monkeypatch.delenv("META_APP_SECRET", raising=False)
    return KobiEnv(analyst, DEFAULT_REGISTRY, SANDBOX_TOKEN, sandbox)


@pytest.fixture
def pg_instance(pg_dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    from kobi_cpas.devenv.instance import ensure_pools

    instance = dg.DagsterInstance.from_config(str(pg_dagster_home))
    # dagster-postgres opens a new connection per query by default; in one long-lived process (as here, and in
    # the webserver, which calls this) a small pool removes that cost. The database is dropped after the test.
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=5)
    ensure_pools(instance)
    try:
        yield instance
    finally:
        instance.dispose()


def tick_sensor(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, **context: object) -> object:
    """One evaluation of `sensor`, as the daemon does it. The context is closed afterwards: an unclosed one
    keeps the instance it opened as the current one, and a later test would load definitions against it."""
    with dg.build_sensor_context(instance=instance, **context) as ctx:  # type: ignore[arg-type]
        return sensor(ctx)


def tick_schedule(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, **context: object) -> object:
    """One evaluation of `schedule`, closing its context (see `tick_sensor`)."""
    with dg.build_schedule_context(instance=instance, **context) as ctx:  # type: ignore[arg-type]
        return schedule(ctx)
