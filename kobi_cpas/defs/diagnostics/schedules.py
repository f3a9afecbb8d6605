"""Hourly diagnostics poll per tenant (Meta recommends polling the diagnostics API about hourly)."""

import dagster as dg

from kobi_cpas.defs.tenants.evaluation import every_tenant
from kobi_cpas.resources import TenantRegistryResource

catalog_diagnostics_job = dg.define_asset_job(
    "catalog_diagnostics_job",
    executor_def=dg.in_process_executor,  # one step: no second process to load the code location
    selection=dg.AssetSelection.assets("catalog_diagnostics").required_multi_asset_neighbors(),
    description="Poll a tenant's catalog diagnostics and refresh the diagnostics tables.",
)


@dg.schedule(
    job=catalog_diagnostics_job,
    cron_schedule="40 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every tenant's catalog diagnostics, hourly.",
)
def catalog_diagnostics_schedule(context: dg.ScheduleEvaluationContext, registry: TenantRegistryResource):
    return every_tenant(context, registry, "diagnostics", "%Y%m%dT%H")
