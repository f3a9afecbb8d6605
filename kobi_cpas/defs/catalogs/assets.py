import dataclasses
from datetime import UTC, datetime

import dagster as dg

from kobi_cpas.catalogs.reads import read_catalog
from kobi_cpas.defs.catalogs.checks import EVENT_SOURCE_CHECK, meta_catalogs_check_specs
from kobi_cpas.defs.shared import DUCKDB_POOL, OWNERS_DATA, preview, table_definition_metadata
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows
from kobi_cpas.warehouse.tables import META_CATALOGS


@dg.asset(
    group_name="catalogs",
    owners=OWNERS_DATA,
    kinds={"meta", "duckdb"},
    partitions_def=tenant_partitions,
    pool=DUCKDB_POOL,
    check_specs=meta_catalogs_check_specs,
    metadata=table_definition_metadata(META_CATALOGS),
    deps=["tenant_registry"],
)
def meta_catalogs(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The tenant's Meta catalog as Meta reports it: name, vertical, product count, whether it backs an onsite
    shop (commerce_merchant_settings.cta), whether the id is a segment, and the pixels/apps connected — with a
    call to action when no event source is connected."""
    _, tenant = registry.tenant(context.partition_key)
    with meta.get_client(logger=context.log) as client:
        rec = read_catalog(client, tenant.tenant_id, tenant.catalog_id, datetime.now(UTC))
    with warehouse.connection() as con:
        replace_rows(con, META_CATALOGS, [dataclasses.asdict(rec)], "tenant_id = ?", [tenant.tenant_id])
        md = preview(
            con,
            "SELECT catalog_id, catalog_name, product_count, commerce_cta, external_event_sources, call_to_action "
            "FROM main.meta_catalogs WHERE tenant_id = ?",
            [tenant.tenant_id],
        )
        warehouse.publish(con)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": 1,
            "product_count": rec.product_count or 0,
            "pixel_count": rec.pixel_count,
            "is_onsite_shop": rec.is_onsite_shop,
            "preview": md,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=EVENT_SOURCE_CHECK,
                passed=rec.has_event_source,
                severity=dg.AssetCheckSeverity.WARN,
                description=None if rec.has_event_source else rec.call_to_action,
                metadata={"pixels": rec.pixel_count, "apps": rec.app_count},
            )
        ],
    )
