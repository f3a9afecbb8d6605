"""Shared pieces of the Collaborative Ads routes: constants, parameter parsing and Meta-shaped field renderers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from kobi_cpas.registry.filters import FilterError, canonical_json, compile_matcher, parse_rule
from meta_sandbox import errors as gerr
from meta_sandbox.fields import FieldSpec, select_fields
from meta_sandbox.server import (
    DEFAULT_PAGE_LIMIT,
    RequestContext,
    encode_cursor,
)
from meta_sandbox.state import (
    CollabRequest,
    PartnerRecommendation,
    ProductSet,
    SegmentShare,
    World,
)

if TYPE_CHECKING:
    pass


SEGMENT_NOT_COMPLIANT_CODE = 2310068
SEGMENT_NOT_COMPLIANT_MESSAGE = "Cannot create a catalog segment from a non CPAS compliant parent catalog"
SHARE_TASKS = frozenset({"ADVERTISE", "MANAGE"})
COLLAB_TERMS = frozenset({"ENFORCE_CREATE_NEW_AD_ACCOUNT", "ENFORCE_SHARE_AD_PERFORMANCE_ACCESS"})
UTM_KEYS = frozenset({"campaign_source", "campaign_medium", "campaign_name"})
USER_TASKS = frozenset({"MANAGE", "ADVERTISE", "MANAGE_AR", "AA_ANALYZE"})
REQUESTER_KINDS = frozenset({"AGENCY", "BRAND", "MERCHANT"})
PRODUCT_SET_METADATA_KEYS = frozenset({"cover_image_url", "external_url", "description"})
ID_RE = re.compile(r"^[0-9]{1,32}$")


# -- helpers ---------------------------------------------------------------------------------------------


def required_param(ctx: RequestContext, name: str) -> str:
    value = ctx.param(name)
    if value is None or str(value).strip() == "":
        raise gerr.invalid_parameter(f"The parameter {name} is required")
    return str(value).strip()


def json_list_param(ctx: RequestContext, name: str, allowed: Iterable[str] | None = None) -> list[str] | None:
    value = ctx.json_param(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise gerr.invalid_parameter(f"Param {name} must be a JSON array of strings")
    if allowed is not None:
        allowed_set = set(allowed)
        bad = [v for v in value if v not in allowed_set]
        if bad:
            raise gerr.invalid_parameter(
                f"Param {name}[{value.index(bad[0])}] must be one of {{{', '.join(sorted(allowed_set))}}}"
            )
    return list(dict.fromkeys(value))


def json_object_param(ctx: RequestContext, name: str) -> dict[str, Any] | None:
    value = ctx.json_param(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise gerr.invalid_parameter(f"Param {name} must be a JSON object")
    return value


def rule_param(ctx: RequestContext, name: str) -> dict[str, Any] | None:
    raw = ctx.param(name)
    if raw is None or raw == "":
        return None
    try:
        node_rule = json.loads(raw) if isinstance(raw, str) else raw
        parse_rule(node_rule)
    except (FilterError, ValueError) as exc:
        raise gerr.invalid_parameter(f"Param {name} is not a valid rule: {exc}") from None
    return node_rule


def biz_ref(world: World, business_id: str | None) -> dict[str, str] | None:
    biz = world.businesses.get(business_id or "")
    if biz is None:
        return {"id": business_id} if business_id else None
    return {"id": biz.id, "name": biz.name}


def meta_time(dt: Any) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%S%z") if dt is not None else None


def shares_of(world: World, catalog_id: str) -> list[SegmentShare]:
    return sorted(
        (s for s in world.segment_shares.values() if s.catalog_id == catalog_id), key=lambda s: s.id
    )


def nested_page(
    ctx: RequestContext, items: list[Any], spec: FieldSpec | None, edge_path: str
) -> dict[str, Any]:
    """A page of an edge asked for as a field (``fields=edge.limit(n)``): its ``next`` continues on the edge."""
    limit = DEFAULT_PAGE_LIMIT
    if spec is not None and "limit" in spec.modifiers:
        try:
            limit = max(1, int(spec.modifiers["limit"]))
        except ValueError:
            raise gerr.invalid_parameter(f"limit({spec.modifiers['limit']}) must be an integer") from None
    page = items[:limit]
    out: dict[str, Any] = {"data": page}
    if items:
        out["paging"] = {"cursors": {"before": encode_cursor(0), "after": encode_cursor(len(page))}}
        if len(page) < len(items):
            base = ctx.request.host_url.rstrip("/") + f"/{ctx.version}/{edge_path}"
            query = {"limit": str(limit), "after": encode_cursor(len(page))}
            if spec is not None and spec.subfields:
                query["fields"] = ",".join(s.name for s in spec.subfields)
            out["paging"]["next"] = f"{base}?{urlencode(query)}"
    return out


# -- field renderers ---------------------------------------------------------------------------------


def agency_fields(world: World, share: SegmentShare) -> dict[str, Any]:
    # The agencies edge returns Business objects (Meta's SDK: ProductCatalog.get_agencies -> Business), which
    # have no permitted_tasks or collab terms: the share's tasks stay in the world, unreadable as on Meta.
    biz = world.businesses.get(share.business_id)
    return {"id": share.business_id, "name": biz.name if biz else None}


def share_settings_fields(world: World, share: SegmentShare) -> dict[str, Any]:
    return {
        "id": share.id,
        "agency_business": biz_ref(world, share.business_id),
        "utm_campaign": share.utm_settings.get("campaign_name"),
        "utm_medium": share.utm_settings.get("campaign_medium"),
        "utm_source": share.utm_settings.get("campaign_source"),
        "product_catalog_proxy_id": None,
    }


def merchant_fields(world: World, business_id: str) -> dict[str, Any]:
    m = world.collab_merchants[business_id]
    return {"id": m.business_id, "name": m.name, "countries": list(m.countries), "vertical": m.vertical}


def recommendation_fields(rec: PartnerRecommendation) -> dict[str, Any]:
    return {
        "id": rec.id,
        "advertiser_business_id": rec.advertiser_business_id,
        "brand_business_id": rec.brand_business_id,
        "brands": list(rec.brands),
        "countries": list(rec.countries),
        "merchant_business_id": rec.merchant_business_id,
        "merchant_categories": list(rec.merchant_categories),
        "status": rec.status,
        "status_reason": rec.status_reason,
    }


def request_fields(world: World, req: CollabRequest) -> dict[str, Any]:
    return {
        "id": req.id,
        "brands": list(req.brands),
        "contact_email": req.contact_email,
        "contact_first_name": req.contact_first_name,
        "contact_last_name": req.contact_last_name,
        "phone_number": req.phone_number,
        "receiver_business": biz_ref(world, req.receiver_business_id),
        "sender_client_business": biz_ref(world, req.sender_business_id),
        "requester_agency_or_brand": req.requester_agency_or_brand,
        "source": req.source,
        "status": lambda: world.collab_request_status(req),
        "creation_time": meta_time(req.created_time),
    }


def product_set_count(world: World, ps: ProductSet) -> int:
    """Items of the set's catalog matching its filter; for catalogs whose items the sandbox does not model, a
    deterministic share of the catalog's product count."""
    catalog = world.catalogs.get(ps.catalog_id)
    if catalog is None:
        return 0
    items = world.catalog_items(catalog)
    if items:
        if ps.filter is None:
            return len(items)
        match = compile_matcher(ps.filter)
        return sum(1 for item in items if match(item))
    total = catalog.product_count
    if ps.filter is None or total == 0:
        return total
    return world.seeded_int(f"product-set-count:{ps.id}", 0, total)


def product_set_fields(world: World, ps: ProductSet) -> dict[str, Any]:
    catalog = world.catalogs.get(ps.catalog_id)
    return {
        "id": ps.id,
        "name": ps.name,
        "filter": canonical_json(ps.filter) if ps.filter is not None else None,
        "product_count": lambda: product_set_count(world, ps),
        "latest_metadata": dict(ps.metadata) if ps.metadata else None,
        "publish_to_shops": [dict(s) for s in ps.publish_to_shops] or None,
        "product_catalog": {"id": catalog.id, "name": catalog.name} if catalog else {"id": ps.catalog_id},
    }


def select_sub(
    available: Mapping[str, Any], subfields: list[FieldSpec] | None, node_type: str, defaults: Iterable[str]
) -> dict[str, Any]:
    return select_fields(available, subfields, node_type=node_type, defaults=defaults)
