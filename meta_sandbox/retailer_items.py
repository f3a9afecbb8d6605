"""The retailer's side of a Collaborative Ads partnership: the product items of the retailer's catalog that its
catalog segment shows for a brand, as Meta holds them.

On Meta the segment's items belong to the *retailer's* catalog: each has its own product item id (never the
brand catalog's) and the retailer's SKU as ``retailer_id``. ``converted_product_*`` insights report those ids,
so Kobi must look each one up (``GET /{product-item-id}``) and match it to the brand's feed. The sandbox models:

- one retailer item per brand product the retailer lists (the brand catalog's items, or seeded products while
  the brand has uploaded none), held in the retailer's parent catalog (the segment's catalog without one), with
  a seeded product item id (prefix ``62``) distinct from every brand item id;
- its ``retailer_id`` is the brand's feed id when the retailer reuses the brand's SKU (``SHARED_SKU_SHARE`` of the
  items, seeded per retailer and product), else a retailer SKU such as ``TY482913077`` that the brand's feed never
  contains (also when another brand on the same marketplace already uses that SKU);
- ``gtin`` (per product, the same at every retailer) and, for about half, ``manufacturer_part_number``;
- ``DELISTED_SHARE`` of the items were delisted by the retailer after they converted: insights still report their
  ids, ``GET /{id}`` answers Meta's error 100 / subcode 33 (unknown object).
"""

from __future__ import annotations

import random
from typing import Any

from meta_sandbox.state import RETAILER_SITES, AdAccount, Catalog, ProductItem, World

SHARED_SKU_SHARE = 0.8
DELISTED_SHARE = 0.05
RETAILER_ITEM_PREFIX = "62"  # 16-digit ids: above new_id()'s range (5e15..6e15) and every other seeded prefix
_SKU_PREFIX = {"trendyol": "TY", "hepsiburada": "HB", "n11": "NE"}


def account_partnership(world: World, account: AdAccount) -> Any | None:
    """The registry's retailer relation behind a dedicated ad account (None for other accounts)."""
    for tenant in world.registry.tenants:
        for rel in tenant.cpas_retailers:
            if rel.dedicated_ad_account_id == account.id:
                return rel
    return None


def retailer_catalog(world: World, account: AdAccount) -> Catalog | None:
    """The catalog holding the retailer's items for this account: the segment's parent, else the segment."""
    rel = account_partnership(world, account)
    if rel is None:
        return None
    segment = world.catalogs.get(rel.catalog_segment_id or "")
    parent_id = (segment.parent_catalog_id if segment else None) or rel.parent_catalog_id
    return world.catalogs.get(parent_id or "") or segment


def _rng(world: World, *parts: str) -> random.Random:
    return random.Random(f"{world.seed}:retailer-item:{':'.join(parts)}")


def list_product(
    world: World,
    catalog: Catalog,
    retailer: str,
    brand_key: str,
    brand_sku: str | None,
    fields: dict[str, Any],
    owners: dict[tuple[str, str], str],
) -> str:
    """The retailer's product item id for one brand product (``brand_key`` names it for seeding); created on
    first sight, the same id on every call; ``brand_sku`` None: a product the brand's feed does not hold, always
    under a retailer SKU. A delisted item gets an id but no Graph node. ``owners`` maps
    (catalog id, SKU) to the brand product listed under it, so two brands never share a SKU."""
    rng = _rng(world, catalog.id, brand_key)
    shared = rng.random() < SHARED_SKU_SHARE
    delisted = rng.random() < DELISTED_SHARE
    own_sku = f"{_SKU_PREFIX.get(retailer, retailer[:2].upper())}{rng.randint(10**8, 10**9 - 1)}"
    index = world.product_item_index.setdefault(catalog.id, {})
    sku = own_sku
    pid = world.seeded_graph_id(f"retailer-item:{catalog.id}:{brand_key}", RETAILER_ITEM_PREFIX)
    if delisted or pid in world.product_items:
        return pid
    if shared and brand_sku and owners.get((catalog.id, brand_sku), brand_key) == brand_key:
        sku = brand_sku
    owners[(catalog.id, sku)] = brand_key
    gtin_rng = random.Random(f"{world.seed}:gtin:{brand_key}")
    site = RETAILER_SITES.get(retailer, f"https://www.{retailer}.com")
    item: dict[str, Any] = {
        "id": sku,
        "title": fields.get("title") or f"{retailer.title()} listing {sku}",
        "brand": fields.get("brand") or "",
        "price": fields.get("sale_price") or fields.get("price") or "",
        "availability": "in stock",
        "link": f"{site}/p/{sku}",
        "image_link": fields.get("image_link") or f"{site}/img/{sku}.jpg",
        "gtin": str(gtin_rng.randint(10**12, 10**13 - 1)),
    }
    if gtin_rng.random() < 0.5:
        item["manufacturer_part_number"] = f"MPN-{gtin_rng.randint(10**5, 10**6 - 1)}"
    catalog.items[sku] = {k: v for k, v in item.items() if v != ""}
    index[sku] = pid
    now = world.now()
    world.product_items[pid] = ProductItem(
        id=pid,
        catalog_id=catalog.id,
        retailer_id=sku,
        business_id=catalog.business_id,
        created_time=now,
        updated_time=now,
    )
    return pid
