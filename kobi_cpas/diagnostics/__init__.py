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

Names are imported lazily: ``kobi_cpas.warehouse`` imports ``kobi_cpas.diagnostics.tables`` while it is itself
being imported, so this package must not import the other modules eagerly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # poll
    "PollReport": "poll",
    "check_items": "poll",
    "poll_catalog": "poll",
    "poll_tenant": "poll",
    "prune_state": "poll",
    # collect
    "SOURCES": "collect",
    "SyncErrorsReport": "after_sync",
    "fatal_errors_for_sync": "after_sync",
    "record_batch_lines": "collect",
    "record_upload_rows": "collect",
    # dictionary
    "GENERIC_CTA": "dictionary",
    "INGESTION_CTA": "dictionary",
    "cta_for": "dictionary",
    "generic_cta": "dictionary",
    "needs_refresh": "dictionary",
    "refresh_error_types": "dictionary",
    # lifecycle
    "MergeCounts": "lifecycle",
    "last_successful_poll": "lifecycle",
    "merge_problems": "lifecycle",
    # summary
    "build_health": "summary",
    "build_summary": "summary",
    "current_health": "summary",
    "health_metadata": "summary",
    "markdown_summary": "summary",
    # checks
    "CheckOutcome": "checks",
    "check_fatal_ingestion_errors": "checks",
    "check_freshness": "checks",
    "check_high_problem_share": "checks",
    "check_pixel_connected": "checks",
    "run_checks": "checks",
    # tables
    "CATALOG_DIAGNOSTICS": "tables",
    "CATALOG_DIAGNOSTICS_SUMMARY": "tables",
    "CATALOG_ERROR_TYPES": "tables",
    "CATALOG_HEALTH": "tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kobi_cpas.diagnostics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kobi_cpas.diagnostics.{module}"), name)
