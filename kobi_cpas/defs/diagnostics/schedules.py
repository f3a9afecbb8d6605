"""Hourly diagnostics poll per tenant (Meta recommends polling the diagnostics API about hourly)."""

import dagster as dg

from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME

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
    tenants = sorted(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    if not tenants:
        return dg.SkipReason(
            "no tenant partitions yet (tenant_partitions_sensor adds them from the registry)"
        )
    hour = context.scheduled_execution_time.strftime("%Y%m%dT%H")
    return [dg.RunRequest(run_key=f"diagnostics:{t}:{hour}", partition_key=t) for t in tenants]
