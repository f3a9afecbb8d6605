"""Analyst tables of the catalog sync domain."""

from __future__ import annotations

from kobi_cpas.feeds.fields import FIELDS
from kobi_cpas.warehouse.specs import TableSpec, col

_FIELD_DOCS = {
    "title": "Product title (max 150 characters)",
    "description": "Product description (max 5,000 characters)",
    "availability": "in stock, out of stock, preorder, available for order, discontinued, pending, ...",
    "condition": "new, refurbished, used, ...",
    "price": "Price as '<amount> <ISO 4217>', e.g. '299.00 TRY'",
    "sale_price": "Sale price as '<amount> <ISO 4217>'",
    "sale_price_effective_date": "ISO 8601 interval start/end of the sale price",
    "link": "Product page URL on the merchant's site",
    "image_link": "Main image URL",
    "brand": "Brand (max 100 characters)",
    "item_group_id": "Groups the variants of one product",
    "quantity_to_sell_on_facebook": "Stock quantity offered on Meta",
    "previous_id": "Former retailer id this variant replaces (from the feed or inferred by Kobi)",
}


def _field_cols():
    return tuple(
        col(f.name, "VARCHAR", _FIELD_DOCS.get(f.name) or f.description or f"Meta commerce field {f.name}")
        for f in FIELDS
        if f.name != "id"
    )


FEED_SNAPSHOTS = TableSpec(
    name="feed_snapshots",
    domain="catalog_sync",
    comment="One row per feed snapshot taken per tenant, with item counts (history is kept).",
    key=("tenant_id", "snapshot_id"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("snapshot_id", "VARCHAR", "Snapshot id (tenant, time and content hash)", False),
        col("taken_at", "TIMESTAMPTZ", "When the snapshot was taken", False),
        col("source", "VARCHAR", "Feed source (path, or URL without credentials and secret query values)"),
        col("format", "VARCHAR", "csv, tsv or xml"),
        col("source_sha256", "VARCHAR", "sha256 of the feed file"),
        col("source_bytes", "BIGINT", "Size of the feed file in bytes"),
        col(
            "not_modified",
            "BOOLEAN",
            "True when the source answered 304 / was unchanged and was not re-parsed",
        ),
        col("item_count", "BIGINT", "Items (rows) in the feed"),
        col("valid_count", "BIGINT", "Items without errors"),
        col(
            "invalid_count",
            "BIGINT",
            "Items with at least one error (kept out of the sync, last valid version kept)",
        ),
        col("error_count", "BIGINT", "Issues of severity error"),
        col("warning_count", "BIGINT", "Issues of severity warning"),
        col("new_count", "BIGINT", "Items Meta does not hold yet"),
        col("changed_count", "BIGINT", "Items whose non-volatile content changed"),
        col(
            "volatile_count",
            "BIGINT",
            "Items whose only change is price/sale price/availability/quantity",
        ),
        col("unchanged_count", "BIGINT", "Items identical to what Meta holds"),
        col(
            "removed_count",
            "BIGINT",
            "Valid items of the last good snapshot that left the feed (retained out of stock or dropped)",
        ),
        col("retained_count", "BIGINT", "Items gone from the source but kept as out of stock (retention)"),
        col("duration_seconds", "DOUBLE", "Time to fetch, parse, validate, hash and store"),
        col(
            "status",
            "VARCHAR",
            "ok, not_modified (source unchanged, not re-parsed), held (shrink guard: read but not applied) "
            "or failed (download failed or file unusable)",
        ),
        col("message", "VARCHAR", "Why the snapshot failed or was held (or why a shrink was let through)"),
    ),
)

FEED_ITEMS = TableSpec(
    name="feed_items",
    domain="catalog_sync",
    comment="The latest valid snapshot per tenant: one row per valid item with its Meta commerce fields.",
    key=("tenant_id", "retailer_id"),
    # The two hashes cover every field; the typed columns are listed too, since an older row gets them later
    # without its hashes changing (snapshot_step fills them in).
    row_identity=(
        "tenant_id",
        "snapshot_id",
        "retailer_id",
        "content_hash",
        "volatile_hash",
        "price_amount",
        "currency",
        "sale_price_amount",
        "quantity",
    ),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col(
            "snapshot_id",
            "VARCHAR",
            "Snapshot in which the item's current version arrived (an unchanged item keeps its row)",
            False,
        ),
        col("retailer_id", "VARCHAR", "The item's id in the feed (Meta's retailer_id)", False),
        *_field_cols(),
        col("content_hash", "UBIGINT", "Hash of the non-volatile fields (changes when any of them does)"),
        col("volatile_hash", "UBIGINT", "Hash of price, sale price, its dates, availability and quantity"),
        # Typed beside the text Meta takes, for analysts' sums and comparisons.
        col("price_amount", "DECIMAL(18,2)", "price as a number, in currency"),
        col("currency", "VARCHAR", "ISO 4217 currency of price and sale_price, e.g. TRY"),
        col("sale_price_amount", "DECIMAL(18,2)", "sale_price as a number, in currency (NULL: not on sale)"),
        col("quantity", "BIGINT", "quantity_to_sell_on_facebook as a number (NULL: not given)"),
    ),
)

FEED_ITEM_ISSUES = TableSpec(
    name="feed_item_issues",
    domain="catalog_sync",
    comment="Problems found in the latest applied snapshot per tenant, one row per item, field and problem, "
    "with a call to action, plus one file-level row when the latest download or file failed (feed_file_error) "
    "or a snapshot is held by the shrink guard (feed_shrink_held). A broken item never stops the others.",
    key=("tenant_id", "snapshot_id", "retailer_id", "field", "code"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("snapshot_id", "VARCHAR", "Snapshot the issue was found in", False),
        col("retailer_id", "VARCHAR", "Item id (NULL for file-level issues)"),
        col("row_number", "BIGINT", "1-based item number in the feed file"),
        col("field", "VARCHAR", "Field concerned"),
        col("severity", "VARCHAR", "error (item not synced), warning or info"),
        col("code", "VARCHAR", "Stable issue code, e.g. missing_required, invalid_price"),
        col("message", "VARCHAR", "What is wrong, with the offending value"),
        col("call_to_action", "VARCHAR", "What to change in the feed"),
    ),
)

CATALOG_SYNCS = TableSpec(
    name="catalog_syncs",
    domain="catalog_sync",
    comment="One row per replace upload, update upload or Batch API request sent to Meta.",
    key=("sync_id",),
    columns=(
        col("sync_id", "VARCHAR", "Kobi id of the sync request", False),
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("catalog_id", "VARCHAR", "Meta catalog id", False),
        col("method", "VARCHAR", "replace, update or batch", False),
        col("shard", "INTEGER", "Catalog shard (0 when not sharded)", False),
        col("snapshot_id", "VARCHAR", "Snapshot the request was computed from"),
        col("started_at", "TIMESTAMPTZ", "When the request was sent"),
        col("finished_at", "TIMESTAMPTZ", "When Meta finished processing (NULL while processing)"),
        col("items_sent", "BIGINT", "Items in the upload or batch request"),
        col(
            "status",
            "VARCHAR",
            "submitted, processing, finished, finished_with_surplus_deletions (Meta deleted more items than "
            "the replace planned: see message), failed (Meta refused the request or its handle/session, or "
            "ended it unfinished; items re-sent), expired (unresolved past the max age: 2 h batches, 6 h "
            "uploads; items re-sent), blocked or skipped",
        ),
        col("upload_session_id", "VARCHAR", "Meta upload session id (feeds)"),
        col("handle", "VARCHAR", "Meta batch handle (Batch API)"),
        col("feed_id", "VARCHAR", "Meta product feed id (feeds)"),
        col("errors_count", "BIGINT", "Errors Meta reported"),
        col("warnings_count", "BIGINT", "Warnings Meta reported"),
        col("items_deleted", "BIGINT", "Items Meta deleted (replace uploads)"),
        col(
            "message",
            "VARCHAR",
            "Why the request was blocked, skipped, failed or expired; surplus deletions",
        ),
        col("run_id", "VARCHAR", "Dagster run that sent the request"),
    ),
)

CATALOG_ITEM_STATE = TableSpec(
    name="catalog_item_state",
    domain="catalog_sync",
    comment="Per tenant item: what the next replace feed sends and what Kobi believes Meta holds.",
    key=("tenant_id", "retailer_id"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id", False),
        col("retailer_id", "VARCHAR", "Item id", False),
        col("shard", "INTEGER", "Catalog shard"),
        col("item_group_id", "VARCHAR", "Variant group"),
        col(
            "desired_status",
            "VARCHAR",
            "active, invalid_kept (last valid version kept), removed_retained "
            "(out of stock until retention ends) or NULL (to be deleted by the next replace feed); for items "
            "adopted from the brand's existing catalog that the feed does not send: adopted_retained (out of "
            "stock until drop_after, then deleted through the Batch API), adopted_held (past drop_after, the "
            "deletion held by adopted_deletion_guard until a person confirms), adopted_kept (sync.adopted_items: "
            "keep) or adopted_deleted",
        ),
        col(
            "change",
            "VARCHAR",
            "new, changed, volatile_only, unchanged or removed versus Meta (NULL for adopted items)",
        ),
        col("in_flight", "BOOLEAN", "Sent in a request Meta has not confirmed yet"),
        col("availability", "VARCHAR", "Availability the next replace feed sends"),
        col("price", "VARCHAR", "Price the next replace feed sends"),
        col("previous_id", "VARCHAR", "Former id this variant replaces"),
        col("previous_id_source", "VARCHAR", "feed or inferred"),
        col("meta_method", "VARCHAR", "Method that last synced the item to Meta"),
        col("meta_synced_at", "TIMESTAMPTZ", "When Meta last confirmed the item"),
        col(
            "removed_at",
            "TIMESTAMPTZ",
            "When the item left the source (adopted items: when Kobi adopted them)",
        ),
        col(
            "drop_after",
            "TIMESTAMPTZ",
            "When a retained item leaves the replace feed, or an adopted item is deleted (NULL: kept)",
        ),
        col("deleted_at", "TIMESTAMPTZ", "When Kobi deleted the adopted item at Meta (Batch API DELETE)"),
    ),
)

ANALYST_TABLES = (FEED_SNAPSHOTS, FEED_ITEMS, FEED_ITEM_ISSUES, CATALOG_SYNCS, CATALOG_ITEM_STATE)
