"""Jobs launched from the UI (Launchpad) with typed config: create and share a catalog segment (retailer /
marketing-partner path), and create a PAUSED CPAS campaign from the template, only when QC passes."""

import json
from datetime import UTC, datetime

import dagster as dg
import duckdb
from pydantic import Field

from kobi_cpas.cpas import (
    FilterError,
    QcFailed,
    TemplateOptions,
    build_campaign_plan,
    create_campaign,
    expected_membership,
    find_or_create_segment,
    manifest_rows,
    qc_plan,
    segment_name,
    share_segment,
    validate_rule,
)
from kobi_cpas.cpas.graph import get_or_none
from kobi_cpas.cpas.state import SegmentRecord, record_segment
from kobi_cpas.cpas.tables import EXECUTION_MANIFEST
from kobi_cpas.defs.cpas.state import tenant_with_state
from kobi_cpas.meta.errors import MetaSegmentNotCompliantError
from kobi_cpas.registry.filters import canonical_json
from kobi_cpas.registry.models import CpasRetailer
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows, sql_str


class CreateSegmentConfig(dg.Config):
    tenant_id: str = Field(description="Kobi tenant (the brand)")
    retailer: str = Field(description="Retailer as in the registry, e.g. trendyol")
    parent_catalog_id: str | None = Field(
        default=None,
        description="The retailer's Collaborative Ads compliant catalog (default: the registry's)",
    )
    owner_business_id: str | None = Field(
        default=None,
        description="Business owning the parent catalog, retailer or marketing partner (default: the "
        "registry's retailer_business_id)",
    )
    segment_filter: str | None = Field(
        default=None,
        description='Product-set rule as JSON, e.g. {"brand": {"i_contains": "acme"}} (default: the registry\'s)',
    )
    brand_business_id: str | None = Field(
        default=None, description="Brand business to share with (default: the tenant's)"
    )
    permitted_tasks: list[str] = Field(default=["ADVERTISE"], description="ADVERTISE and/or MANAGE")
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    collab_terms: list[str] = Field(
        default=[], description="ENFORCE_CREATE_NEW_AD_ACCOUNT, ENFORCE_SHARE_AD_PERFORMANCE_ACCESS"
    )
    name: str | None = Field(
        default=None, description="Segment name (default: 'Kobi CPAS | <tenant> | <retailer>')"
    )
    replace_missing_segment: bool = Field(
        default=False,
        description="When the pair's known segment (registry or recorded) no longer exists on Meta, create a "
        "new one instead of failing",
    )


def _preview(analyst_path: str, rule, tenant_id: str) -> tuple[int, list[str]]:
    """Expected membership from the published feed_items (read-only, never blocks a writer)."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_str(analyst_path)} AS analyst (READ_ONLY)")
        con.execute("USE analyst")
        return expected_membership(con, rule, "main.feed_items", tenant_id)
    finally:
        con.close()


def parse_segment_filter(text: str, tenant_id: str) -> dict:
    """The validated rule of the segment_filter config, or a dg.Failure naming the tenant and the field."""
    where = f"tenant '{tenant_id}', config field 'segment_filter'"
    try:
        return validate_rule(json.loads(text))
    except json.JSONDecodeError as exc:
        raise dg.Failure(description=f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        # json.loads itself recurses: thousands of levels end here before the rule's depth limit applies.
        raise dg.Failure(description=f"{where} is nested too deeply for a rule") from None
    except FilterError as exc:
        raise dg.Failure(description=f"{where} is invalid: {exc}") from None


@dg.op(
    description="Validate the rule, preview its membership on the feed snapshot, find or create the segment "
    "(never a duplicate), share it with the brand's business."
)
def create_and_share_segment(
    context: dg.OpExecutionContext,
    config: CreateSegmentConfig,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dict:
    tenant, recorded = tenant_with_state(registry, warehouse, config.tenant_id)
    declared = next((r for r in tenant.cpas_retailers if r.retailer == config.retailer.lower()), None)
    parent, owner, rule_text = _segment_inputs(config, tenant.tenant_id, declared)
    rule = parse_segment_filter(rule_text, tenant.tenant_id)
    count, sample = _preview(warehouse.duckdb_path, rule, tenant.tenant_id)
    context.log.info(f"preview: {count} items of {tenant.tenant_id}'s feed match the rule, e.g. {sample[:5]}")
    if count == 0:
        raise dg.Failure(
            description=f"the rule matches no item of {tenant.tenant_id}'s feed snapshot: "
            "an empty segment cannot be advertised; check the rule"
        )
    name = config.name or segment_name(tenant.tenant_id, config.retailer)
    brand_business = config.brand_business_id or tenant.business_id
    # declared, or recorded by an earlier launch (also for a retailer the registry does not list yet)
    recorded_pair = recorded.get(config.retailer.lower())
    known = (declared.catalog_segment_id if declared else None) or (
        recorded_pair.catalog_segment_id if recorded_pair else None
    )
    with meta.get_client(logger=context.log) as client:
        segment_id, origin = _known_segment(client, known, config, tenant.tenant_id)
        if segment_id is None:
            try:
                segment_id, created = find_or_create_segment(
                    client, business_id=owner, parent_catalog_id=parent, name=name, filter=rule
                )
            except MetaSegmentNotCompliantError as exc:
                raise dg.Failure(description=str(exc)) from None
            origin = "created" if created else "found"
        shared = share_segment(
            client,
            segment_id,
            brand_business,
            config.permitted_tasks,
            _utm(config) or None,
            config.collab_terms,
        )
    now = datetime.now(UTC)
    with warehouse.connection() as con:
        record_segment(
            con,
            SegmentRecord(
                tenant_id=tenant.tenant_id,
                retailer=config.retailer.lower(),
                catalog_segment_id=segment_id,
                parent_catalog_id=parent,
                owner_business_id=owner,
                segment_name=name,
                origin=origin,
                share_status="pending" if shared else None,
                shared_with_business_id=brand_business,
                recorded_at=now,
                observed_at=now,
                run_id=context.run_id,
            ),
        )
    created = origin == "created"
    context.log.info(
        f"segment {segment_id} {_ORIGIN_TEXT[origin]}; "
        f"{'shared now' if shared else 'already shared'} with {brand_business}. Recorded for "
        f"{tenant.tenant_id} x {config.retailer} (cpas_state.segments): the CPAS assets use it, the registry "
        "needs no id."
    )
    context.add_output_metadata(
        {
            "segment_id": segment_id,
            "origin": origin,
            "created": created,
            "shared_now": shared,
            "expected_product_count": count,
            "sample_retailer_ids": ", ".join(sample[:10]),
        }
    )
    return {"segment_id": segment_id, "created": created}


_ORIGIN_TEXT = {
    "created": "created",
    "found": "found under the retailer's business by name",
    "registry": "already known for the pair (reused)",
    "recorded": "already known for the pair (reused)",
}


def _segment_inputs(
    config: CreateSegmentConfig, tenant_id: str, declared: CpasRetailer | None
) -> tuple[str, str, str]:
    """Parent catalog, owner business and rule (JSON text): the launch's config, else the registry's."""
    parent = config.parent_catalog_id or (declared.parent_catalog_id if declared else None)
    owner = config.owner_business_id or (declared.retailer_business_id if declared else None)
    rule = config.segment_filter or (
        canonical_json(declared.segment_filter) if declared and declared.segment_filter else None
    )
    missing = [
        n
        for n, v in (("parent_catalog_id", parent), ("owner_business_id", owner), ("segment_filter", rule))
        if not v
    ]
    if missing:
        raise dg.Failure(
            description=f"tenant '{tenant_id}', retailer '{config.retailer}': set {', '.join(missing)} in the "
            "launch config or in the registry (owner_business_id: the registry's retailer_business_id)"
        )
    assert parent and owner and rule
    return parent, owner, rule


def _known_segment(
    client, known: str | None, config: CreateSegmentConfig, tenant_id: str
) -> tuple[str | None, str]:
    """The pair's segment already known (declared or recorded) when Meta still has it: (id, origin), else
    (None, "")."""
    if not known:
        return None, ""
    node = get_or_none(client, known, {"fields": "id,is_catalog_segment"})
    if node is not None and node.get("is_catalog_segment"):
        return known, "registry"  # record_segment keeps the origin of an id recorded before
    if config.replace_missing_segment:
        return None, ""
    raise dg.Failure(
        description=f"tenant '{tenant_id}', retailer '{config.retailer}': the pair's segment {known} "
        f"{'is not a catalog segment' if node is not None else 'no longer exists on Meta (or Kobi lost access)'}"
        "; nothing was created. Launch again with replace_missing_segment: true to create a new one, or fix "
        "catalog_segment_id in the registry."
    )


def _utm(config: CreateSegmentConfig) -> dict[str, str]:
    return {
        k: v
        for k, v in (
            ("campaign_source", config.utm_source),
            ("campaign_medium", config.utm_medium),
            ("campaign_name", config.utm_campaign),
        )
        if v
    }


@dg.job(
    description="Create (or find) a catalog segment of a retailer's catalog for a brand and share it. "
    "Idempotent: a second launch finds the existing segment.",
    tags={"kobi/domain": "cpas"},
)
def create_catalog_segment_job():
    create_and_share_segment()


class CreateCampaignConfig(dg.Config):
    tenant_id: str = Field(description="Kobi tenant (the brand)")
    retailer: str = Field(description="Retailer as in the registry; its segment becomes the promoted object")
    page_id: str = Field(description="The brand's Facebook Page id the ads run as")
    daily_budget: int = Field(default=50_000, description="Ad set daily budget in the account's minor units")
    countries: list[str] = Field(default=["TR"])
    name: str = Field(default="Advantage+ catalog sales", description="Suffix of the object names")


@dg.op(
    description="Build the PAUSED campaign from the template, QC it, create it only when "
    "clean, then record it in execution_manifest.",
)
def create_cpas_campaign(
    context: dg.OpExecutionContext,
    config: CreateCampaignConfig,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
) -> dict:
    tenant, _ = tenant_with_state(registry, warehouse, config.tenant_id)
    try:
        retailer_cfg = tenant.retailer(config.retailer)
    except KeyError as exc:
        raise dg.Failure(description=str(exc)) from None
    options = TemplateOptions(
        page_id=config.page_id,
        daily_budget=config.daily_budget,
        countries=tuple(config.countries),
        name=config.name,
    )
    plan = build_campaign_plan(tenant, retailer_cfg, options)
    issues = qc_plan(plan)
    if issues:
        raise dg.Failure(
            description="QC failed, nothing created: " + "; ".join(f"{i.code}: {i.message}" for i in issues)
        )
    with meta.get_client(logger=context.log) as client:
        try:
            ids = create_campaign(client, plan)
        except QcFailed as exc:
            raise dg.Failure(description=str(exc)) from None
        rows = manifest_rows(client, tenant, retailer_cfg, now=datetime.now(UTC))
    with warehouse.connection() as con:
        replace_rows(
            con,
            EXECUTION_MANIFEST,
            [r.as_record() for r in rows],
            "tenant_id = ? AND retailer = ?",
            [tenant.tenant_id, retailer_cfg.retailer],
        )
        warehouse.publish(con)
    context.add_output_metadata(
        {
            "campaign_id": ids.campaign_id,
            "adset_id": ids.adset_id,
            "ad_id": ids.ad_id,
            "created": ", ".join(ids.created) or "nothing (already existed)",
        }
    )
    return {"campaign_id": ids.campaign_id, "created": list(ids.created)}


@dg.job(
    description="Create a PAUSED Advantage+ catalog sales campaign for a tenant and retailer with the "
    "retailer's catalog segment as promoted object — only if QC passes.",
    tags={"kobi/domain": "cpas"},
)
def create_cpas_campaign_job():
    create_cpas_campaign()
