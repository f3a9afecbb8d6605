import dataclasses
from datetime import UTC, datetime

import dagster as dg

from kobi_cpas.catalogs.reads import read_catalog
from kobi_cpas.defs.catalogs.checks import API_VERSION_CHECK, EVENT_SOURCE_CHECK, meta_catalogs_check_specs
from kobi_cpas.defs.shared import OWNERS_DATA, preview, table_definition_metadata
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.meta.versions import VersionState, version_status
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows
from kobi_cpas.warehouse.tables import META_CATALOGS


@dg.asset(
    group_name="catalogs",
    owners=OWNERS_DATA,
    kinds={"meta", "duckdb"},
    partitions_def=tenant_partitions,
    check_specs=meta_catalogs_check_specs,
    metadata=table_definition_metadata(META_CATALOGS),
    deps=["tenant_registry"],
)
def meta_catalogs(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
):
    """The tenant's Meta catalog as Meta reports it: name, vertical, product count, whether it backs an onsite
    shop (commerce_merchant_settings.cta), whether the id is a segment, and the pixels/apps connected — with a
    call to action when no event source is connected. Also judges the configured Meta API version against
    Meta's published expiry dates before calling Meta."""
    version = version_status(meta.api_version, datetime.now(UTC).date())
    version_check = dg.AssetCheckResult(
        check_name=API_VERSION_CHECK,
        passed=version.state is VersionState.SUPPORTED,
        severity=dg.AssetCheckSeverity.ERROR
        if version.state is VersionState.RETIRED
        else dg.AssetCheckSeverity.WARN,
        description=version.message,
        metadata={"api_version": meta.api_version, "state": version.state.value},
    )
    if version.state is VersionState.RETIRED:
        yield version_check
        raise dg.Failure(description=version.message)
    if version.state is not VersionState.SUPPORTED:
        context.log.warning(version.message)
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
    yield dg.MaterializeResult(
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
            ),
            version_check,
        ],
    )
