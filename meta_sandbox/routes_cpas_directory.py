"""Collaborative Ads: the directory, suggested partners, business reads and collaboration requests. See
routes_cpas for the shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meta_sandbox import errors as gerr
from meta_sandbox.server import (
    FAMILY_CATALOG,
    RequestContext,
    Router,
)
from meta_sandbox.state import (
    CollabRequest,
    PartnerRecommendation,
)

if TYPE_CHECKING:
    pass

from meta_sandbox.cpas_common import (
    REQUESTER_KINDS,
    json_list_param,
    merchant_fields,
    nested_page,
    recommendation_fields,
    request_fields,
    required_param,
    select_sub,
)


def register(router: Router) -> None:
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
            select_sub(
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
            select_sub(recommendation_fields(r), spec.subfields, field_name, rec_defaults)
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
        brands = json_list_param(ctx, "brands")
        if not brands:
            raise gerr.invalid_parameter("The parameter brands is required (a JSON array of brand names)")
        email = required_param(ctx, "contact_email")
        if "@" not in email:
            raise gerr.invalid_parameter(f"Param contact_email must be an email address, got {email}")
        first = required_param(ctx, "contact_first_name")
        last = required_param(ctx, "contact_last_name")
        phone = required_param(ctx, "phone_number")
        receiver = required_param(ctx, "receiver_business")
        if receiver not in world.collab_merchants:
            raise gerr.invalid_parameter(
                f"Param receiver_business: {receiver} is not a retailer of the Collaborative Ads directory"
            )
        requester = required_param(ctx, "requester_agency_or_brand").upper()
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
