from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from kobi_cpas.defs.catalog_sync.checks import (
    DELETION_GUARD,
    FEED_READABLE,
    INVALID_SHARE,
    OVERRIDE_TAG,
    SHRINK_GUARD,
    feed_snapshot_check_specs,
    replace_plan_check_specs,
)
from kobi_cpas.defs.shared import (
    DUCKDB_POOL,
    OWNERS_DATA,
    WRITES_ROWS_OF,
    count,
    md_table,
    specs_by_key,
    table_definition_metadata,
    table_result,
    table_spec,
)
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.diagnostics.after_sync import fatal_errors_for_sync
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.sync import methods
from kobi_cpas.sync.delta import delta_counts
from kobi_cpas.sync.feed_download import current_manifest, download_feed
from kobi_cpas.sync.guards import SURPLUS_STATUS
from kobi_cpas.sync.methods import SyncBlocked, SyncContext, SyncRecord, plan_replace
from kobi_cpas.sync.shrink_guard import OVERRIDE_SHRINK_TAG
from kobi_cpas.sync.snapshot_step import ingest_snapshot, refresh_item_state
from kobi_cpas.sync.tables import (
    CATALOG_ITEM_STATE,
    CATALOG_SYNCS,
    FEED_ITEM_ISSUES,
    FEED_ITEMS,
    FEED_SNAPSHOTS,
)
from kobi_cpas.warehouse.tables import META_DRY_RUN_WRITES

GROUP = "catalog_sync"
SHARD_TAG = "kobi/catalog_shard"
SYNC_KINDS = {"meta", "duckdb"}
# Shared by the assets that talk to Meta and write DuckDB for one tenant catalog.
SYNC_ASSET = dict(
    group_name=GROUP, owners=OWNERS_DATA, kinds=SYNC_KINDS, partitions_def=tenant_partitions, pool=DUCKDB_POOL
)


class FeedSnapshotConfig(dg.Config):
    force: bool = False  # re-parse even when the source is unchanged (ETag / sha256)


def _sync_context(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
    client,
) -> SyncContext:
    _, tenant = registry.tenant(context.partition_key)
    return SyncContext(
        tenant=tenant,
        client=client,
        warehouse=warehouse.get_warehouse(),
        workdir=Path(catalog_sync.workdir) / tenant.tenant_id,
        run_id=context.run_id,
        progress=context.log.info,
        poll_interval=catalog_sync.poll_interval_seconds,
        poll_timeout=catalog_sync.poll_timeout_seconds,
    )


def _guard_overlap(context: dg.AssetExecutionContext) -> None:
    """Fail fast when another sync run of the same tenant catalog is in progress (UI launches carry no
    concurrency tag; the schedules skip such ticks before launching)."""
    tenant_id = context.partition_key
    active = context.instance.get_run_records(
        dg.RunsFilter(
            tags={SHARD_TAG: tenant_id},
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
        ),
        limit=5,
    )
    others = [r.dagster_run.run_id for r in active if r.dagster_run.run_id != context.run_id]
    if others:
        raise dg.Failure(
            description=f"tenant '{tenant_id}': another catalog sync run is in progress ({', '.join(others)}); "
            "syncs of one catalog never overlap — wait for it and re-run"
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


@dg.asset(
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"http", "file"},
    partitions_def=tenant_partitions,
    deps=["tenant_registry"],
)
def feed_file(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """The tenant's feed file as fetched now into its workdir, with a JSON manifest (outcome, validators, sha256,
    size, failure message) that feed_snapshot ingests. Outside the duckdb_write pool and with no database open:
    a slow feed server costs only this step, bounded by the tenant's total deadline and size cap
    (feed.download_deadline_seconds, feed.max_bytes). A failed download is recorded, not raised: feed_snapshot
    turns it into a failed snapshot, a FEED_FILE_ERROR diagnostic and a failing feed_file_readable check."""
    reg, tenant = registry.tenant(context.partition_key)
    manifest = download_feed(reg, tenant, Path(catalog_sync.workdir) / tenant.tenant_id)
    if manifest.ok:
        context.log.info(
            f"feed {manifest.source}: {'not modified' if manifest.not_modified else 'fetched'}, "
            f"{manifest.size_bytes or 0:,} bytes in {manifest.duration_seconds:.1f} s"
        )
    else:
        context.log.warning(manifest.message or "feed download failed")
    return dg.MaterializeResult(
        metadata={
            "outcome": manifest.outcome,
            "source": manifest.source,
            "not_modified": manifest.not_modified,
            "sha256": manifest.sha256 or "",
            "size_bytes": manifest.size_bytes or 0,
            "duration_seconds": round(manifest.duration_seconds, 3),
            "message": manifest.message or "",
        }
    )


def _invalid_share_result(item_count: int, invalid_count: int) -> dg.AssetCheckResult:
    share = invalid_count / item_count if item_count else 0.0
    return dg.AssetCheckResult(
        check_name=INVALID_SHARE,
        passed=share <= 0.05,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"invalid_share": share, "invalid_items": invalid_count},
        description=None
        if share <= 0.05
        else f"{share:.1%} of the feed's items are invalid: see feed_item_issues for the call to action per item",
    )


# One step writes the three feed tables; each is its own asset (schema, row count, preview of its own rows).
_FEED_TABLE = dict(
    group_name=GROUP, owners=OWNERS_DATA, kinds={"duckdb", "csv"}, deps=["tenant_registry", "feed_file"]
)
FEED = specs_by_key(
    table_spec(
        "feed_snapshot",
        FEED_SNAPSHOTS,
        description="The tenant's feed snapshot as of now: the downloaded feed_file parsed, validated and "
        "hashed (skipped when its sha256 is unchanged), with the replace view (what the next replace feed "
        "sends) rebuilt from it. One row per snapshot in feed_snapshots (counts, delta, status); a snapshot "
        "whose valid items shrink past the tenant's threshold is held (feed_shrink_guard), a feed that "
        "cannot be read fails (feed_file_readable).",
        **_FEED_TABLE,
    ),
    table_spec(
        "feed_items",
        FEED_ITEMS,
        description="The valid items of the tenant's latest applied feed snapshot, one row per retailer_id. "
        "Not materialized when the snapshot failed or was held: the previous items stay.",
        skippable=True,
        **_FEED_TABLE,
    ),
    table_spec(
        "feed_item_issues",
        FEED_ITEM_ISSUES,
        description="Problems of the tenant's latest feed snapshot, per item and field (or the whole file), "
        "each with a call to action.",
        **_FEED_TABLE,
    ),
)


@dg.multi_asset(
    specs=list(FEED.values()),
    partitions_def=tenant_partitions,
    pool=DUCKDB_POOL,
    check_specs=feed_snapshot_check_specs,
    can_subset=False,
)
def feed_snapshot(
    context: dg.AssetExecutionContext,
    config: FeedSnapshotConfig,
    registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
):
    """Ingest the downloaded feed file into feed_snapshots, feed_items and feed_item_issues in one transaction
    (and the sync state the uploads read)."""
    reg, tenant = registry.tenant(context.partition_key)
    tid = tenant.tenant_id
    workdir = Path(catalog_sync.workdir) / tid
    # Before the database is opened: no waiting inside it (a URL is only ever fetched by feed_file).
    manifest = current_manifest(reg, tenant, workdir)
    override = context.run.tags.get(OVERRIDE_SHRINK_TAG, "").lower() == "true"
    with warehouse.connection() as con:
        outcome = ingest_snapshot(
            con,
            tenant=tenant,
            workdir=workdir,
            manifest=manifest,
            now=datetime.now(UTC),
            force=config.force,
            override_shrink_guard=override,
        )
        warehouse.publish(con)
        snap = con.execute(
            "SELECT item_count, valid_count, invalid_count FROM main.feed_snapshots WHERE tenant_id = ? "
            "AND status = 'ok' ORDER BY taken_at DESC LIMIT 1",
            [tid],
        ).fetchone()
        item_count, valid_count, invalid_count = (int(x or 0) for x in (snap or (0, 0, 0)))
        failed = outcome.status == "failed"
        applied = outcome.status not in ("failed", "held")
        shrink = outcome.shrink
        if failed:
            context.log.error(outcome.message or "feed snapshot failed")
        elif not applied:
            context.log.warning(outcome.message or "feed snapshot held")
        else:
            context.log.info(f"snapshot {outcome.snapshot_id}: {outcome.status}; delta {outcome.delta}")
        ingest = outcome.ingest
        if applied:
            invalid = _invalid_share_result(item_count, invalid_count)
        elif ingest:
            invalid = _invalid_share_result(ingest.item_count, ingest.invalid_count)
        else:
            invalid = dg.AssetCheckResult(check_name=INVALID_SHARE, passed=True, description="feed not read")
        checks = [
            dg.AssetCheckResult(
                check_name=FEED_READABLE,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=outcome.message if failed else None,
                metadata={"source": outcome.source},
            ),
            dg.AssetCheckResult(
                check_name=SHRINK_GUARD,
                # A held snapshot fails it; a failed one was not read (its own check fails); an applied one
                # carries the note when the guard was overridden or the drop confirmed.
                passed=outcome.status != "held",
                severity=dg.AssetCheckSeverity.ERROR,
                description="feed not read" if failed else outcome.message,
                metadata=shrink.metadata() if shrink else {},
            ),
            invalid,
        ]
        where, params = "tenant_id = ?", [tid]
        # Recorded and published either way; on a failed or held snapshot the blocking checks stop this run's
        # syncs and the previous snapshot's items stay what Meta gets.
        yield table_result(
            FEED["feed_snapshot"],
            con,
            where,
            params,
            "SELECT snapshot_id, taken_at, status, item_count, valid_count, invalid_count, new_count, "
            "changed_count, removed_count, message FROM main.feed_snapshots WHERE tenant_id = ? "
            "ORDER BY taken_at DESC LIMIT 11",
            metadata=_snapshot_metadata(outcome, item_count, valid_count, invalid_count),
            check_results=checks,
        )
        yield table_result(
            FEED["feed_item_issues"],
            con,
            where,
            params,
            "SELECT retailer_id, row_number, field, severity, message, call_to_action FROM main.feed_item_issues "
            "WHERE tenant_id = ? ORDER BY CASE severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, "
            "row_number LIMIT 11",
        )
        if applied:
            yield table_result(
                FEED["feed_items"],
                con,
                where,
                params,
                "SELECT retailer_id, title, availability, price, sale_price, brand, item_group_id "
                "FROM main.feed_items WHERE tenant_id = ? ORDER BY retailer_id LIMIT 11",
                metadata={"snapshot_id": outcome.snapshot_id, "rewritten": outcome.ingest is not None},
            )


def _snapshot_metadata(outcome, item_count: int, valid_count: int, invalid_count: int) -> dict:
    base = {
        "snapshot_id": outcome.snapshot_id,
        "status": outcome.status,
        "source": outcome.source,
        "removed_from_feed": outcome.removed_from_feed,
    }
    if outcome.status in ("failed", "held"):
        return {**base, "message": outcome.message or ""}
    delta, desired = outcome.delta, outcome.desired
    return {
        **base,
        "items_in_feed": item_count,
        "valid_items": valid_count,
        "invalid_items": invalid_count,
        "new": delta.new if delta else 0,
        "changed": delta.changed if delta else 0,
        "volatile_only": delta.volatile_only if delta else 0,
        "unchanged": delta.unchanged if delta else 0,
        "removed": delta.removed if delta else 0,
        "retained_out_of_stock": desired.removed_retained if desired else 0,
        "invalid_kept_last_valid": desired.invalid_kept if desired else 0,
        "previous_id_inferred": desired.previous_id_inferred if desired else 0,
    }


@dg.asset(
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"duckdb"},
    partitions_def=tenant_partitions,
    pool=DUCKDB_POOL,
    deps=["feed_snapshot"],
    check_specs=replace_plan_check_specs,
    metadata={WRITES_ROWS_OF: "none"},
)
def replace_feed_plan(
    context: dg.AssetExecutionContext, registry: TenantRegistryResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """What the next replace upload would do per shard: items sent, live items at Meta, items Meta would delete,
    live items it would flip to out of stock (retention), and unconfirmed surplus deletions of earlier replaces.
    Its blocking check (the deletion guard) stops an empty upload, one deleting or flipping too much of the
    catalog, and any replace while Meta's surplus deletions wait for a person's confirmation."""
    _, tenant = registry.tenant(context.partition_key)
    with warehouse.connection() as con:
        plans = plan_replace(con, tenant)
    override = context.run.tags.get(OVERRIDE_TAG, "").lower() == "true"
    blocked = [p.blocked_reason for p in plans if p.blocked_reason]
    rows = [
        (
            p.shard,
            p.items,
            p.live,
            p.deletions,
            p.flips,
            sum(s.surplus for s in p.surplus),
            f"{p.delete_share:.1%}",
        )
        for p in plans
    ]
    surplus = sum(s.surplus for p in plans for s in p.surplus)
    passed = not blocked or override
    desc = None
    if blocked:
        desc = ("OVERRIDDEN by run tag: " if override else "BLOCKED: ") + "; ".join(blocked)
        if not override:
            desc += f". If this is intended, re-run with the run tag {OVERRIDE_TAG}=true."
    return dg.MaterializeResult(
        metadata={
            "items_to_send": sum(p.items for p in plans),
            "live_items": sum(p.live for p in plans),
            "deletions": sum(p.deletions for p in plans),
            "retention_flips": sum(p.flips for p in plans),
            "unconfirmed_surplus_deletions": surplus,
            "plan": dg.MetadataValue.md(
                md_table(rows, ["shard", "items", "live", "deletions", "flips", "surplus", "share"])
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=DELETION_GUARD,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=desc,
                metadata={
                    "deletions": sum(p.deletions for p in plans),
                    "retention_flips": sum(p.flips for p in plans),
                    "unconfirmed_surplus_deletions": surplus,
                    "live": sum(p.live for p in plans),
                    "max_delete_share": tenant.sync.max_delete_share,
                    "overridden": override and bool(blocked),
                },
            )
        ],
    )


def _read_fatal_errors(client, con, ctx: SyncContext, records: list[SyncRecord], context) -> int:
    """Right after Meta finished an upload or batch, read its fatal errors and warnings into
    catalog_diagnostics (Meta's Catalog Integration step 6, "Address fatal ingestion errors")."""
    total = 0
    for rec in records:
        if not rec.status.startswith("finished"):
            continue  # still processing (the status sensor hands it over when Meta is done), or failed
        rep = fatal_errors_for_sync(client, con, ctx.tenant_id, ctx.catalog_id, rec.sync_id)
        total += rep.fatal_errors
        if rep.fatal_errors:
            context.log.warning(
                f"{rec.method} {rec.sync_id}: {rep.fatal_errors} fatal ingestion error(s); "
                "see catalog_diagnostics"
            )
    return total


def _run_sync(context, registry, meta, warehouse, catalog_sync, fn) -> dg.MaterializeResult:
    _guard_overlap(context)
    with meta.get_client(logger=context.log) as client:
        ctx = _sync_context(context, registry, meta, warehouse, catalog_sync, client)
        ctx.apply_run_tags(context.run.tags)  # kobi/adopt_feed, kobi/override_deletion_guard
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
                context.log.warning(rec.message or f"{rec.sync_id}: surplus deletions")
        with ctx.db() as con:
            fatal = _read_fatal_errors(client, con, ctx, records, context)
            refresh_item_state(con, ctx.tenant)
            delta = delta_counts(con, ctx.tenant_id)
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


# The upload steps are Meta-side effects, not tables: each records its requests as rows of catalog_syncs (and
# fatal ingestion errors in catalog_diagnostics, item state in catalog_item_state); those tables' own assets,
# downstream, are materialized by the same job (catalog_syncs) or the diagnostics schedule.
_SYNC_WRITES = {WRITES_ROWS_OF: "catalog_syncs, catalog_item_state, catalog_diagnostics"}


@dg.asset(**SYNC_ASSET, deps=[replace_feed_plan], metadata=_SYNC_WRITES)
def replace_feed_upload(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """The full replace view uploaded to the tenant's primary feed (one feed per shard), polled until Meta
    finishes: the daily (or hourly) full sync. Items gone from the source stay as out of stock until their
    retention ends; the deletion guard upstream stops accidental wipes. A step at Meta, not a table: its
    requests are rows of catalog_syncs."""
    override = context.run.tags.get(OVERRIDE_TAG, "").lower() == "true"
    return _run_sync(
        context,
        registry,
        meta,
        warehouse,
        catalog_sync,
        lambda ctx: methods.run_replace(ctx, override_guard=override),
    )


@dg.asset(**SYNC_ASSET, deps=["feed_snapshot"], metadata=_SYNC_WRITES)
def update_feed_upload(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """New and changed items as an update_only upload (the hourly delta sync). Never deletes; new items enter
    the catalog only through feeds. A step at Meta, not a table: its requests are rows of catalog_syncs."""
    return _run_sync(context, registry, meta, warehouse, catalog_sync, methods.run_update)


@dg.asset(**SYNC_ASSET, deps=["feed_snapshot"], metadata=_SYNC_WRITES)
def price_stock_batch(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """Volatile-only changes (price, sale price, availability, quantity) as Batch API UPDATE requests,
    allow_upsert=false, at most 5,000 per call, one request per item: the 15-minute near-real-time sync.
    Handles are confirmed later by catalog_syncs (the batch status sensor). A step at Meta, not a table."""
    return _run_sync(context, registry, meta, warehouse, catalog_sync, methods.run_batch)


_SYNC_TABLE = dict(group_name=GROUP, owners=OWNERS_DATA, kinds=SYNC_KINDS)
SYNCS = specs_by_key(
    table_spec(
        "catalog_syncs",
        CATALOG_SYNCS,
        description="Every upload and batch request sent to Meta for the tenant, with Meta's verdict. The "
        "upload steps (replace_feed_upload, update_feed_upload, price_stock_batch) append its rows; this "
        "asset, which every sync job ends with and the status sensor runs alone, owns the table: it asks "
        "Meta about requests still processing (upload sessions, batch handles), confirms their items and "
        "records the table as the run left it.",
        deps=["replace_feed_upload", "update_feed_upload", "price_stock_batch"],
        **_SYNC_TABLE,
    ),
    table_spec(
        "catalog_item_state",
        CATALOG_ITEM_STATE,
        description="Per item of the tenant: the desired version (from the feed) against what Meta "
        "confirmed, with the change still to send and the retention of removed items. Rebuilt by "
        "feed_snapshot and the upload steps too; recorded here, at the end of each sync job, as the run "
        "left it.",
        deps=["feed_items", "catalog_syncs"],
        lineage={
            "retailer_id": [("feed_items", "retailer_id")],
            "item_group_id": [("feed_items", "item_group_id")],
            "availability": [("feed_items", "availability")],
            "price": [("feed_items", "price")],
            "previous_id": [("feed_items", "previous_id")],
            "meta_method": [("catalog_syncs", "method")],
            "meta_synced_at": [("catalog_syncs", "finished_at")],
        },
        **_SYNC_TABLE,
    ),
)


@dg.multi_asset(
    specs=list(SYNCS.values()),
    partitions_def=tenant_partitions,
    pool=DUCKDB_POOL,
    can_subset=False,
)
def catalog_syncs(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
):
    """Resolve the tenant's requests still processing at Meta, then record catalog_syncs and catalog_item_state."""
    _, tenant = registry.tenant(context.partition_key)
    with meta.get_client(logger=context.log) as client:
        ctx = _sync_context(context, registry, meta, warehouse, catalog_sync, client)
        ctx.apply_run_tags(context.run.tags)
        resolved = methods.resolve_pending(ctx, wait=False)
        with warehouse.connection() as con:
            _read_fatal_errors(client, con, ctx, resolved, context)
    where, params = "tenant_id = ?", [tenant.tenant_id]
    with warehouse.connection() as con:
        refresh_item_state(con, tenant)
        pending = count(
            con,
            "SELECT count(*) FROM main.catalog_syncs WHERE tenant_id = ? AND status IN ('submitted', 'processing')",
            params,
        )
        warehouse.publish(con)
        yield table_result(
            SYNCS["catalog_syncs"],
            con,
            where,
            params,
            "SELECT method, shard, started_at, finished_at, items_sent, status, errors_count, "
            "coalesce(upload_session_id, handle) AS session_or_handle FROM main.catalog_syncs WHERE tenant_id = ? "
            "ORDER BY started_at DESC LIMIT 10",
            metadata={"resolved_now": len(resolved), "still_processing": pending},
        )
        changes = con.execute(
            "SELECT change, count(*) FROM main.catalog_item_state WHERE tenant_id = ? GROUP BY ALL ORDER BY 1",
            params,
        ).fetchall()
        yield table_result(
            SYNCS["catalog_item_state"],
            con,
            where,
            params,
            "SELECT retailer_id, shard, desired_status, change, in_flight, availability, price, meta_method, "
            "meta_synced_at FROM main.catalog_item_state WHERE tenant_id = ? "
            "ORDER BY change IS NULL, change, retailer_id LIMIT 11",
            metadata={"by_change": dg.MetadataValue.md(md_table(changes, ["change", "items"]))},
        )


meta_dry_run_writes = dg.AssetSpec(
    "meta_dry_run_writes",
    description="The Meta writes (POST or DELETE) dry runs did not send, one row each. No step computes it: "
    "the Meta and warehouse resources of any step of a dry run (run tag kobi/dry_run=true) append its rows, "
    "so it is an external asset here, owned by no step.",
    group_name=GROUP,
    owners=OWNERS_DATA,
    kinds={"duckdb"},
    metadata=table_definition_metadata(META_DRY_RUN_WRITES),
)
