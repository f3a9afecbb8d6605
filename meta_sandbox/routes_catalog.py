"""Catalog and business routes: ``GET /{catalog_id}``, ``/{catalog_id}/external_event_sources``,
``GET /{business_id}`` and ``/{business_id}/owned_product_catalogs``."""

from __future__ import annotations

from typing import Any

from meta_sandbox.server import FAMILY_CATALOG, RequestContext, Router
from meta_sandbox.state import Catalog, ExternalEventSource, World

CATALOG_TYPE = "ProductCatalog"


def catalog_fields(world: World, catalog: Catalog) -> dict[str, Any]:
    """Every field the sandbox serves for a ProductCatalog (values or lazy callables)."""
    business = world.businesses.get(catalog.business_id)
    return {
        "id": catalog.id,
        "name": catalog.name,
        "vertical": catalog.vertical,
        "product_count": lambda: catalog.product_count,
        "is_catalog_segment": catalog.is_catalog_segment,
        "commerce_merchant_settings": (
            dict(catalog.commerce_merchant_settings) if catalog.commerce_merchant_settings else None
        ),
        "business": {"id": business.id, "name": business.name} if business else None,
        "feed_count": lambda: catalog.feed_count,
    }


def event_source_fields(source: ExternalEventSource) -> dict[str, Any]:
    return {"id": source.id, "name": source.name, "source_type": source.source_type}


def register(router: Router) -> None:
    @router.node("catalog", name="catalog.get", family=FAMILY_CATALOG)
    def get_catalog(ctx: RequestContext) -> dict[str, Any]:
        return ctx.select(catalog_fields(ctx.world, ctx.node), CATALOG_TYPE)

    @router.edge(
        "catalog", "external_event_sources", name="catalog.external_event_sources", family=FAMILY_CATALOG
    )
    def list_event_sources(ctx: RequestContext) -> dict[str, Any]:
        catalog: Catalog = ctx.node
        sources = [
            ctx.world.event_sources[s]
            for s in catalog.external_event_source_ids
            if s in ctx.world.event_sources
        ]
        items = [
            ctx.select(event_source_fields(s), "ExternalEventSource", defaults=("id", "name", "source_type"))
            for s in sources
        ]
        return ctx.paginate(items)

    @router.node("external_event_source", name="event_source.get", family=FAMILY_CATALOG)
    def get_event_source(ctx: RequestContext) -> dict[str, Any]:
        return ctx.select(event_source_fields(ctx.node), "AdsPixel")

    @router.node("business", name="business.get", family=FAMILY_CATALOG)
    def get_business(ctx: RequestContext) -> dict[str, Any]:
        biz = ctx.node
        return ctx.select({"id": biz.id, "name": biz.name}, "Business")

    @router.edge(
        "business", "owned_product_catalogs", name="business.owned_product_catalogs", family=FAMILY_CATALOG
    )
    def list_owned_catalogs(ctx: RequestContext) -> dict[str, Any]:
        catalogs = sorted(ctx.world.catalogs_of_business(ctx.node.id), key=lambda c: c.id)
        items = [ctx.select(catalog_fields(ctx.world, c), CATALOG_TYPE) for c in catalogs]
        return ctx.paginate(items)
