"""A PAUSED Advantage+ catalog sales campaign on a retailer's catalog segment: plan, QC, create.

:func:`build_campaign_plan` turns a tenant x retailer and :class:`TemplateOptions` into a :class:`CampaignPlan`
(the exact Graph parameters of the campaign, ad set, creative and ad). :func:`qc_plan` runs the collaborative-ads
rules of :mod:`kobi_cpas.cpas.qc` on it before anything exists. :func:`create_campaign` re-checks on Meta (the
segment is a segment of this retailer, the ad account promotes no other retailer's segment), raises
:class:`QcFailed` listing every issue, and otherwise creates what is missing — looking each object up by name
first, so re-running creates nothing twice.

Template: campaign objective OUTCOME_SALES (outcome-based; PRODUCT_CATALOG_SALES is refused for new campaigns
since v21.0), status PAUSED, ``special_ad_categories=[]``, ``promoted_object={"product_catalog_id": <segment id>}``,
``is_adset_budget_sharing_enabled=false`` (required since v24.0 when the budget is on the ad set); ad set
optimising OFFSITE_CONVERSIONS on IMPRESSIONS with a daily budget and minimal targeting (countries, ages), its
``promoted_object`` naming a product set of the segment and the PURCHASE event (plus ``pixel_id`` when given;
an all-products set ``Kobi | all products`` is created when no product set is given); creative ``template_data`` with the product name and the
default description, ``multi_share_end_card: false``, ``template_url_spec.web.url`` on the retailer's website;
no tracking specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kobi_cpas.cpas.accounts import read_account_usage
from kobi_cpas.cpas.graph import GraphClient, get_or_none, post_once, status_filter
from kobi_cpas.cpas.qc import (
    CATALOG_OBJECTIVE,
    DEFAULT_DESCRIPTION,
    DEFAULT_QC,
    QcConfig,
    QcIssue,
    issues_text,
    qc_campaign,
    qc_creative,
)
from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas.registry.models import CpasRetailer, Tenant

ALL_PRODUCTS_SET = "Kobi | all products"


class TemplateOptions(BaseModel):
    """Knobs of the campaign template (all optional except ``page_id``, the Facebook Page the ads run as)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    page_id: str | None = Field(
        default=None, description="Facebook Page id of the brand (required to create)"
    )
    name: str = Field(default="Advantage+ catalog sales", description="suffix of the object names")
    daily_budget: int = Field(default=50_000, gt=0, description="ad set daily budget, account minor units")
    countries: tuple[str, ...] = ("TR",)
    age_min: int = Field(default=18, ge=13, le=65)
    age_max: int = Field(default=65, ge=13, le=65)
    message: str = "{{product.name}} — {retailer}"
    call_to_action: str = "SHOP_NOW"
    product_set_id: str | None = Field(
        default=None, description="product set of the segment; None = all products"
    )
    product_set_name: str = ALL_PRODUCTS_SET
    url_template: str | None = Field(
        default=None, description="deep link web URL; None = the retailer's pattern"
    )
    optimization_goal: str = "OFFSITE_CONVERSIONS"
    billing_event: str = "IMPRESSIONS"
    custom_event_type: str = Field(
        default="PURCHASE", description="conversion event the ad set optimises for"
    )
    pixel_id: str | None = Field(
        default=None, description="pixel of the conversion event; Meta then needs custom_event_type too"
    )


@dataclass(frozen=True)
class CampaignPlan:
    """Everything :func:`create_campaign` will send. Params are Graph parameters (dicts/lists JSON-encoded by
    the client); the ids Meta hands out (campaign_id, adset_id, creative_id, product_set_id) are filled in at
    creation."""

    tenant_id: str
    retailer: str
    ad_account_id: str | None
    segment_id: str | None
    retailer_business_id: str | None
    campaign_name: str
    adset_name: str
    creative_name: str
    ad_name: str
    campaign: dict[str, Any]
    adset: dict[str, Any]
    creative: dict[str, Any]
    ad: dict[str, Any]
    product_set_id: str | None
    product_set_name: str
    page_id: str | None


@dataclass(frozen=True)
class CreatedIds:
    campaign_id: str
    adset_id: str
    creative_id: str
    ad_id: str
    product_set_id: str
    created: tuple[str, ...] = field(
        default=()
    )  # which of campaign/product_set/adset/creative/ad this call made


class QcFailed(Exception):
    """The plan breaks collaborative-ads rules; nothing was created."""

    def __init__(self, plan: CampaignPlan, issues: list[QcIssue]) -> None:
        self.plan = plan
        self.issues = issues
        super().__init__(
            f"campaign '{plan.campaign_name}' for {plan.tenant_id} x {plan.retailer} not created, QC failed: "
            + issues_text(issues)
        )


def campaign_names(tenant_id: str, retailer: str, suffix: str) -> tuple[str, str, str, str]:
    base = f"Kobi CPAS | {tenant_id} | {retailer} | {suffix}"
    return base, f"{base} | ad set", f"{base} | creative", f"{base} | ad"


def build_campaign_plan(
    tenant: Tenant,
    retailer_cfg: CpasRetailer,
    template_options: TemplateOptions | None = None,
    *,
    config: QcConfig = DEFAULT_QC,
) -> CampaignPlan:
    """The template applied to one tenant x retailer (pure; no API call)."""
    opts = template_options or TemplateOptions()
    info = config.retailers.get(retailer_cfg.retailer)
    campaign_name, adset_name, creative_name, ad_name = campaign_names(
        tenant.tenant_id, retailer_cfg.retailer, opts.name
    )
    segment = retailer_cfg.catalog_segment_id
    url = opts.url_template or info.product_url_template
    template_data: dict[str, Any] = {
        "message": opts.message.replace("{retailer}", info.display_name),
        "name": "{{product.name}}",
        "description": DEFAULT_DESCRIPTION,
        "link": info.site_url or url,
        "call_to_action": {"type": opts.call_to_action},
        "multi_share_end_card": False,
    }
    return CampaignPlan(
        tenant_id=tenant.tenant_id,
        retailer=retailer_cfg.retailer,
        ad_account_id=retailer_cfg.dedicated_ad_account_id,
        segment_id=segment,
        retailer_business_id=retailer_cfg.retailer_business_id,
        campaign_name=campaign_name,
        adset_name=adset_name,
        creative_name=creative_name,
        ad_name=ad_name,
        campaign={
            "name": campaign_name,
            "objective": CATALOG_OBJECTIVE,
            "status": "PAUSED",
            "special_ad_categories": [],
            "promoted_object": {"product_catalog_id": segment} if segment else {},
            # The budget lives on the ad set: Meta then requires an explicit answer here.
            "is_adset_budget_sharing_enabled": False,
        },
        adset={
            "name": adset_name,
            "status": "PAUSED",
            "daily_budget": opts.daily_budget,
            "billing_event": opts.billing_event,
            "optimization_goal": opts.optimization_goal,
            "targeting": {
                "geo_locations": {"countries": list(opts.countries)},
                "age_min": opts.age_min,
                "age_max": opts.age_max,
            },
            # product_set_id is added once the product set exists (create_campaign).
            "promoted_object": {
                "custom_event_type": opts.custom_event_type,
                **({"pixel_id": opts.pixel_id} if opts.pixel_id else {}),
            },
        },
        creative={
            "name": creative_name,
            "object_story_spec": {"page_id": opts.page_id, "template_data": template_data},
            "template_url_spec": {"web": {"url": url}} if url else {},
        },
        ad={"name": ad_name, "status": "PAUSED"},
        product_set_id=opts.product_set_id,
        product_set_name=opts.product_set_name,
        page_id=opts.page_id,
    )


def qc_plan(plan: CampaignPlan, *, config: QcConfig = DEFAULT_QC) -> list[QcIssue]:
    """The collaborative-ads rules on the plan itself, plus what creation needs (segment, account, page)."""
    issues: list[QcIssue] = []
    if not plan.ad_account_id:
        issues.append(
            QcIssue("no_ad_account", "no dedicated_ad_account_id in the registry for this retailer")
        )
    if not plan.page_id:
        issues.append(QcIssue("no_page", "TemplateOptions.page_id is missing (the Page the ads run as)"))
    if not config.retailers.get(plan.retailer).domains:
        issues.append(
            QcIssue(
                "unknown_retailer_domain",
                f"no website domain is configured for retailer '{plan.retailer}': the deep link cannot point to it",
            )
        )
    if plan.campaign.get("objective") != CATALOG_OBJECTIVE:
        issues.append(
            QcIssue(
                "wrong_objective",
                f"new campaigns take only outcome-based objectives since v21.0: catalog sales is {CATALOG_OBJECTIVE}",
            )
        )
    segments = {plan.segment_id} if plan.segment_id else set()
    issues += qc_campaign(plan.campaign, plan.retailer, segments, (), config=config)
    issues += qc_creative(plan.creative, plan.ad.get("tracking_specs"), plan.retailer, config=config)
    return issues


def _online_issues(client: GraphClient, plan: CampaignPlan) -> list[QcIssue]:
    issues: list[QcIssue] = []
    if not plan.segment_id or not plan.ad_account_id:
        return issues
    segment = get_or_none(client, plan.segment_id, {"fields": "id,is_catalog_segment,business"})
    owner = str(((segment or {}).get("business") or {}).get("id") or "") or None
    if segment is None:
        issues.append(QcIssue("segment_missing", f"catalog segment {plan.segment_id} does not exist on Meta"))
    elif not segment.get("is_catalog_segment"):
        issues.append(QcIssue("no_catalog_segment", f"catalog {plan.segment_id} is not a catalog segment"))
    elif plan.retailer_business_id and owner != plan.retailer_business_id:
        issues.append(
            QcIssue(
                "segment_of_other_retailer",
                f"catalog segment {plan.segment_id} belongs to business {owner}, not to the retailer's "
                f"business {plan.retailer_business_id}",
            )
        )
    usage = read_account_usage(client, plan.ad_account_id)
    if not usage.exists:
        issues.append(
            QcIssue("ad_account_missing", f"ad account {plan.ad_account_id} does not exist on Meta")
        )
    else:
        retailer_biz = plan.retailer_business_id or owner
        foreign = usage.foreign_segments([retailer_biz]) if retailer_biz else []
        if foreign:
            issues.append(
                QcIssue(
                    "ad_account_mixed_retailers",
                    f"ad account {plan.ad_account_id} already promotes segments of another retailer ("
                    + ", ".join(f"{p.catalog_id} of {p.owner_name or p.owner_business_id}" for p in foreign)
                    + ")",
                )
            )
    return issues


def _find_by_name(client: GraphClient, path: str, name: str) -> str | None:
    level = {"campaigns": "campaign", "adsets": "adset", "ads": "ad"}[path.rsplit("/", 1)[-1]]
    params = {"fields": "id,name", "effective_status": status_filter(level, deleted=False), "limit": 200}
    for obj in client.paginate(path, params):
        if obj.get("name") == name:
            return str(obj["id"])
    return None


def _create(client: GraphClient, path: str, data: dict[str, Any], find: Any) -> str:
    """POST once; after a failure that may have been applied, look the object up before raising."""
    try:
        return str(post_once(client, path, data)["id"])
    except MetaAPIError as exc:
        if exc.retryable:
            found = find()
            if found:
                return found
        raise


def create_campaign(client: GraphClient, plan: CampaignPlan, *, config: QcConfig = DEFAULT_QC) -> CreatedIds:
    """Create the plan's campaign, product set (if needed), ad set, creative and ad — PAUSED.

    Raises :class:`QcFailed` (nothing created) when :func:`qc_plan` or the checks on Meta find issues. Each
    object is looked up by name first (campaign in the account, product set in the segment, ad set in the
    campaign, creative in the account, ad in the ad set), so a second run returns the same ids and creates
    nothing.
    """
    issues = qc_plan(plan, config=config)
    if not issues:
        issues = _online_issues(client, plan)
    if issues:
        raise QcFailed(plan, issues)
    act, segment = str(plan.ad_account_id), str(plan.segment_id)
    created: list[str] = []

    campaign_id = _find_by_name(client, f"{act}/campaigns", plan.campaign_name)
    if campaign_id is None:
        campaign_id = _create(
            client,
            f"{act}/campaigns",
            plan.campaign,
            lambda: _find_by_name(client, f"{act}/campaigns", plan.campaign_name),
        )
        created.append("campaign")

    product_set_id = plan.product_set_id
    if product_set_id is None:
        product_set_id = next(
            (
                str(p["id"])
                for p in client.paginate(f"{segment}/product_sets", {"fields": "id,name", "limit": 200})
                if p.get("name") == plan.product_set_name
            ),
            None,
        )
        if product_set_id is None:
            product_set_id = str(
                client.post(f"{segment}/product_sets", data={"name": plan.product_set_name})["id"]
            )
            created.append("product_set")

    adset_id = _find_by_name(client, f"{campaign_id}/adsets", plan.adset_name)
    if adset_id is None:
        data = {
            **plan.adset,
            "campaign_id": campaign_id,
            "promoted_object": {**plan.adset["promoted_object"], "product_set_id": product_set_id},
        }
        adset_id = _create(
            client,
            f"{act}/adsets",
            data,
            lambda: _find_by_name(client, f"{campaign_id}/adsets", plan.adset_name),
        )
        created.append("adset")

    creative_id = next(
        (
            str(c["id"])
            for c in client.paginate(f"{act}/adcreatives", {"fields": "id,name", "limit": 200})
            if c.get("name") == plan.creative_name
        ),
        None,
    )
    if creative_id is None:
        creative_id = str(
            post_once(client, f"{act}/adcreatives", {**plan.creative, "product_set_id": product_set_id})["id"]
        )
        created.append("creative")

    ad_id = _find_by_name(client, f"{adset_id}/ads", plan.ad_name)
    if ad_id is None:
        data = {**plan.ad, "adset_id": adset_id, "creative": {"creative_id": creative_id}}
        ad_id = _create(
            client, f"{act}/ads", data, lambda: _find_by_name(client, f"{adset_id}/ads", plan.ad_name)
        )
        created.append("ad")
    return CreatedIds(
        campaign_id=campaign_id,
        adset_id=adset_id,
        creative_id=creative_id,
        ad_id=ad_id,
        product_set_id=product_set_id,
        created=tuple(created),
    )
