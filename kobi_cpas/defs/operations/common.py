"""What the operations definitions read from Dagster through its public instance APIs: the last success of each
requirement's asset per tenant, and the failed runs, by tenant, behind a late requirement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from kobi_cpas.defs.catalog_sync.common import SHARD_TAG
from kobi_cpas.defs.catalog_sync.fleet import fleet_method, fleet_tenants
from kobi_cpas.operations.compliance import (
    INSIGHTS_LOOKBACK_DAYS,
    REQUIREMENTS,
    REQUIREMENTS_BY_ASSET,
    FailedRun,
    LastSuccess,
)

GROUP = "operations"
# Failed runs older than this are not named as the reason a requirement is late.
FAILED_RUN_LOOKBACK = timedelta(days=2)
MAX_FAILED_RUNS = 1000
# The requirements a failed run of each scheduled job holds up. Runs of a job's whole selection record no asset
# selection, so the job name says which requirement they were for.
JOB_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "catalog_replace_job": ("full_replace",),
    "catalog_update_job": ("delta_update",),
    "catalog_batch_job": ("volatile_batch",),
    "catalog_feed_change_job": ("delta_update", "volatile_batch"),
    "catalog_diagnostics_job": ("diagnostics",),
    "shared_item_metrics_job": ("insights",),
}


# The requirement a failed fleet run holds up, by what it did per tenant.
FLEET_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "batch": ("volatile_batch",),
    "status": ("volatile_batch",),
    "diagnostics": ("diagnostics",),
}


def tenant_of_run(tags: Mapping[str, str]) -> str | None:
    """The tenant a run worked for, from its partition tags (tenant, date x tenant or a date range of one
    tenant) or the catalog shard tag of the sync runs."""
    if tags.get("dagster/partition/tenant"):
        return tags["dagster/partition/tenant"]
    start = tags.get("dagster/asset_partition_range_start", "")
    if "|" in start:
        return start.split("|", 1)[1]
    if tags.get(SHARD_TAG):
        return tags[SHARD_TAG]
    key = tags.get("dagster/partition")
    return key if key and "|" not in key else None


def _partitions(asset_key: str, tenant_id: str, now: datetime) -> list[str]:
    if asset_key != "shared_item_metrics":
        return [tenant_id]
    # date x tenant ("YYYY-MM-DD|tenant"): the tenant's recent days; one more covers the time zone offset.
    day = now.date()
    return [f"{day - timedelta(days=d)}|{tenant_id}" for d in range(-1, INSIGHTS_LOOKBACK_DAYS)]


def last_successes(
    instance: dg.DagsterInstance, tenant_ids: Sequence[str], now: datetime
) -> list[LastSuccess]:
    """The latest materialization per tenant and requirement (one indexed query each)."""
    out: list[LastSuccess] = []
    for req in REQUIREMENTS:
        key = dg.AssetKey(req.asset_key)
        for tenant in tenant_ids:
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=key, asset_partitions=_partitions(req.asset_key, tenant, now)
                ),
                limit=1,
            )
            if result.records:
                at = datetime.fromtimestamp(result.records[0].timestamp, UTC)
                out.append(LastSuccess(tenant, req.name, at))
    return out


def failed_runs(instance: dg.DagsterInstance, tenant_ids: Sequence[str], now: datetime) -> list[FailedRun]:
    """Recent failed runs, per tenant and requirement (by the assets they selected or their job), in one
    query for all tenants."""
    wanted = set(tenant_ids)
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=now - FAILED_RUN_LOOKBACK),
        limit=MAX_FAILED_RUNS,
    )
    out: list[FailedRun] = []
    for rec in records:
        run = rec.dagster_run
        fleet = fleet_tenants(run)
        tenants = [t for t in fleet or [tenant_of_run(run.tags)] if t in wanted]
        if not tenants:
            continue
        when = datetime.fromtimestamp(rec.end_time, UTC) if rec.end_time else rec.update_timestamp
        if fleet and rec.start_time:
            # A failed fleet run holds up only the tenants it did not sync: dated at its start, it is later than
            # the last success of those alone (the others succeeded during the run).
            when = datetime.fromtimestamp(rec.start_time, UTC)
        names = {
            req.name
            for key in run.asset_selection or ()
            if (req := REQUIREMENTS_BY_ASSET.get(key.to_user_string())) is not None
        }
        names.update(JOB_REQUIREMENTS.get(run.job_name, ()))
        names.update(FLEET_REQUIREMENTS.get(fleet_method(run) or "", ()))
        out.extend(FailedRun(t, name, run.run_id, when) for t in tenants for name in sorted(names))
    return out
