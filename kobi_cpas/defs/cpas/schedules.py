"""Daily CPAS reconciliation: partnerships, execution manifest and product sets per tenant, and the retailer
directory."""

import dagster as dg

from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME

cpas_daily_job = dg.define_asset_job(
    "cpas_daily_job",
    selection=dg.AssetSelection.assets("cpas_partnerships", "execution_manifest", "cpas_product_sets"),
    description="Reconcile the tenant's partnerships against Meta, rebuild its execution manifest with QC, sync "
    "its declared product sets.",
)
cpas_directory_job = dg.define_asset_job(
    "cpas_directory_job",
    selection=dg.AssetSelection.assets("cpas_retailer_directory"),
    description="Refresh the Collaborative Ads retailer directory, suggested partners and collaboration requests.",
)


@dg.schedule(
    job=cpas_daily_job,
    cron_schedule="30 6 * * *",
    execution_timezone="Europe/Istanbul",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every tenant's CPAS reconciliation, daily at 06:30 Istanbul time.",
)
def cpas_daily_schedule(context: dg.ScheduleEvaluationContext):
    tenants = sorted(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    if not tenants:
        return dg.SkipReason(
            "no tenant partitions yet (tenant_partitions_sensor adds them from the registry)"
        )
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"cpas:{t}:{day}", partition_key=t) for t in tenants]


cpas_directory_schedule = dg.ScheduleDefinition(
    name="cpas_directory_schedule",
    job=cpas_directory_job,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Istanbul",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The retailer directory, daily.",
)
