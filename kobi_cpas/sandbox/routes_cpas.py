"""Collaborative Ads (CPAS) routes of the sandbox, in Meta's shapes, plus admin knobs for drift tests.

Graph routes
------------
``POST /{business_id}/owned_product_catalogs``
    name, parent_catalog_id, catalog_segment_filter (JSON rule) -> ``{"id"}``: a catalog segment owned by the
    business (without parent_catalog_id: a plain catalog). Error 2310068 when the parent is not Collaborative
    Ads compliant (the seeded ``n11`` parent is not); error 100 naming the clause for a bad filter.
    (``GET`` of that edge and ``GET /{segment_id}`` are served by routes_catalog.)
``GET|POST|DELETE /{catalog_id}/agencies``
    POST business, permitted_tasks [ADVERTISE, MANAGE], utm_settings, enabled_collab_terms -> success. A
    *segment* shared with a brand stays pending (in share settings, not in agencies) until the brand accepts
    it in Collaboration Center (admin knob ``accept``; or ``auto_accept_shares``). GET lists accepted shares:
    id, name, permitted_tasks, enabled_collab_terms, access_status. DELETE ?business= unshares.
``GET /{catalog_id}/collaborative_ads_share_settings``
    every share (pending or accepted): id, agency_business{id,name}, utm_campaign, utm_medium, utm_source.
``GET|POST|DELETE /{catalog_id}/assigned_users``  user, tasks [MANAGE, ADVERTISE, MANAGE_AR, AA_ANALYZE].
``GET /collaborative_ads_directory?fields=collaborative_ads_merchants``
    -> ``{"collaborative_ads_merchants": {"data": [{id, name, countries}], "paging"}}``; the nested page's
    ``next`` continues at ``/collaborative_ads_directory/collaborative_ads_merchants``.
``GET /{business_id}?fields=collaborative_ads_suggested_partners`` and the edge
``GET /{business_id}/collaborative_ads_suggested_partners``; ``GET /{recommendation_id}``
    CPASAdvertiserPartnershipRecommendation: id, advertiser_business_id, brand_business_id, brands, countries,
    merchant_business_id, merchant_categories, status, status_reason.
``POST|GET /{business_id}/collaborative_ads_collaboration_requests``; ``GET /{request_id}``
    brands, contact_email, contact_first_name, contact_last_name, phone_number, receiver_business,
    requester_agency_or_brand -> ``{"id"}``; status PENDING -> APPROVED after ``request_approval_seconds`` of
    world time (or an admin-set status such as DECLINED).
``POST|GET /{catalog_id}/product_sets``; ``GET|POST|DELETE /{product_set_id}``
    name, filter (JSON rule), metadata (cover_image_url, external_url, description), publish_to_shops.
    GET fields: id, name, filter (JSON text, as Meta returns it), product_count, latest_metadata,
    product_catalog. DELETE refuses a *live* set (used by an ad set/ad that is not deleted, published to a
    shop, or forced live) unless allow_live_product_set_deletion=true.

How product counts are modelled
-------------------------------
A retailer's parent catalog *carries* the catalogs of the brands selling on it (``Catalog.carried_catalog_ids``,
seeded from the registry): its items are those brands' catalog items, which Kobi's feed uploads fill. A
segment's ``product_count`` is the number of those items matching the segment filter (evaluated with
``kobi_cpas.cpas.filters``, the same semantics Kobi uses on its feed snapshot), so after the brand's feed is
uploaded Meta's count equals Kobi's expected count. While none of the carried catalogs has items the seeded
count is served. The ``product_count`` admin knob forces a value (0 = the segment went empty).

Admin knobs (``/__sandbox/cpas/...``, JSON bodies; see :class:`CpasAdmin`)
--------------------------------------------------------------------------
``POST /cpas/segments/<id>/accept {"business"}``  the brand accepts the shared segment (Collaboration Center).
``POST /cpas/segments/<id>/unshare {"business"}``  the retailer stops sharing (like DELETE agencies).
``POST /cpas/catalogs/<id>/product_count {"count": int|null}``  force/clear a product count.
``POST /cpas/catalogs/<id>/compliance {"compliant": bool}``  flip a parent's Collaborative Ads compliance.
``POST /cpas/catalogs/<id>/items {"items": [...], "replace": bool}``  load items into a (brand) catalog.
``DELETE /cpas/catalogs/<id>``  delete a catalog or segment (with its shares and product sets).
``DELETE /cpas/ad_accounts/<act_id>``  delete an ad account with its campaigns, ad sets, ads and creatives.
``POST /cpas/ad_accounts/<act_id>/campaigns {"name", "segment_id", "status"?}``  inject a campaign bypassing
    the one-retailer-per-account rule (a legacy/mixed account).
``POST /cpas/ads/<id>/patch {"creative"?, "tracking_specs"?, "status"?}``  edit an ad outside the API rules.
``POST /cpas/product_sets/<id>/live {"live": bool|null}``  force a product set live / not live.
``POST /cpas/collaboration_requests/<id>/status {"status"}``  answer a collaboration request.
``GET|POST /cpas/config {"auto_accept_shares", "request_approval_seconds"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests

from kobi_cpas.cpas.filters import FilterError, canonical_json, compile_matcher, parse_rule
from kobi_cpas.sandbox import errors as gerr
from kobi_cpas.sandbox.errors import GraphError
from kobi_cpas.sandbox.fields import FieldSpec, select_fields
from kobi_cpas.sandbox.server import (
    DEFAULT_PAGE_LIMIT,
    FAMILY_CATALOG,
    RequestContext,
    Router,
    encode_cursor,
    request_json_object,
)
from kobi_cpas.sandbox.state import (
    Ad,
    Campaign,
    Catalog,
    CollabRequest,
    PartnerRecommendation,
    ProductSet,
    SegmentShare,
    World,
)

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

    from kobi_cpas.sandbox.server import SandboxApp

SEGMENT_NOT_COMPLIANT_CODE = 2310068
SEGMENT_NOT_COMPLIANT_MESSAGE = "Cannot create a catalog segment from a non CPAS compliant parent catalog"
SHARE_TASKS = frozenset({"ADVERTISE", "MANAGE"})
COLLAB_TERMS = frozenset({"ENFORCE_CREATE_NEW_AD_ACCOUNT", "ENFORCE_SHARE_AD_PERFORMANCE_ACCESS"})
UTM_KEYS = frozenset({"campaign_source", "campaign_medium", "campaign_name"})
USER_TASKS = frozenset({"MANAGE", "ADVERTISE", "MANAGE_AR", "AA_ANALYZE"})
REQUESTER_KINDS = frozenset({"AGENCY", "BRAND", "MERCHANT"})
PRODUCT_SET_METADATA_KEYS = frozenset({"cover_image_url", "external_url", "description"})
_ID_RE = re.compile(r"^[0-9]{1,32}$")


# -- helpers ---------------------------------------------------------------------------------------------


def _required(ctx: RequestContext, name: str) -> str:
    value = ctx.param(name)
    if value is None or str(value).strip() == "":
        raise gerr.invalid_parameter(f"The parameter {name} is required")
    return str(value).strip()


def _json_list(ctx: RequestContext, name: str, allowed: Iterable[str] | None = None) -> list[str] | None:
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


def _json_object(ctx: RequestContext, name: str) -> dict[str, Any] | None:
    value = ctx.json_param(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise gerr.invalid_parameter(f"Param {name} must be a JSON object")
    return value


def _rule_param(ctx: RequestContext, name: str) -> dict[str, Any] | None:
    raw = ctx.param(name)
    if raw is None or raw == "":
        return None
    try:
        node_rule = json.loads(raw) if isinstance(raw, str) else raw
        parse_rule(node_rule)
    except (FilterError, ValueError) as exc:
        raise gerr.invalid_parameter(f"Param {name} is not a valid rule: {exc}") from None
    return node_rule


def _biz_ref(world: World, business_id: str | None) -> dict[str, str] | None:
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
        "agency_business": _biz_ref(world, share.business_id),
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
        "receiver_business": _biz_ref(world, req.receiver_business_id),
        "sender_client_business": _biz_ref(world, req.sender_business_id),
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
        "product_catalog": {"id": catalog.id, "name": catalog.name} if catalog else {"id": ps.catalog_id},
    }


# -- registration ------------------------------------------------------------------------------------------


def register(router: Router) -> None:
    _register_segments(router)
    _register_sharing(router)
    _register_directory(router)
    _register_product_sets(router)
    _register_admin(router)


def _register_segments(router: Router) -> None:
    @router.edge(
        "business",
        "owned_product_catalogs",
        name="cpas.business.owned_product_catalogs.create",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def create_owned_catalog(ctx: RequestContext) -> dict[str, Any]:
        world, business = ctx.world, ctx.node
        name = _required(ctx, "name")
        parent_id = ctx.param("parent_catalog_id")
        if parent_id in (None, ""):
            if ctx.param("catalog_segment_filter") not in (None, ""):
                raise gerr.invalid_parameter("catalog_segment_filter needs parent_catalog_id")
            catalog = world.attach_catalog(
                Catalog(
                    id=world.new_id(),
                    name=name,
                    business_id=business.id,
                    vertical=ctx.param("vertical") or "commerce",
                )
            )
            return {"id": catalog.id}
        parent_id = str(parent_id)
        parent = world.catalogs.get(parent_id)
        if parent is None:
            raise gerr.invalid_parameter(f"Param parent_catalog_id: catalog {parent_id} does not exist")
        if parent.is_catalog_segment:
            raise gerr.invalid_parameter(
                f"Param parent_catalog_id: {parent_id} is a catalog segment, not a catalog"
            )
        if parent.business_id != business.id:
            raise gerr.permission_error("catalog_management")
        if ctx.param("catalog_segment_filter") in (None, ""):
            raise gerr.invalid_parameter(
                "The parameter catalog_segment_filter is required for a catalog segment"
            )
        rule = _rule_param(ctx, "catalog_segment_filter")
        if not parent.collaborative_ads_compliant:
            raise GraphError(
                SEGMENT_NOT_COMPLIANT_CODE,
                SEGMENT_NOT_COMPLIANT_MESSAGE,
                user_title="Parent catalog not eligible",
                user_msg="The parent catalog is not Collaborative Ads compliant. Check its status in Commerce Manager.",
            )
        segment = world.attach_catalog(
            Catalog(
                id=world.new_id(),
                name=name,
                business_id=business.id,
                vertical=parent.vertical,
                is_catalog_segment=True,
                parent_catalog_id=parent.id,
                segment_filter=rule,
                retailer=world.retailer_of_catalog(parent),
            )
        )
        return {"id": segment.id}


def _register_sharing(router: Router) -> None:
    @router.edge("catalog", "agencies", name="cpas.catalog.agencies.list", family=FAMILY_CATALOG)
    def list_agencies(ctx: RequestContext) -> dict[str, Any]:
        shares = [s for s in shares_of(ctx.world, ctx.node.id) if s.accepted]
        items = [ctx.select(agency_fields(ctx.world, s), "Business", defaults=("id", "name")) for s in shares]
        return ctx.paginate(items)

    @router.edge(
        "catalog", "agencies", name="cpas.catalog.agencies.share", methods=("POST",), family=FAMILY_CATALOG
    )
    def share_catalog(ctx: RequestContext) -> dict[str, Any]:
        world, catalog = ctx.world, ctx.node
        business_id = _required(ctx, "business")
        if business_id not in world.businesses:
            raise gerr.invalid_parameter(f"Param business must be a valid business id, got {business_id}")
        if business_id == catalog.business_id:
            raise gerr.invalid_parameter("A catalog cannot be shared with the business that owns it")
        tasks = _json_list(ctx, "permitted_tasks", SHARE_TASKS)
        if not tasks:
            raise gerr.invalid_parameter(
                "The parameter permitted_tasks is required (ADVERTISE and/or MANAGE)"
            )
        utm = _json_object(ctx, "utm_settings") or {}
        bad = sorted(set(utm) - UTM_KEYS)
        if bad:
            raise gerr.invalid_parameter(
                f"Param utm_settings has unknown key '{bad[0]}' (allowed: {', '.join(sorted(UTM_KEYS))})"
            )
        terms = _json_list(ctx, "enabled_collab_terms", COLLAB_TERMS) or []
        existing = next((s for s in shares_of(world, catalog.id) if s.business_id == business_id), None)
        now = ctx.now()
        if existing is not None:
            existing.permitted_tasks = tasks
            existing.utm_settings = {k: str(v) for k, v in utm.items()}
            existing.enabled_collab_terms = terms
            return {"success": True}
        # A plain catalog is shared at once; a segment waits for the brand to accept it (Collaboration Center).
        accepted = not catalog.is_catalog_segment or world.cpas_config.auto_accept_shares
        share = SegmentShare(
            id=world.new_id(),
            catalog_id=catalog.id,
            business_id=business_id,
            permitted_tasks=tasks,
            utm_settings={k: str(v) for k, v in utm.items()},
            enabled_collab_terms=terms,
            accepted=accepted,
            created_time=now,
            accepted_time=now if accepted else None,
        )
        world.segment_shares[share.id] = share
        return {"success": True}

    @router.edge(
        "catalog",
        "agencies",
        name="cpas.catalog.agencies.unshare",
        methods=("DELETE",),
        family=FAMILY_CATALOG,
    )
    def unshare_catalog(ctx: RequestContext) -> dict[str, Any]:
        business_id = _required(ctx, "business")
        for share in shares_of(ctx.world, ctx.node.id):
            if share.business_id == business_id:
                del ctx.world.segment_shares[share.id]
        return {"success": True}

    @router.edge(
        "catalog",
        "collaborative_ads_share_settings",
        name="cpas.catalog.share_settings",
        family=FAMILY_CATALOG,
    )
    def list_share_settings(ctx: RequestContext) -> dict[str, Any]:
        items = [
            ctx.select(
                share_settings_fields(ctx.world, s),
                "CollaborativeAdsShareSettings",
                defaults=("id", "agency_business", "utm_campaign", "utm_medium", "utm_source"),
            )
            for s in shares_of(ctx.world, ctx.node.id)
        ]
        return ctx.paginate(items)

    @router.edge("catalog", "assigned_users", name="cpas.catalog.assigned_users.list", family=FAMILY_CATALOG)
    def list_assigned_users(ctx: RequestContext) -> dict[str, Any]:
        users = ctx.world.catalog_assigned_users.get(ctx.node.id, {})
        items = [
            ctx.select(
                {"id": uid, "name": f"User {uid}", "tasks": list(tasks), "user_type": "SYSTEM_USER"},
                "AssignedUser",
                defaults=("id", "name", "tasks"),
            )
            for uid, tasks in sorted(users.items())
        ]
        return ctx.paginate(items)

    @router.edge(
        "catalog",
        "assigned_users",
        name="cpas.catalog.assigned_users.add",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def add_assigned_user(ctx: RequestContext) -> dict[str, Any]:
        user = _required(ctx, "user")
        if not _ID_RE.match(user):
            raise gerr.invalid_parameter(
                f"Param user must be a business user id or system user id, got {user}"
            )
        tasks = _json_list(ctx, "tasks", USER_TASKS)
        if not tasks:
            raise gerr.invalid_parameter("The parameter tasks is required")
        ctx.world.catalog_assigned_users.setdefault(ctx.node.id, {})[user] = tasks
        return {"success": True}

    @router.edge(
        "catalog",
        "assigned_users",
        name="cpas.catalog.assigned_users.remove",
        methods=("DELETE",),
        family=FAMILY_CATALOG,
    )
    def remove_assigned_user(ctx: RequestContext) -> dict[str, Any]:
        user = _required(ctx, "user")
        ctx.world.catalog_assigned_users.get(ctx.node.id, {}).pop(user, None)
        return {"success": True}


def _register_directory(router: Router) -> None:
    def merchants(ctx: RequestContext) -> list[str]:
        return sorted(
            ctx.world.collab_merchants, key=lambda b: (ctx.world.collab_merchants[b].name.lower(), b)
        )

    @router.path("/collaborative_ads_directory", name="cpas.directory", family=FAMILY_CATALOG)
    def directory(ctx: RequestContext) -> dict[str, Any]:
        specs = ctx.fields or []
        spec = next((s for s in specs if s.name == "collaborative_ads_merchants"), None)
        others = [s.name for s in specs if s.name not in ("collaborative_ads_merchants", "id")]
        if others:
            raise gerr.nonexisting_field(others[0], "CollaborativeAdsDirectory")
        if spec is None:
            raise gerr.invalid_parameter(
                "collaborative_ads_directory must be read with fields=collaborative_ads_merchants"
            )
        sub = spec.subfields
        items = [
            _select_sub(
                merchant_fields(ctx.world, b), sub, "CollaborativeAdsMerchant", ("id", "name", "countries")
            )
            for b in merchants(ctx)
        ]
        return {
            "collaborative_ads_merchants": nested_page(
                ctx, items, spec, "collaborative_ads_directory/collaborative_ads_merchants"
            )
        }

    @router.path(
        "/collaborative_ads_directory/collaborative_ads_merchants",
        name="cpas.directory.merchants",
        family=FAMILY_CATALOG,
    )
    def directory_merchants(ctx: RequestContext) -> dict[str, Any]:
        items = [
            ctx.select(
                merchant_fields(ctx.world, b),
                "CollaborativeAdsMerchant",
                defaults=("id", "name", "countries"),
            )
            for b in merchants(ctx)
        ]
        return ctx.paginate(items)

    def recommendations_for(ctx: RequestContext, business_id: str) -> list[PartnerRecommendation]:
        return sorted(
            (r for r in ctx.world.partner_recommendations.values() if r.brand_business_id == business_id),
            key=lambda r: r.id,
        )

    rec_defaults = ("id", "brand_business_id", "merchant_business_id", "brands", "countries", "status")

    @router.edge(
        "business",
        "collaborative_ads_suggested_partners",
        name="cpas.business.suggested_partners",
        family=FAMILY_CATALOG,
    )
    def suggested_partners(ctx: RequestContext) -> dict[str, Any]:
        items = [
            ctx.select(
                recommendation_fields(r), "CPASAdvertiserPartnershipRecommendation", defaults=rec_defaults
            )
            for r in recommendations_for(ctx, ctx.node.id)
        ]
        return ctx.paginate(items)

    @router.node("partner_recommendation", name="cpas.partner_recommendation.get", family=FAMILY_CATALOG)
    def get_recommendation(ctx: RequestContext) -> dict[str, Any]:
        return ctx.select(recommendation_fields(ctx.node), defaults=rec_defaults)

    # ``GET /{business_id}?fields=collaborative_ads_suggested_partners``: the business node belongs to
    # routes_catalog; wrap it so the CPAS field is served and every other field stays theirs.
    original = router.nodes.get(("business", "GET"))

    @router.node("business", name="cpas.business.get", family=FAMILY_CATALOG)
    def get_business(ctx: RequestContext) -> dict[str, Any]:
        specs = ctx.fields
        field_name = "collaborative_ads_suggested_partners"
        spec = next((s for s in specs or [] if s.name == field_name), None)
        if spec is None:
            if original is None:
                return ctx.select({"id": ctx.node.id, "name": ctx.node.name}, "Business")
            return original.handler(ctx)
        rest = [s for s in specs or [] if s.name != field_name]
        base: dict[str, Any] = {"id": ctx.node.id}
        if rest:
            saved = ctx._fields
            ctx._fields = rest
            try:
                base = (
                    original.handler(ctx)
                    if original is not None
                    else ctx.select({"id": ctx.node.id, "name": ctx.node.name}, "Business")
                )
            finally:
                ctx._fields = saved
        items = [
            _select_sub(recommendation_fields(r), spec.subfields, field_name, rec_defaults)
            for r in recommendations_for(ctx, ctx.node.id)
        ]
        base[field_name] = nested_page(ctx, items, spec, f"{ctx.node.id}/{field_name}")
        return base

    request_defaults = ("id", "brands", "receiver_business", "requester_agency_or_brand", "status")

    @router.edge(
        "business",
        "collaborative_ads_collaboration_requests",
        name="cpas.business.collaboration_requests.list",
        family=FAMILY_CATALOG,
    )
    def list_requests(ctx: RequestContext) -> dict[str, Any]:
        reqs = sorted(
            (
                r
                for r in ctx.world.collab_requests.values()
                if ctx.node.id in (r.sender_business_id, r.receiver_business_id)
            ),
            key=lambda r: r.id,
        )
        items = [
            ctx.select(request_fields(ctx.world, r), "CPASCollaborationRequest", defaults=request_defaults)
            for r in reqs
        ]
        return ctx.paginate(items)

    @router.edge(
        "business",
        "collaborative_ads_collaboration_requests",
        name="cpas.business.collaboration_requests.create",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def create_request(ctx: RequestContext) -> dict[str, Any]:
        world = ctx.world
        brands = _json_list(ctx, "brands")
        if not brands:
            raise gerr.invalid_parameter("The parameter brands is required (a JSON array of brand names)")
        email = _required(ctx, "contact_email")
        if "@" not in email:
            raise gerr.invalid_parameter(f"Param contact_email must be an email address, got {email}")
        first = _required(ctx, "contact_first_name")
        last = _required(ctx, "contact_last_name")
        phone = _required(ctx, "phone_number")
        receiver = _required(ctx, "receiver_business")
        if receiver not in world.collab_merchants:
            raise gerr.invalid_parameter(
                f"Param receiver_business: {receiver} is not a retailer of the Collaborative Ads directory"
            )
        requester = _required(ctx, "requester_agency_or_brand").upper()
        if requester not in REQUESTER_KINDS:
            raise gerr.invalid_parameter(
                f"Param requester_agency_or_brand must be one of {{{', '.join(sorted(REQUESTER_KINDS))}}}"
            )
        req = CollabRequest(
            id=world.new_id(),
            sender_business_id=ctx.node.id,
            receiver_business_id=receiver,
            created_time=ctx.now(),
            brands=brands,
            contact_email=email,
            contact_first_name=first,
            contact_last_name=last,
            phone_number=phone,
            requester_agency_or_brand=requester,
        )
        world.collab_requests[req.id] = req
        return {"id": req.id}

    @router.node("collab_request", name="cpas.collaboration_request.get", family=FAMILY_CATALOG)
    def get_request(ctx: RequestContext) -> dict[str, Any]:
        return ctx.select(request_fields(ctx.world, ctx.node), defaults=request_defaults)


def _select_sub(
    available: Mapping[str, Any], subfields: list[FieldSpec] | None, node_type: str, defaults: Iterable[str]
) -> dict[str, Any]:
    return select_fields(available, subfields, node_type=node_type, defaults=defaults)


def _register_product_sets(router: Router) -> None:
    defaults = ("id", "name", "filter")

    def metadata_param(ctx: RequestContext) -> dict[str, Any] | None:
        meta = _json_object(ctx, "metadata")
        if meta is None:
            return None
        bad = sorted(set(meta) - PRODUCT_SET_METADATA_KEYS)
        if bad:
            raise gerr.invalid_parameter(
                f"Param metadata has unknown key '{bad[0]}' (allowed: {', '.join(sorted(PRODUCT_SET_METADATA_KEYS))})"
            )
        return meta

    @router.edge("catalog", "product_sets", name="cpas.catalog.product_sets.list", family=FAMILY_CATALOG)
    def list_product_sets(ctx: RequestContext) -> dict[str, Any]:
        sets = sorted(
            (p for p in ctx.world.product_sets.values() if p.catalog_id == ctx.node.id), key=lambda p: p.id
        )
        items = [ctx.select(product_set_fields(ctx.world, p), "ProductSet", defaults=defaults) for p in sets]
        return ctx.paginate(items)

    @router.edge(
        "catalog",
        "product_sets",
        name="cpas.catalog.product_sets.create",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def create_product_set(ctx: RequestContext) -> dict[str, Any]:
        name = _required(ctx, "name")
        rule = _rule_param(ctx, "filter")
        meta = metadata_param(ctx)
        ps = ProductSet(
            id=ctx.world.new_id(),
            catalog_id=ctx.node.id,
            name=name,
            filter=rule,
            metadata=meta or {},
            created_time=ctx.now(),
        )
        ctx.world.product_sets[ps.id] = ps
        return {"id": ps.id}

    @router.node("product_set", name="cpas.product_set.get", family=FAMILY_CATALOG)
    def get_product_set(ctx: RequestContext) -> dict[str, Any]:
        return ctx.select(product_set_fields(ctx.world, ctx.node), "ProductSet", defaults=defaults)

    @router.node("product_set", name="cpas.product_set.update", methods=("POST",), family=FAMILY_CATALOG)
    def update_product_set(ctx: RequestContext) -> dict[str, Any]:
        ps: ProductSet = ctx.node
        if ctx.param("name") is not None:
            ps.name = _required(ctx, "name")
        if ctx.param("filter") is not None:
            ps.filter = _rule_param(ctx, "filter")
        meta = metadata_param(ctx)
        if meta is not None:
            ps.metadata = meta
        shops = ctx.json_param("publish_to_shops")
        if shops is not None:
            if not isinstance(shops, list) or not all(
                isinstance(s, dict) and s.get("shop_id") for s in shops
            ):
                raise gerr.invalid_parameter(
                    'Param publish_to_shops must be a JSON array of {"shop_id": ...}'
                )
            ps.publish_to_shops = shops
        return {"id": ps.id}

    @router.node("product_set", name="cpas.product_set.delete", methods=("DELETE",), family=FAMILY_CATALOG)
    def delete_product_set(ctx: RequestContext) -> dict[str, Any]:
        ps: ProductSet = ctx.node
        if ctx.world.product_set_is_live(ps) and not ctx.bool_param("allow_live_product_set_deletion", False):
            raise gerr.invalid_parameter(
                f"Product set {ps.id} is in use by an active ad, a shop collection or another usage and cannot "
                "be deleted; pass allow_live_product_set_deletion=true to delete it anyway"
            )
        del ctx.world.product_sets[ps.id]
        return {"success": True}


# -- admin knobs -------------------------------------------------------------------------------------------


def _catalog(world: World, catalog_id: str) -> Catalog:
    catalog = world.catalogs.get(catalog_id)
    if catalog is None:
        raise KeyError(f"no catalog {catalog_id}")
    return catalog


def delete_catalog(world: World, catalog_id: str) -> None:
    """Remove a catalog or segment with its shares, assigned users and product sets."""
    _catalog(world, catalog_id)
    del world.catalogs[catalog_id]
    for sid in [s.id for s in world.segment_shares.values() if s.catalog_id == catalog_id]:
        del world.segment_shares[sid]
    for pid in [p.id for p in world.product_sets.values() if p.catalog_id == catalog_id]:
        del world.product_sets[pid]
    world.catalog_assigned_users.pop(catalog_id, None)


def delete_ad_account(world: World, account_id: str) -> None:
    if account_id not in world.ad_accounts:
        raise KeyError(f"no ad account {account_id}")
    del world.ad_accounts[account_id]
    for coll in (world.campaigns, world.adsets, world.ads, world.adcreatives):
        for oid in [o.id for o in coll.values() if o.account_id == account_id]:
            del coll[oid]


def _register_admin(router: Router) -> None:
    @router.admin("/cpas/config", name="admin.cpas.config.get", methods=("GET",))
    def get_config(app: SandboxApp, request: Request) -> Any:
        cfg = app.world.cpas_config
        return {
            "auto_accept_shares": cfg.auto_accept_shares,
            "request_approval_seconds": cfg.request_approval_seconds,
        }

    @router.admin("/cpas/config", name="admin.cpas.config.set", methods=("POST",))
    def set_config(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            cfg = app.world.cpas_config
            if "auto_accept_shares" in body:
                cfg.auto_accept_shares = bool(body["auto_accept_shares"])
            if "request_approval_seconds" in body:
                cfg.request_approval_seconds = float(body["request_approval_seconds"])
            return {
                "auto_accept_shares": cfg.auto_accept_shares,
                "request_approval_seconds": cfg.request_approval_seconds,
            }

    def share_for(world: World, catalog_id: str, business_id: Any) -> SegmentShare:
        _catalog(world, catalog_id)
        if not business_id:
            raise ValueError("body needs 'business'")
        share = next((s for s in shares_of(world, catalog_id) if s.business_id == str(business_id)), None)
        if share is None:
            raise KeyError(f"catalog {catalog_id} is not shared with business {business_id}")
        return share

    @router.admin("/cpas/segments/<catalog_id>/accept", name="admin.cpas.segment.accept", methods=("POST",))
    def accept(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            share = share_for(app.world, catalog_id, body.get("business"))
            share.accepted = True
            share.accepted_time = app.world.now()
            return {"ok": True, "share_id": share.id}

    @router.admin("/cpas/segments/<catalog_id>/unshare", name="admin.cpas.segment.unshare", methods=("POST",))
    def unshare(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            share = share_for(app.world, catalog_id, body.get("business"))
            del app.world.segment_shares[share.id]
            return {"ok": True}

    @router.admin(
        "/cpas/catalogs/<catalog_id>/product_count", name="admin.cpas.catalog.count", methods=("POST",)
    )
    def force_count(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            catalog = _catalog(app.world, catalog_id)
            count = body.get("count")
            catalog.product_count_override = None if count is None else max(0, int(count))
            return {"ok": True, "product_count": catalog.product_count}

    @router.admin(
        "/cpas/catalogs/<catalog_id>/compliance", name="admin.cpas.catalog.compliance", methods=("POST",)
    )
    def compliance(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            catalog = _catalog(app.world, catalog_id)
            catalog.collaborative_ads_compliant = bool(body.get("compliant", True))
            return {"ok": True, "collaborative_ads_compliant": catalog.collaborative_ads_compliant}

    @router.admin("/cpas/catalogs/<catalog_id>/items", name="admin.cpas.catalog.items", methods=("POST",))
    def load_items(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        body = request_json_object(request)
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError("body needs 'items': a list of objects")
        with app.world.lock:
            catalog = _catalog(app.world, catalog_id)
            if body.get("replace", True):
                catalog.items.clear()
            for item in items:
                rid = str(item.get("retailer_id") or item.get("id") or "")
                if not rid:
                    raise ValueError("every item needs 'id' (or 'retailer_id')")
                fields = {k: str(v) for k, v in item.items() if v is not None and k != "retailer_id"}
                fields["id"] = rid
                catalog.items[rid] = fields
            return {"ok": True, "items": len(catalog.items)}

    @router.admin("/cpas/catalogs/<catalog_id>", name="admin.cpas.catalog.delete", methods=("DELETE",))
    def remove_catalog(app: SandboxApp, request: Request, catalog_id: str) -> Any:
        with app.world.lock:
            delete_catalog(app.world, catalog_id)
            return {"ok": True}

    @router.admin("/cpas/ad_accounts/<account_id>", name="admin.cpas.ad_account.delete", methods=("DELETE",))
    def remove_ad_account(app: SandboxApp, request: Request, account_id: str) -> Any:
        with app.world.lock:
            delete_ad_account(app.world, account_id)
            return {"ok": True}

    @router.admin(
        "/cpas/ad_accounts/<account_id>/campaigns", name="admin.cpas.ad_account.inject", methods=("POST",)
    )
    def inject_campaign(app: SandboxApp, request: Request, account_id: str) -> Any:
        body = request_json_object(request)
        world = app.world
        with world.lock:
            account = world.ad_accounts.get(account_id)
            if account is None:
                raise KeyError(f"no ad account {account_id}")
            segment_id = str(body.get("segment_id") or "")
            _catalog(world, segment_id)
            status = str(body.get("status") or "ACTIVE").upper()
            campaign = Campaign(
                id=world.new_id(),
                account_id=account_id,
                name=str(body.get("name") or f"Injected campaign on {segment_id}"),
                objective=str(body.get("objective") or "PRODUCT_CATALOG_SALES"),
                status=status,
                effective_status=status,
                promoted_object={"product_catalog_id": segment_id},
                created_time=world.now() - timedelta(days=1),
                tenant_id=account.tenant_id,
                retailer=world.retailer_of_catalog(world.catalogs[segment_id]),
            )
            world.campaigns[campaign.id] = campaign
            return {"ok": True, "id": campaign.id}

    @router.admin("/cpas/ads/<ad_id>/patch", name="admin.cpas.ad.patch", methods=("POST",))
    def patch_ad(app: SandboxApp, request: Request, ad_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            ad: Ad | None = app.world.ads.get(ad_id)
            if ad is None:
                raise KeyError(f"no ad {ad_id}")
            if "creative" in body:
                if not isinstance(body["creative"], dict):
                    raise ValueError("'creative' must be an object (merged into the ad's creative)")
                ad.creative = {**ad.creative, **body["creative"]}
            if "tracking_specs" in body:
                ad.tracking_specs = body["tracking_specs"]
            if "status" in body:
                ad.status = ad.effective_status = str(body["status"]).upper()
            return {"ok": True}

    @router.admin("/cpas/product_sets/<set_id>/live", name="admin.cpas.product_set.live", methods=("POST",))
    def product_set_live(app: SandboxApp, request: Request, set_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            ps = app.world.product_sets.get(set_id)
            if ps is None:
                raise KeyError(f"no product set {set_id}")
            live = body.get("live")
            ps.live_override = None if live is None else bool(live)
            return {"ok": True, "live": app.world.product_set_is_live(ps)}

    @router.admin(
        "/cpas/collaboration_requests/<request_id>/status",
        name="admin.cpas.collaboration_request.status",
        methods=("POST",),
    )
    def request_status(app: SandboxApp, request: Request, request_id: str) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            req = app.world.collab_requests.get(request_id)
            if req is None:
                raise KeyError(f"no collaboration request {request_id}")
            status = body.get("status")
            req.status_override = str(status).upper() if status else None
            return {"ok": True, "status": app.world.collab_request_status(req)}


# -- client side of the knobs ----------------------------------------------------------------------------


class CpasAdmin:
    """A small requests wrapper for the ``/__sandbox/cpas`` knobs (tests, demos)."""

    def __init__(self, base_url: str, session: requests.Session | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        resp = self._session.request(
            method, f"{self.base_url}/__sandbox/cpas{path}", json=dict(body or {}), timeout=self.timeout
        )
        data = resp.json()
        if resp.status_code >= 400:
            raise RuntimeError(
                f"sandbox admin {method} /cpas{path}: HTTP {resp.status_code}: {data.get('error')}"
            )
        return data

    def config(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "/config", settings) if settings else self._call("GET", "/config")

    def accept_share(self, segment_id: str, business_id: str) -> None:
        self._call("POST", f"/segments/{segment_id}/accept", {"business": business_id})

    def unshare(self, segment_id: str, business_id: str) -> None:
        self._call("POST", f"/segments/{segment_id}/unshare", {"business": business_id})

    def set_product_count(self, catalog_id: str, count: int | None) -> None:
        self._call("POST", f"/catalogs/{catalog_id}/product_count", {"count": count})

    def set_compliance(self, catalog_id: str, compliant: bool) -> None:
        self._call("POST", f"/catalogs/{catalog_id}/compliance", {"compliant": compliant})

    def load_items(self, catalog_id: str, items: list[Mapping[str, Any]], replace: bool = True) -> int:
        return self._call(
            "POST", f"/catalogs/{catalog_id}/items", {"items": list(items), "replace": replace}
        )["items"]

    def delete_catalog(self, catalog_id: str) -> None:
        self._call("DELETE", f"/catalogs/{catalog_id}")

    def delete_ad_account(self, account_id: str) -> None:
        self._call("DELETE", f"/ad_accounts/{account_id}")

    def inject_campaign(self, account_id: str, segment_id: str, name: str | None = None, **extra: Any) -> str:
        body = {"segment_id": segment_id, "name": name, **extra}
        return self._call("POST", f"/ad_accounts/{account_id}/campaigns", body)["id"]

    def patch_ad(self, ad_id: str, **changes: Any) -> None:
        self._call("POST", f"/ads/{ad_id}/patch", changes)

    def set_product_set_live(self, set_id: str, live: bool | None) -> None:
        self._call("POST", f"/product_sets/{set_id}/live", {"live": live})

    def set_request_status(self, request_id: str, status: str | None) -> None:
        self._call("POST", f"/collaboration_requests/{request_id}/status", {"status": status})

    def close(self) -> None:
        self._session.close()


__all__ = [
    "SEGMENT_NOT_COMPLIANT_CODE",
    "CpasAdmin",
    "delete_ad_account",
    "delete_catalog",
    "register",
]
