from datetime import UTC, datetime

import dagster as dg

from kobi_cpas.defs.shared import DUCKDB_POOL, OWNERS_DATA, count, preview, table_definition_metadata
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse.tables import TENANT_REGISTRY


@dg.asset(
    group_name="tenants",
    owners=OWNERS_DATA,
    kinds={"yaml", "duckdb"},
    pool=DUCKDB_POOL,
    metadata=table_definition_metadata(TENANT_REGISTRY),
)
def tenant_registry(
    context: dg.AssetExecutionContext, registry: TenantRegistryResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The tenant registry: one row per tenant and CPAS retailer, validated from the registry YAML.

    A bad registry fails with one message naming the file, the tenant and the field."""
    reg = registry.load()
    now = datetime.now(UTC)
    rows = []
    for t in reg.tenants:
        base = (
            t.tenant_id,
            t.name,
            t.business_id,
            t.catalog_id,
            reg.feed_location(t),
            t.feed.format.value,
            t.sync.replace_cadence,
            t.sync.retention_days,
            t.sync.max_delete_share,
        )
        tail = (str(reg.path), reg.content_hash, now)
        if not t.cpas_retailers:
            rows.append((*base, None, None, None, None, None, None, *tail))
        for r in t.cpas_retailers:
            rows.append(
                (
                    *base,
                    r.retailer,
                    r.catalog_segment_id,
                    r.dedicated_ad_account_id,
                    r.partnership_status.value,
                    r.onboarding_mode.value,
                    r.marketplace_seller_id,
                    *tail,
                )
            )
    cols = TENANT_REGISTRY.column_names
    with warehouse.connection() as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM main.tenant_registry")
        if rows:
            con.executemany(
                f"INSERT INTO main.tenant_registry ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                rows,
            )
        con.execute("COMMIT")
        n = count(con, "SELECT count(*) FROM main.tenant_registry")
        md = preview(
            con,
            "SELECT tenant_id, retailer, partnership_status, onboarding_mode, catalog_segment_id, "
            "dedicated_ad_account_id FROM main.tenant_registry ORDER BY tenant_id, retailer",
            max_rows=20,
        )
        warehouse.publish(con)
    context.log.info("registry %s: %d tenants", reg.path, len(reg.tenants))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "tenants": len(reg.tenants),
            "registry_path": str(reg.path),
            "registry_hash": reg.content_hash,
            "preview": md,
        }
    )
