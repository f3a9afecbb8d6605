"""The onboarding step matrix of each partnership (``cpas_onboarding_steps``), from the CPAS tables and one read
of each segment's assigned users."""

from datetime import UTC, datetime

import dagster as dg
import duckdb

from kobi_cpas.cpas.catalog_users import assigned_user_ids
from kobi_cpas.cpas.onboarding_steps import PartnershipFacts, onboarding_step_rows
from kobi_cpas.cpas.retailers import DEFAULT_DIRECTORY
from kobi_cpas.cpas.tables import CPAS_ONBOARDING_STEPS
from kobi_cpas.defs.cpas.assets import TENANT_CPAS_ASSET
from kobi_cpas.defs.cpas.state import tenant_with_state
from kobi_cpas.defs.shared import md_table, table_definition_metadata
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows

_FACTS_SQL = """
SELECT p.retailer, p.partnership_status, p.drift, p.catalog_segment_id, p.shared_with_business_id IS NOT NULL,
       p.next_action, p.dedicated_ad_account_id,
       (SELECT count(DISTINCT m.campaign_id) FROM main.execution_manifest m
         WHERE m.tenant_id = p.tenant_id AND m.retailer = p.retailer
           AND m.catalog_segment_id = p.catalog_segment_id) AS campaigns
FROM main.cpas_partnerships p WHERE p.tenant_id = ?
"""
_DIRECTORY_SQL = """
SELECT merchant_business_id, source, status, tenant_id FROM main.cpas_retailer_directory
WHERE source = 'directory' OR (source = 'request' AND tenant_id = ?)
ORDER BY created_time
"""


@dg.asset(
    **TENANT_CPAS_ASSET,
    deps=["cpas_partnerships", "execution_manifest", "cpas_retailer_directory"],
    metadata=table_definition_metadata(CPAS_ONBOARDING_STEPS),
)
def cpas_onboarding_steps(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Per retailer partnership of the tenant, each onboarding step (retailer in the program, collaboration
    request, segment shared, brand accepts, dedicated ad account, people assigned, campaign) with the most
    automation Meta allows, the mode the partnership decided (api, hybrid or manual), its status and the next
    action: the product spec's API/hybrid/manual decision as a table."""
    tenant, _ = tenant_with_state(registry, warehouse, context.partition_key)
    with warehouse.connection() as con:
        try:
            partnerships = con.execute(_FACTS_SQL, [tenant.tenant_id]).fetchall()
            directory = con.execute(_DIRECTORY_SQL, [tenant.tenant_id]).fetchall()
        except duckdb.CatalogException:  # the CPAS tables are not there before their first materialization
            partnerships, directory = [], []
    listed = {str(b) for b, source, _, _ in directory if source == "directory"}
    requests = {str(b): status for b, source, status, _ in directory if source == "request"}  # latest wins
    by_retailer = {r.retailer: r for r in tenant.cpas_retailers}
    now = datetime.now(UTC)
    rows = []
    with meta.get_client(logger=context.log) as client:
        for retailer, status, drift, segment, shared, action, account, campaigns in partnerships:
            cfg = by_retailer.get(retailer)
            if cfg is None:  # left the registry since the partnerships run
                continue
            people = (
                len(assigned_user_ids(client, segment, tenant.business_id))
                if segment and status == "accepted"
                else None
            )
            facts = PartnershipFacts(
                tenant_id=tenant.tenant_id,
                retailer=retailer,
                retailer_name=DEFAULT_DIRECTORY.name(retailer),
                onboarding_mode=cfg.onboarding_mode.value,
                step_overrides=dict(cfg.onboarding_steps),
                partnership_status=status,
                drift=tuple(d for d in (drift or "").split(",") if d),
                segment_id=segment,
                shared=bool(shared),
                partnership_action=action,
                dedicated_ad_account_id=account,
                in_directory=bool(cfg.retailer_business_id) and cfg.retailer_business_id in listed,
                request_status=requests.get(cfg.retailer_business_id or ""),
                people=people,
                campaigns=int(campaigns or 0),
            )
            rows.extend(onboarding_step_rows(facts, now))
    with warehouse.connection() as con:
        replace_rows(con, CPAS_ONBOARDING_STEPS, rows, "tenant_id = ?", [tenant.tenant_id])
        warehouse.publish(con)
    open_steps = [r for r in rows if r["status"] != "done"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "done": sum(1 for r in rows if r["status"] == "done"),
            "todo": sum(1 for r in rows if r["status"] == "todo"),
            "blocked": sum(1 for r in rows if r["status"] == "blocked"),
            "open_steps": dg.MetadataValue.md(
                md_table(
                    [
                        (r["retailer"], r["step"], r["mode"], r["status"], r["next_action"] or "")
                        for r in open_steps
                    ],
                    ["retailer", "step", "mode", "status", "next action"],
                )
                if open_steps
                else "_every step done_"
            ),
        }
    )
