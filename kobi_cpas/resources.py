"""Dagster resource classes: thin, typed wrappers over the pure modules (Meta client, warehouse, registry).

The instances are created once, in ``kobi_cpas/defs/resources.py``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import dagster as dg
import duckdb
from pydantic import Field

from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.config import DEFAULT_BASE_URL
from kobi_cpas.meta.versions import DEFAULT_API_VERSION
from kobi_cpas.registry import LoadedRegistry, RegistryError, load_registry
from kobi_cpas.warehouse import PublishResult, Warehouse

# One definition of each default (kobi_cpas.meta); re-exported for the resource instances.
DEFAULT_GRAPH_URL = DEFAULT_BASE_URL


class MetaGraphResource(dg.ConfigurableResource):
    """Meta Graph / Marketing API access. The token is only ever read from the environment (dg.EnvVar) and sent
    in the Authorization header; it never appears in run config, logs or events."""

    base_url: str = Field(default=DEFAULT_GRAPH_URL, description="Graph API base URL (the sandbox in dev)")
    api_version: str = Field(default=DEFAULT_API_VERSION, description="Pinned Graph API version")
    access_token: str = Field(description="Access token; configure as dg.EnvVar('META_ACCESS_TOKEN')")
    app_secret: str | None = Field(default=None, description="App secret; enables appsecret_proof")
    timeout_seconds: float = 60.0
    max_total_wait_seconds: float = 900.0
    backoff_base_seconds: float = 1.0
    throttle_backoff_base_seconds: float = 30.0

    def get_client(self, logger: logging.Logger | None = None) -> MetaGraphClient:
        return MetaGraphClient(
            base_url=self.base_url,
            api_version=self.api_version,
            access_token=self.access_token,
            app_secret=self.app_secret or None,
            timeout=self.timeout_seconds,
            max_total_wait=self.max_total_wait_seconds,
            logger=logger,
            backoff_base=self.backoff_base_seconds,
            throttle_backoff_base=self.throttle_backoff_base_seconds,
        )


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse. Writers use ``connection()`` (always closed) and ``publish()``; every asset that
    writes runs in the ``duckdb_write`` pool (limit 1) so two writers never collide."""

    duckdb_path: str = Field(description="Analyst DuckDB file (KOBI_CPAS_DUCKDB_PATH)")
    lock_timeout_seconds: float = 300.0
    memory_limit: str | None = None

    def get_warehouse(self) -> Warehouse:
        return Warehouse(
            self.duckdb_path, lock_timeout=self.lock_timeout_seconds, memory_limit=self.memory_limit
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.get_warehouse().connect() as con:
            yield con

    def publish(self, con: duckdb.DuckDBPyConnection) -> PublishResult:
        return self.get_warehouse().publish(con)


class TenantRegistryResource(dg.ConfigurableResource):
    """The tenant registry YAML (KOBI_CPAS_TENANTS)."""

    path: str = Field(description="Path of the tenant registry YAML")

    def load(self) -> LoadedRegistry:
        try:
            return load_registry(self.path)
        except RegistryError as exc:
            # dg.Failure shows the message itself, not a traceback, in the UI and the run log.
            raise dg.Failure(description=str(exc)) from None

    def tenant(self, tenant_id: str):  # -> Tenant
        reg = self.load()
        try:
            return reg, reg.tenant(tenant_id)
        except KeyError:
            raise dg.Failure(
                description=f"tenant '{tenant_id}' is not in the registry {reg.path}: it was removed or renamed; "
                "the tenant sensor will drop its partition"
            ) from None


class CatalogSyncResource(dg.ConfigurableResource):
    """Knobs of the catalog sync: how the upload sessions are polled and where feed files are staged."""

    workdir: str = Field(description="Folder for feed downloads and upload files (git-ignored)")
    poll_interval_seconds: float = 5.0
    poll_timeout_seconds: float = 600.0
