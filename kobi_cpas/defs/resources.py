"""The resource instances, defined once for the whole code location: assets, sensors and schedules all take
these (as parameters), and this module is the only place that reads their settings from the environment.

A variable that is not set leaves the resource's own default (declared once, on the resource class or in
``kobi_cpas.meta.config``)."""

import os
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from kobi_cpas.meta.config import ENV_ACCESS_TOKEN, ENV_APP_SECRET, endpoint_from_env
from kobi_cpas.registry import registry_path
from kobi_cpas.resources import (
    AlertWebhookResource,
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.warehouse import analyst_path_from_env

ENV_ALERT_WEBHOOK_URL = "KOBI_CPAS_ALERT_WEBHOOK_URL"


def _from_env(env: Mapping[str, str], cast: Callable[[str], Any], **fields: str) -> dict[str, Any]:
    """``{field: cast(value)}`` for each field whose environment variable is set and not empty."""
    return {field: cast(env[name]) for field, name in fields.items() if env.get(name, "").strip()}


def location_resources() -> dict[str, dg.ConfigurableResource]:
    """Every resource of the code location, configured from the environment."""
    env = os.environ
    analyst = analyst_path_from_env()
    return {
        "meta": MetaGraphResource(
            **endpoint_from_env(env),
            # EnvVar keeps the secret out of run config: Dagster stores the variable name, not the value.
            access_token=dg.EnvVar(ENV_ACCESS_TOKEN),
            app_secret=dg.EnvVar(ENV_APP_SECRET) if env.get(ENV_APP_SECRET) else None,
            # Tests shrink the retry waits (never the logic) with KOBI_CPAS_META_BACKOFF_SCALE.
            **_from_env(env, float, backoff_scale="KOBI_CPAS_META_BACKOFF_SCALE"),
        ),
        "warehouse": WarehouseResource(
            duckdb_path=str(analyst.resolve()),
            **_from_env(env, float, publish_interval_seconds="KOBI_CPAS_PUBLISH_INTERVAL_SECONDS"),
        ),
        "registry": TenantRegistryResource(path=str(registry_path())),
        "catalog_sync": CatalogSyncResource(
            workdir=str((analyst.parent / ".kobi_work" / "feeds").resolve()),
            **_from_env(
                env,
                float,
                poll_interval_seconds="KOBI_CPAS_POLL_SECONDS",
                status_check_seconds="KOBI_CPAS_STATUS_CHECK_SECONDS",
                shard_wait_seconds="KOBI_CPAS_SHARD_WAIT_SECONDS",
            ),
            **_from_env(env, int, batch_tenants_per_run="KOBI_CPAS_BATCH_TENANTS_PER_RUN"),
        ),
        # The webhook URL is a credential: EnvVar keeps it out of run config; unset, alerts are only recorded.
        "alert_webhook": AlertWebhookResource(
            url=dg.EnvVar(ENV_ALERT_WEBHOOK_URL) if env.get(ENV_ALERT_WEBHOOK_URL, "").strip() else None
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=location_resources())
