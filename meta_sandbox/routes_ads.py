"""Ad account routes: ``GET /act_{id}``; campaigns, ad sets, ads and ad creatives (see the block below)."""

from __future__ import annotations

import json
from typing import Any

from meta_sandbox import errors as gerr
from meta_sandbox.ads_rules import (
    BILLING_EVENTS,
    CATALOG_SALES_OBJECTIVES,
    CONFIGURED_STATUSES,
    OBJECTIVES,
    OPTIMIZATION_GOALS,
    ad_fields,
    adset_fields,
    budget_param,
    campaign_fields,
    cpas_ad_violations,
    creative_fields,
    list_page,
    object_param,
    required_param,
    status_param,
    usable_segment_error,
)
from meta_sandbox.server import FAMILY_ADS, RequestContext, Router
from meta_sandbox.state import Ad, AdAccount, AdCreative, AdSet, Campaign, World


def ad_account_fields(world: World, account: AdAccount) -> dict[str, Any]:
    business = world.businesses.get(account.business_id or "")
    return {
        "id": account.id,
        "account_id": account.account_id,
        "name": account.name,
        "currency": account.currency,
        "timezone_name": account.timezone_name,
        "account_status": account.account_status,
        "business": {"id": business.id, "name": business.name} if business else None,
    }


def register(router: Router) -> None:
    @router.node("ad_account", name="ad_account.get", family=FAMILY_ADS)
    def get_ad_account(ctx: RequestContext) -> dict[str, Any]:
        # Meta's default fields for an ad account are account_id and id.
        return ctx.select(ad_account_fields(ctx.world, ctx.node), "AdAccount", defaults=("account_id", "id"))

    register_campaign_routes(router)


# -- campaigns, ad sets, ads and ad creatives: what a Collaborative Ads campaign is built from --------------
#
# GET  /act_{id}/campaigns|adsets|ads|adcreatives   paged; ``filtering`` ([{"field": "effective_status",
#      "operator": "IN", "value": [...]}], also "<level>.effective_status", "id", "name") and ``effective_status``
#      are honoured; without an effective_status filter DELETED and ARCHIVED objects are left out, as Meta does.
# GET  /{campaign_id}/adsets|ads, /{adset_id}/ads; GET|POST|DELETE /{campaign_id|adset_id|ad_id}; GET /{creative_id}
# POST /act_{id}/campaigns   name, objective, status, special_ad_categories, promoted_object,
#                            is_adset_budget_sharing_enabled (required without a campaign budget) -> {"id"}
# POST /act_{id}/adsets      name, campaign_id, status, daily_budget|lifetime_budget, billing_event,
#                            optimization_goal, targeting (with geo_locations), promoted_object -> {"id"}
# POST /act_{id}/adcreatives name, object_story_spec, template_url_spec, product_set_id, url_tags -> {"id"}
# POST /act_{id}/ads         name, adset_id, creative {"creative_id"}, status, tracking_specs -> {"id"}
#
# Collaborative Ads rules enforced on POST: a catalog segment can only be promoted by an ad account of a business
# the segment is shared with (accepted, ADVERTISE); a dedicated ad account is linked to the retailer of the first
# segment it promotes and then refuses segments of any other retailer; ads of a segment campaign cannot carry
# custom tracking specs, multi_share_end_card, a changed template_data.description, or template_url_spec links
# off the retailer's site.


def register_campaign_routes(router: Router) -> None:
    levels = {"campaign": "campaigns", "adset": "adsets", "ad": "ads"}

    for level, attr in levels.items():

        def list_in_account(ctx: RequestContext, level: str = level, attr: str = attr) -> dict[str, Any]:
            objs = [o for o in getattr(ctx.world, attr).values() if o.account_id == ctx.node.id]
            return list_page(ctx, level, objs)

        router.edge("ad_account", attr, name=f"ad_account.{attr}.list", family=FAMILY_ADS)(list_in_account)

        def get_node(ctx: RequestContext, level: str = level) -> dict[str, Any]:
            render = {"campaign": campaign_fields, "adset": adset_fields, "ad": ad_fields}[level]
            return ctx.select(render(ctx.world, ctx.node), defaults=("id",))

        router.node(level, name=f"{level}.get", family=FAMILY_ADS)(get_node)

        def update_node(ctx: RequestContext, level: str = level) -> dict[str, Any]:
            obj = ctx.node
            if ctx.param("status") not in (None, ""):
                status = str(ctx.param("status")).upper()
                if status not in CONFIGURED_STATUSES:
                    raise gerr.invalid_parameter(f"Param status must be one of {sorted(CONFIGURED_STATUSES)}")
                obj.status = obj.effective_status = status
            if ctx.param("name") not in (None, ""):
                obj.name = str(ctx.param("name"))
            if level == "adset" and ctx.param("daily_budget") not in (None, ""):
                obj.daily_budget = budget_param(ctx, "daily_budget")
            return {"success": True}

        router.node(level, name=f"{level}.update", methods=("POST",), family=FAMILY_ADS)(update_node)

        def delete_node(ctx: RequestContext) -> dict[str, Any]:
            ctx.node.status = ctx.node.effective_status = "DELETED"
            return {"success": True}

        router.node(level, name=f"{level}.delete", methods=("DELETE",), family=FAMILY_ADS)(delete_node)

    @router.edge("campaign", "adsets", name="campaign.adsets.list", family=FAMILY_ADS)
    def campaign_adsets(ctx: RequestContext) -> dict[str, Any]:
        return list_page(ctx, "adset", [s for s in ctx.world.adsets.values() if s.campaign_id == ctx.node.id])

    @router.edge("campaign", "ads", name="campaign.ads.list", family=FAMILY_ADS)
    def campaign_ads(ctx: RequestContext) -> dict[str, Any]:
        return list_page(ctx, "ad", [a for a in ctx.world.ads.values() if a.campaign_id == ctx.node.id])

    @router.edge("adset", "ads", name="adset.ads.list", family=FAMILY_ADS)
    def adset_ads(ctx: RequestContext) -> dict[str, Any]:
        return list_page(ctx, "ad", [a for a in ctx.world.ads.values() if a.adset_id == ctx.node.id])

    @router.edge("ad_account", "adcreatives", name="ad_account.adcreatives.list", family=FAMILY_ADS)
    def list_creatives(ctx: RequestContext) -> dict[str, Any]:
        crs = sorted(
            (c for c in ctx.world.adcreatives.values() if c.account_id == ctx.node.id), key=lambda c: c.id
        )
        return ctx.paginate([ctx.select(creative_fields(c), "AdCreative", defaults=("id",)) for c in crs])

    @router.node("adcreative", name="adcreative.get", family=FAMILY_ADS)
    def get_creative(ctx: RequestContext) -> dict[str, Any]:
        return ctx.select(creative_fields(ctx.node), "AdCreative", defaults=("id",))

    @router.edge(
        "ad_account", "campaigns", name="ad_account.campaigns.create", methods=("POST",), family=FAMILY_ADS
    )
    def create_campaign(ctx: RequestContext) -> dict[str, Any]:
        world, account = ctx.world, ctx.node
        name = required_param(ctx, "name")
        objective = required_param(ctx, "objective").upper()
        if objective not in OBJECTIVES:
            raise gerr.invalid_parameter(
                f"Param objective must be one of {{{', '.join(sorted(OBJECTIVES))}}}"
            )
        campaign_budget = budget_param(ctx, "daily_budget") or budget_param(ctx, "lifetime_budget")
        sharing = ctx.param("is_adset_budget_sharing_enabled")
        if not campaign_budget and sharing is None:
            # Meta's answer since v24.0 when the budget lives on the ad sets.
            raise gerr.GraphError(
                100,
                "Invalid parameter",
                subcode=4834011,
                user_title="Must specify True or False in is_adset_budget_sharing_enabled field",
                user_msg="You must specify True or False in is_adset_budget_sharing_enabled field if you are not "
                "setting budget at the campaign level.",
            )
        categories = ctx.json_param("special_ad_categories")
        if categories is None:
            raise gerr.invalid_parameter("The parameter special_ad_categories is required (use [] for none)")
        if not isinstance(categories, list):
            raise gerr.invalid_parameter("Param special_ad_categories must be a JSON array")
        status = status_param(ctx)
        promoted = object_param(ctx, "promoted_object") or {}
        catalog_id = str(promoted.get("product_catalog_id") or "")

        if account.account_status != 1:
            raise gerr.invalid_parameter(f"Ad account {account.id} is not active")
        if catalog_id:
            problem = usable_segment_error(world, account, catalog_id)
            if problem:
                raise gerr.invalid_parameter(problem)
        catalog = world.catalogs.get(catalog_id) if catalog_id else None
        retailer = world.retailer_of_catalog(catalog) if catalog and catalog.is_catalog_segment else None
        if retailer and not account.retailer:
            account.retailer = retailer  # Meta links a dedicated ad account to its first retailer
        campaign = Campaign(
            id=world.new_id(),
            account_id=account.id,
            name=name,
            objective=objective,
            status=status,
            effective_status=status,
            promoted_object={**promoted, "product_catalog_id": catalog_id} if catalog_id else dict(promoted),
            created_time=ctx.now(),
            tenant_id=account.tenant_id,
            retailer=retailer,
            special_ad_categories=[str(c) for c in categories],
        )
        world.campaigns[campaign.id] = campaign
        return {"id": campaign.id}

    @router.edge(
        "ad_account", "adsets", name="ad_account.adsets.create", methods=("POST",), family=FAMILY_ADS
    )
    def create_adset(ctx: RequestContext) -> dict[str, Any]:
        world, account = ctx.world, ctx.node
        name = required_param(ctx, "name")
        campaign = world.campaigns.get(required_param(ctx, "campaign_id"))
        if campaign is None or campaign.account_id != account.id or campaign.status == "DELETED":
            raise gerr.invalid_parameter(f"Param campaign_id must be a campaign of ad account {account.id}")
        billing = required_param(ctx, "billing_event").upper()
        if billing not in BILLING_EVENTS:
            raise gerr.invalid_parameter(f"Param billing_event must be one of {sorted(BILLING_EVENTS)}")
        goal = required_param(ctx, "optimization_goal").upper()
        if goal not in OPTIMIZATION_GOALS:
            raise gerr.invalid_parameter(
                f"Param optimization_goal must be one of {sorted(OPTIMIZATION_GOALS)}"
            )
        daily, lifetime = budget_param(ctx, "daily_budget"), budget_param(ctx, "lifetime_budget")
        if not daily and not lifetime:
            raise gerr.invalid_parameter("Either daily_budget or lifetime_budget is required")
        targeting = object_param(ctx, "targeting", required=True) or {}
        if not targeting.get("geo_locations"):
            raise gerr.invalid_parameter("Param targeting must include geo_locations")
        promoted = object_param(ctx, "promoted_object") or {}
        if campaign.objective in CATALOG_SALES_OBJECTIVES and campaign.promoted_object.get(
            "product_catalog_id"
        ):
            set_id = str(promoted.get("product_set_id") or "")
            product_set = world.product_sets.get(set_id)
            if product_set is None:
                raise gerr.invalid_parameter(
                    "Param promoted_object must have the product_set_id of an existing product set for a "
                    "catalog sales campaign"
                )
            catalog_id = campaign.promoted_object.get("product_catalog_id")
            if product_set.catalog_id != catalog_id:
                raise gerr.invalid_parameter(
                    f"Product set {set_id} belongs to catalog {product_set.catalog_id}, not to the campaign's "
                    f"promoted catalog {catalog_id}"
                )
        adset = AdSet(
            id=world.new_id(),
            account_id=account.id,
            campaign_id=campaign.id,
            name=name,
            status=status_param(ctx),
            promoted_object=promoted,
            daily_budget=daily,
            billing_event=billing,
            optimization_goal=goal,
            targeting=targeting,
            created_time=ctx.now(),
        )
        adset.effective_status = adset.status
        world.adsets[adset.id] = adset
        return {"id": adset.id}

    @router.edge(
        "ad_account",
        "adcreatives",
        name="ad_account.adcreatives.create",
        methods=("POST",),
        family=FAMILY_ADS,
    )
    def create_creative(ctx: RequestContext) -> dict[str, Any]:
        world, account = ctx.world, ctx.node
        name = required_param(ctx, "name")
        story = object_param(ctx, "object_story_spec", required=True) or {}
        if not story.get("page_id"):
            raise gerr.invalid_parameter("Param object_story_spec must have page_id")
        spec: dict[str, Any] = {"object_story_spec": story}
        url_spec = object_param(ctx, "template_url_spec")
        if url_spec is not None:
            spec["template_url_spec"] = url_spec
        set_id = ctx.param("product_set_id")
        if set_id not in (None, ""):
            if str(set_id) not in world.product_sets:
                raise gerr.invalid_parameter(f"Param product_set_id: product set {set_id} does not exist")
            spec["product_set_id"] = str(set_id)
        if ctx.param("url_tags") not in (None, ""):
            spec["url_tags"] = str(ctx.param("url_tags"))
        creative = AdCreative(
            id=world.new_id(), account_id=account.id, name=name, spec=spec, created_time=ctx.now()
        )
        world.adcreatives[creative.id] = creative
        return {"id": creative.id}

    @router.edge("ad_account", "ads", name="ad_account.ads.create", methods=("POST",), family=FAMILY_ADS)
    def create_ad(ctx: RequestContext) -> dict[str, Any]:
        world, account = ctx.world, ctx.node
        name = required_param(ctx, "name")
        adset = world.adsets.get(required_param(ctx, "adset_id"))
        if adset is None or adset.account_id != account.id or adset.status == "DELETED":
            raise gerr.invalid_parameter(f"Param adset_id must be an ad set of ad account {account.id}")
        ref = object_param(ctx, "creative", required=True) or {}
        creative = world.adcreatives.get(str(ref.get("creative_id") or ""))
        if creative is None or creative.account_id != account.id:
            raise gerr.invalid_parameter(
                'Param creative must be {"creative_id": <an ad creative of this account>}'
            )
        tracking = ctx.json_param("tracking_specs")
        if tracking is not None and not isinstance(tracking, list):
            raise gerr.invalid_parameter("Param tracking_specs must be a JSON array")
        campaign = world.campaigns[adset.campaign_id]
        catalog = world.catalogs.get(str(campaign.promoted_object.get("product_catalog_id") or ""))
        if catalog is not None and catalog.is_catalog_segment:
            problems = cpas_ad_violations(creative.spec, tracking, world.retailer_of_catalog(catalog))
            if problems:
                raise gerr.invalid_parameter("; ".join(problems))
        status = status_param(ctx)
        ad = Ad(
            id=world.new_id(),
            account_id=account.id,
            campaign_id=campaign.id,
            adset_id=adset.id,
            name=name,
            status=status,
            effective_status=status,
            creative={"id": creative.id, "name": creative.name, **json.loads(json.dumps(creative.spec))},
            tracking_specs=tracking or None,
            created_time=ctx.now(),
        )
        world.ads[ad.id] = ad
        return {"id": ad.id}
