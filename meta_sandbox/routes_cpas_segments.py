"""Collaborative Ads: catalog segments (``owned_product_catalogs``) and sharing them (agencies, share
settings, assigned users). See routes_cpas for the shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meta_sandbox import errors as gerr
from meta_sandbox.errors import GraphError
from meta_sandbox.server import (
    FAMILY_CATALOG,
    RequestContext,
    Router,
)
from meta_sandbox.state import (
    Catalog,
    SegmentShare,
)

if TYPE_CHECKING:
    pass

from meta_sandbox.cpas_common import (
    COLLAB_TERMS,
    ID_RE,
    SEGMENT_NOT_COMPLIANT_CODE,
    SEGMENT_NOT_COMPLIANT_MESSAGE,
    SHARE_TASKS,
    USER_TASKS,
    UTM_KEYS,
    agency_fields,
    json_list_param,
    json_object_param,
    required_param,
    rule_param,
    share_settings_fields,
    shares_of,
)


def register_segments(router: Router) -> None:
    @router.edge(
        "business",
        "owned_product_catalogs",
        name="cpas.business.owned_product_catalogs.create",
        methods=("POST",),
        family=FAMILY_CATALOG,
    )
    def create_owned_catalog(ctx: RequestContext) -> dict[str, Any]:
        world, business = ctx.world, ctx.node
        name = required_param(ctx, "name")
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
        rule = rule_param(ctx, "catalog_segment_filter")
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


def register_sharing(router: Router) -> None:
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
        business_id = required_param(ctx, "business")
        if business_id not in world.businesses:
            raise gerr.invalid_parameter(f"Param business must be a valid business id, got {business_id}")
        if business_id == catalog.business_id:
            raise gerr.invalid_parameter("A catalog cannot be shared with the business that owns it")
        tasks = json_list_param(ctx, "permitted_tasks", SHARE_TASKS)
        if not tasks:
            raise gerr.invalid_parameter(
                "The parameter permitted_tasks is required (ADVERTISE and/or MANAGE)"
            )
        utm = json_object_param(ctx, "utm_settings") or {}
        bad = sorted(set(utm) - UTM_KEYS)
        if bad:
            raise gerr.invalid_parameter(
                f"Param utm_settings has unknown key '{bad[0]}' (allowed: {', '.join(sorted(UTM_KEYS))})"
            )
        terms = json_list_param(ctx, "enabled_collab_terms", COLLAB_TERMS) or []
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
        business_id = required_param(ctx, "business")
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
        # Meta lists the users of one business (required) with AssignedUser's fields: no tasks.
        business = required_param(ctx, "business")
        users = ctx.world.catalog_assigned_users.get(ctx.node.id, {})
        items = [
            ctx.select(
                {"id": uid, "name": f"User {uid}", "user_type": "SYSTEM_USER", "business": {"id": business}},
                "AssignedUser",
                defaults=("id", "name"),
            )
            for uid in sorted(users)
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
        user = required_param(ctx, "user")
        if not ID_RE.match(user):
            raise gerr.invalid_parameter(
                f"Param user must be a business user id or system user id, got {user}"
            )
        tasks = json_list_param(ctx, "tasks", USER_TASKS)
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
        user = required_param(ctx, "user")
        ctx.world.catalog_assigned_users.get(ctx.node.id, {}).pop(user, None)
        return {"success": True}
