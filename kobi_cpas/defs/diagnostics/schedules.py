"""Hourly diagnostics poll per tenant (Meta recommends polling the diagnostics API about hourly)."""

import dagster as dg

from kobi_cpas.defs.shared import every_tenant

catalog_diagnostics_job = dg.define_asset_job(
    "catalog_diagnostics_job",
    selection=dg.AssetSelection.assets("catalog_diagnostics"),
    description="Poll a tenant's catalog diagnostics and refresh the diagnostics tables.",
)


@dg.schedule(
    job=catalog_diagnostics_job,
    cron_schedule="40 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every tenant's catalog diagnostics, hourly.",
)
def catalog_diagnostics_schedule(context: dg.ScheduleEvaluationContext):
    return every_tenant(context, "diagnostics", "%Y%m%dT%H")
