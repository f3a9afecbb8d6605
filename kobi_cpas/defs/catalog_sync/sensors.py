"""Sensors of the catalog sync: a changed feed source starts a snapshot plus the incremental syncs; requests
still processing at Meta (batch handles, upload sessions) are checked after about two minutes until done.

Sensors never open the DuckDB work database (a writer may hold it); they read the published analyst file through
the warehouse resource, and the registry through the registry resource (the ones the assets use)."""

import json
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import dagster as dg

from kobi_cpas.defs.catalog_sync.common import SHARD_TAG
from kobi_cpas.defs.catalog_sync.fleet import fleet_run_requests
from kobi_cpas.defs.catalog_sync.schedules import active_shard_runs, overlap_reason
from kobi_cpas.defs.tenants.evaluation import (
    evaluate_tenant,
    log_tenant_problems,
    read_registry,
    registry_notes,
)
from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME
from kobi_cpas.feeds.reader import head_fingerprint
from kobi_cpas.registry import LoadedRegistry, Tenant
from kobi_cpas.resources import CatalogSyncResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.sync.feed_download import feeds_root

BATCH_CHECK_AFTER = timedelta(minutes=2)


def source_fingerprint(reg: LoadedRegistry, tenant: Tenant, timeout: float = 10.0) -> str | None:
    """A cheap fingerprint of the feed source: size, ns mtime, inode and ctime of a file (a rewrite that keeps the
    mtime still counts), ETag/Last-Modified/length of a URL (HEAD,
    redirects checked like the download's). None when unreachable, refused, or a path outside the feeds root."""
    loc = reg.feed_location(tenant)
    if tenant.feed.is_url:
        return head_fingerprint(
            loc, timeout=timeout, allow_private_redirects=tenant.feed.allow_private_redirects
        )
    try:
        p = Path(loc)
        if not p.resolve().is_relative_to(feeds_root(reg, tenant)):
            return None
        st = p.stat()
    except OSError:
        return None
    return f"{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}"


def source_modified_at(fingerprint: str, is_url: bool) -> datetime | None:
    """When the source last changed, as its fingerprint says: a file's mtime, a URL's Last-Modified (None when
    the server sends none)."""
    parts = fingerprint.split("|")
    try:
        if is_url:
            return parsedate_to_datetime(parts[1]) if len(parts) > 1 and parts[1] else None
        return datetime.fromtimestamp(int(parts[1]) / 1e9, UTC)
    except (ValueError, TypeError, IndexError):
        return None


def _last_snapshots(warehouse: WarehouseResource) -> dict[str, datetime]:
    rows = warehouse.read_published("SELECT tenant_id, max(taken_at) FROM feed_snapshots GROUP BY tenant_id")
    return {str(t): at for t, at in rows if at is not None}


@dg.sensor(
    job_name="catalog_feed_change_job",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a feed snapshot plus the update feed and Batch API syncs when a tenant's feed changes.",
)
def feed_source_sensor(
    context: dg.SensorEvaluationContext, registry: TenantRegistryResource, warehouse: WarehouseResource
):
    reg = read_registry(registry, "registry invalid")
    if isinstance(reg, dg.SkipReason):
        return reg
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    runs, notes, errors = [], [], []
    # A tenant the sensor has not seen yet (its first tick, a new sensor cursor) is compared with its last
    # snapshot instead: a source unchanged since then launches nothing.
    snapshots = _last_snapshots(warehouse) if any(t.tenant_id not in seen for t in reg.tenants) else {}

    def evaluate(t: Tenant) -> None:
        fp = source_fingerprint(reg, t)
        if fp is None:
            notes.append(f"{t.tenant_id}: source unreachable")
            return
        if seen.get(t.tenant_id) == fp:
            return
        if t.tenant_id not in seen:
            modified, snapshot = source_modified_at(fp, t.feed.is_url), snapshots.get(t.tenant_id)
            if modified is not None and snapshot is not None and modified <= snapshot:
                seen[t.tenant_id] = fp  # the baseline: unchanged since the last snapshot
                return
        if t.tenant_id not in known:
            notes.append(f"{t.tenant_id}: no partition yet")
            return
        reason = overlap_reason(context.instance, t.tenant_id)
        if reason:
            notes.append(reason + " (will retry)")
            return  # cursor not advanced: the change is picked up on a later tick
        runs.append(
            dg.RunRequest(
                run_key=f"feed-change:{t.tenant_id}:{fp}",
                partition_key=t.tenant_id,
                tags={SHARD_TAG: t.tenant_id, "kobi/sync_method": "feed_change"},
            )
        )
        seen[t.tenant_id] = fp

    for t in reg.tenants:
        evaluate_tenant(t, "feed source check", evaluate, errors)
    not_evaluated = errors + registry_notes(reg)
    log_tenant_problems(context.log, "feed source sensor", not_evaluated)
    if not runs:
        notes += not_evaluated
        return dg.SensorResult(
            skip_reason="; ".join(notes) if notes else "no feed source changed", cursor=json.dumps(seen)
        )
    return dg.SensorResult(run_requests=runs, cursor=json.dumps(seen))


@dg.sensor(
    job_name="catalog_fleet_job",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Checks Batch API handles (after ~2 minutes) and upload sessions still processing until Meta "
    "finishes, then confirms their items: a fleet run (status) per group of due tenants.",
)
def sync_status_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, catalog_sync: CatalogSyncResource
):
    now = datetime.now(UTC)
    rows = warehouse.read_published(
        "SELECT tenant_id, method, min(started_at), count(*) FROM catalog_syncs "
        "WHERE status IN ('submitted', 'processing') GROUP BY tenant_id, method",
    )
    if not rows:
        return dg.SkipReason("no upload or batch request is processing at Meta")
    due: dict[str, int] = {}
    waiting = []
    for tenant_id, method, oldest, n in rows:
        ready_at = oldest + (BATCH_CHECK_AFTER if method == "batch" else timedelta(0))
        if ready_at <= now:
            due[tenant_id] = due.get(tenant_id, 0) + int(n)
        else:
            waiting.append(f"{tenant_id}: {n} {method} request(s), first check at {ready_at:%H:%M:%S}")
    # One status check per group of tenants per interval: the run key repeats within it, so Dagster launches it
    # once. A tenant with a sync run active (its own, or a fleet run holding it) is left to that run.
    bucket = int(now.timestamp() // max(1, int(catalog_sync.status_check_seconds)))
    active = active_shard_runs(context.instance, fleet=True)
    ready = []
    for tenant_id in sorted(due):
        if tenant_id in active:
            waiting.append(f"{tenant_id}: a sync run is active; it confirms its own requests")
        else:
            ready.append(tenant_id)
    if not ready:
        return dg.SkipReason("; ".join(waiting))
    return fleet_run_requests(ready, catalog_sync.batch_tenants_per_run, str(bucket), "status")
