"""Meta's Graph API contract as the official Python Business SDK (``facebook-business``) defines it.

The client and the sandbox were written together, so they can agree and both be wrong. This module reads the
SDK's generated object classes instead: each class's ``Field`` names, its enum inner classes, and for every edge
method the ``FacebookRequest`` it builds with ``pending=True`` (nothing is sent): the accepted params with their
types and enums, and the edge's return class.

``ROUTES`` maps each sandbox route name (``meta_sandbox/routes_*.py``) to the SDK class and method that
make the same call. Routes and fields the SDK does not define are listed in ``NO_SDK_ROUTE`` and
``DOCS_ONLY_FIELDS``, each with its reason; nothing else is allowed.

Test-only: the ``kobi_cpas`` package never imports ``facebook_business``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from facebook_business.adobjects.abstractcrudobject import AbstractCrudObject
from facebook_business.api import FacebookAdsApi, FacebookRequest
from facebook_business.apiconfig import ads_api_config
from facebook_business.session import FacebookSession

SDK_API_VERSION: str = ads_api_config["API_VERSION"]

# Parameters the Graph API takes on every read, outside any edge's own list: the SDK's Cursor adds them itself.
GRAPH_READ_PARAMS = frozenset({"fields", "limit", "after", "before"})


@dataclass(frozen=True)
class SdkCall:
    cls: str  # an adobjects class, e.g. "ProductCatalog"
    method: str  # the SDK method making this call, e.g. "get_product_feeds"


ROUTES: dict[str, SdkCall] = {
    # catalogs
    "catalog.get": SdkCall("ProductCatalog", "api_get"),
    "catalog.external_event_sources": SdkCall("ProductCatalog", "get_external_event_sources"),
    "business.get": SdkCall("Business", "api_get"),
    "cpas.business.get": SdkCall("Business", "api_get"),
    "business.owned_product_catalogs": SdkCall("Business", "get_owned_product_catalogs"),
    "cpas.business.owned_product_catalogs.create": SdkCall("Business", "create_owned_product_catalog"),
    # feeds, uploads, batch, items, diagnostics
    "catalog.product_feeds.list": SdkCall("ProductCatalog", "get_product_feeds"),
    "catalog.product_feeds.create": SdkCall("ProductCatalog", "create_product_feed"),
    "product_feed.get": SdkCall("ProductFeed", "api_get"),
    "product_feed.uploads.list": SdkCall("ProductFeed", "get_uploads"),
    "product_feed.uploads.create": SdkCall("ProductFeed", "create_upload"),
    "feed_upload.get": SdkCall("ProductFeedUpload", "api_get"),
    "feed_upload.errors": SdkCall("ProductFeedUpload", "get_errors"),
    "catalog.items_batch": SdkCall("ProductCatalog", "create_items_batch"),
    "catalog.check_batch_request_status": SdkCall("ProductCatalog", "get_check_batch_request_status"),
    "catalog.products": SdkCall("ProductCatalog", "get_products"),
    "product_item.get": SdkCall("ProductItem", "api_get"),
    "catalog.diagnostics": SdkCall("ProductCatalog", "get_diagnostics"),
    # collaborative ads: shares, partners, requests, product sets
    "cpas.catalog.agencies.list": SdkCall("ProductCatalog", "get_agencies"),
    "cpas.catalog.agencies.share": SdkCall("ProductCatalog", "create_agency"),
    "cpas.catalog.agencies.unshare": SdkCall("ProductCatalog", "delete_agencies"),
    "cpas.catalog.share_settings": SdkCall("ProductCatalog", "get_collaborative_ads_share_settings"),
    "cpas.catalog.assigned_users.list": SdkCall("ProductCatalog", "get_assigned_users"),
    "cpas.catalog.assigned_users.add": SdkCall("ProductCatalog", "create_assigned_user"),
    "cpas.catalog.assigned_users.remove": SdkCall("ProductCatalog", "delete_assigned_users"),
    "cpas.business.suggested_partners": SdkCall("Business", "get_collaborative_ads_suggested_partners"),
    "cpas.partner_recommendation.get": SdkCall("CPASAdvertiserPartnershipRecommendation", "api_get"),
    "cpas.business.collaboration_requests.list": SdkCall(
        "Business", "get_collaborative_ads_collaboration_requests"
    ),
    "cpas.collaboration_request.get": SdkCall("CPASCollaborationRequest", "api_get"),
    "cpas.business.setup_config": SdkCall("Business", "get_cpas_business_setup_config"),
    "cpas.catalog.product_sets.list": SdkCall("ProductCatalog", "get_product_sets"),
    "cpas.catalog.product_sets.create": SdkCall("ProductCatalog", "create_product_set"),
    "cpas.product_set.get": SdkCall("ProductSet", "api_get"),
    "cpas.product_set.update": SdkCall("ProductSet", "api_update"),
    "cpas.product_set.delete": SdkCall("ProductSet", "api_delete"),
    # ads
    "ad_account.get": SdkCall("AdAccount", "api_get"),
    "ad_account.campaigns.list": SdkCall("AdAccount", "get_campaigns"),
    "ad_account.campaigns.create": SdkCall("AdAccount", "create_campaign"),
    "ad_account.adsets.list": SdkCall("AdAccount", "get_ad_sets"),
    "ad_account.adsets.create": SdkCall("AdAccount", "create_ad_set"),
    "ad_account.ads.list": SdkCall("AdAccount", "get_ads"),
    "ad_account.ads.create": SdkCall("AdAccount", "create_ad"),
    "ad_account.adcreatives.list": SdkCall("AdAccount", "get_ad_creatives"),
    "ad_account.adcreatives.create": SdkCall("AdAccount", "create_ad_creative"),
    "adcreative.get": SdkCall("AdCreative", "api_get"),
    "campaign.get": SdkCall("Campaign", "api_get"),
    "campaign.update": SdkCall("Campaign", "api_update"),
    "campaign.delete": SdkCall("Campaign", "api_delete"),
    "campaign.adsets.list": SdkCall("Campaign", "get_ad_sets"),
    "campaign.ads.list": SdkCall("Campaign", "get_ads"),
    "adset.get": SdkCall("AdSet", "api_get"),
    "adset.update": SdkCall("AdSet", "api_update"),
    "adset.delete": SdkCall("AdSet", "api_delete"),
    "adset.ads.list": SdkCall("AdSet", "get_ads"),
    "ad.get": SdkCall("Ad", "api_get"),
    "ad.update": SdkCall("Ad", "api_update"),
    "ad.delete": SdkCall("Ad", "api_delete"),
    # insights
    "ad_account.insights": SdkCall("AdAccount", "get_insights"),
    "ad_account.insights.async": SdkCall("AdAccount", "get_insights_async"),
    "campaign.insights": SdkCall("Campaign", "get_insights"),
    "campaign.insights.async": SdkCall("Campaign", "get_insights_async"),
    "adset.insights": SdkCall("AdSet", "get_insights"),
    "adset.insights.async": SdkCall("AdSet", "get_insights_async"),
    "ad.insights": SdkCall("Ad", "get_insights"),
    "ad.insights.async": SdkCall("Ad", "get_insights_async"),
    "report_run.get": SdkCall("AdReportRun", "api_get"),
    "report_run.insights": SdkCall("AdReportRun", "get_insights"),
}

# Calls Meta documents but the SDK has no method for: not checked against the SDK, each for its reason.
NO_SDK_ROUTE: dict[str, str] = {
    "event_source.get": "the SDK's ExternalEventSource has no api_get; the client reads sources through the edge",
    "diagnostics.catalog_all_errors": "documented only on Meta's Catalog Integration page (shared/reference/002)",
    "cpas.directory": "the Collaborative Ads directory is documented in Meta's CPAS guide, not generated in the SDK",
    "cpas.directory.merchants": "same: the directory's merchants edge is in Meta's CPAS guide, not in the SDK",
    "cpas.business.collaboration_requests.create": (
        "the SDK generates only the read of this edge; Meta's CPAS guide documents the POST"
    ),
    "cpas.ad_account.partner_businesses": (
        "Meta's reference 'Ad Account Collaborative Ads Partner Businesses' documents GET "
        "/{ad-account-id}/collaborative_ads_partner_businesses; the SDK defines its object "
        "(CollaborativeAdsPartnerBusinesses) but no AdAccount method for the edge"
    ),
}

# Routes without an SDK method whose returned object the SDK does define: their fields are checked against it.
NO_SDK_ROUTE_CLASS: dict[str, str] = {
    "cpas.ad_account.partner_businesses": "CollaborativeAdsPartnerBusinesses",
}

# Fields Meta's own documentation shows on an object that the SDK's class lacks. The sandbox may serve them
# (Meta does); the client must not request them (ask only for what both allow).
DOCS_ONLY_FIELDS: dict[tuple[str, str], str] = {
    (
        "ProductFeedUploadError",
        "row_number",
    ): "in the Catalog Integration sample; the SDK has it under samples",
    ("ProductFeedUploadError", "column_number"): "in the Catalog Integration sample; not in the SDK at all",
    (
        "ProductItemError",
        "call_to_action",
    ): "in the Catalog Integration sample of item errors; not in the SDK",
}

# Fields requested although the SDK lacks them, because Meta's own integration guide asks for them by name.
REQUESTED_DOCS_FIELDS: dict[tuple[str, str], str] = {
    ("CommerceMerchantSettings", "cta"): (
        "Catalog Integration step 1 requests commerce_merchant_settings.fields(id,cta) to detect onsite checkout"
    ),
}

# GETs the client sends without ``fields``, each for its reason. Without ``fields`` Meta returns only an object's
# default fields (for most objects just the id), so every other GET of an object with more than an id must name
# the fields it reads (``check_get_fields``).
GET_WITHOUT_FIELDS: dict[str, str] = {
    "catalog.check_batch_request_status": (
        "Meta's Catalog Integration page reads it without fields, and its sample answer carries status, errors, "
        "warnings and ids_of_invalid_requests: those are the defaults"
    ),
    "diagnostics.catalog_all_errors": (
        "not a Graph object: an 'all' list of the error dictionary, documented only as read without fields"
    ),
    "report_run.insights": (
        "an async report's columns are fixed by the fields of the POST that created the report run"
    ),
}

# Calls whose ``fields`` parameter selects another class than the call returns.
FIELDS_CLASS: dict[str, str] = {
    # POST /{object}/insights returns an AdReportRun; its fields are the report's AdsInsights columns.
    "get_insights_async": "AdsInsights",
}


# -- the SDK --------------------------------------------------------------------------------------------------


@functools.cache
def _api() -> FacebookAdsApi:
    # Built, never used to send: every request below is made with pending=True.
    return FacebookAdsApi(FacebookSession(access_token="contract-test-no-token"), api_version=SDK_API_VERSION)


@functools.cache
def sdk_class(name: str) -> type[AbstractCrudObject]:
    module = importlib.import_module(f"facebook_business.adobjects.{name.lower()}")
    return getattr(module, name)


def _public(namespace: type) -> dict[str, Any]:
    return {k: v for k, v in vars(namespace).items() if not k.startswith("_")}


@functools.cache
def class_fields(cls_name: str) -> frozenset[str]:
    return frozenset(_public(sdk_class(cls_name).Field).values())


def enum_values(cls_name: str, enum_name: str) -> frozenset[str]:
    """The values of an enum inner class, e.g. ``enum_values("Campaign", "EffectiveStatus")``."""
    return frozenset(_public(getattr(sdk_class(cls_name), enum_name)).values())


@functools.cache
def sdk_request(call: SdkCall) -> FacebookRequest:
    obj = sdk_class(call.cls)(fbid="1", api=_api())
    return getattr(obj, call.method)(pending=True)


def route_call(route: str) -> SdkCall:
    if route in NO_SDK_ROUTE:
        raise KeyError(f"route {route} has no SDK method: {NO_SDK_ROUTE[route]}")
    return ROUTES[route]


def target_class(call: SdkCall) -> str | None:
    tc = sdk_request(call)._target_class
    return tc.__name__ if tc is not None and tc is not AbstractCrudObject else None


def param_types(call: SdkCall) -> dict[str, str]:
    return dict(sdk_request(call)._param_checker._type_check_info)


def param_enum(call: SdkCall, param: str) -> frozenset[str] | None:
    """The allowed values of an enum (or list-of-enum) parameter; None for other types."""
    checker = sdk_request(call)._param_checker
    ptype = checker._type_check_info.get(param)
    if ptype is None:
        return None
    inner = re.fullmatch(r"list<(.+)>", ptype)
    name = inner.group(1) if inner else ptype
    values = checker._enum_data.get(name)
    if values is None:
        return None
    mapping = getattr(values, "mapping", None)  # Enum.__dict__.values(): keep the public attributes only
    if mapping is not None:
        return frozenset(v for k, v in mapping.items() if not k.startswith("_"))
    return frozenset(values)


@functools.cache
def class_edges(cls_name: str) -> dict[str, str]:
    """Edge name -> return class for every ``get_*`` edge of an SDK class (edges can be read as fields)."""
    cls = sdk_class(cls_name)
    out: dict[str, str] = {}
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("get_") or "pending" not in inspect.signature(fn).parameters:
            continue
        try:
            req = fn(cls(fbid="1", api=_api()), pending=True)
        except Exception:  # helper getters (get_id, ...) are not edges
            continue
        if isinstance(req, FacebookRequest) and req._target_class is not None and req._endpoint:
            out[req._endpoint] = req._target_class.__name__
    return out


def nested_class(cls_name: str, field: str) -> str | None:
    """The SDK class of a field's value (``list<X>`` unwrapped) or of an edge read as a field."""
    ftype = sdk_class(cls_name)._field_types.get(field)
    if ftype:
        inner = re.fullmatch(r"list<(.+)>", ftype)
        name = (inner.group(1) if inner else ftype).strip()
        try:
            sdk_class(name)
        except (ImportError, AttributeError):
            return None
        return name
    return class_edges(cls_name).get(field)


# -- fields syntax ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSel:
    name: str
    sub: tuple[FieldSel, ...] | None = None


def parse_fields(text: str) -> tuple[FieldSel, ...]:
    """``a,b{c,d},e.limit(5){f},g.fields(h)`` -> selections (modifiers dropped). Independent of the sandbox's
    parser on purpose: the contract must not inherit its mistakes."""
    pos = 0

    def sel_list(closer: str) -> tuple[FieldSel, ...]:
        nonlocal pos
        out: list[FieldSel] = []
        while True:
            m = re.compile(r"\s*([A-Za-z0-9_]+)").match(text, pos)
            if m is None:
                raise ValueError(f"bad fields syntax at {pos}: {text!r}")
            pos = m.end()
            name, sub = m.group(1), None
            while pos < len(text) and text[pos] in "{.":
                if text[pos] == "{":
                    pos += 1
                    sub = sel_list("}")
                else:
                    m2 = re.compile(r"\.([A-Za-z_]+)\(").match(text, pos)
                    if m2 is None:
                        raise ValueError(f"bad modifier at {pos}: {text!r}")
                    pos = m2.end()
                    if m2.group(1) == "fields":
                        sub = sel_list(")")
                    else:
                        end = text.index(")", pos)
                        pos = end + 1
            out.append(FieldSel(name, sub))
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if closer and pos < len(text) and text[pos] == closer:
                pos += 1
                return tuple(out)
            if not closer and pos >= len(text):
                return tuple(out)
            raise ValueError(f"bad fields syntax at {pos}: {text!r}")

    return sel_list("")


def check_fields(cls_name: str, fields: str | Iterable[FieldSel], *, served: bool = False) -> list[str]:
    """Every field (nested ones too) that ``cls_name`` does not define, as ``Class.field`` strings.

    ``served`` admits :data:`DOCS_ONLY_FIELDS` (Meta documents and returns them; clients must not ask)."""
    sels = parse_fields(fields) if isinstance(fields, str) else tuple(fields)
    bad: list[str] = []
    known = class_fields(cls_name) | set(class_edges(cls_name))
    for sel in sels:
        excepted = (cls_name, sel.name) in REQUESTED_DOCS_FIELDS or (
            served and (cls_name, sel.name) in DOCS_ONLY_FIELDS
        )
        if sel.name not in known and not excepted:
            bad.append(f"{cls_name}.{sel.name}")
            continue
        if sel.sub:
            inner = nested_class(cls_name, sel.name)
            if inner is None and served:
                continue  # the SDK types the value as any object: whatever the sandbox nests in it is allowed
            if inner is None:
                bad.append(f"{cls_name}.{sel.name}{{...}}: the SDK types it as a free-form value")
            else:
                bad.extend(check_fields(inner, sel.sub, served=served))
    return bad


# -- checking logged calls ----------------------------------------------------------------------------------


def _values(raw: str) -> list[str]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return [v for v in raw.split(",") if v]
    return [str(v) for v in parsed] if isinstance(parsed, list) else [str(parsed)]


def check_call(
    route: str, method: str, params: Iterable[str], fields: str | None, query: Mapping[str, str] | None = None
) -> list[str]:
    """What in one call (route, param names, ``fields`` value, query values) the SDK does not allow."""
    if route in NO_SDK_ROUTE_CLASS and fields:
        return [f"{route}: field {f}" for f in check_fields(NO_SDK_ROUTE_CLASS[route], fields)]
    if route in NO_SDK_ROUTE:
        return []
    if route not in ROUTES:
        return [f"{route}: no SDK mapping in ROUTES and no recorded exception in NO_SDK_ROUTE"]
    call = ROUTES[route]
    where = f"{route} ({call.cls}.{call.method})"
    allowed = set(param_types(call)) | (GRAPH_READ_PARAMS if method == "GET" else set())
    bad = [f"{where}: param {p}" for p in sorted(set(params) - allowed)]
    for name, raw in (query or {}).items():
        choices = param_enum(call, name)
        if choices is not None:
            bad += [f"{where}: {name}={v}" for v in _values(raw) if v not in choices]
    if fields:
        tc = FIELDS_CLASS.get(call.method) or target_class(call)
        if tc is None:
            bad.append(f"{where}: fields on a call the SDK types as returning nothing readable")
        else:
            bad += [f"{where}: field {f}" for f in check_fields(tc, fields)]
    return bad


def check_served(route: str, served: str | None) -> list[str]:
    """Fields the sandbox returned on a GET that the route's SDK class does not define."""
    if served and route in NO_SDK_ROUTE_CLASS:
        return [f"{route} served {f}" for f in check_fields(NO_SDK_ROUTE_CLASS[route], served, served=True)]
    if not served or route in NO_SDK_ROUTE or route not in ROUTES:
        return []
    tc = target_class(ROUTES[route])
    if tc is None:
        return [f"{route}: served fields on a call the SDK types as returning nothing readable"]
    return [f"{route} served {f}" for f in check_fields(tc, served, served=True)]


def check_get_fields(route: str, method: str, fields: str | None) -> list[str]:
    """A GET without ``fields`` on an object that has more than an id, unless ``GET_WITHOUT_FIELDS`` names it."""
    if method != "GET" or fields or route in GET_WITHOUT_FIELDS:
        return []
    if route in NO_SDK_ROUTE or route not in ROUTES:
        return [f"{route}: GET without fields, and no SDK class says what Meta returns by default"]
    tc = target_class(ROUTES[route])
    if tc is None or class_fields(tc) <= {"id"}:
        return []
    return [f"{route}: GET without fields gets only {tc}'s default fields (often just the id)"]
