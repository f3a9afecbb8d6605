from datetime import UTC, datetime

import dagster as dg

from kobi_cpas.defs.diagnostics.checks import catalog_diagnostics_check_specs
from kobi_cpas.defs.shared import DUCKDB_POOL, OWNERS_DATA, table_definition_metadata
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


@dg.asset(
    group_name="diagnostics",
    owners=OWNERS_DATA,
    kinds={"meta", "duckdb"},
    partitions_def=tenant_partitions,
    pool=DUCKDB_POOL,
    deps=["meta_catalogs", "catalog_syncs"],
    check_specs=catalog_diagnostics_check_specs,
    metadata=table_definition_metadata(
        CATALOG_DIAGNOSTICS, CATALOG_DIAGNOSTICS_SUMMARY, CATALOG_HEALTH, CATALOG_ERROR_TYPES
    ),
)
def catalog_diagnostics(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Every current problem of the tenant's catalog, from every source — Kobi's feed validation, feed upload
    errors (rows mapped back to items), Batch API errors and warnings, Meta's async item errors (all pages) and
    catalog-level diagnostics — prioritised, each with a call to action. A problem that disappears is resolved,
    not deleted; one that comes back reopens. Also the summary view, the daily catalog health and the error
    dictionary (catalog_all_errors, refreshed daily)."""
    _, tenant = registry.tenant(context.partition_key)
    now = datetime.now(UTC)
    with meta.get_client(logger=context.log) as client:
        report = poll_tenant(client, warehouse.get_warehouse(), tenant, now=now)
    for source, err in report.sources_failed.items():
        context.log.warning(f"{source} not polled ({err}); its problems stay as they were, none resolved")
    with warehouse.connection() as con:
        outcomes = run_checks(con, tenant, now)
        md = markdown_summary(con, tenant.tenant_id)
        numbers = health_metadata(con, tenant.tenant_id)
        n = con.execute(
            "SELECT count(*) FROM main.catalog_diagnostics WHERE tenant_id = ? AND is_open",
            [tenant.tenant_id],
        ).fetchone()[0]
        warehouse.publish(con)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(n),
            **report.as_metadata(),
            **numbers,
            "summary": dg.MetadataValue.md(md),
        },
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
