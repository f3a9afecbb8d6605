"""The feed ingest step: feed_snapshot and the two other feed tables it writes (feed_items, feed_item_issues),
with the results of its checks."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from kobi_cpas.defs.catalog_sync.checks import (
    FEED_READABLE,
    INVALID_SHARE,
    SHRINK_GUARD,
    feed_snapshot_check_specs,
)
from kobi_cpas.defs.catalog_sync.common import GROUP
from kobi_cpas.defs.catalog_sync.step import TenantStep, tenant_step
from kobi_cpas.defs.shared import (
    OWNERS_DATA,
    specs_by_key,
    table_result,
    table_spec,
)
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.resources import CatalogSyncResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.sync.feed_download import current_manifest
from kobi_cpas.sync.shrink_guard import OVERRIDE_SHRINK_TAG
from kobi_cpas.sync.snapshot_step import ingest_snapshot
from kobi_cpas.sync.tables import FEED_ITEM_ISSUES, FEED_ITEMS, FEED_SNAPSHOTS


class FeedSnapshotConfig(dg.Config):
    force: bool = False  # re-parse even when the source is unchanged (ETag / sha256)


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
    step = tenant_step(context, catalog_sync)
    yield from snapshot_results(step, config.force, registry, warehouse, catalog_sync)


def snapshot_results(
    step: TenantStep,
    force: bool,
    registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> Iterator[dg.MaterializeResult]:
    """Ingest the tenant's downloaded feed; the results of feed_snapshot, feed_item_issues and (when the
    snapshot was applied) feed_items, the first carrying the three checks."""
    reg, tenant = registry.tenant(step.tenant_id)
    tid = tenant.tenant_id
    workdir = Path(catalog_sync.workdir) / tid
    # Before the database is opened: no waiting inside it (a URL is only ever fetched by feed_file).
    manifest = current_manifest(reg, tenant, workdir)
    override = step.tag_is_true(OVERRIDE_SHRINK_TAG)
    with warehouse.connection() as con:
        outcome = ingest_snapshot(
            con,
            tenant=tenant,
            workdir=workdir,
            manifest=manifest,
            now=datetime.now(UTC),
            force=force,
            override_shrink_guard=override,
        )
        started = time.perf_counter()
        warehouse.publish(con)
        outcome.stage_seconds["publish"] = round(time.perf_counter() - started, 3)
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
            step.log.error(outcome.message or "feed snapshot failed")
        elif not applied:
            step.log.warning(outcome.message or "feed snapshot held")
        else:
            step.log.info(f"snapshot {outcome.snapshot_id}: {outcome.status}; delta {outcome.delta}")
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
        "dropped_from_catalog": delta.dropped if delta else 0,
        "retained_out_of_stock": desired.removed_retained if desired else 0,
        "invalid_kept_last_valid": desired.invalid_kept if desired else 0,
        "previous_id_inferred": desired.previous_id_inferred if desired else 0,
        # The rows normalised and validated in this snapshot: all of them, or only the changed ones when the
        # feed was ingested incrementally (kobi_cpas.feeds.incremental); none when it was not modified.
        "rows_validated": outcome.ingest.rows_validated if outcome.ingest else 0,
        # How the file was read: "full", or incrementally by its "lines" or its "rows" (kobi_cpas.feeds.incremental*).
        "ingest": (outcome.ingest.incremental_by or "full") if outcome.ingest else "not_modified",
        "seconds_by_stage": outcome.stage_seconds,
    }
