"""The resource instances, defined once for the whole code location."""

import os

import dagster as dg

from kobi_cpas.registry import registry_path
from kobi_cpas.resources import (
    DEFAULT_API_VERSION,
    DEFAULT_GRAPH_URL,
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.warehouse import analyst_path_from_env


@dg.definitions
def resources() -> dg.Definitions:
    # Tests shrink the retry backoff (never the logic) with KOBI_CPAS_META_BACKOFF_SCALE.
    scale = float(os.environ.get("KOBI_CPAS_META_BACKOFF_SCALE", "1"))
    return dg.Definitions(
        resources={
            "meta": MetaGraphResource(
                base_url=os.environ.get("META_GRAPH_API_URL") or DEFAULT_GRAPH_URL,
                api_version=os.environ.get("META_API_VERSION") or DEFAULT_API_VERSION,
                # EnvVar keeps the secret out of run config: Dagster stores the variable name, not the value.
                access_token=dg.EnvVar("META_ACCESS_TOKEN"),
                app_secret=dg.EnvVar("META_APP_SECRET") if os.environ.get("META_APP_SECRET") else None,
                backoff_base_seconds=1.0 * scale,
                throttle_backoff_base_seconds=30.0 * scale,
            ),
            "warehouse": WarehouseResource(duckdb_path=str(analyst_path_from_env().resolve())),
            "registry": TenantRegistryResource(path=str(registry_path())),
            "catalog_sync": CatalogSyncResource(
                workdir=str((analyst_path_from_env().parent / ".kobi_work" / "feeds").resolve()),
                poll_interval_seconds=float(os.environ.get("KOBI_CPAS_POLL_SECONDS", "5")),
            ),
        }
    )
