"""The on-demand item check, launched from the UI: what Meta says about chosen items right now."""

import json

import dagster as dg
from pydantic import Field

from kobi_cpas.defs.shared import md_table
from kobi_cpas.diagnostics import check_items
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource

MAX_ITEMS = 500  # one GET per item: a person's check of a few items, not a catalog poll


class ItemCheckConfig(dg.Config):
    tenant_id: str = Field(description="Kobi tenant (the brand)")
    retailer_ids: list[str] = Field(description=f"Item ids as in the feed (at most {MAX_ITEMS})")


@dg.op(
    description="Read each item's errors from Meta (GET /{product_item_id}?fields=errors) and merge them into "
    "catalog_diagnostics: problems Meta still reports stay open, the others of these items resolve."
)
def check_catalog_items(
    context: dg.OpExecutionContext,
    config: ItemCheckConfig,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dict:
    _, tenant = registry.tenant(config.tenant_id)
    wanted = list(dict.fromkeys(r.strip() for r in config.retailer_ids if r.strip()))
    if not wanted or len(wanted) > MAX_ITEMS:
        raise dg.Failure(
            description=f"tenant '{tenant.tenant_id}', config field 'retailer_ids': give 1 to {MAX_ITEMS} item ids "
            f"(got {len(wanted)})"
        )
    with meta.get_client(logger=context.log) as client:
        found = {
            str(p["retailer_id"]): str(p["id"])
            for p in client.paginate(
                f"{tenant.catalog_id}/products",
                params={
                    "fields": "id,retailer_id",
                    "filter": json.dumps({"retailer_id": {"is_any": wanted}}),
                    "limit": MAX_ITEMS,
                },
            )
        }
        counts = check_items(
            client, warehouse.get_warehouse(), tenant.tenant_id, tenant.catalog_id, list(found.values())
        )
    missing = [r for r in wanted if r not in found]
    with warehouse.connection() as con:
        problems = con.execute(
            "SELECT retailer_id, priority, error_type, title, call_to_action FROM main.catalog_diagnostics "
            "WHERE tenant_id = ? AND is_open AND retailer_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY ALL",
            [tenant.tenant_id, list(found)],
        ).fetchall()
        warehouse.publish(con)
    if missing:
        context.log.warning(
            f"tenant '{tenant.tenant_id}': {len(missing)} item(s) not in catalog {tenant.catalog_id}: "
            + ", ".join(missing[:20])
        )
    context.add_output_metadata(
        {
            "items_checked": len(found),
            "not_in_catalog": ", ".join(missing[:50]) or "none",
            "problems_open": len(problems),
            "resolved_now": counts.resolved,
            "problems": dg.MetadataValue.md(
                md_table(problems, ["item", "priority", "error type", "title", "what to do"])
                if problems
                else "_Meta reports no problem on these items_"
            ),
        }
    )
    return {"checked": len(found), "not_in_catalog": missing, "open_problems": len(problems)}


@dg.job(
    description="Check chosen items of a tenant's catalog on Meta now and update catalog_diagnostics.",
    tags={"kobi/domain": "diagnostics"},
)
def check_catalog_items_job():
    check_catalog_items()
