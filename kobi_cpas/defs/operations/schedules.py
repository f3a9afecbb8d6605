"""sync_compliance every 15 minutes: the cadence of the fastest requirement (price and stock)."""

import dagster as dg

sync_compliance_job = dg.define_asset_job(
    "sync_compliance_job",
    selection=dg.AssetSelection.assets("sync_compliance"),
    description="Rebuild sync_compliance from Dagster's materialization and run records.",
)

sync_compliance_schedule = dg.ScheduleDefinition(
    name="sync_compliance_schedule",
    job=sync_compliance_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every tenant's cadence compliance with Meta's quality bar, every 15 minutes.",
)
