"""The step every sync job ends with: Meta's verdict on requests still processing, recorded in catalog_syncs and
catalog_item_state."""

from collections.abc import Iterator

import dagster as dg

from kobi_cpas.defs.catalog_sync.common import GROUP, SYNC_KINDS
from kobi_cpas.defs.catalog_sync.step import TenantStep, tenant_step
from kobi_cpas.defs.catalog_sync.sync_step import fetch_fatal_errors, record_fatal_errors, sync_context
from kobi_cpas.defs.shared import (
    OWNERS_DATA,
    count,
    md_table,
    specs_by_key,
    table_result,
    table_spec,
)
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.diagnostics.collect import FetchedSyncErrors
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)
from kobi_cpas.sync import methods
from kobi_cpas.sync.item_state import refresh_item_state
from kobi_cpas.sync.tables import CATALOG_ITEM_STATE, CATALOG_SYNCS

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
    step = tenant_step(context, catalog_sync)
    yield from syncs_results(step, registry, meta, warehouse, catalog_sync)


def syncs_results(
    step: TenantStep,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> Iterator[dg.MaterializeResult]:
    """Ask Meta about the tenant's requests still processing; the results of catalog_syncs and
    catalog_item_state."""
    _, tenant = registry.tenant(step.tenant_id)
    fetched: list[FetchedSyncErrors] = []

    def fetch(resolved: list[methods.SyncRecord]) -> None:
        fetched.extend(fetch_fatal_errors(ctx, resolved))

    where, params = "tenant_id = ?", [tenant.tenant_id]
    with meta.get_client(logger=step.log) as client:
        ctx = sync_context(step, registry, warehouse, catalog_sync, client)
        ctx.apply_run_tags(step.run_tags)
        # One work connection when nothing is pending (the usual end of an upload job); otherwise Meta is
        # asked about the pending requests, and for their fatal errors, with none open.
        with methods.settled_db(ctx, wait=False, after_settling=fetch) as (con, resolved):
            record_fatal_errors(con, ctx, fetched, step)
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
