"""The three sync cadences (Meta's Catalog Integration requirement 1): replace daily (or hourly per tenant),
update hourly, Batch API every 15 minutes. One schedule per cadence ticks every 15 minutes and launches the
tenants whose own cron fired since the previous tick, skipping — with the reason — any tenant whose catalog is
still being synced. Tenants are evaluated one by one: a broken registry entry or one tenant's error is reported
in the skip reason and the tick log, and the other tenants are still launched.

The replace catches up: Meta wants a full replace at least every 24 hours, so a replace that could not start at
its cron (the catalog was busy) or whose run failed stays due on the following ticks until a replace run since
that cron fire succeeds, up to ``MAX_REPLACE_ATTEMPTS`` failed runs per fire (a deletion guard that keeps failing
needs a person, not a run every 15 minutes). Update and batch need no catch-up: their next tick supersedes them."""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
from croniter import croniter

from kobi_cpas.defs.catalog_sync.common import SHARD_TAG
from kobi_cpas.defs.catalog_sync.fleet import fleet_run_requests, fleet_tenants
from kobi_cpas.defs.shared import ACTIVE
from kobi_cpas.defs.tenants.evaluation import (
    evaluate_tenant,
    log_tenant_problems,
    read_registry,
    registry_notes,
)
from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME
from kobi_cpas.registry import Tenant
from kobi_cpas.resources import CatalogSyncResource, TenantRegistryResource, WarehouseResource

TICK = timedelta(minutes=15)
MAX_REPLACE_ATTEMPTS = 3
REPLACE_FIRE_TAG = "kobi/replace_fire"


def cron_fired(cron: str, tz: str, start: datetime, end: datetime) -> bool:
    """Did ``cron`` (in time zone ``tz``) fire in (start, end]?"""
    fire = croniter(cron, start.astimezone(ZoneInfo(tz))).get_next(datetime)
    return start.timestamp() < fire.timestamp() <= end.timestamp()


def last_fire(cron: str, tz: str, at: datetime) -> datetime:
    """The latest time ``cron`` (in time zone ``tz``) fired at or before ``at``."""
    return croniter(cron, (at + timedelta(seconds=1)).astimezone(ZoneInfo(tz))).get_prev(datetime)


def replace_due(instance: dg.DagsterInstance, t: Tenant, tick: datetime) -> tuple[datetime, int] | str | None:
    """Is the tenant's replace due at ``tick``? ``(fire, failed_attempts)`` when no replace run since its last
    cron fire succeeded (none started, or they failed), the reason when it gave up after
    ``MAX_REPLACE_ATTEMPTS`` failures, None when a replace since the fire succeeded or one is still running."""
    fire = last_fire(t.sync.effective_replace_cron, t.sync.timezone, tick)
    runs = instance.get_run_records(
        dg.RunsFilter(
            job_name="catalog_replace_job", tags={"dagster/partition": t.tenant_id}, created_after=fire
        ),
        limit=MAX_REPLACE_ATTEMPTS + 5,
    )
    statuses = [r.dagster_run.status for r in runs]
    if dg.DagsterRunStatus.SUCCESS in statuses or any(s in ACTIVE for s in statuses):
        return None  # done, or still running (the overlap check names it)
    failed = [r.dagster_run for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    if len(failed) >= MAX_REPLACE_ATTEMPTS:
        return (
            f"{t.tenant_id}: {len(failed)} replace runs since the replace_cron fired at {fire:%Y-%m-%d %H:%M %Z} "
            f"failed (last: run {failed[0].run_id[:8]}); no more automatic attempts until the next fire — see "
            "that run and catalog_diagnostics"
        )
    return fire, len(failed)


def active_shard_runs(instance: dg.DagsterInstance, fleet: bool = False) -> dict[str, dg.DagsterRun]:
    """The queued or running sync run of each catalog shard, in one query (a tick evaluates every tenant); with
    ``fleet``, also the fleet run each tenant is in. A tenant's own run does not skip a tick for a fleet run: the
    fleet run holds the tenant's sync lock only while it syncs it, and the tenant's run waits for that."""
    out: dict[str, dg.DagsterRun] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE)):
        run = record.dagster_run
        shards = [run.tags[SHARD_TAG]] if run.tags.get(SHARD_TAG) else fleet_tenants(run) if fleet else []
        for shard in shards:
            out.setdefault(shard, run)
    return out


def overlap_reason(
    instance: dg.DagsterInstance, tenant_id: str, active: Mapping[str, dg.DagsterRun] | None = None
) -> str | None:
    """Why the tenant's catalog is busy (a sync run queued or running), from ``active_shard_runs`` when given."""
    if active is None:
        runs = instance.get_run_records(dg.RunsFilter(tags={SHARD_TAG: tenant_id}, statuses=ACTIVE), limit=1)
        run = runs[0].dagster_run if runs else None
    else:
        run = active.get(tenant_id)
    if run is not None:
        return f"{tenant_id}: catalog sync run {run.run_id[:8]} ({run.job_name}, {run.status.value}) still in progress"
    return None


def processing_requests(warehouse: WarehouseResource, methods: tuple[str, ...]) -> dict[str, list[tuple]]:
    """Per tenant, (method, count) of its requests still processing at Meta, from the published file in one
    query."""
    out: dict[str, list[tuple]] = {}
    if not methods:
        return out
    for tenant_id, method, n in warehouse.read_published(
        "SELECT tenant_id, method, count(*) FROM catalog_syncs WHERE status IN ('submitted', 'processing') "
        f"AND method IN ({', '.join('?' for _ in methods)}) GROUP BY ALL ORDER BY ALL",
        list(methods),
    ):
        out.setdefault(tenant_id, []).append((method, n))
    return out


def pending_requests_reason(tenant_id: str, processing: Mapping[str, list[tuple]]) -> str | None:
    rows = processing.get(tenant_id)
    if rows:
        what = ", ".join(f"{n} {m}" for m, n in rows)
        return f"{tenant_id}: {what} request(s) still processing at Meta; feeds must not overlap them"
    return None


def preflight_blocks(warehouse: WarehouseResource) -> dict[str, str]:
    """Per tenant, its blocking preflight findings (``tenant_onboarding``, published), in one query."""
    try:
        rows = warehouse.read_published(
            "SELECT tenant_id, string_agg(check_name || ' ' || object_id || ': ' || finding, '; ' "
            "ORDER BY check_name, object_id) FROM tenant_onboarding WHERE status = 'blocking' GROUP BY tenant_id"
        )
    except duckdb.CatalogException:  # an analyst file published before the table existed
        return {}
    return {str(t): str(why) for t, why in rows}


def tenant_run_requests(
    context: dg.ScheduleEvaluationContext,
    registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
    method: str,
    cron_of: Callable[[Tenant], str],
    blocking_methods: tuple[str, ...],
) -> list[dg.RunRequest] | dg.SkipReason:
    reg = read_registry(registry, f"registry invalid, no {method} sync launched")
    if isinstance(reg, dg.SkipReason):
        return reg
    tick = context.scheduled_execution_time
    known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    # What every tenant's evaluation needs, read once for the fleet: the shards' active runs, the requests
    # still processing at Meta.
    active = active_shard_runs(context.instance, fleet=method == "batch")
    processing = processing_requests(warehouse, blocking_methods)
    preflight = preflight_blocks(warehouse)
    requests, skipped, errors, busy = [], [], [], []

    def evaluate(t: Tenant) -> dg.RunRequest | str | None:
        """The tenant's run request, the reason it is skipped, or None when nothing is due."""
        tags = {SHARD_TAG: t.tenant_id, "kobi/sync_method": method}
        run_key = f"{method}:{t.tenant_id}:{tick:%Y%m%dT%H%M}"
        if method == "replace":
            due = replace_due(context.instance, t, tick)
            if due is None or isinstance(due, str):
                return due
            fire, attempt = due
            # Keyed by the fire, not the tick: re-requesting it on later ticks never launches it twice.
            run_key = f"replace:{t.tenant_id}:{fire.astimezone(UTC):%Y%m%dT%H%M}:{attempt}"
            tags[REPLACE_FIRE_TAG] = fire.astimezone(UTC).isoformat()
        elif not cron_fired(cron_of(t), t.sync.timezone, tick - TICK, tick):
            return None
        if t.tenant_id not in known:
            return f"{t.tenant_id}: no partition yet (the tenant sensor adds it)"
        if t.tenant_id in preflight:
            return (
                f"{t.tenant_id}: its preflight blocks it ({preflight[t.tenant_id]}); fix that, then materialize "
                "tenant_onboarding again"
            )
        reason = overlap_reason(context.instance, t.tenant_id, active) or pending_requests_reason(
            t.tenant_id, processing
        )
        if reason:
            busy.append(t.tenant_id)
            return reason
        return dg.RunRequest(run_key=run_key, partition_key=t.tenant_id, tags=tags)

    for t in reg.tenants:
        _, outcome = evaluate_tenant(t, f"{method} schedule", evaluate, errors)
        if isinstance(outcome, dg.RunRequest):
            requests.append(outcome)
        elif outcome:
            skipped.append(outcome)
    not_evaluated = errors + registry_notes(reg)
    if skipped:
        context.log.info(f"{method} tick {tick:%Y-%m-%d %H:%M}: skipped " + "; ".join(skipped))
    log_tenant_problems(context.log, f"{method} tick {tick:%Y-%m-%d %H:%M}", not_evaluated)
    if not requests:
        reason = (
            "; ".join(skipped)
            + (" — tick skipped to avoid overlapping syncs of the same catalog" if busy else "")
            if skipped
            else f"no tenant's {method} is due at {tick:%Y-%m-%d %H:%M %Z}"
            if method == "replace"
            else f"no tenant's {method} cron fired in the 15 minutes before {tick:%Y-%m-%d %H:%M %Z}"
        )
        return dg.SkipReason("; ".join([reason, *not_evaluated]))
    if method == "batch":  # fleet runs: a run per group of due tenants
        tenants = [r.partition_key or "" for r in requests]
        return fleet_run_requests(tenants, catalog_sync.batch_tenants_per_run, f"{tick:%Y%m%dT%H%M}")
    return requests


def cadence_schedule(
    method: str, cron_of: Callable[[Tenant], str], blocking_methods: tuple[str, ...], description: str
) -> dg.ScheduleDefinition:
    """A 15-minute tick launching `catalog_<method>_job` for each tenant whose own cron fired since the last
    tick (batch: `catalog_fleet_job` per group of such tenants), skipping (with the reason) tenants whose
    catalog is busy with any of ``blocking_methods``."""

    def evaluate(
        context: dg.ScheduleEvaluationContext,
        registry: TenantRegistryResource,
        warehouse: WarehouseResource,
        catalog_sync: CatalogSyncResource,
    ):
        return tenant_run_requests(
            context, registry, warehouse, catalog_sync, method, cron_of, blocking_methods
        )

    return dg.schedule(
        name=f"catalog_{method}_schedule",
        job_name="catalog_fleet_job" if method == "batch" else f"catalog_{method}_job",
        cron_schedule="*/15 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )(evaluate)


catalog_replace_schedule = cadence_schedule(
    "replace",
    lambda t: t.sync.effective_replace_cron,
    ("batch", "update", "replace"),
    "Full replace upload per tenant at its replace_cron (daily by default, hourly per setting); a replace that "
    f"could not start or failed is retried on the next ticks until one succeeds (at most {MAX_REPLACE_ATTEMPTS} "
    "failed runs per cron fire).",
)
catalog_update_schedule = cadence_schedule(
    "update",
    lambda t: t.sync.update_cron,
    ("batch", "update", "replace"),
    "Hourly update_only upload of new and changed items per tenant (update_cron).",
)
# Batches in flight do not block the next batch: their items are excluded (in flight), never re-sent.
catalog_batch_schedule = cadence_schedule(
    "batch",
    lambda t: t.sync.batch_cron,
    ("update", "replace"),
    "Batch API price/stock updates every 15 minutes per tenant (batch_cron), the due tenants synced in fleet "
    "runs of batch_tenants_per_run tenants each.",
)
