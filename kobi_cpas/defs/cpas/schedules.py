"""Daily CPAS reconciliation: partnerships, execution manifest, product sets and onboarding steps per tenant,
and the retailer directory."""

import dagster as dg

from kobi_cpas.defs.tenants.evaluation import every_tenant
from kobi_cpas.resources import TenantRegistryResource

cpas_daily_job = dg.define_asset_job(
    "cpas_daily_job",
    selection=dg.AssetSelection.assets(
        "cpas_partnerships", "execution_manifest", "cpas_product_sets", "cpas_onboarding_steps"
    ),
    description="Reconcile the tenant's partnerships against Meta, rebuild its execution manifest with QC, sync "
    "its declared product sets, and say where each partnership's onboarding stands.",
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
def cpas_daily_schedule(context: dg.ScheduleEvaluationContext, registry: TenantRegistryResource):
    return every_tenant(context, registry, "cpas", "%Y-%m-%d")


cpas_directory_schedule = dg.ScheduleDefinition(
    name="cpas_directory_schedule",
    job=cpas_directory_job,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Istanbul",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The retailer directory, daily.",
)
