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
    ensure_pools(instance)
    try:
        yield instance
    finally:
        instance.dispose()
