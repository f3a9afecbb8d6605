"""What every step that talks to Meta shares: its sync context, the read of Meta's fatal
ingestion errors and the run of one sync method with its publish and metadata."""

from pathlib import Path

import dagster as dg

from kobi_cpas.defs.catalog_sync.step import TenantStep
from kobi_cpas.defs.shared import md_table
from kobi_cpas.diagnostics.after_sync import apply_sync_errors, fetch_after_sync, refs_for_records
from kobi_cpas.diagnostics.collect import FetchedSyncErrors
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.sync.guards import SURPLUS_STATUS
from kobi_cpas.sync.item_state import refresh_item_state, refresh_item_state_and_delta
from kobi_cpas.sync.methods import SyncBlocked, SyncContext, SyncRecord


def sync_context(
    step: TenantStep,
    registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
    client,
) -> SyncContext:
    _, tenant = registry.tenant(step.tenant_id)
    return SyncContext(
        tenant=tenant,
        client=client,
        warehouse=warehouse.get_warehouse(),
        workdir=Path(catalog_sync.workdir) / tenant.tenant_id,
        run_id=step.run_id,
        progress=step.log.info,
        poll_interval=catalog_sync.poll_interval_seconds,
        poll_timeout=catalog_sync.poll_timeout_seconds,
    )


def _records_md(records: list[SyncRecord]) -> dg.MetadataValue:
    rows = [
        (r.method, r.shard, r.items_sent, r.status, r.upload_session_id or r.handle, r.errors_count)
        for r in records
    ]
    if not rows:
        return dg.MetadataValue.md("_nothing to send_")
    return dg.MetadataValue.md(
        md_table(rows, ["method", "shard", "items", "status", "session/handle", "errors"])
    )


def fetch_fatal_errors(ctx: SyncContext, records: list[SyncRecord]) -> list[FetchedSyncErrors]:
    """Right after Meta finished an upload or batch, ask Meta for its fatal errors and warnings (Meta's Catalog
    Integration step 6, "Address fatal ingestion errors"). Call with no work connection open: network waits."""
    # Still processing (the status sensor hands it over when Meta is done), or failed: nothing to read.
    finished = [r for r in records if r.status.startswith("finished")]
    if not finished:
        return []
    return fetch_after_sync(ctx.client, refs_for_records(ctx.tenant_id, ctx.catalog_id, finished, ctx.db))


def record_fatal_errors(con, ctx: SyncContext, fetched: list[FetchedSyncErrors], step: TenantStep) -> int:
    """Store what ``fetch_fatal_errors`` read into catalog_diagnostics (short writes, no Meta call)."""
    total = 0
    for f in fetched:
        rep = apply_sync_errors(con, ctx.tenant_id, ctx.catalog_id, f)
        total += rep.fatal_errors
        if rep.fatal_errors:
            step.log.warning(
                f"{rep.method} {rep.sync_id}: {rep.fatal_errors} fatal ingestion error(s); "
                "see catalog_diagnostics"
            )
    return total


def run_sync(
    step: TenantStep,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
    fn,
) -> dg.MaterializeResult:
    """Run the sync method ``fn`` on the tenant's catalog, then read Meta's fatal errors, refresh the item state
    and publish; a blocked sync publishes what was settled and fails the step."""
    # No other sync of this catalog runs meanwhile: the step holds the tenant's sync lock (tenant_step, or the
    # fleet run while it syncs this tenant).
    with meta.get_client(logger=step.log) as client:
        ctx = sync_context(step, registry, warehouse, catalog_sync, client)
        ctx.apply_run_tags(step.run_tags)  # kobi/adopt_feed, kobi/override_deletion_guard
        try:
            records = fn(ctx)
        except SyncBlocked as exc:
            # Whatever was settled before the block (requests resolved, failed or expired) is published.
            with ctx.db() as con:
                refresh_item_state(con, ctx.tenant)
                warehouse.publish(con)
            raise dg.Failure(description=str(exc)) from None
        for rec in records:
            if rec.status == SURPLUS_STATUS:
                step.log.warning(rec.message or f"{rec.sync_id}: surplus deletions")
        fetched = fetch_fatal_errors(ctx, records)
        with ctx.db() as con:
            fatal = record_fatal_errors(con, ctx, fetched, step)
            delta = refresh_item_state_and_delta(con, ctx.tenant)
            warehouse.publish(con)
    return dg.MaterializeResult(
        metadata={
            "requests": len(records),
            "items_sent": sum(r.items_sent for r in records),
            "errors": sum(r.errors_count for r in records),
            "still_processing": sum(1 for r in records if r.status in ("submitted", "processing")),
            "surplus_deletions": sum(r.items_deleted for r in records if r.status == SURPLUS_STATUS),
            "fatal_ingestion_errors": fatal,
            "remaining_new_or_changed": delta.new + delta.changed,
            "remaining_volatile_only": delta.volatile_only,
            "requests_sent": _records_md(records),
        }
    )
