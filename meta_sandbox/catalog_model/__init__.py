"""The sandbox's model of a Meta catalog's items: feed parsing, Meta-like validation, applying uploads and
Batch API requests, and the item problems diagnostics report.

Modules (this package re-exports their public names, so ``catalog_model.X`` keeps working):

- ``issues``: ingestion issues (feed upload errors, Batch API messages) and the field checks;
- ``feed_files``: parsing CSV/TSV feeds, fetching a feed URL;
- ``items``: items of ``Catalog.items`` and their Graph nodes (create, update, delete);
- ``uploads``: feed upload sessions and applying a parsed file;
- ``batch``: the Batch API (checks, status, apply);
- ``lifecycle``: when uploads and batches complete (polls, world clock);
- ``error_types``: item error types, diagnostic groups and locales (data in ``sandbox/data/error_types.json``);
- ``diagnostics``: item problems and ``GET /{catalog_id}/diagnostics``;
- ``products``: served ProductItem fields and the products ``filter`` (``kobi_cpas.registry.filters``).

Conventions (mirroring Meta's):
- Feed ``row_number`` is 1 for the first data record after the header (records, not physical lines: a quoted
  multi-line description is one record). Batch ``line`` is the 0-based index of the request in ``requests``.
- Item fields are stored as received, trimmed; a blank value removes the field. ``Catalog.items`` maps
  retailer_id -> fields; ``World.product_items`` holds the Graph node (product_item_id) of each item.
- A replace upload (``update_only`` false) on a feed with ``deletion_enabled`` deletes the items *of that
  feed* (the feed whose upload last wrote them) that are not valid rows of the file; an empty replace upload
  therefore deletes all of them. Items only ever written by the Batch API belong to no feed.
- Uploads complete after ``upload_pending_polls`` status polls, or by world clock when
  ``upload_processing_seconds`` > 0; batches finish ``batch_processing_seconds`` after the call. Work is
  applied in the order it completes; ``settle`` applies whatever the world clock has made due.
- Item problems (diagnostics) are a pure function of (seed, catalog, retailer id, item fields, world-clock
  hour) plus admin overrides, so two reads in the same hour agree and problems come and go over hours.
"""

from meta_sandbox.catalog_model.batch import (
    BATCH_METHODS,
    MAX_BATCH_REQUESTS,
    BatchRejected,
    apply_batch,
    batch_status,
    create_batch,
    end_batch,
    new_handle,
    not_found_message,
)
from meta_sandbox.catalog_model.diagnostics import (
    diagnostics,
    fact_problems,
    generated_problems,
    hour_bucket,
    item_error_types,
    item_errors,
)
from meta_sandbox.catalog_model.error_types import (
    DIAGNOSTIC_GROUPS,
    ERROR_TYPES,
    ERROR_TYPES_BY_NAME,
    GENERATED_PROBLEMS,
    ITEM_ERROR_TYPES,
    KNOWN_LOCALES,
    UNDOCUMENTED_ERROR,
    ErrorType,
    Problem,
    all_errors,
    error_type_info,
)
from meta_sandbox.catalog_model.feed_files import (
    LOCAL_HOSTS,
    ParsedFeed,
    ParsedRow,
    fetch_feed_url,
    parse_feed,
)
from meta_sandbox.catalog_model.issues import (
    PRIORITIES,
    Issue,
    file_issue,
    parse_price,
    valid_url,
    validate_fields,
)
from meta_sandbox.catalog_model.items import (
    clean_value,
    delete_item,
    is_live,
    meta_time,
    node_for,
    override_key,
    product_item_id,
    upsert_item,
)
from meta_sandbox.catalog_model.lifecycle import poll_upload, settle
from meta_sandbox.catalog_model.products import FilterError, item_filter, product_item_fields
from meta_sandbox.catalog_model.uploads import complete_upload, create_upload

__all__ = [
    "BATCH_METHODS",
    "DIAGNOSTIC_GROUPS",
    "ERROR_TYPES",
    "ERROR_TYPES_BY_NAME",
    "GENERATED_PROBLEMS",
    "ITEM_ERROR_TYPES",
    "KNOWN_LOCALES",
    "LOCAL_HOSTS",
    "MAX_BATCH_REQUESTS",
    "PRIORITIES",
    "UNDOCUMENTED_ERROR",
    "BatchRejected",
    "ErrorType",
    "FilterError",
    "Issue",
    "ParsedFeed",
    "ParsedRow",
    "Problem",
    "all_errors",
    "apply_batch",
    "batch_status",
    "clean_value",
    "complete_upload",
    "create_batch",
    "create_upload",
    "delete_item",
    "diagnostics",
    "end_batch",
    "error_type_info",
    "fact_problems",
    "fetch_feed_url",
    "file_issue",
    "generated_problems",
    "hour_bucket",
    "is_live",
    "item_error_types",
    "item_errors",
    "item_filter",
    "meta_time",
    "new_handle",
    "node_for",
    "not_found_message",
    "override_key",
    "parse_feed",
    "parse_price",
    "poll_upload",
    "product_item_fields",
    "product_item_id",
    "settle",
    "upsert_item",
    "valid_url",
    "validate_fields",
]
