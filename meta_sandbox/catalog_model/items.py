"""Catalog items and their Graph nodes: create, update and delete items of ``Catalog.items``.

Item fields are stored as received, trimmed; a blank value removes the field. ``Catalog.items`` maps
retailer_id -> fields; ``World.product_items`` holds the Graph node (product_item_id) of each item."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from meta_sandbox.state import Catalog, ProductItem, World


def meta_time(dt: datetime | None) -> str | None:
    """Meta's timestamp format: ``2024-05-01T10:00:00+0000``."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def clean_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value).strip()


def product_item_id(world: World, catalog_id: str, retailer_id: str) -> str | None:
    return world.product_item_index.get(catalog_id, {}).get(retailer_id)


def node_for(world: World, catalog: Catalog, retailer_id: str) -> ProductItem:
    """The Graph node of an item of ``catalog.items``, created on first sight for items other code wrote
    straight into ``Catalog.items`` (e.g. the CPAS admin loader)."""
    index = world.product_item_index.setdefault(catalog.id, {})
    pid = index.get(retailer_id)
    node = world.product_items.get(pid) if pid else None
    if node is None:
        now = world.now()
        node = ProductItem(
            id=world.new_id(),
            catalog_id=catalog.id,
            retailer_id=retailer_id,
            business_id=catalog.business_id,
            created_time=now,
            updated_time=now,
        )
        index[retailer_id] = node.id
        world.product_items[node.id] = node
    return node


def is_live(world: World, node: ProductItem) -> bool:
    """The node still names an item (other code may have removed items from ``Catalog.items``)."""
    catalog = world.catalogs.get(node.catalog_id)
    return (
        catalog is not None
        and node.retailer_id in catalog.items
        and product_item_id(world, node.catalog_id, node.retailer_id) == node.id
    )


def upsert_item(
    world: World,
    catalog: Catalog,
    retailer_id: str,
    values: Mapping[str, str],
    *,
    replace: bool,
    at: datetime,
    feed_id: str | None = None,
) -> bool:
    """Create or update an item. ``replace``: its fields become exactly ``values`` (minus blanks); otherwise
    the given fields are merged (a blank one is removed). Returns True when the item was created."""
    index = world.product_item_index.setdefault(catalog.id, {})
    existing = catalog.items.get(retailer_id)
    if replace or existing is None:
        new_fields = {k: v for k, v in values.items() if v != ""}
    else:
        new_fields = dict(existing)
        for k, v in values.items():
            if v == "":
                new_fields.pop(k, None)
            else:
                new_fields[k] = v
    new_fields["id"] = retailer_id
    created = existing is None
    if created:
        pid = world.new_id()
        index[retailer_id] = pid
        world.product_items[pid] = ProductItem(
            id=pid,
            catalog_id=catalog.id,
            retailer_id=retailer_id,
            business_id=catalog.business_id,
            feed_id=feed_id,
            created_time=at,
            updated_time=at,
        )
    else:
        item = node_for(world, catalog, retailer_id)
        if new_fields != existing:
            item.updated_time = at
        if feed_id is not None:
            item.feed_id = feed_id
    catalog.items[retailer_id] = new_fields
    return created


def delete_item(world: World, catalog: Catalog, retailer_id: str) -> bool:
    if retailer_id not in catalog.items:
        return False
    del catalog.items[retailer_id]
    pid = world.product_item_index.get(catalog.id, {}).pop(retailer_id, None)
    if pid is not None:
        world.product_items.pop(pid, None)
    world.item_error_overrides.pop(override_key(catalog.id, retailer_id), None)
    return True


def override_key(catalog_id: str, retailer_id: str) -> str:
    return f"{catalog_id}/{retailer_id}"
