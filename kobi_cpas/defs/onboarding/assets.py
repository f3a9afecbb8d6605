from datetime import UTC, datetime

import dagster as dg

from kobi_cpas.defs.shared import OWNERS_DATA, md_table, table_definition_metadata
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.onboarding.existing import compare_existing
from kobi_cpas.onboarding.preflight import check_access, check_feeds, existing_items_finding
from kobi_cpas.onboarding.tables import TENANT_ONBOARDING
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.sync.existing_catalog import catalog_feeds, kobi_feed_ids, read_existing_ids
from kobi_cpas.warehouse import replace_rows

PREFLIGHT_CHECK = "preflight_not_blocking"


@dg.asset(
    group_name="onboarding",
    owners=OWNERS_DATA,
    kinds={"meta", "duckdb"},
    partitions_def=tenant_partitions,
    deps=["tenant_registry", "feed_items"],
    metadata=table_definition_metadata(TENANT_ONBOARDING),
    check_specs=[
        dg.AssetCheckSpec(
            name=PREFLIGHT_CHECK,
            asset="tenant_onboarding",
            description="ERROR while a finding blocks the tenant (Kobi cannot read its business or catalog, the "
            "catalog is not a product catalog, a dedicated ad account is unreadable or mixes retailers, or "
            "another tenant's feed is on the catalog); WARN while the first sync waits for a person's yes.",
        )
    ],
)
def tenant_onboarding(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The tenant's preflight, before it goes live and whenever a person wants it again: what Kobi's token can
    read (business, catalog and its kind, event sources, each dedicated ad account and its one-retailer rule),
    the other feeds on the catalog, and — for a catalog that already holds items — what the first replace
    keeps, links as variants and leaves, compared with the latest feed snapshot. Every finding carries its
    call to action; the first sync of a catalog holding items waits for a person's confirmation."""
    _, tenant = registry.tenant(context.partition_key)
    with warehouse.connection() as con:
        kobi_feeds = kobi_feed_ids(con)
    first_upload = tenant.tenant_id not in kobi_feeds.values()
    with meta.get_client(logger=context.log) as client:
        findings = check_access(client, tenant)
        catalog_readable = not any(f.check_name == "catalog" and f.status == "blocking" for f in findings)
        existing_ids: list[str] = []
        if catalog_readable:
            findings.extend(
                check_feeds(catalog_feeds(client, tenant.catalog_id), kobi_feeds, tenant.tenant_id)
            )
            existing_ids = read_existing_ids(client, tenant.catalog_id)
    with warehouse.connection() as con:
        if catalog_readable:
            counts = compare_existing(con, tenant.tenant_id, existing_ids)
            findings.append(
                existing_items_finding(
                    tenant.catalog_id,
                    first_upload,
                    counts,
                    None if tenant.sync.adopted_items == "keep" else tenant.sync.retention_days,
                )
            )
        now = datetime.now(UTC)
        records = [f.as_record(tenant.tenant_id) | {"observed_at": now} for f in findings]
        replace_rows(con, TENANT_ONBOARDING, records, "tenant_id = ?", [tenant.tenant_id])
        warehouse.publish(con)
    blocking = [f for f in findings if f.status == "blocking"]
    confirm = [f for f in findings if f.status == "confirm"]
    by_status = {
        s: sum(1 for f in findings if f.status == s) for s in ("ok", "warning", "blocking", "confirm")
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(findings),
            **{f"{k}_findings": v for k, v in by_status.items()},
            "existing_items": len(existing_ids),
            "findings": dg.MetadataValue.md(
                md_table(
                    [(f.check_name, f.object_id, f.status, f.finding, f.next_action or "") for f in findings],
                    ["check", "object", "status", "finding", "next action"],
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PREFLIGHT_CHECK,
                passed=not blocking and not confirm,
                severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
                description="; ".join(
                    f"{f.check_name} {f.object_id}: {f.finding}" for f in blocking + confirm
                )
                or None,
            )
        ],
    )


tenant_onboarding_job = dg.define_asset_job(
    "tenant_onboarding_job",
    selection=[tenant_onboarding],
    partitions_def=tenant_partitions,
    description="The preflight of one tenant (Launchpad: pick the tenant's partition), before it goes live or "
    "after a change on Meta.",
    tags={"kobi/domain": "onboarding"},
)
