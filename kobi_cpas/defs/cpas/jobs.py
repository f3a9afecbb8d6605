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
from kobi_cpas.cpas.tables import EXECUTION_MANIFEST
from kobi_cpas.meta.errors import MetaSegmentNotCompliantError
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource, WarehouseResource
from kobi_cpas.warehouse import replace_rows, sql_str


class CreateSegmentConfig(dg.Config):
    tenant_id: str = Field(description="Kobi tenant (the brand)")
    retailer: str = Field(description="Retailer as in the registry, e.g. trendyol")
    parent_catalog_id: str = Field(description="The retailer's Collaborative Ads compliant catalog")
    owner_business_id: str = Field(
        description="Business owning the parent catalog (retailer or marketing partner)"
    )
    segment_filter: str = Field(
        description='Product-set rule as JSON, e.g. {"brand": {"i_contains": "acme"}}'
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
    _, tenant = registry.tenant(config.tenant_id)
    rule = parse_segment_filter(config.segment_filter, tenant.tenant_id)
    count, sample = _preview(warehouse.duckdb_path, rule, tenant.tenant_id)
    context.log.info(f"preview: {count} items of {tenant.tenant_id}'s feed match the rule, e.g. {sample[:5]}")
    if count == 0:
        raise dg.Failure(
            description=f"the rule matches no item of {tenant.tenant_id}'s feed snapshot: "
            "an empty segment cannot be advertised; check the rule"
        )
    name = config.name or segment_name(tenant.tenant_id, config.retailer)
    utm = {
        k: v
        for k, v in (
            ("campaign_source", config.utm_source),
            ("campaign_medium", config.utm_medium),
            ("campaign_name", config.utm_campaign),
        )
        if v
    }
    with meta.get_client(logger=context.log) as client:
        try:
            segment_id, created = find_or_create_segment(
                client,
                business_id=config.owner_business_id,
                parent_catalog_id=config.parent_catalog_id,
                name=name,
                filter=rule,
            )
        except MetaSegmentNotCompliantError as exc:
            raise dg.Failure(description=str(exc)) from None
        shared = share_segment(
            client,
            segment_id,
            config.brand_business_id or tenant.business_id,
            config.permitted_tasks,
            utm or None,
            config.collab_terms,
        )
    context.log.info(
        f"segment {segment_id} {'created' if created else 'already existed'}; "
        f"{'shared now' if shared else 'already shared'} with {config.brand_business_id or tenant.business_id}. "
        f'Put catalog_segment_id: "{segment_id}" under {config.retailer} in the registry.'
    )
    context.add_output_metadata(
        {
            "segment_id": segment_id,
            "created": created,
            "shared_now": shared,
            "expected_product_count": count,
            "sample_retailer_ids": ", ".join(sample[:10]),
        }
    )
    return {"segment_id": segment_id, "created": created}


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
    _, tenant = registry.tenant(config.tenant_id)
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
