"""Item problems (diagnostics): a pure function of (seed, catalog, retailer id, item fields, world-clock hour)
plus admin overrides, so two reads in the same hour agree and problems come and go over hours."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meta_sandbox.catalog_model.error_types import (
    DIAGNOSTIC_GROUPS,
    ERROR_TYPES_BY_NAME,
    GENERATED_PROBLEMS,
    error_type_info,
)
from meta_sandbox.catalog_model.issues import parse_price, valid_url
from meta_sandbox.catalog_model.items import node_for, override_key
from meta_sandbox.state import Catalog, World


def _unit(*parts: Any) -> float:
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def hour_bucket(now: datetime) -> int:
    return int(now.timestamp() // 3600)


_HTML_RE = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?\s*>")


def fact_problems(fields: Mapping[str, str]) -> list[str]:
    """Problems that follow from the item's data (present as long as the data is)."""
    out: list[str] = []
    price = parse_price(fields.get("price", ""))
    if price is not None and price[0] <= 0:
        out.append("ITEM_PRICE_NOT_POSITIVE")
    if (
        fields.get("quantity_to_sell_on_facebook") == "0"
        and fields.get("availability", "").lower() == "in stock"
    ):
        out.append("INVENTORY_ZERO_AVAILABILITY_IN_STOCK")
    if _HTML_RE.search(fields.get("title", "")) or _HTML_RE.search(fields.get("description", "")):
        out.append("PROPERTY_VALUE_CONTAINS_HTML_TAGS")
    link = fields.get("link", "")
    if link and valid_url(link):
        parts = urllib.parse.urlsplit(link)
        if parts.path in ("", "/") and not parts.query:
            out.append("PRODUCT_URL_EQUALS_DOMAIN")
    title, description = (
        fields.get("title", "").strip().lower(),
        fields.get("description", "").strip().lower(),
    )
    if title and title == description:
        out.append("DUPLICATE_TITLE_AND_DESCRIPTION")
    return out


def generated_problems(
    seed: int, catalog_id: str, retailer_id: str, fields: Mapping[str, str], hour: int, scale: float = 1.0
) -> list[str]:
    """Problems that appear and disappear, deterministic from (seed, catalog, item, hour)."""
    out: list[str] = []
    if scale <= 0:
        return out
    out_of_stock = fields.get("availability", "").lower() == "out of stock"
    for p in GENERATED_PROBLEMS:
        if p.only_if == "out_of_stock" and not out_of_stock:
            continue
        # A per-item phase keeps items from all changing at the same hour.
        phase = int(_unit(seed, "phase", catalog_id, retailer_id, p.error_type) * p.period_hours)
        window = (hour + phase) // p.period_hours
        if _unit(seed, catalog_id, retailer_id, p.error_type, window) < p.rate * scale:
            out.append(p.error_type)
    return out


def item_error_types(
    world: World, catalog_id: str, retailer_id: str, now: datetime | None = None
) -> list[str]:
    fields = world.catalogs[catalog_id].items.get(retailer_id, {})
    hour = hour_bucket(now or world.now())
    types = fact_problems(fields) + generated_problems(
        world.seed, catalog_id, retailer_id, fields, hour, world.catalog_config.problem_rate_scale
    )
    overrides = world.item_error_overrides.get(override_key(catalog_id, retailer_id), {})
    types += [t for t, forced in overrides.items() if forced]
    return [t for t in dict.fromkeys(types) if overrides.get(t, True)]


def item_errors(
    world: World, catalog_id: str, retailer_id: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    out = []
    for t in item_error_types(world, catalog_id, retailer_id, now):
        info = error_type_info(t)
        out.append(
            {
                "error_type": t,
                "error_priority": info.priority,
                "title": info.title,
                "description": info.description,
                "call_to_action": info.call_to_action,
            }
        )
    return out


def diagnostics(world: World, catalog: Catalog) -> list[dict[str, Any]]:
    """``GET /{catalog_id}/diagnostics``: item problems grouped by diagnostic type, plus catalog facts."""
    now = world.now()
    affected: dict[str, list[str]] = {}  # error_type -> retailer ids
    for rid in catalog.items:
        for t in item_error_types(world, catalog.id, rid, now):
            affected.setdefault(t, []).append(rid)
    groups: dict[str, list[dict[str, Any]]] = {}
    for t, rids in affected.items():
        info = error_type_info(t)
        groups.setdefault(info.group, []).append(
            {
                "error_type": t,
                "error_priority": info.priority,
                "title": info.title,
                "description": info.description,
                "call_to_action": info.call_to_action,
                "number_of_affected_items": len(rids),
                "sample_affected_items": [
                    {"id": node_for(world, catalog, rid).id, "retailer_id": rid} for rid in rids[:5]
                ],
                "_rids": rids,
            }
        )
    out: list[dict[str, Any]] = []
    for group_type, (title, subtitle, code, channels, features) in DIAGNOSTIC_GROUPS.items():
        entries = sorted(
            groups.get(group_type, []), key=lambda d: (-d["number_of_affected_items"], d["error_type"])
        )
        if entries:
            items = {rid for d in entries for rid in d.pop("_rids")}
            high = any(d["error_priority"] == "HIGH" for d in entries)
            out.append(
                {
                    "title": title,
                    "subtitle": subtitle,
                    "type": group_type,
                    "severity": "MUST_FIX" if high else "OPPORTUNITY",
                    "error_code": code,
                    "number_of_affected_items": len(items),
                    "affected_channels": channels,
                    "affected_features": features,
                    "affected_entity": "product_item",
                    "diagnostics": entries,
                }
            )
    if not catalog.external_event_source_ids:
        info = ERROR_TYPES_BY_NAME["CATALOG_NOT_CONNECTED_TO_EVENT_SOURCE"]
        title, subtitle, code, channels, features = DIAGNOSTIC_GROUPS[info.group]
        out.append(
            {
                "title": info.title,
                "subtitle": subtitle,
                "type": info.group,
                "severity": "OPPORTUNITY",
                "error_code": code,
                "number_of_affected_items": catalog.product_count,
                "affected_channels": channels,
                "affected_features": features,
                "affected_entity": "product_catalog",
                "diagnostics": [
                    {
                        "error_type": info.error_type,
                        "error_priority": info.priority,
                        "title": info.title,
                        "description": info.description,
                        "call_to_action": info.call_to_action,
                        "number_of_affected_items": catalog.product_count,
                    }
                ],
            }
        )
    return out
