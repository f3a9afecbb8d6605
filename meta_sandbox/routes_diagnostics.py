"""Diagnostics routes: ``GET /catalog_all_errors``, ``GET /{catalog_id}/products``, ``GET /{product_item_id}``,
``GET /{catalog_id}/diagnostics``; admin ``POST/DELETE /__sandbox/item_errors``.

Item problems are computed by ``catalog_model`` from (seed, catalog, item, world-clock hour) plus the admin
overrides, so they come and go over hours but two reads in the same hour agree.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from meta_sandbox import catalog_model as cm
from meta_sandbox import errors as gerr
from meta_sandbox.server import FAMILY_CATALOG, RequestContext, Router
from meta_sandbox.state import Catalog, ProductItem

if TYPE_CHECKING:
    from meta_sandbox.server import SandboxApp

ITEM_TYPE = "ProductItem"
GROUP_TYPE = "ProductCatalogDiagnosticGroup"
ITEM_DEFAULTS = ("id", "name")
GROUP_FIELDS = (
    "title",
    "subtitle",
    "type",
    "severity",
    "error_code",
    "number_of_affected_items",
    "affected_channels",
    "affected_features",
    "affected_entity",
    "diagnostics",
)
_ERROR_TYPE_RE = re.compile(r"[A-Z][A-Z0-9_]*")


def _body(request: Request) -> dict[str, Any]:
    data = request.get_json(force=True, silent=True) if request.get_data() else None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object with catalog_id, retailer_id and error_type")
    return data


def register(router: Router) -> None:
    @router.path("/catalog_all_errors", name="diagnostics.catalog_all_errors", family=FAMILY_CATALOG)
    def catalog_all_errors(ctx: RequestContext) -> dict[str, Any]:
        locale = str(ctx.param("locale") or "en_US")
        if locale not in cm.KNOWN_LOCALES:
            raise gerr.invalid_parameter(f"Param locale must be a valid locale, e.g. en_US; got {locale}")
        return {"all": cm.all_errors(locale)}

    @router.edge("catalog", "products", name="catalog.products", family=FAMILY_CATALOG)
    def list_products(ctx: RequestContext) -> dict[str, Any]:
        catalog: Catalog = ctx.node
        world = ctx.world
        cm.settle(world)
        priority = ctx.param("error_priority")
        if priority is not None and priority not in cm.PRIORITIES:
            raise gerr.invalid_parameter("Param error_priority must be one of {HIGH, MEDIUM, LOW}")
        error_type = ctx.param("error_type")
        if error_type is not None and not _ERROR_TYPE_RE.fullmatch(str(error_type)):
            raise gerr.invalid_parameter(
                "Param error_type must be an error type such as IMAGE_RESOLUTION_LOW"
            )
        try:
            matches = cm.item_filter(ctx.param("filter"))
        except cm.FilterError as exc:
            raise gerr.invalid_parameter(f"Param filter: {exc}") from None
        now = world.now()
        selected: list[ProductItem] = []
        for rid, values in catalog.items.items():
            if not matches(values, rid):
                continue
            if priority is not None or error_type is not None:
                errs = cm.item_errors(world, catalog.id, rid, now)
                if not any(
                    (priority is None or e["error_priority"] == priority)
                    and (error_type is None or e["error_type"] == error_type)
                    for e in errs
                ):
                    continue
            selected.append(cm.node_for(world, catalog, rid))
        page = ctx.paginate(selected)
        page["data"] = [
            ctx.select(cm.product_item_fields(world, item), ITEM_TYPE, defaults=ITEM_DEFAULTS)
            for item in page["data"]
        ]
        if ctx.bool_param("summary", False):
            page["summary"] = {"total_count": len(selected)}
        return page

    @router.node("product_item", name="product_item.get", family=FAMILY_CATALOG)
    def get_product_item(ctx: RequestContext) -> dict[str, Any]:
        cm.settle(ctx.world)
        item: ProductItem = ctx.node
        if not cm.is_live(ctx.world, item):  # deleted (e.g. by work the clock just made due)
            raise gerr.unknown_object(item.id, ctx.method)
        return ctx.select(cm.product_item_fields(ctx.world, item), ITEM_TYPE, defaults=ITEM_DEFAULTS)

    @router.edge("catalog", "diagnostics", name="catalog.diagnostics", family=FAMILY_CATALOG)
    def list_diagnostics(ctx: RequestContext) -> dict[str, Any]:
        cm.settle(ctx.world)
        groups = cm.diagnostics(ctx.world, ctx.node)
        return ctx.paginate([ctx.select(g, GROUP_TYPE, defaults=GROUP_FIELDS) for g in groups])

    # -- admin --------------------------------------------------------------------------------------------

    def _override(app: SandboxApp, request: Request, forced: bool) -> Any:
        body = _body(request)
        catalog_id = str(body.get("catalog_id") or "")
        retailer_id = str(body.get("retailer_id") or "")
        error_type = body.get("error_type")
        with app.world.lock:
            catalog = app.world.catalogs.get(catalog_id)
            if catalog is None:
                raise KeyError(f"no catalog {catalog_id!r}")
            cm.settle(app.world)
            if retailer_id not in catalog.items:
                raise KeyError(f"no item {retailer_id!r} in catalog {catalog_id}")
            key = cm.override_key(catalog_id, retailer_id)
            if error_type is None and not forced:
                app.world.item_error_overrides.pop(key, None)  # DELETE without a type: back to the generator
            else:
                if not isinstance(error_type, str) or not _ERROR_TYPE_RE.fullmatch(error_type):
                    raise ValueError("error_type must be an error type such as IMAGE_RESOLUTION_LOW")
                app.world.item_error_overrides.setdefault(key, {})[error_type] = forced
            return {
                "catalog_id": catalog_id,
                "retailer_id": retailer_id,
                "errors": cm.item_error_types(app.world, catalog_id, retailer_id),
            }

    @router.admin("/item_errors", name="admin.item_errors.add", methods=("POST",))
    def add_item_error(app: SandboxApp, request: Request) -> Any:
        return _override(app, request, True)

    @router.admin("/item_errors", name="admin.item_errors.remove", methods=("DELETE",))
    def remove_item_error(app: SandboxApp, request: Request) -> Any:
        return _override(app, request, False)
