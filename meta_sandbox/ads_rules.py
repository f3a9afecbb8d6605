"""Campaigns, ad sets, ads and ad creatives: their rules (objectives, statuses, budgets, the Collaborative Ads
checks), Meta-shaped field renderers and the list filters ``routes_ads`` serves them with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kobi_cpas.meta.statuses import EFFECTIVE_STATUSES_BY_LEVEL
from meta_sandbox import errors as gerr
from meta_sandbox.server import RequestContext
from meta_sandbox.state import Ad, AdAccount, AdCreative, AdSet, Campaign, World

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


def list_page(ctx: RequestContext, level: str, objects: list[Any]) -> dict[str, Any]:
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


def required_param(ctx: RequestContext, name: str) -> str:
    value = ctx.param(name)
    if value is None or str(value).strip() == "":
        raise gerr.invalid_parameter(f"The parameter {name} is required")
    return str(value).strip()


def object_param(ctx: RequestContext, name: str, required: bool = False) -> dict[str, Any] | None:
    value = ctx.json_param(name)
    if value is None:
        if required:
            raise gerr.invalid_parameter(f"The parameter {name} is required")
        return None
    if not isinstance(value, dict):
        raise gerr.invalid_parameter(f"Param {name} must be a JSON object")
    return value


def status_param(ctx: RequestContext, default: str = "ACTIVE") -> str:
    status = str(ctx.param("status") or default).upper()
    if status not in ("ACTIVE", "PAUSED"):
        raise gerr.invalid_parameter(f"Param status must be one of {{ACTIVE, PAUSED}}, got {status}")
    return status


def budget_param(ctx: RequestContext, name: str) -> str | None:
    raw = ctx.param(name)
    if raw in (None, ""):
        return None
    if not str(raw).isdigit() or int(raw) <= 0:
        raise gerr.invalid_parameter(f"Param {name} must be a positive integer in the account's minor unit")
    return str(int(raw))


def usable_segment_error(world: World, account: AdAccount, catalog_id: str) -> str | None:
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
