"""Analyst tables of the catalog diagnostics domain, and its internal state (schema ``diag_state``).

Analyst tables (schema ``main``, published):

- ``catalog_error_types``: Meta's error dictionary (``catalog_all_errors``) per locale, CTA never empty.
- ``catalog_diagnostics``: the item view — one row per item (or file / catalog) per problem and source, with
  its lifecycle (first/last seen, resolved, reopened). Resolved problems are kept.
- ``catalog_diagnostics_summary``: the summary view — open problems grouped per type, ranked.
- ``catalog_health``: one row per tenant catalog and day.

Internal state (schema ``diag_state``, never published):

- ``sync_rows``: which item each row of an uploaded file (or each line of a Batch API request) was. Written by
  the sync code when it records a request (see ``kobi_cpas.diagnostics.collect.record_upload_rows``), because
  ``sync_state.inflight_items`` (which also has the row numbers) is deleted once Meta confirms the request.
- ``sync_errors`` / ``sync_errors_fetched``: the errors and warnings Meta reported for each finished upload
  or batch, fetched once (they never change afterwards), with rows already mapped back to retailer ids.
- ``staged_problems`` / ``staged_sources`` / ``staged_scope``: the current problems of one poll, and which
  sources (and which items, for a partial poll) that poll really read — only those may resolve problems.
- ``poll_log``: every poll per source (ok / failed), for freshness.
- ``catalog_observations``: the latest ``/{catalog_id}/diagnostics`` groups and product count per catalog.
"""

from __future__ import annotations

from kobi_cpas.warehouse.specs import TableSpec, col

_TENANT = col("tenant_id", "VARCHAR", "Kobi tenant id", False)
_CATALOG = col("catalog_id", "VARCHAR", "Meta product catalog id", False)

CATALOG_ERROR_TYPES = TableSpec(
    name="catalog_error_types",
    domain="diagnostics",
    comment="Meta's dictionary of catalog item error types (GET catalog_all_errors) per locale, refreshed "
    "daily. call_to_action is never empty: when Meta gives none, a documented generic CTA for the priority "
    "is used (cta_is_generic).",
    key=("locale", "error_type"),
    columns=(
        col("locale", "VARCHAR", "Locale the texts were fetched in, e.g. en_US, tr_TR", False),
        col("error_type", "VARCHAR", "Meta error type, e.g. IMAGE_RESOLUTION_LOW", False),
        col("error_priority", "VARCHAR", "Meta's default priority of the type: HIGH, MEDIUM or LOW"),
        col("title", "VARCHAR", "Short title Meta shows for the problem"),
        col("description", "VARCHAR", "What is wrong (may contain an HTML link to Meta's help)"),
        col(
            "call_to_action",
            "VARCHAR",
            "What to do: Meta's CTA, or the generic CTA of the priority",
            False,
        ),
        col("meta_call_to_action", "VARCHAR", "The CTA exactly as Meta returned it (NULL or '' if none)"),
        col("cta_is_generic", "BOOLEAN", "True when Meta gave no CTA and the generic one is used", False),
        col("fetched_at", "TIMESTAMPTZ", "When Kobi fetched the dictionary", False),
    ),
)

CATALOG_DIAGNOSTICS = TableSpec(
    name="catalog_diagnostics",
    domain="diagnostics",
    comment="Item view of catalog problems: one row per item (or file / catalog) per problem and source — "
    "Kobi's feed validation, feed upload errors, Batch API errors and warnings, Meta's async item errors "
    "and catalog-level diagnostics — with priority and call to action. Kept current by hourly polling: a "
    "problem that disappears gets resolved_at (it is not deleted); one that comes back reopens.",
    key=("tenant_id", "catalog_id", "problem_key"),
    columns=(
        _TENANT,
        _CATALOG,
        col(
            "problem_key",
            "VARCHAR",
            "Stable id of the problem: md5 of tenant, catalog, retailer_id, source, error_type, field and "
            "(for ingestion errors) the summary/message",
            False,
        ),
        col(
            "retailer_id",
            "VARCHAR",
            "Item id in the feed; '' for file-level or catalog-level problems",
            False,
        ),
        col("product_item_id", "VARCHAR", "Meta product item id, when known"),
        col(
            "level",
            "VARCHAR",
            "item, file (a whole upload or request), catalog, or unmapped_item (Meta named the item only by "
            "its product_item_id and looking up its retailer_id failed; the message says why)",
            False,
        ),
        col(
            "source",
            "VARCHAR",
            "kobi_feed_validation (Kobi's feed checks), feed_upload (GET /{upload_id}/errors), batch_request "
            "(check_batch_request_status), meta_item_check (Meta's async item errors) or "
            "meta_catalog_diagnostics (GET /{catalog_id}/diagnostics, catalog-level) or kobi_sync_guard (the "
            "sync's safety guards, e.g. Meta deleting more items than a replace upload planned)",
            False,
        ),
        col("error_type", "VARCHAR", "Meta error type, or Kobi's issue code in upper case", False),
        col("field", "VARCHAR", "Feed field concerned, when known ('' otherwise)", False),
        col(
            "priority",
            "VARCHAR",
            "HIGH (item blocked: fix now), MEDIUM (limited / performs worse) or LOW (improvement); Kobi "
            "severities map error->HIGH, warning->MEDIUM, info->LOW; ingestion fatals are HIGH",
            False,
        ),
        col(
            "severity",
            "VARCHAR",
            "The source's own word: error|warning|info (Kobi), fatal|warning (uploads and batches), "
            "MUST_FIX|OPPORTUNITY (Meta item and catalog diagnostics)",
        ),
        col("title", "VARCHAR", "Short title of the problem", False),
        col("description", "VARCHAR", "What is wrong, in the source's words"),
        col("call_to_action", "VARCHAR", "What to do about it; never empty", False),
        col(
            "cta_source",
            "VARCHAR",
            "Where the CTA comes from: kobi (feed validation, sync guards), dictionary (catalog_error_types), meta (the "
            "item's own error), kobi_ingestion (Kobi's text for an ingestion error) or generic (per priority)",
            False,
        ),
        col(
            "message",
            "VARCHAR",
            "The raw message (Kobi's message, Meta's batch message or upload summary)",
        ),
        col(
            "row_number",
            "BIGINT",
            "Row of the uploaded file (1 = first item) or Batch API line (0-based)",
        ),
        col("column_number", "BIGINT", "Column of the uploaded file (feed upload errors)"),
        col("sync_id", "VARCHAR", "catalog_syncs.sync_id of the upload or batch that reported it"),
        col("sync_method", "VARCHAR", "replace, update or batch (ingestion errors)"),
        col("upload_session_id", "VARCHAR", "Meta upload session id (feed upload errors)"),
        col("handle", "VARCHAR", "Meta batch handle (Batch API errors)"),
        col(
            "reported_count",
            "BIGINT",
            "Rows Meta counted for this error in the upload (total_count), which can exceed the samples",
        ),
        col("first_seen_at", "TIMESTAMPTZ", "First poll that saw the problem (kept across re-runs)", False),
        col("last_seen_at", "TIMESTAMPTZ", "Latest poll that saw the problem", False),
        col("resolved_at", "TIMESTAMPTZ", "Poll that no longer saw it; NULL while open"),
        col("is_open", "BOOLEAN", "True while the problem is current (resolved_at IS NULL)", False),
        col("occurrences", "BIGINT", "Number of distinct polls that saw the problem", False),
        col("reopened_count", "BIGINT", "Times the problem came back after being resolved", False),
        col("updated_at", "TIMESTAMPTZ", "Last time this row changed", False),
    ),
)

CATALOG_DIAGNOSTICS_SUMMARY = TableSpec(
    name="catalog_diagnostics_summary",
    domain="diagnostics",
    comment="Summary view: per tenant catalog, the open problems grouped by source, error type and "
    "priority, ranked by priority then affected items, with the CTA and a few example items. Rebuilt "
    "after every poll.",
    key=("tenant_id", "catalog_id", "source", "error_type", "priority"),
    columns=(
        _TENANT,
        _CATALOG,
        col(
            "rank",
            "INTEGER",
            "1 = the problem to fix first (HIGH before MEDIUM before LOW, then most items)",
            False,
        ),
        col("source", "VARCHAR", "Source of the problem (see catalog_diagnostics.source)", False),
        col("error_type", "VARCHAR", "Meta error type or Kobi issue code", False),
        col("priority", "VARCHAR", "HIGH, MEDIUM or LOW", False),
        col("severity", "VARCHAR", "Most common severity word of the source"),
        col("title", "VARCHAR", "Title of the problem", False),
        col("description", "VARCHAR", "Most common description"),
        col("call_to_action", "VARCHAR", "What to do; never empty", False),
        col(
            "affected_items",
            "BIGINT",
            "Distinct items with the problem open (0 for file/catalog level)",
            False,
        ),
        col("open_problems", "BIGINT", "Open rows in catalog_diagnostics (items, files or catalog)", False),
        col("share_of_items", "DOUBLE", "affected_items / items in the catalog (NULL when unknown)"),
        col("example_retailer_ids", "VARCHAR[]", "Up to 5 affected items, longest-open first"),
        col(
            "is_catalog_level",
            "BOOLEAN",
            "True when the problem concerns the file or catalog, not items",
            False,
        ),
        col("first_seen_at", "TIMESTAMPTZ", "When the longest-open of these problems was first seen"),
        col("last_seen_at", "TIMESTAMPTZ", "Latest poll that saw one of them"),
        col("observed_at", "TIMESTAMPTZ", "When the summary was built", False),
    ),
)

CATALOG_HEALTH = TableSpec(
    name="catalog_health",
    domain="diagnostics",
    comment="One row per tenant catalog and day (the last poll of the day wins): items, items with HIGH "
    "problems, share eligible for ads, pixel/app connection, last successful syncs per method and Meta's "
    "catalog-level diagnostic groups.",
    key=("tenant_id", "catalog_id", "day"),
    columns=(
        _TENANT,
        _CATALOG,
        col("day", "DATE", "UTC day of the observation", False),
        col("items", "BIGINT", "Items in the catalog (see items_source)"),
        col(
            "items_source",
            "VARCHAR",
            "Where items comes from: meta_product_count (read during the poll), meta_catalogs or feed_items",
        ),
        col("items_with_problems", "BIGINT", "Distinct items with any open problem, any source", False),
        col(
            "items_with_high",
            "BIGINT",
            "Distinct items with an open HIGH problem reported by Meta (item errors, ingestion errors): blocked",
            False,
        ),
        col(
            "items_with_medium",
            "BIGINT",
            "Distinct items whose worst open Meta-reported problem is MEDIUM",
            False,
        ),
        col(
            "items_with_low",
            "BIGINT",
            "Distinct items whose worst open Meta-reported problem is LOW",
            False,
        ),
        col(
            "items_with_feed_errors",
            "BIGINT",
            "Distinct items with an open error in Kobi's feed validation (not sent, or last valid version kept)",
            False,
        ),
        col("high_share", "DOUBLE", "items_with_high / items (NULL when items is unknown or 0)"),
        col(
            "eligible_items",
            "BIGINT",
            "Items without an open HIGH problem: can be shown in ads (items - items_with_high, at least 0)",
        ),
        col("eligible_share", "DOUBLE", "eligible_items / items (NULL when items is unknown or 0)"),
        col("open_problems", "BIGINT", "Open rows in catalog_diagnostics", False),
        col("open_high_problems", "BIGINT", "Open HIGH rows in catalog_diagnostics", False),
        col("fatal_ingestion_errors", "BIGINT", "Open fatal feed upload / Batch API errors", False),
        col("has_pixel_or_app", "BOOLEAN", "A pixel or app is connected (meta_catalogs); NULL if unknown"),
        col("pixel_count", "INTEGER", "Pixels connected (meta_catalogs)"),
        col("app_count", "INTEGER", "Apps connected (meta_catalogs)"),
        col(
            "last_successful_replace_at",
            "TIMESTAMPTZ",
            "Last replace upload Meta finished (catalog_syncs)",
        ),
        col("last_successful_update_at", "TIMESTAMPTZ", "Last update upload Meta finished (catalog_syncs)"),
        col(
            "last_successful_batch_at",
            "TIMESTAMPTZ",
            "Last Batch API request Meta finished (catalog_syncs)",
        ),
        col(
            "diagnostic_groups",
            "VARCHAR",
            "JSON list of Meta's diagnostic groups: type, title, severity, number_of_affected_items, "
            "affected_entity, error_types",
        ),
        col("must_fix_groups", "INTEGER", "Diagnostic groups of severity MUST_FIX"),
        col("opportunity_groups", "INTEGER", "Diagnostic groups of severity OPPORTUNITY"),
        col("last_item_poll_at", "TIMESTAMPTZ", "Last successful full poll of Meta's item errors"),
        col("observed_at", "TIMESTAMPTZ", "When the row was computed", False),
    ),
)

DDL = (
    "CREATE SCHEMA IF NOT EXISTS diag_state",
    # One row per uploaded file row / batch request line. Kept while the sync can still matter (pruned).
    """CREATE TABLE IF NOT EXISTS diag_state.sync_rows (
  sync_id VARCHAR NOT NULL,
  row_number BIGINT NOT NULL,          -- file row (1 = first item) or batch line (0-based)
  retailer_id VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.sync_errors (
  sync_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  method VARCHAR NOT NULL,             -- replace | update | batch
  shard INTEGER,
  sync_started_at TIMESTAMPTZ,
  upload_session_id VARCHAR,
  handle VARCHAR,
  kind VARCHAR NOT NULL,               -- upload_error | batch_error | batch_warning | batch_invalid
  error_id VARCHAR,
  error_type VARCHAR NOT NULL,
  priority VARCHAR NOT NULL,
  severity VARCHAR NOT NULL,
  title VARCHAR,
  description VARCHAR,
  message VARCHAR,
  field VARCHAR,
  row_number BIGINT,
  column_number BIGINT,
  retailer_id VARCHAR,                 -- NULL: file-level (or unmappable) problem
  retailer_id_via VARCHAR,             -- error | sample | sync_rows | inflight
  total_count BIGINT,
  fetched_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.sync_errors_fetched (
  sync_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  status VARCHAR NOT NULL,             -- ok | unavailable
  error_rows BIGINT NOT NULL,
  fetched_at TIMESTAMPTZ NOT NULL,
  message VARCHAR
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.staged_problems (
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  retailer_id VARCHAR NOT NULL,
  product_item_id VARCHAR,
  level VARCHAR NOT NULL,
  source VARCHAR NOT NULL,
  error_type VARCHAR NOT NULL,
  field VARCHAR NOT NULL,
  variant VARCHAR NOT NULL,            -- extra key part ('' or the upload summary / batch message)
  priority VARCHAR,
  severity VARCHAR,
  title VARCHAR,
  description VARCHAR,
  reported_cta VARCHAR,                -- the CTA the source itself gave (Kobi, Meta item payload)
  message VARCHAR,
  row_number BIGINT,
  column_number BIGINT,
  sync_id VARCHAR,
  sync_method VARCHAR,
  upload_session_id VARCHAR,
  handle VARCHAR,
  reported_count BIGINT,
  reported_at TIMESTAMPTZ
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.staged_sources (
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  source VARCHAR NOT NULL,
  priorities VARCHAR[],                -- NULL: every priority was polled
  item_scope BOOLEAN NOT NULL,         -- true: only the items in staged_scope were polled
  staged_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.staged_scope (
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  source VARCHAR NOT NULL,
  retailer_id VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.poll_log (
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  source VARCHAR NOT NULL,
  polled_at TIMESTAMPTZ NOT NULL,
  status VARCHAR NOT NULL,             -- ok | failed
  full_scope BOOLEAN NOT NULL,
  problems BIGINT,
  message VARCHAR
)""",
    """CREATE TABLE IF NOT EXISTS diag_state.catalog_observations (
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  observed_at TIMESTAMPTZ NOT NULL,
  product_count BIGINT,
  groups_json VARCHAR                  -- the /{catalog_id}/diagnostics groups as returned (JSON list)
)""",
)

ANALYST_TABLES = (CATALOG_ERROR_TYPES, CATALOG_DIAGNOSTICS, CATALOG_DIAGNOSTICS_SUMMARY, CATALOG_HEALTH)
