"""Fleet runs of the Batch API cadence: one run syncs many due tenants, one after another.

A run costs a few seconds of CPU before it does any work (a Python process, Dagster, the code location, the run's
events), several times what a 15-minute batch of one tenant costs. Every tenant every 15 minutes in its own run is
what bounded the tenants one machine serves, so the batch schedule launches a run per group of due tenants
instead (``CatalogSyncResource.batch_tenants_per_run``).

Each tenant still gets what its own run would give: the same steps (feed_file, feed_snapshot, price_stock_batch,
catalog_syncs) through the same code, its own materializations and check results on its partition (the UI shows
them on the tenant's assets), the blocking checks stopping its batch. A tenant's failure is logged, named and
isolated: the others are synced, and the run fails at the end naming the failed tenants (tag
``kobi/failed_tenants``, read by the run-failure alert and the compliance view). The tenant's sync lock keeps the
rule that syncs of one catalog never overlap: a tenant another process is syncing is skipped (the next tick takes
it), and a tenant's own run waits while the fleet run syncs it."""

from collections.abc import Generator, Iterable, Iterator, Sequence
from datetime import datetime

import dagster as dg
from pydantic import Field

from kobi_cpas.defs.catalog_sync.catalog_syncs import syncs_results
from kobi_cpas.defs.catalog_sync.checks import feed_snapshot_check_specs
from kobi_cpas.defs.catalog_sync.feed_file import download_feed_file
from kobi_cpas.defs.catalog_sync.feed_snapshot import snapshot_results
from kobi_cpas.defs.catalog_sync.step import TenantStep
from kobi_cpas.defs.catalog_sync.sync_step import run_sync
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.sync import methods
from kobi_cpas.sync.shard_lock import ShardBusy, ShardHold

FLEET_TAG = "kobi/fleet"  # on fleet runs: the cadence they sync ("batch")
FAILED_TENANTS_TAG = "kobi/failed_tenants"  # added to a fleet run that failed: the tenants that failed
FLEET_OP = "sync_due_tenants_batch"
_BLOCKING = {(str(s.asset_key.to_user_string()), s.name) for s in feed_snapshot_check_specs if s.blocking}


class FleetBatchConfig(dg.Config):
    tenants: list[str] = Field(
        description="The tenants to sync, in this order (the batch schedule's due tenants)"
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


def sync_tenant_batch(
    step: TenantStep,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> Iterator[FleetEvent]:
    """catalog_batch_job's steps for one tenant: download, snapshot (its blocking checks stop here), batch,
    status, with their events. Raises on the tenant's failure."""
    yield from _emit(step, [download_feed_file(step, registry, catalog_sync)], "feed_file")
    snapshot = snapshot_results(step, False, registry, warehouse, catalog_sync)
    blocked = yield from _emit(step, snapshot, "feed_snapshot")
    if blocked:
        raise TenantFailed("; ".join(blocked))
    batch = run_sync(step, registry, meta, warehouse, catalog_sync, methods.run_batch)
    yield from _emit(step, [batch], "price_stock_batch")
    yield from _emit(step, syncs_results(step, registry, meta, warehouse, catalog_sync), "catalog_syncs")


@dg.op(name=FLEET_OP, tags={"kind": "meta"})
def sync_due_tenants_batch(
    context: dg.OpExecutionContext,
    config: FleetBatchConfig,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> Iterator[FleetEvent | dg.Output[None]]:
    """Sync the Batch API cadence of each tenant in the config, one after another, each isolated from the others'
    failures; fails at the end naming the tenants that failed."""
    synced: list[str] = []
    skipped: list[str] = []
    failed: dict[str, str] = {}
    for tenant_id in dict.fromkeys(config.tenants):
        step = TenantStep(tenant_id, context.run_id, context.run.tags, context.log, context.instance)
        hold = ShardHold(catalog_sync.workdir, tenant_id)
        try:
            hold.acquire(0)  # never wait: the next tick takes a busy tenant
        except ShardBusy:
            skipped.append(tenant_id)
            context.log.info(
                f"tenant '{tenant_id}': another process is syncing its catalog; skipped this tick"
            )
            continue
        try:
            with hold:
                yield from sync_tenant_batch(step, registry, meta, warehouse, catalog_sync)
            synced.append(tenant_id)
        except Exception as exc:  # one tenant's failure never stops the others
            message = exc.description if isinstance(exc, dg.Failure) and exc.description else str(exc)
            failed[tenant_id] = f"{type(exc).__name__}: {message}".strip()
            context.log.error(f"tenant '{tenant_id}': batch sync failed: {failed[tenant_id]}")
    summary = {"synced": len(synced), "skipped_busy": len(skipped), "failed": len(failed)}
    context.log.info(
        f"fleet batch: {len(synced)} synced, {len(skipped)} skipped (busy), {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    if failed:
        context.instance.add_run_tags(context.run_id, {FAILED_TENANTS_TAG: ",".join(sorted(failed))})
        raise dg.Failure(
            description=f"{len(failed)} of {len(config.tenants)} tenant(s) failed; the others were synced: "
            + "; ".join(f"{t}: {m}" for t, m in failed.items()),
            metadata={**summary, "failed_tenants": dg.MetadataValue.json(failed)},
        )
    yield dg.Output(None, metadata={**summary, "skipped_tenants": ", ".join(skipped)})


@dg.job(
    executor_def=dg.in_process_executor,
    tags={FLEET_TAG: "batch"},
    description="The Batch API cadence for many tenants in one run (launched by catalog_batch_schedule): per "
    "tenant the steps of catalog_batch_job, its materializations on its partition, its failures isolated.",
)
def catalog_batch_fleet_job() -> None:
    sync_due_tenants_batch()


def fleet_run_requests(
    tenant_ids: Sequence[str], per_run: int, tick: datetime, tags: dict[str, str]
) -> list[dg.RunRequest]:
    """The fleet runs of a tick: the due tenants in groups of ``per_run``, each keyed by the tick and group."""
    per_run = max(1, per_run)
    groups = [list(tenant_ids[i : i + per_run]) for i in range(0, len(tenant_ids), per_run)]
    return [
        dg.RunRequest(
            run_key=f"batch:{tick:%Y%m%dT%H%M}:{n}",
            run_config={"ops": {FLEET_OP: {"config": {"tenants": group}}}},
            tags={**tags, FLEET_TAG: "batch"},
        )
        for n, group in enumerate(groups)
    ]


def fleet_tenants(run: dg.DagsterRun) -> list[str]:
    """The tenants a fleet run syncs (from its run config); [] for any other run."""
    if run.tags.get(FLEET_TAG) is None:
        return []
    config = (run.run_config or {}).get("ops", {}).get(FLEET_OP, {}).get("config", {})
    return list(config.get("tenants", []))
