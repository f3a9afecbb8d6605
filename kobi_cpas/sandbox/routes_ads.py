"""Ad account routes: ``GET /act_{id}``; campaigns, ad sets, ads and ad creatives (see the block below)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kobi_cpas.meta.statuses import EFFECTIVE_STATUSES_BY_LEVEL
from kobi_cpas.sandbox import errors as gerr
from kobi_cpas.sandbox.server import FAMILY_ADS, RequestContext, Router
from kobi_cpas.sandbox.state import Ad, AdAccount, AdCreative, AdSet, Campaign, World


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


# -- campaigns, ad sets, ads and ad creatives (Collaborative Ads, issue 5) ---------------------------------
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


# Objectives new campaigns take: since v21.0 only the Outcome-Driven Ad Experience (ODAX) objectives (Marketing
# API changelog, v21.0, "Outcome-Driven Ad Experiences"). Campaigns made earlier keep their legacy objective
# (PRODUCT_CATALOG_SALES, CONVERSIONS, LINK_CLICKS) and are still served on reads.
OBJECTIVES = frozenset(
    {
        "OUTCOME_SALES",
        "OUTCOME_TRAFFIC",
        "OUTCOME_AWARENESS",
        "OUTCOME_ENGAGEMENT",
        "OUTCOME_LEADS",
        "OUTCOME_APP_PROMOTION",
    }
)
# Catalog sales: PRODUCT_CATALOG_SALES (legacy) or OUTCOME_SALES promoting a catalog.
CATALOG_SALES_OBJECTIVES = frozenset({"PRODUCT_CATALOG_SALES", "OUTCOME_SALES"})
CONFIGURED_STATUSES = frozenset({"ACTIVE", "PAUSED", "ARCHIVED", "DELETED"})
BILLING_EVENTS = frozenset({"IMPRESSIONS", "LINK_CLICKS", "THRUPLAY"})
OPTIMIZATION_GOALS = frozenset(
    {"OFFSITE_CONVERSIONS", "LINK_CLICKS", "IMPRESSIONS", "REACH", "VALUE", "LANDING_PAGE_VIEWS"}
)
HIDDEN_BY_DEFAULT = frozenset({"DELETED", "ARCHIVED"})
# The merchant sites template_url_spec links of a segment's ads must point to (host or a subdomain).
RETAILER_DOMAINS = {
    "trendyol": "trendyol.com",
    "hepsiburada": "hepsiburada.com",
    "n11": "n11.com",
    "amazon_tr": "amazon.com.tr",
    "pazarama": "pazarama.com",
}
DEFAULT_DESCRIPTION = "{{product.description}}"
_LEVEL_PARENTS = {"campaign": (), "adset": ("campaign",), "ad": ("campaign", "adset")}


def _meta_time(dt: Any) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%S%z") if dt is not None else None


def _digits(account_id: str) -> str:
    return account_id.removeprefix("act_")


def effective_status(world: World, obj: Any, level: str) -> str:
    """The object's own effective status, or its parent's when a parent is paused, archived or deleted."""
    own = obj.effective_status or obj.status
    if own != "ACTIVE":
        return own
    parents: list[tuple[str, Any]] = []
    if level in ("adset", "ad"):
        parents.append(("CAMPAIGN", world.campaigns.get(obj.campaign_id)))
    if level == "ad":
        parents.append(("ADSET", world.adsets.get(obj.adset_id)))
    for label, parent in parents:
        if parent is None:
            continue
        if parent.status in ("DELETED", "ARCHIVED"):
            return parent.status
        if parent.status == "PAUSED":
            return f"{label}_PAUSED"
    return own


def _ref(obj: Any) -> dict[str, Any] | None:
    return {"id": obj.id, "name": obj.name} if obj is not None else None


def campaign_fields(world: World, c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "account_id": _digits(c.account_id),
        "name": c.name,
        "objective": c.objective,
        "status": c.status,
        "configured_status": c.status,
        "effective_status": lambda: effective_status(world, c, "campaign"),
        "promoted_object": dict(c.promoted_object) if c.promoted_object else None,
        "special_ad_categories": list(c.special_ad_categories),
        "buying_type": "AUCTION",
        "created_time": _meta_time(c.created_time),
    }


def adset_fields(world: World, s: AdSet) -> dict[str, Any]:
    return {
        "id": s.id,
        "account_id": _digits(s.account_id),
        "campaign_id": s.campaign_id,
        "campaign": _ref(world.campaigns.get(s.campaign_id)),
        "name": s.name,
        "status": s.status,
        "configured_status": s.status,
        "effective_status": lambda: effective_status(world, s, "adset"),
        "promoted_object": dict(s.promoted_object) if s.promoted_object else None,
        "daily_budget": s.daily_budget,
        "billing_event": s.billing_event,
        "optimization_goal": s.optimization_goal,
        "targeting": dict(s.targeting) if s.targeting else None,
        "created_time": _meta_time(s.created_time),
    }


CREATIVE_KEYS = (
    "id",
    "name",
    "object_story_spec",
    "template_url_spec",
    "product_set_id",
    "url_tags",
    "multi_share_end_card",
    "object_type",
)


def _creative_view(creative: dict[str, Any]) -> dict[str, Any]:
    # Every key a caller may ask for under creative{...}; None values are left out of the answer.
    view = dict.fromkeys(CREATIVE_KEYS)
    view["object_type"] = "SHARE"
    view.update(creative)
    return view


def ad_fields(world: World, ad: Ad) -> dict[str, Any]:
    return {
        "id": ad.id,
        "account_id": _digits(ad.account_id),
        "campaign_id": ad.campaign_id,
        "adset_id": ad.adset_id,
        "campaign": _ref(world.campaigns.get(ad.campaign_id)),
        "adset": _ref(world.adsets.get(ad.adset_id)),
        "name": ad.name,
        "status": ad.status,
        "configured_status": ad.status,
        "effective_status": lambda: effective_status(world, ad, "ad"),
        "creative": _creative_view(ad.creative) if ad.creative else None,
        "tracking_specs": list(ad.tracking_specs) if ad.tracking_specs else None,
        "created_time": _meta_time(ad.created_time),
    }


def creative_fields(cr: AdCreative) -> dict[str, Any]:
    return {**_creative_view({"id": cr.id, "name": cr.name, **cr.spec}), "account_id": _digits(cr.account_id)}


# -- list filtering ---------------------------------------------------------------------------------------


def _check_statuses(fld: str, op: str, values: list[str], level: str) -> None:
    # Meta refuses a status the level does not have (ADSET_PAUSED on campaigns, ...) rather than ignore it.
    bad = [v for v in values if v not in EFFECTIVE_STATUSES_BY_LEVEL[level]]
    if bad:
        raise gerr.invalid_parameter(
            f"Filtering field {fld} with operation {op.lower()} and value {bad[0]} is not supported"
        )


def _filters(ctx: RequestContext, level: str) -> tuple[list[Callable[[dict[str, Any]], bool]], bool]:
    """Predicates over rendered objects from ``filtering``/``effective_status``; and whether the caller filtered
    on effective_status (otherwise DELETED/ARCHIVED objects are hidden)."""
    preds: list[Callable[[dict[str, Any]], bool]] = []
    status_filtered = False
    raw = ctx.json_param("filtering")
    if raw is not None and not isinstance(raw, list):
        raise gerr.invalid_parameter("Param filtering must be a JSON array of {field, operator, value}")
    for i, f in enumerate(raw or []):
        if not isinstance(f, dict) or not {"field", "operator"} <= set(f):
            raise gerr.invalid_parameter(
                f"Param filtering[{i}] must be an object with field, operator, value"
            )
        fld, op, value = str(f["field"]), str(f["operator"]).upper(), f.get("value")
        key = fld.split(".", 1)[1] if fld.startswith(f"{level}.") else fld
        if key.startswith(("campaign.", "adset.")) and key.split(".", 1)[0] in _LEVEL_PARENTS[level]:
            parent, sub = key.split(".", 1)
            if sub != "id":
                raise gerr.invalid_parameter(f"Filtering field {fld} is invalid")
            key = f"{parent}_id"
        if key not in ("effective_status", "id", "name", "campaign_id", "adset_id"):
            raise gerr.invalid_parameter(f"Filtering field {fld} is invalid")
        if key == "effective_status":
            status_filtered = True
        values = value if isinstance(value, list) else [value]
        values = [str(v) for v in values]
        if key == "effective_status":
            _check_statuses(fld, op, values, level)
        if op == "IN" or op == "EQUAL":
            preds.append(lambda o, k=key, vs=values: str(o.get(k)) in vs)
        elif op == "NOT_IN" or op == "NOT_EQUAL":
            preds.append(lambda o, k=key, vs=values: str(o.get(k)) not in vs)
        elif op == "CONTAIN" and key == "name":
            preds.append(lambda o, vs=values: vs[0].lower() in str(o.get("name", "")).lower())
        else:
            raise gerr.invalid_parameter(f"Filtering operator {op} is not supported on {fld}")
    statuses = ctx.json_param("effective_status")
    if statuses is not None:
        if not isinstance(statuses, list):
            raise gerr.invalid_parameter("Param effective_status must be a JSON array")
        status_filtered = True
        wanted = [str(s) for s in statuses]
        _check_statuses("effective_status", "IN", wanted, level)
        preds.append(lambda o: o.get("effective_status") in wanted)
    return preds, status_filtered


def _list(ctx: RequestContext, level: str, objects: list[Any]) -> dict[str, Any]:
    world = ctx.world
    render = {"campaign": campaign_fields, "adset": adset_fields, "ad": ad_fields}[level]
    preds, status_filtered = _filters(ctx, level)
    ordered = sorted(
        objects, key=lambda o: (o.created_time.timestamp() if o.created_time else 0, o.id), reverse=True
    )
    items = []
    for obj in ordered:
        full = {k: (v() if callable(v) else v) for k, v in render(world, obj).items()}
        if not status_filtered and full["effective_status"] in HIDDEN_BY_DEFAULT:
            continue
        if all(p(full) for p in preds):
            items.append(ctx.select(full, defaults=("id",)))
    return ctx.paginate(items)


# -- validation helpers ----------------------------------------------------------------------------------


def _req(ctx: RequestContext, name: str) -> str:
    value = ctx.param(name)
    if value is None or str(value).strip() == "":
        raise gerr.invalid_parameter(f"The parameter {name} is required")
    return str(value).strip()


def _obj_param(ctx: RequestContext, name: str, required: bool = False) -> dict[str, Any] | None:
    value = ctx.json_param(name)
    if value is None:
        if required:
            raise gerr.invalid_parameter(f"The parameter {name} is required")
        return None
    if not isinstance(value, dict):
        raise gerr.invalid_parameter(f"Param {name} must be a JSON object")
    return value


def _status_param(ctx: RequestContext, default: str = "ACTIVE") -> str:
    status = str(ctx.param("status") or default).upper()
    if status not in ("ACTIVE", "PAUSED"):
        raise gerr.invalid_parameter(f"Param status must be one of {{ACTIVE, PAUSED}}, got {status}")
    return status


def _budget(ctx: RequestContext, name: str) -> str | None:
    raw = ctx.param(name)
    if raw in (None, ""):
        return None
    if not str(raw).isdigit() or int(raw) <= 0:
        raise gerr.invalid_parameter(f"Param {name} must be a positive integer in the account's minor unit")
    return str(int(raw))


def _usable_segment_error(world: World, account: AdAccount, catalog_id: str) -> str | None:
    """Why ``account`` cannot promote ``catalog_id`` (None when it can); links the account to a retailer."""
    catalog = world.catalogs.get(catalog_id)
    if catalog is None:
        return f"Param promoted_object[product_catalog_id]: catalog {catalog_id} does not exist"
    if not catalog.is_catalog_segment:
        return None
    share = next(
        (
            s
            for s in world.segment_shares.values()
            if s.catalog_id == catalog.id and s.business_id == account.business_id
        ),
        None,
    )
    if share is None or not share.accepted:
        state = "has not been accepted by" if share is not None else "is not shared with"
        return (
            f"Catalog segment {catalog.id} {state} business {account.business_id} of ad account {account.id}"
        )
    if "ADVERTISE" not in share.permitted_tasks:
        return f"Business {account.business_id} may not advertise with catalog segment {catalog.id} (no ADVERTISE task)"
    retailer = world.retailer_of_catalog(catalog)
    if account.retailer and retailer and account.retailer != retailer:
        return (
            f"Ad account {account.id} is linked to retailer {account.retailer} and can only select catalog "
            f"segments belonging to that retailer; catalog segment {catalog.id} belongs to {retailer}"
        )
    return None


def _host_ok(url: str, domain: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == domain or host.endswith("." + domain)


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [u for v in value.values() for u in _urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _urls(v)]
    return []


def cpas_ad_violations(creative: dict[str, Any], tracking_specs: Any, retailer: str | None) -> list[str]:
    """Why Meta refuses this ad on a catalog segment (empty list: allowed)."""
    problems = []
    if tracking_specs:
        problems.append("custom tracking specs are disabled for ads that use a catalog segment")
    template_data = (creative.get("object_story_spec") or {}).get("template_data") or {}
    if creative.get("multi_share_end_card") or template_data.get("multi_share_end_card"):
        problems.append("multi_share_end_card must stay false for ads that use a catalog segment")
    if "description" in template_data and template_data["description"] != DEFAULT_DESCRIPTION:
        problems.append("template_data.description cannot be changed for ads that use a catalog segment")
    domain = RETAILER_DOMAINS.get(retailer or "")
    if domain:
        for url in _urls(creative.get("template_url_spec")):
            if url.startswith(("http://", "https://")) and not _host_ok(url, domain):
                problems.append(
                    f"template_url_spec must point to the merchant's website ({domain}), got {url}"
                )
    return problems


def register_campaign_routes(router: Router) -> None:
    levels = {"campaign": "campaigns", "adset": "adsets", "ad": "ads"}

    for level, attr in levels.items():

        def list_in_account(ctx: RequestContext, level: str = level, attr: str = attr) -> dict[str, Any]:
            objs = [o for o in getattr(ctx.world, attr).values() if o.account_id == ctx.node.id]
            return _list(ctx, level, objs)

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
                obj.daily_budget = _budget(ctx, "daily_budget")
            return {"success": True}

        router.node(level, name=f"{level}.update", methods=("POST",), family=FAMILY_ADS)(update_node)

        def delete_node(ctx: RequestContext) -> dict[str, Any]:
            ctx.node.status = ctx.node.effective_status = "DELETED"
            return {"success": True}

        router.node(level, name=f"{level}.delete", methods=("DELETE",), family=FAMILY_ADS)(delete_node)

    @router.edge("campaign", "adsets", name="campaign.adsets.list", family=FAMILY_ADS)
    def campaign_adsets(ctx: RequestContext) -> dict[str, Any]:
        return _list(ctx, "adset", [s for s in ctx.world.adsets.values() if s.campaign_id == ctx.node.id])

    @router.edge("campaign", "ads", name="campaign.ads.list", family=FAMILY_ADS)
    def campaign_ads(ctx: RequestContext) -> dict[str, Any]:
        return _list(ctx, "ad", [a for a in ctx.world.ads.values() if a.campaign_id == ctx.node.id])

    @router.edge("adset", "ads", name="adset.ads.list", family=FAMILY_ADS)
    def adset_ads(ctx: RequestContext) -> dict[str, Any]:
        return _list(ctx, "ad", [a for a in ctx.world.ads.values() if a.adset_id == ctx.node.id])

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
        name = _req(ctx, "name")
        objective = _req(ctx, "objective").upper()
        if objective not in OBJECTIVES:
            raise gerr.invalid_parameter(
                f"Param objective must be one of {{{', '.join(sorted(OBJECTIVES))}}}"
            )
        campaign_budget = _budget(ctx, "daily_budget") or _budget(ctx, "lifetime_budget")
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
        status = _status_param(ctx)
        promoted = _obj_param(ctx, "promoted_object") or {}
        catalog_id = str(promoted.get("product_catalog_id") or "")

        if account.account_status != 1:
            raise gerr.invalid_parameter(f"Ad account {account.id} is not active")
        if catalog_id:
            problem = _usable_segment_error(world, account, catalog_id)
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
        name = _req(ctx, "name")
        campaign = world.campaigns.get(_req(ctx, "campaign_id"))
        if campaign is None or campaign.account_id != account.id or campaign.status == "DELETED":
            raise gerr.invalid_parameter(f"Param campaign_id must be a campaign of ad account {account.id}")
        billing = _req(ctx, "billing_event").upper()
        if billing not in BILLING_EVENTS:
            raise gerr.invalid_parameter(f"Param billing_event must be one of {sorted(BILLING_EVENTS)}")
        goal = _req(ctx, "optimization_goal").upper()
        if goal not in OPTIMIZATION_GOALS:
            raise gerr.invalid_parameter(
                f"Param optimization_goal must be one of {sorted(OPTIMIZATION_GOALS)}"
            )
        daily, lifetime = _budget(ctx, "daily_budget"), _budget(ctx, "lifetime_budget")
        if not daily and not lifetime:
            raise gerr.invalid_parameter("Either daily_budget or lifetime_budget is required")
        targeting = _obj_param(ctx, "targeting", required=True) or {}
        if not targeting.get("geo_locations"):
            raise gerr.invalid_parameter("Param targeting must include geo_locations")
        promoted = _obj_param(ctx, "promoted_object") or {}
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
            status=_status_param(ctx),
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
        name = _req(ctx, "name")
        story = _obj_param(ctx, "object_story_spec", required=True) or {}
        if not story.get("page_id"):
            raise gerr.invalid_parameter("Param object_story_spec must have page_id")
        spec: dict[str, Any] = {"object_story_spec": story}
        url_spec = _obj_param(ctx, "template_url_spec")
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
        name = _req(ctx, "name")
        adset = world.adsets.get(_req(ctx, "adset_id"))
        if adset is None or adset.account_id != account.id or adset.status == "DELETED":
            raise gerr.invalid_parameter(f"Param adset_id must be an ad set of ad account {account.id}")
        ref = _obj_param(ctx, "creative", required=True) or {}
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
        status = _status_param(ctx)
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
