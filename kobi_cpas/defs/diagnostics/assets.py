from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from kobi_cpas.defs.diagnostics.checks import catalog_diagnostics_check_specs
from kobi_cpas.defs.shared import OWNERS_DATA, specs_by_key, table_result, table_spec
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.diagnostics.checks import run_checks
from kobi_cpas.diagnostics.poll import poll_tenant
from kobi_cpas.diagnostics.summary import health_metadata, markdown_summary
from kobi_cpas.diagnostics.tables import (
    CATALOG_DIAGNOSTICS,
    CATALOG_DIAGNOSTICS_SUMMARY,
    CATALOG_ERROR_TYPES,
    CATALOG_HEALTH,
)
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource

SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}
# One poll writes the four diagnostics tables; each is its own asset.
_DIAG = dict(group_name="diagnostics", owners=OWNERS_DATA, kinds={"meta", "duckdb"})
# Columns the summary and the health row aggregate from the open problems.
_FROM_PROBLEMS = {
    c: [("catalog_diagnostics", c)]
    for c in ("source", "error_type", "priority", "severity", "title", "description", "call_to_action")
}

DIAG = specs_by_key(
    table_spec(
        "catalog_diagnostics",
        CATALOG_DIAGNOSTICS,
        description="Every current problem of the tenant's catalog, from every source — Kobi's feed "
        "validation, feed upload errors (rows mapped back to items), Batch API errors and warnings, Meta's "
        "async item errors (all pages) and catalog-level diagnostics — prioritised, each with a call to "
        "action. A problem that disappears is resolved, not deleted; one that comes back reopens.",
        deps=["meta_catalogs", "catalog_syncs", "feed_item_issues"],
        lineage={
            "sync_id": [("catalog_syncs", "sync_id")],
            "sync_method": [("catalog_syncs", "method")],
            "upload_session_id": [("catalog_syncs", "upload_session_id")],
            "handle": [("catalog_syncs", "handle")],
        },
        **_DIAG,
    ),
    table_spec(
        "catalog_diagnostics_summary",
        CATALOG_DIAGNOSTICS_SUMMARY,
        description="The tenant catalog's open problems grouped by source, error type and priority, ranked, "
        "with the items affected, their share of the catalog and example retailer ids: what to fix first.",
        deps=["catalog_diagnostics"],
        lineage={
            "tenant_id": [("catalog_diagnostics", "tenant_id")],
            "catalog_id": [("catalog_diagnostics", "catalog_id")],
            **_FROM_PROBLEMS,
            "affected_items": [("catalog_diagnostics", "retailer_id")],
            "open_problems": [("catalog_diagnostics", "problem_key")],
            "example_retailer_ids": [("catalog_diagnostics", "retailer_id")],
            "is_catalog_level": [("catalog_diagnostics", "retailer_id")],
            "first_seen_at": [("catalog_diagnostics", "first_seen_at")],
            "last_seen_at": [("catalog_diagnostics", "last_seen_at")],
        },
        **_DIAG,
    ),
    table_spec(
        "catalog_health",
        CATALOG_HEALTH,
        description="The tenant catalog's health per UTC day: items, items by their worst open problem, the "
        "eligible share, fatal ingestion errors, the event sources connected and the last successful sync "
        "per method.",
        deps=["catalog_diagnostics", "meta_catalogs", "catalog_syncs"],
        lineage={
            "items_with_problems": [("catalog_diagnostics", "retailer_id")],
            "items_with_high": [("catalog_diagnostics", "retailer_id"), ("catalog_diagnostics", "priority")],
            "open_problems": [("catalog_diagnostics", "problem_key")],
            "open_high_problems": [("catalog_diagnostics", "priority")],
            "fatal_ingestion_errors": [
                ("catalog_diagnostics", "source"),
                ("catalog_diagnostics", "severity"),
            ],
            "has_pixel_or_app": [("meta_catalogs", "has_event_source")],
            "pixel_count": [("meta_catalogs", "pixel_count")],
            "app_count": [("meta_catalogs", "app_count")],
            **{
                f"last_successful_{m}_at": [("catalog_syncs", "finished_at"), ("catalog_syncs", "started_at")]
                for m in ("replace", "update", "batch")
            },
        },
        **_DIAG,
    ),
    table_spec(
        "catalog_error_types",
        CATALOG_ERROR_TYPES,
        description="Meta's dictionary of catalog error types (catalog_all_errors) per locale, with Kobi's "
        "call to action. Refreshed at most daily: materialized only by the polls that refreshed it.",
        skippable=True,
        **_DIAG,
    ),
)


@dg.multi_asset(
    specs=list(DIAG.values()),
    partitions_def=tenant_partitions,
    check_specs=catalog_diagnostics_check_specs,
    can_subset=False,
)
def catalog_diagnostics(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
):
    """Poll every diagnostics source of the tenant's catalog, then rebuild the summary and today's health row
    (and the error dictionary when it is due)."""
    yield from diagnostics_results(context.partition_key, context.log, registry, meta, warehouse)


def diagnostics_results(
    tenant_id: str,
    log: Any,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.MaterializeResult]:
    """Poll the tenant's diagnostics; the results of its four tables (the first carrying the checks). Shared by
    the tenant's own run and the fleet runs."""
    _, tenant = registry.tenant(tenant_id)
    now = datetime.now(UTC)
    with meta.get_client(logger=log) as client:
        report = poll_tenant(client, warehouse.get_warehouse(), tenant, now=now)
    for source, err in report.sources_failed.items():
        log.warning(f"{source} not polled ({err}); its problems stay as they were, none resolved")
    where, params = "tenant_id = ?", [tenant.tenant_id]
    with warehouse.connection() as con:
        outcomes = run_checks(con, tenant, now)
        md = markdown_summary(con, tenant.tenant_id)
        numbers = health_metadata(con, tenant.tenant_id)
        warehouse.publish(con)
        yield table_result(
            DIAG["catalog_diagnostics"],
            con,
            where,
            params,
            "SELECT retailer_id, source, error_type, priority, title, call_to_action FROM main.catalog_diagnostics "
            "WHERE tenant_id = ? AND is_open ORDER BY CASE priority WHEN 'HIGH' THEN 0 WHEN 'MEDIUM' THEN 1 "
            "ELSE 2 END, last_seen_at DESC, retailer_id LIMIT 11",
            metadata=report.as_metadata(),
            check_results=[
                dg.AssetCheckResult(
                    check_name=name,
                    passed=o.passed,
                    severity=SEVERITY.get(o.severity, dg.AssetCheckSeverity.WARN),
                    description=None if o.passed else o.message,
                    metadata=dict(o.metadata or {}),
                )
                for name, o in outcomes.items()
            ],
        )
        yield table_result(
            DIAG["catalog_diagnostics_summary"],
            con,
            where,
            params,
            "SELECT catalog_id, rank, source, error_type, priority, affected_items, open_problems, call_to_action "
            "FROM main.catalog_diagnostics_summary WHERE tenant_id = ? ORDER BY catalog_id, rank LIMIT 11",
            metadata={"summary": dg.MetadataValue.md(md)},
        )
        yield table_result(
            DIAG["catalog_health"],
            con,
            where,
            params,
            "SELECT catalog_id, day, items, items_with_high, eligible_share, open_problems, fatal_ingestion_errors, "
            "has_pixel_or_app FROM main.catalog_health WHERE tenant_id = ? ORDER BY day DESC, catalog_id LIMIT 11",
            metadata=numbers,
        )
        if report.dictionary_rows is not None:
            yield table_result(
                DIAG["catalog_error_types"],
                con,
                preview_sql="SELECT locale, error_type, error_priority, title, call_to_action "
                "FROM main.catalog_error_types ORDER BY locale, error_type LIMIT 11",
                metadata={"refreshed_rows": report.dictionary_rows},
            )
