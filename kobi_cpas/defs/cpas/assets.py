from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import duckdb

from kobi_cpas.cpas import (
    DeclaredProductSet,
    apply_product_set_actions,
    directory_rows,
    expected_membership,
    manifest_rows,
    plan_product_sets,
    product_set_targets,
    read_existing_product_sets,
    reconcile_partnership,
)
from kobi_cpas.cpas.accounts import read_dedicated_accounts
from kobi_cpas.cpas.api_onboarding import ApiSegmentStep, ensure_api_segment, wants_api_segment
from kobi_cpas.cpas.partnerships import PartnershipRow
from kobi_cpas.cpas.state import SegmentRecord, record_ad_accounts, record_segment
from kobi_cpas.cpas.tables import (
    CPAS_PARTNERSHIPS,
    CPAS_PRODUCT_SETS,
    CPAS_RETAILER_DIRECTORY,
    EXECUTION_MANIFEST,
)
from kobi_cpas.defs.cpas.checks import (
    COUNT_TOLERANCE,
    PARTNERSHIP_DRIFT,
    PRODUCT_SETS,
    QC,
    SEGMENT_COUNT,
    cpas_partnerships_check_specs,
    execution_manifest_check_specs,
    product_sets_check_specs,
)
from kobi_cpas.defs.cpas.state import tenant_with_state
from kobi_cpas.defs.shared import OWNERS_DATA, md_table, table_definition_metadata
from kobi_cpas.defs.tenants.partitions import tenant_partitions
from kobi_cpas.registry.models import CpasRetailer
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows

GROUP = "cpas"
OWNERS = ["team:kobi-cpas", *OWNERS_DATA]
# Shared by the per-tenant CPAS assets (they read Meta and write DuckDB).
TENANT_CPAS_ASSET = dict(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"meta", "duckdb"},
    partitions_def=tenant_partitions,
)


@dg.asset(
    **TENANT_CPAS_ASSET,
    deps=["tenant_registry", "feed_items"],
    check_specs=cpas_partnerships_check_specs,
    metadata=table_definition_metadata(CPAS_PARTNERSHIPS),
)
def cpas_partnerships(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Each retailer partnership of the tenant reconciled against Meta (daily): the segment exists and is a
    segment, it is shared with the brand's business with ADVERTISE, the dedicated ad account exists and promotes
    only this retailer's segments, and the segment's product count matches the rule applied to the feed.
    The brand's ad accounts Meta shows dedicated to each retailer are recorded in ``cpas_state.ad_accounts``, so
    the registry may omit dedicated_ad_account_id; a declared one that differs is the drift ad_account_mismatch.
    For ``api`` partnerships Kobi first creates (or finds) the missing segment and shares it. The segments used
    are recorded in ``cpas_state.segments``, so the registry may omit their ids. Steps Meta offers only in its UI
    come out as next_action with exact instructions."""
    tenant, recorded = tenant_with_state(registry, warehouse, context.partition_key)
    # The registry's own accounts: a declared one wins over what Meta shows; the rest is observed again below.
    declared = {
        r.retailer: r.dedicated_ad_account_id
        for r in registry.tenant(context.partition_key)[1].cpas_retailers
    }
    now = datetime.now(UTC)
    with warehouse.connection() as con:
        expected: dict[str, int | None] = {}
        for r in tenant.cpas_retailers:
            expected[r.retailer] = (
                expected_membership(con, r.segment_filter, "main.feed_items", tenant.tenant_id)[0]
                if r.segment_filter and _has_snapshot(con, tenant.tenant_id)
                else None
            )
    rows: list[PartnershipRow] = []
    steps: dict[str, ApiSegmentStep] = {}
    with meta.get_client(logger=context.log) as client:
        dedicated = read_dedicated_accounts(client, tenant.business_id)
        for r in tenant.cpas_retailers:
            r = r.model_copy(update={"dedicated_ad_account_id": declared.get(r.retailer)})
            if wants_api_segment(r):
                step = steps[r.retailer] = ensure_api_segment(client, tenant, r, expected[r.retailer])
                if step.origin:
                    context.log.info(
                        f"{tenant.tenant_id} x {r.retailer}: segment {step.segment_id} {step.origin}"
                        f"{', shared with the brand' if step.shared_now else ''}"
                    )
                if step.segment_id and not r.catalog_segment_id:
                    r = r.model_copy(update={"catalog_segment_id": step.segment_id})
            row = reconcile_partnership(
                client,
                tenant,
                r,
                expected[r.retailer],
                COUNT_TOLERANCE,
                now=now,
                api_blocked=steps[r.retailer].blocked if r.retailer in steps else None,
                dedicated_accounts=dedicated,
            )
            rows.append(replace(row, segment_id_source=_source(r, recorded, steps.get(r.retailer))))
    records = [row.as_record() for row in rows]
    with warehouse.connection() as con:
        replace_rows(con, CPAS_PARTNERSHIPS, records, "tenant_id = ?", [tenant.tenant_id])
        for row in rows:
            if row.catalog_segment_id:
                record_segment(con, _segment_record(row, steps.get(row.retailer), context.run_id, now))
        partner_of = {act: biz for biz, acts in dedicated.items() for act in acts}
        record_ad_accounts(
            con,
            tenant.tenant_id,
            {act: (row.retailer, partner_of.get(act)) for row in rows for act in row.observed_ad_account_ids},
            now,
            context.run_id,
        )
        warehouse.publish(con)
    mismatched = [r for r in rows if "count_mismatch" in r.drift or "segment_empty" in r.drift]
    drifting = [r for r in rows if r.drift]
    table = md_table(
        [
            (
                r.retailer,
                r.partnership_status,
                r.segment_product_count,
                r.expected_product_count,
                ",".join(r.drift),
                r.next_action or "",
            )
            for r in rows
        ],
        ["retailer", "status", "meta count", "expected", "drift", "next action"],
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "accepted": sum(1 for r in rows if r.partnership_status == "accepted"),
            "pending": sum(1 for r in rows if r.partnership_status == "pending"),
            "with_drift": len(drifting),
            "partnerships": dg.MetadataValue.md(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=SEGMENT_COUNT,
                passed=not mismatched,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(
                    f"{r.retailer}: Meta {r.segment_product_count} vs expected {r.expected_product_count}"
                    for r in mismatched
                )
                or None,
                metadata={"tolerance": COUNT_TOLERANCE},
            ),
            dg.AssetCheckResult(
                check_name=PARTNERSHIP_DRIFT,
                passed=not drifting,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(
                    f"{r.retailer}: {','.join(r.drift)} — {r.next_action}" for r in drifting
                )
                or None,
            ),
        ],
    )


def _has_snapshot(con: duckdb.DuckDBPyConnection, tenant_id: str) -> bool:
    return (
        con.execute("SELECT 1 FROM main.feed_items WHERE tenant_id = ? LIMIT 1", [tenant_id]).fetchone()
        is not None
    )


def _source(r: CpasRetailer, recorded: dict[str, SegmentRecord], step: ApiSegmentStep | None) -> str | None:
    """Where the partnership's segment id comes from (the segment_id_source column)."""
    if step is not None and step.origin:
        return step.origin
    if r.catalog_segment_id is None:
        return None
    rec = recorded.get(r.retailer)
    return rec.origin if rec is not None and rec.catalog_segment_id == r.catalog_segment_id else "registry"


def _segment_record(
    row: PartnershipRow, step: ApiSegmentStep | None, run_id: str, now: datetime
) -> SegmentRecord:
    assert row.catalog_segment_id
    if row.shared_with_business_id is None:
        share = "not_shared"
    else:
        share = "accepted" if row.partnership_status == "accepted" else "pending"
    return SegmentRecord(
        tenant_id=row.tenant_id,
        retailer=row.retailer,
        catalog_segment_id=row.catalog_segment_id,
        parent_catalog_id=row.parent_catalog_id,
        owner_business_id=step.owner_business_id if step else None,
        segment_name=step.segment_name if step else None,
        origin=row.segment_id_source or "registry",
        share_status=share,
        shared_with_business_id=row.shared_with_business_id,
        recorded_at=now,
        observed_at=now,
        run_id=run_id,
    )


@dg.asset(
    **TENANT_CPAS_ASSET,
    deps=["cpas_partnerships"],
    check_specs=execution_manifest_check_specs,
    metadata=table_definition_metadata(EXECUTION_MANIFEST),
)
def execution_manifest(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The tenant's CPAS campaigns, ad sets and ads (archived and deleted included) in each dedicated ad account
    whose promoted object is a catalog segment, each QC'd against Meta's collaborative-ads constraints."""
    tenant, _ = tenant_with_state(registry, warehouse, context.partition_key)
    now = datetime.now(UTC)
    rows = []
    with meta.get_client(logger=context.log) as client:
        for r in tenant.cpas_retailers:
            if r.dedicated_ad_account_id and r.partnership_status.value != "pending":
                rows.extend(manifest_rows(client, tenant, r, now=now))
    records = [row.as_record() for row in rows]
    with warehouse.connection() as con:
        replace_rows(con, EXECUTION_MANIFEST, records, "tenant_id = ?", [tenant.tenant_id])
        warehouse.publish(con)
    failed = [r for r in rows if r.qc_status == "fail"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "campaigns": len({r.campaign_id for r in rows}),
            "ads": sum(1 for r in rows if r.ad_id),
            "qc_failures": len(failed),
            "qc_failures_preview": dg.MetadataValue.md(
                md_table(
                    [(r.retailer, r.ad_id, r.ad_name, r.qc_issues) for r in failed],
                    ["retailer", "ad", "name", "issues"],
                )
                if failed
                else "_every ad passes QC_"
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=QC,
                passed=not failed,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(f"ad {r.ad_id}: {r.qc_issues}" for r in failed[:5]) or None,
                metadata={"failing_ads": len(failed)},
            )
        ],
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"meta", "duckdb"},
    deps=["tenant_registry"],
    metadata=table_definition_metadata(CPAS_RETAILER_DIRECTORY),
)
def cpas_retailer_directory(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Collaborative Ads retailers a brand can partner with: Meta's directory of merchants, each tenant's
    suggested partners, and the collaboration requests sent, with their status."""
    reg = registry.load()
    with meta.get_client(logger=context.log) as client:
        rows = directory_rows(client, reg.tenants)
    records = [r.as_record() for r in rows]
    with warehouse.connection() as con:
        replace_rows(con, CPAS_RETAILER_DIRECTORY, records, "true", [])
        warehouse.publish(con)
    by_source: dict[str, int] = {}
    for r in rows:
        by_source[r.source] = by_source.get(r.source, 0) + 1
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            **{f"{k}_rows": v for k, v in by_source.items()},
            "preview": dg.MetadataValue.md(
                md_table(
                    [(r.source, r.tenant_id, r.merchant_name, r.status) for r in rows],
                    ["source", "tenant", "merchant", "status"],
                    max_rows=15,
                )
            ),
        }
    )


@dg.asset(
    **TENANT_CPAS_ASSET,
    deps=["cpas_partnerships"],
    check_specs=product_sets_check_specs,
    metadata=table_definition_metadata(CPAS_PRODUCT_SETS),
)
def cpas_product_sets(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The tenant's declared product sets (registry `product_sets`) synced to its catalog or a retailer's segment:
    created, updated, deleted when removed from the declaration — never while live unless explicitly allowed."""
    tenant, _ = tenant_with_state(registry, warehouse, context.partition_key)
    declared = [DeclaredProductSet.model_validate(p) for p in tenant.product_sets]
    targets = product_set_targets(tenant)
    now = datetime.now(UTC)
    with meta.get_client(logger=context.log) as client:
        existing = read_existing_product_sets(client, targets)
        actions = plan_product_sets(declared, existing, targets=targets)
        results = apply_product_set_actions(client, actions)
    records = [
        {
            "tenant_id": tenant.tenant_id,
            "target": r.action.target,
            "catalog_id": r.action.catalog_id,
            "name": r.action.name,
            "product_set_id": r.product_set_id or r.action.product_set_id,
            "action": r.action.kind,
            "status": r.status,
            "message": r.message or None,
            "observed_at": now,
        }
        for r in results
    ]
    with warehouse.connection() as con:
        replace_rows(con, CPAS_PRODUCT_SETS, records, "tenant_id = ?", [tenant.tenant_id])
        warehouse.publish(con)
    bad = [r for r in results if r.status in ("failed", "refused")]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(records),
            "actions": dg.MetadataValue.md(
                md_table(
                    [(r.action.kind, r.action.target, r.action.name, r.status, r.message) for r in results],
                    ["action", "target", "name", "status", "message"],
                )
                if results
                else "_no product sets declared_"
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PRODUCT_SETS,
                passed=not bad,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(
                    f"{r.action.kind} {r.action.name}: {r.status} ({r.message})" for r in bad
                )
                or None,
            )
        ],
    )
