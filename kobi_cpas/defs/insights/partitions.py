"""Shared-item metrics are partitioned by day (in the ad account's time zone) x tenant."""

import dagster as dg

from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.insights.pull import RESTATEMENT_DAYS  # noqa: F401  (one definition, used by the schedule)

INSIGHTS_START_DATE = "2025-01-01"

insights_partitions = dg.MultiPartitionsDefinition(
    {
        "date": dg.DailyPartitionsDefinition(start_date=INSIGHTS_START_DATE, timezone="Europe/Istanbul"),
        "tenant": tenant_partitions,
    }
)


def range_tags(tenant_id: str, since: str, until: str) -> dict[str, str]:
    """Run tags for one single-run pull of a tenant's date range (a rectangle of the multi-partitions)."""
    return {
        "dagster/asset_partition_range_start": f"{since}|{tenant_id}",
        "dagster/asset_partition_range_end": f"{until}|{tenant_id}",
    }
