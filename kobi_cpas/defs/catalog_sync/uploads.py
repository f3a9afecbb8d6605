"""The steps that send items to Meta: the replace and update feed uploads and the Batch API price and stock
updates."""

import dagster as dg

from kobi_cpas.defs.catalog_sync.checks import OVERRIDE_TAG
from kobi_cpas.defs.catalog_sync.common import SYNC_ASSET
from kobi_cpas.defs.catalog_sync.step import tenant_step
from kobi_cpas.defs.catalog_sync.sync_step import run_sync
from kobi_cpas.defs.shared import WRITES_ROWS_OF
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.sync import methods

# The upload steps are Meta-side effects, not tables: each records its requests as rows of catalog_syncs (and
# fatal ingestion errors in catalog_diagnostics, item state in catalog_item_state); those tables' own assets,
# downstream, are materialized by the same job (catalog_syncs) or the diagnostics schedule.
_SYNC_WRITES = {
    **SYNC_ASSET["metadata"],
    WRITES_ROWS_OF: "catalog_syncs, catalog_item_state, catalog_diagnostics",
}


@dg.asset(**{**SYNC_ASSET, "metadata": _SYNC_WRITES}, deps=["replace_feed_plan"])
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
    step = tenant_step(context, catalog_sync)
    override = step.tag_is_true(OVERRIDE_TAG)
    return run_sync(
        step,
        registry,
        meta,
        warehouse,
        catalog_sync,
        lambda ctx: methods.run_replace(ctx, override_guard=override),
    )


@dg.asset(**{**SYNC_ASSET, "metadata": _SYNC_WRITES}, deps=["feed_snapshot"])
def update_feed_upload(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """New and changed items as an update_only upload (the hourly delta sync). Never deletes; new items enter
    the catalog only through feeds. A step at Meta, not a table: its requests are rows of catalog_syncs."""
    step = tenant_step(context, catalog_sync)
    return run_sync(step, registry, meta, warehouse, catalog_sync, methods.run_update)


@dg.asset(**{**SYNC_ASSET, "metadata": _SYNC_WRITES}, deps=["feed_snapshot"])
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
    step = tenant_step(context, catalog_sync)
    return run_sync(step, registry, meta, warehouse, catalog_sync, methods.run_batch)
