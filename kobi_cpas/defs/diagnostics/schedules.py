"""Hourly diagnostics poll per tenant (Meta recommends polling the diagnostics API about hourly), in fleet runs:
a run per group of tenants shares a run's fixed cost (see defs/catalog_sync/fleet.py)."""

import dagster as dg

from kobi_cpas.defs.catalog_sync.fleet import FLEET_JOB, fleet_run_requests
from kobi_cpas.defs.tenants.evaluation import every_tenant
from kobi_cpas.resources import CatalogSyncResource, TenantRegistryResource

catalog_diagnostics_job = dg.define_asset_job(
    "catalog_diagnostics_job",
    executor_def=dg.in_process_executor,  # one step: no second process to load the code location
    selection=dg.AssetSelection.assets("catalog_diagnostics").required_multi_asset_neighbors(),
    description="Poll a tenant's catalog diagnostics and refresh the diagnostics tables.",
)


@dg.schedule(
    job_name=FLEET_JOB,
    cron_schedule="40 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every tenant's catalog diagnostics, hourly: a catalog_fleet_job run per group of "
    "batch_tenants_per_run tenants (catalog_diagnostics_job polls one tenant from the UI).",
)
def catalog_diagnostics_schedule(
    context: dg.ScheduleEvaluationContext, registry: TenantRegistryResource, catalog_sync: CatalogSyncResource
):
    requests = every_tenant(context, registry, "diagnostics", "%Y%m%dT%H")
    if isinstance(requests, dg.SkipReason):
        return requests
    period = context.scheduled_execution_time.strftime("%Y%m%dT%H")
    tenants = [r.partition_key or "" for r in requests]
    return fleet_run_requests(tenants, catalog_sync.batch_tenants_per_run, period, "diagnostics")
