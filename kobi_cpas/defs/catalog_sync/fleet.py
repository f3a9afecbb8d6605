"""Fleet runs: one run serves many due tenants, one after another (the Batch API cadence, the status checks that
confirm the batches, the hourly diagnostics poll).

A run costs a few seconds of CPU before it does any work (a Python process, Dagster, the code location, the run's
events), several times what a 15-minute batch of one tenant costs. Every tenant every 15 minutes in its own run is
what bounded the tenants one machine serves, so the batch schedule, the status sensor and the diagnostics schedule
launch a run per group of due tenants instead (``CatalogSyncResource.batch_tenants_per_run``).

Each tenant still gets what its own run would give: the same steps through the same code, its own
materializations and check results on its partition (the UI shows them on the tenant's assets), the blocking
checks stopping its batch. A tenant's failure is logged, named and isolated: the others go on, and the run fails
at the end naming the failed tenants (the run-failure alert quotes them; sync_compliance holds a requirement up by
the run only for the tenants not synced since it started). The tenant's sync lock keeps the rule that syncs of one catalog never overlap: a tenant
another process is syncing is skipped (the next tick takes it), and a tenant's own run waits while the fleet run
syncs it. A diagnostics poll syncs nothing and takes no lock."""

import hashlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Literal

import dagster as dg
from pydantic import Field

from kobi_cpas.defs.catalog_sync.catalog_syncs import syncs_results
from kobi_cpas.defs.catalog_sync.checks import feed_snapshot_check_specs
from kobi_cpas.defs.catalog_sync.feed_file import download_feed_file
from kobi_cpas.defs.catalog_sync.feed_snapshot import snapshot_results
from kobi_cpas.defs.catalog_sync.step import TenantStep
from kobi_cpas.defs.catalog_sync.sync_step import run_sync
from kobi_cpas.defs.diagnostics.assets import diagnostics_results
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.sync import methods
from kobi_cpas.sync.shard_lock import ShardBusy, ShardHold

FLEET_TAG = "kobi/fleet"  # on fleet runs: what they do per tenant ("batch", "status" or "diagnostics")
FLEET_OP = "sync_tenants"
FLEET_JOB = "catalog_fleet_job"
_BLOCKING = {(str(s.asset_key.to_user_string()), s.name) for s in feed_snapshot_check_specs if s.blocking}


class FleetSyncConfig(dg.Config):
    tenants: list[str] = Field(description="The tenants to sync, in this order (the due tenants of the tick)")
    method: Literal["batch", "status", "diagnostics"] = Field(
        default="batch",
        description="batch: catalog_batch_job's steps per tenant; status: catalog_sync_status_job's (Meta's verdict "
        "on requests still processing); diagnostics: catalog_diagnostics_job's (a poll, no sync: no lock taken)",
    )


class TenantFailed(Exception):
    """One tenant's sync stopped (its blocking check failed); the fleet run goes on with the others."""


FleetEvent = dg.AssetMaterialization | dg.AssetCheckEvaluation


def _emit(
    step: TenantStep, results: Iterable[dg.MaterializeResult], asset: str
) -> Generator[FleetEvent, None, list[str]]:
    """Each result as the tenant's materialization and check results on its partition (yielded as they come, so
    they are recorded even when a later tenant fails the run); returns the failed blocking checks."""
    blocked = []
    for result in results:
        key = result.asset_key or dg.AssetKey(asset)
        yield dg.AssetMaterialization(asset_key=key, partition=step.tenant_id, metadata=result.metadata or {})
        for check in result.check_results or ():
            check_key = check.asset_key or key
            blocking = (check_key.to_user_string(), check.check_name) in _BLOCKING
            yield dg.AssetCheckEvaluation(
                asset_key=check_key,
                check_name=check.check_name,
                passed=check.passed,
                metadata=check.metadata or {},
                severity=check.severity,
                description=check.description,
                blocking=blocking,
                partition=step.tenant_id,
            )
            if blocking and not check.passed:
                blocked.append(f"{check.check_name}: {check.description or 'failed'}")
    return blocked


def _tenant_events(
    method: str,
    step: TenantStep,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> Iterator[FleetEvent]:
    """What the tenant's own job does, with its events; raises on the tenant's failure. batch: download, snapshot
    (its blocking checks stop the tenant here), batch, status; status: Meta's verdict on requests still
    processing; diagnostics: the poll."""
    if method == "diagnostics":
        polled = diagnostics_results(step.tenant_id, step.log, registry, meta, warehouse)
        yield from _emit(step, polled, "catalog_diagnostics")
        return
    if method == "batch":
        yield from _emit(step, [download_feed_file(step, registry, catalog_sync)], "feed_file")
        snapshot = snapshot_results(step, False, registry, warehouse, catalog_sync)
        blocked = yield from _emit(step, snapshot, "feed_snapshot")
        if blocked:
            raise TenantFailed("; ".join(blocked))
        batch = run_sync(step, registry, meta, warehouse, catalog_sync, methods.run_batch)
        yield from _emit(step, [batch], "price_stock_batch")
    yield from _emit(step, syncs_results(step, registry, meta, warehouse, catalog_sync), "catalog_syncs")


@dg.op(name=FLEET_OP, tags={"kind": "meta"})
def sync_tenants(
    context: dg.OpExecutionContext,
    config: FleetSyncConfig,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> Iterator[FleetEvent | dg.Output[None]]:
    """Sync each tenant in the config (its batch, its status check or its diagnostics poll), one after another,
    each isolated from the others' failures; fails at the end naming the tenants that failed."""
    synced: list[str] = []
    skipped: list[str] = []
    failed: dict[str, str] = {}
    for tenant_id in dict.fromkeys(config.tenants):
        step = TenantStep(tenant_id, context.run_id, context.run.tags, context.log, context.instance)
        hold = ShardHold(catalog_sync.workdir, tenant_id)
        try:
            if config.method != "diagnostics":  # a poll reads Meta and writes its own tables: no sync lock
                hold.acquire(0)  # never wait: the next tick takes a busy tenant
        except ShardBusy:
            skipped.append(tenant_id)
            context.log.info(
                f"tenant '{tenant_id}': another process is syncing its catalog; skipped this tick"
            )
            continue
        try:
            with hold:
                yield from _tenant_events(config.method, step, registry, meta, warehouse, catalog_sync)
            synced.append(tenant_id)
        except Exception as exc:  # one tenant's failure never stops the others
            message = exc.description if isinstance(exc, dg.Failure) and exc.description else str(exc)
            failed[tenant_id] = f"{type(exc).__name__}: {message}".strip()
            context.log.error(f"tenant '{tenant_id}': {config.method} failed: {failed[tenant_id]}")
    summary = {"synced": len(synced), "skipped_busy": len(skipped), "failed": len(failed)}
    context.log.info(
        f"fleet {config.method}: {len(synced)} synced, {len(skipped)} skipped (busy), {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} of {len(config.tenants)} tenant(s) failed; the others were synced: "
            + "; ".join(f"{t}: {m}" for t, m in failed.items()),
            metadata={**summary, "failed_tenants": dg.MetadataValue.json(failed)},
        )
    yield dg.Output(None, metadata={**summary, "skipped_tenants": ", ".join(skipped)})


@dg.job(
    executor_def=dg.in_process_executor,
    description="Many tenants' catalog work in one run: the Batch API cadence (catalog_batch_schedule), the status "
    "checks of requests still processing at Meta (sync_status_sensor) or the hourly diagnostics poll "
    "(catalog_diagnostics_schedule). Per tenant the steps of its own job, its materializations and checks on its "
    "partition, its failures isolated.",
)
def catalog_fleet_job() -> None:
    sync_tenants()


def fleet_run_requests(
    tenant_ids: Sequence[str], per_run: int, key: str, method: str = "batch"
) -> list[dg.RunRequest]:
    """The fleet runs of a tick: the due tenants in groups of ``per_run``, each keyed by ``key`` (the tick) and
    its tenants, so a re-evaluation never launches a group twice."""
    per_run = max(1, per_run)
    groups = [list(tenant_ids[i : i + per_run]) for i in range(0, len(tenant_ids), per_run)]
    return [
        dg.RunRequest(
            run_key=f"{method}:{key}:{hashlib.sha256(','.join(group).encode()).hexdigest()[:12]}",
            run_config={"ops": {FLEET_OP: {"config": {"tenants": group, "method": method}}}},
            tags={FLEET_TAG: method, "kobi/sync_method": method},
        )
        for group in groups
    ]


def _fleet_config(run: dg.DagsterRun) -> dict | None:
    if run.job_name != FLEET_JOB:
        return None
    return (run.run_config or {}).get("ops", {}).get(FLEET_OP, {}).get("config", {})


def fleet_method(run: dg.DagsterRun) -> str | None:
    """What a fleet run does per tenant (from its run config); None for any other run."""
    config = _fleet_config(run)
    return None if config is None else str(config.get("method", "batch"))


def fleet_tenants(run: dg.DagsterRun) -> list[str]:
    """The tenants a fleet run syncs (from its run config); [] for any other run."""
    return list((_fleet_config(run) or {}).get("tenants", []))
