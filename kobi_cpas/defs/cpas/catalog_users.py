"""The brand's people on its catalog segments, launched from the UI once the brand accepted them."""

import dagster as dg
from pydantic import Field

from kobi_cpas.cpas.catalog_users import CATALOG_TASKS, assign_catalog_users, check_catalog_tasks
from kobi_cpas.defs.cpas.state import tenant_with_state
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource


class AssignCatalogUsersConfig(dg.Config):
    tenant_id: str = Field(description="Kobi tenant (the brand)")
    user_ids: list[str] = Field(description="Business user or system user ids of the brand's business")
    tasks: list[str] = Field(default=["ADVERTISE"], description=f"Any of {', '.join(CATALOG_TASKS)}")
    retailer: str | None = Field(
        default=None, description="One retailer's segment; default: every retailer segment the tenant has"
    )


@dg.op(
    description="Assign the brand's people to its catalog segments (Meta's /{catalog}/assigned_users); a user "
    "Meta already lists for the brand's business is not posted again."
)
def assign_catalog_users_op(
    context: dg.OpExecutionContext,
    config: AssignCatalogUsersConfig,
    registry: TenantRegistryResource,
    warehouse: WarehouseResource,
    meta: MetaGraphResource,
) -> dict:
    tenant, _ = tenant_with_state(registry, warehouse, config.tenant_id)
    where = f"tenant '{tenant.tenant_id}'"
    try:
        tasks = check_catalog_tasks(config.tasks)
    except ValueError as exc:
        raise dg.Failure(description=f"{where}, config field 'tasks': {exc}") from None
    if not config.user_ids or not all(u.isdigit() for u in config.user_ids):
        raise dg.Failure(description=f"{where}, config field 'user_ids': numeric Meta user ids")
    retailers = [r for r in tenant.cpas_retailers if config.retailer is None or r.retailer == config.retailer]
    if config.retailer is not None and not retailers:
        raise dg.Failure(
            description=f"{where}: no partnership with retailer '{config.retailer}' in the registry"
        )
    segments = {r.retailer: r.catalog_segment_id for r in retailers if r.catalog_segment_id}
    missing = sorted(r.retailer for r in retailers if not r.catalog_segment_id)
    if missing:
        context.log.warning(
            f"{where}: no catalog segment yet for {', '.join(missing)}: nobody assigned there"
        )
    out: dict[str, dict[str, list[str]]] = {}
    with meta.get_client(logger=context.log) as client:
        for retailer, segment_id in sorted(segments.items()):
            done = assign_catalog_users(client, segment_id, tenant.business_id, config.user_ids, tasks)
            out[retailer] = {"assigned": list(done.assigned), "already": list(done.already)}
            context.log.info(
                f"{where}, {retailer} segment {segment_id}: assigned {len(done.assigned)}, "
                f"already there {len(done.already)}"
            )
    context.add_output_metadata(
        {"segments": len(out), "assigned": sum(len(v["assigned"]) for v in out.values())}
    )
    return out


@dg.job(
    description="Give the brand's people access to its accepted catalog segments (never posted twice).",
    tags={"kobi/domain": "cpas"},
)
def assign_catalog_users_job():
    assign_catalog_users_op()
