"""Shared-item metrics are partitioned by day (in the ad account's time zone) x tenant.

The date dimension is shared by every tenant, so a tenant's own first day (``insights.start_date`` in the
registry) is enforced where its days are chosen: the daily schedule, the asset (backfills) and `make run` pull
nothing before it. The shared dimension starts early enough for the earliest tenant."""

import os
from collections.abc import Iterable
from datetime import date

import dagster as dg

from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.insights.pull import RESTATEMENT_DAYS  # noqa: F401  (one definition, used by the schedule)
from kobi_cpas.registry import RegistryError, Tenant, load_registry

START_DATE_ENV = "KOBI_CPAS_INSIGHTS_START_DATE"
HISTORY_MONTHS = 3


def insights_start_date(today: date | None = None, tenant_starts: Iterable[date] | None = None) -> str:
    """The first date partition: KOBI_CPAS_INSIGHTS_START_DATE (the first day of the brands' ads history, to
    backfill from there), else the first day of the month three months back, or the earliest tenant's
    ``insights.start_date`` when that is earlier (default: read from the registry). The daily pull only re-reads
    the last 28 days, so older days have data only when backfilled; a start years back would show a wall of
    empty partitions that reads as a data gap."""
    given = os.environ.get(START_DATE_ENV)
    if given:
        try:
            return date.fromisoformat(given).isoformat()
        except ValueError:
            raise ValueError(f"{START_DATE_ENV}={given!r} is not a date as YYYY-MM-DD") from None
    today = today or date.today()
    month = today.month - HISTORY_MONTHS
    year = today.year + (month - 1) // 12
    starts = registry_start_dates() if tenant_starts is None else list(tenant_starts)
    return min([date(year, (month - 1) % 12 + 1, 1), *starts]).isoformat()


def registry_start_dates() -> list[date]:
    """Every readable tenant's insights.start_date. A registry that cannot be read adds none: the code location
    still loads, and the tenant_registry asset reports the problem."""
    try:
        tenants = load_registry().tenants
    except RegistryError:
        return []
    return [t.insights.start_date for t in tenants if t.insights.start_date is not None]


def split_at_start(tenant: Tenant, days: Iterable[date]) -> tuple[list[date], list[date]]:
    """(days from the tenant's insights.start_date on, days before it), each sorted."""
    start = tenant.insights.start_date
    ordered = sorted(days)
    if start is None:
        return ordered, []
    return [d for d in ordered if d >= start], [d for d in ordered if d < start]


def before_start_note(tenant: Tenant, skipped: list[date]) -> str:
    return (
        f"{tenant.tenant_id}: {len(skipped)} day(s) {skipped[0]}..{skipped[-1]} not pulled: before the tenant's "
        f"insights.start_date {tenant.insights.start_date} (its metrics start there)"
    )


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
