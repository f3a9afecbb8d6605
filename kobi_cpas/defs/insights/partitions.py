"""Shared-item metrics are partitioned by day (in the ad account's time zone) x tenant."""

import os
from datetime import date

import dagster as dg

from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.insights.pull import RESTATEMENT_DAYS  # noqa: F401  (one definition, used by the schedule)

START_DATE_ENV = "KOBI_CPAS_INSIGHTS_START_DATE"
HISTORY_MONTHS = 3


def insights_start_date(today: date | None = None) -> str:
    """The first date partition: KOBI_CPAS_INSIGHTS_START_DATE (the first day of the brands' ads history, to
    backfill from there), else the first day of the month three months back. The daily pull only re-reads the
    last 28 days, so older days have data only when backfilled; a start years back would show a wall of empty
    partitions that reads as a data gap."""
    given = os.environ.get(START_DATE_ENV)
    if given:
        try:
            return date.fromisoformat(given).isoformat()
        except ValueError:
            raise ValueError(f"{START_DATE_ENV}={given!r} is not a date as YYYY-MM-DD") from None
    today = today or date.today()
    month = today.month - HISTORY_MONTHS
    year = today.year + (month - 1) // 12
    return date(year, (month - 1) % 12 + 1, 1).isoformat()


INSIGHTS_START_DATE = insights_start_date()

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
