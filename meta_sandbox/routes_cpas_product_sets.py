"""Collaborative Ads: product sets of a catalog (``/{catalog_id}/product_sets``, ``/{product_set_id}``). See
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
    ProductSet,
)

if TYPE_CHECKING:
    pass

from meta_sandbox.cpas_common import (
    PRODUCT_SET_METADATA_KEYS,
    json_object_param,
    product_set_fields,
    required_param,
    rule_param,
)


def register(router: Router) -> None:
    defaults = ("id", "name", "filter")

    def metadata_param(ctx: RequestContext) -> dict[str, Any] | None:
        meta = json_object_param(ctx, "metadata")
        if meta is None:
            return None
        bad = sorted(set(meta) - PRODUCT_SET_METADATA_KEYS)
        if bad:
            raise gerr.invalid_parameter(
                f"Param metadata has unknown key '{bad[0]}' (allowed: {', '.join(sorted(PRODUCT_SET_METADATA_KEYS))})"
            )
        return meta

    def shops_param(ctx: RequestContext) -> list[dict[str, Any]] | None:
        shops = ctx.json_param("publish_to_shops")
        if shops is None:
            return None
        if not isinstance(shops, list) or not all(isinstance(s, dict) and s.get("shop_id") for s in shops):
            raise gerr.invalid_parameter('Param publish_to_shops must be a JSON array of {"shop_id": ...}')
        return shops

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
        name = required_param(ctx, "name")
        rule = rule_param(ctx, "filter")
        meta = metadata_param(ctx)
        ps = ProductSet(
            id=ctx.world.new_id(),
            catalog_id=ctx.node.id,
            name=name,
            filter=rule,
            metadata=meta or {},
            created_time=ctx.now(),
            publish_to_shops=shops_param(ctx) or [],
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
            ps.name = required_param(ctx, "name")
        if ctx.param("filter") is not None:
            ps.filter = rule_param(ctx, "filter")
        meta = metadata_param(ctx)
        if meta is not None:
            ps.metadata = meta
        shops = shops_param(ctx)
        if shops is not None:
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
