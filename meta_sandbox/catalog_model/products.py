"""What ``GET /{catalog_id}/products`` and ``GET /{product_item_id}`` serve: a ProductItem's fields, and the
``filter`` param."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kobi_cpas.feeds.fields import FIELDS_BY_NAME
from kobi_cpas.registry.filters import FilterError, compile_matcher
from meta_sandbox.catalog_model.diagnostics import item_errors
from meta_sandbox.catalog_model.issues import parse_price
from meta_sandbox.state import ProductItem, World

__all__ = ["FilterError", "item_filter", "product_item_fields"]


def product_item_fields(world: World, item: ProductItem) -> dict[str, Any]:
    """Every field the sandbox serves for a ProductItem: Meta's names (name, url, image_url,
    retailer_product_group_id, inventory, ...) and, for convenience, the feed names (title, link, ...)."""
    fields = world.catalogs[item.catalog_id].items.get(item.retailer_id, {})
    out: dict[str, Any] = {name: fields.get(name) or None for name in FIELDS_BY_NAME}
    price = parse_price(fields.get("price", ""))
    quantity = fields.get("quantity_to_sell_on_facebook", "")
    additional = fields.get("additional_image_link")
    out.update(
        {
            "id": item.id,
            "retailer_id": item.retailer_id,
            "name": fields.get("title") or None,
            "currency": price[1] if price else None,
            "url": fields.get("link") or None,
            "image_url": fields.get("image_link") or None,
            "additional_image_urls": [u.strip() for u in additional.split(",")] if additional else None,
            "retailer_product_group_id": fields.get("item_group_id") or None,
            "category": fields.get("google_product_category") or None,
            # Product identifiers Meta holds (not feed columns of Kobi's brands; retailers' items carry them).
            "gtin": fields.get("gtin") or None,
            "manufacturer_part_number": fields.get("manufacturer_part_number") or None,
            "inventory": int(quantity) if quantity.isdigit() else None,
            "review_status": "approved",
            "visibility": "published",
            "errors": lambda: item_errors(world, item.catalog_id, item.retailer_id),
        }
    )
    return out


def item_filter(raw: Any) -> Callable[[Mapping[str, str], str], bool]:
    """The ``filter`` param of ``GET /{catalog_id}/products`` as a predicate ``(item fields, retailer_id)``.

    Meta's product-set rule language, evaluated by :mod:`kobi_cpas.registry.filters` (the same evaluator as
    catalog segments and product sets). Absent or blank: every item matches. Raises ``FilterError``."""
    if raw is None or raw == "":
        return lambda _fields, _retailer_id: True
    match = compile_matcher(raw)
    return lambda fields, retailer_id: match({**fields, "retailer_id": retailer_id})
