from datetime import UTC, datetime

import dagster as dg

from kobi_cpas.defs.shared import OWNERS_DATA, count, preview, table_definition_metadata
from kobi_cpas.feeds.reader import redact_source
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows
from kobi_cpas.warehouse.tables import TENANT_REGISTRY


@dg.asset(
    group_name="tenants",
    owners=OWNERS_DATA,
    kinds={"yaml", "duckdb"},
    metadata=table_definition_metadata(TENANT_REGISTRY),
)
def tenant_registry(
    context: dg.AssetExecutionContext, registry: TenantRegistryResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The tenant registry: one row per valid tenant and CPAS retailer, validated from the registry YAML.

    A broken tenant entry is left out (its problems, naming the file, tenant and field, are logged and shown in
    the metadata) and the other tenants are written; a registry file that cannot be read at all fails."""
    reg = registry.load()
    now = datetime.now(UTC)
    records = []
    for t in reg.tenants:
        base = {
            "tenant_id": t.tenant_id,
            "tenant_name": t.name,
            "business_id": t.business_id,
            "catalog_id": t.catalog_id,
            "feed_source": redact_source(reg.feed_location(t)),  # feed URLs carry access keys
            "feed_format": t.feed.format.value,
            "replace_cadence": t.sync.replace_cadence,
            "retention_days": t.sync.retention_days,
            "max_delete_share": t.sync.max_delete_share,
            "registry_path": str(reg.path),
            "registry_hash": reg.content_hash,
            "loaded_at": now,
        }
        if not t.cpas_retailers:
            records.append(base)  # retailer columns NULL
        for r in t.cpas_retailers:
            records.append(
                {
                    **base,
                    "retailer": r.retailer,
                    "catalog_segment_id": r.catalog_segment_id,
                    "dedicated_ad_account_id": r.dedicated_ad_account_id,
                    "partnership_status": r.partnership_status.value,
                    "onboarding_mode": r.onboarding_mode.value,
                    "marketplace_seller_id": r.marketplace_seller_id,
                }
            )
    with warehouse.connection() as con:
        replace_rows(con, TENANT_REGISTRY, records, "true", [])
        n = count(con, "SELECT count(*) FROM main.tenant_registry")
        md = preview(
            con,
            "SELECT tenant_id, retailer, partnership_status, onboarding_mode, catalog_segment_id, "
            "dedicated_ad_account_id FROM main.tenant_registry ORDER BY tenant_id, retailer",
            max_rows=20,
        )
        warehouse.publish(con)
    context.log.info("registry %s: %d tenants", reg.path, len(reg.tenants))
    if reg.problems:
        context.log.warning(reg.problems_text())
    # Full text (a table would cut the messages), one bullet per problem.
    problems = "\n".join(f"- {p.describe()}" for p in reg.problems)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "tenants": len(reg.tenants),
            "registry_path": str(reg.path),
            "registry_hash": reg.content_hash,
            "preview": md,
            "broken_tenants": len({p.index for p in reg.problems}),
            "problems": dg.MetadataValue.md(problems or "_none_"),
        }
    )
