"""Catalog diagnostics with a clear call to action (pure: no Dagster).

Tables (``kobi_cpas.diagnostics.tables``): ``catalog_error_types``, ``catalog_diagnostics``,
``catalog_diagnostics_summary``, ``catalog_health``, plus internal state in schema ``diag_state``.

Entry points:

- ``poll_catalog(client, warehouse, tenant_id, catalog_id, now=...)`` / ``poll_tenant``: the hourly poll.
- ``fatal_errors_for_sync(client, con, tenant_id, catalog_id, sync_row)``: right after an upload or batch.
- ``check_items(client, warehouse, tenant_id, catalog_id, product_item_ids)``: the item view on demand.
- ``refresh_error_types(client, con, locale)``: the daily dictionary; ``cta_for`` the CTA of one type.
- ``markdown_summary(con, tenant_id)``, ``health_metadata(con, tenant_id)``: Dagster metadata.
- ``run_checks(con, tenant)`` and the ``check_*`` functions: asset-check outcomes.
- ``record_upload_rows`` / ``record_batch_lines``: for the sync code, so rejected rows map back to items.
"""

from __future__ import annotations

from kobi_cpas.diagnostics.after_sync import SyncErrorsReport, fatal_errors_for_sync
from kobi_cpas.diagnostics.checks import (
    CheckOutcome,
    check_fatal_ingestion_errors,
    check_freshness,
    check_high_problem_share,
    check_pixel_connected,
    run_checks,
)
from kobi_cpas.diagnostics.collect import SOURCES, record_batch_lines, record_upload_rows
from kobi_cpas.diagnostics.dictionary import (
    GENERIC_CTA,
    INGESTION_CTA,
    cta_for,
    generic_cta,
    needs_refresh,
    refresh_error_types,
)
from kobi_cpas.diagnostics.lifecycle import MergeCounts, last_successful_poll, merge_problems
from kobi_cpas.diagnostics.poll import PollReport, check_items, poll_catalog, poll_tenant, prune_state
from kobi_cpas.diagnostics.summary import (
    build_health,
    build_summary,
    current_health,
    health_metadata,
    markdown_summary,
)
from kobi_cpas.diagnostics.tables import (
    CATALOG_DIAGNOSTICS,
    CATALOG_DIAGNOSTICS_SUMMARY,
    CATALOG_ERROR_TYPES,
    CATALOG_HEALTH,
)

__all__ = [
    "CATALOG_DIAGNOSTICS",
    "CATALOG_DIAGNOSTICS_SUMMARY",
    "CATALOG_ERROR_TYPES",
    "CATALOG_HEALTH",
    "GENERIC_CTA",
    "INGESTION_CTA",
    "SOURCES",
    "CheckOutcome",
    "MergeCounts",
    "PollReport",
    "SyncErrorsReport",
    "build_health",
    "build_summary",
    "check_fatal_ingestion_errors",
    "check_freshness",
    "check_high_problem_share",
    "check_items",
    "check_pixel_connected",
    "cta_for",
    "current_health",
    "fatal_errors_for_sync",
    "generic_cta",
    "health_metadata",
    "last_successful_poll",
    "markdown_summary",
    "merge_problems",
    "needs_refresh",
    "poll_catalog",
    "poll_tenant",
    "prune_state",
    "record_batch_lines",
    "record_upload_rows",
    "refresh_error_types",
    "run_checks",
]
