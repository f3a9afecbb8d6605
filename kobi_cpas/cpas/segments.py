"""Catalog segments: find-or-create under the retailer's business, share with the brand, read the shares.

All calls are idempotent: :func:`find_or_create_segment` looks for a segment with the same name (and parent,
when Meta tells it) under ``owned_product_catalogs`` before creating one, and :func:`share_segment` reads
``agencies`` and ``collaborative_ads_share_settings`` before sharing. Re-running a launch creates nothing.

Meta does not return a segment's parent or filter on the ProductCatalog node (``is_catalog_segment`` only), so
segment names must be unique per retailer business: :func:`segment_name` builds Kobi's
(``Kobi CPAS | <tenant> | <retailer>``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kobi_cpas.cpas.graph import GraphClient, post_once, with_hint
from kobi_cpas.meta.errors import (
    SEGMENT_NOT_COMPLIANT_HINT,
    MetaAPIError,
    MetaSegmentNotCompliantError,
)
from kobi_cpas.registry.filters import canonical_json, validate_rule

log = logging.getLogger("kobi_cpas.cpas")

SHARE_TASKS = ("ADVERTISE", "MANAGE")
COLLAB_TERMS = ("ENFORCE_CREATE_NEW_AD_ACCOUNT", "ENFORCE_SHARE_AD_PERFORMANCE_ACCESS")
UTM_KEYS = ("campaign_source", "campaign_medium", "campaign_name")
CATALOG_FIELDS = "id,name,is_catalog_segment,product_count"


def segment_name(tenant_id: str, retailer: str) -> str:
    """Kobi's name for the segment of a tenant's products at a retailer (unique per retailer business)."""
    return f"Kobi CPAS | {tenant_id} | {retailer}"


def list_owned_catalogs(client: GraphClient, business_id: str) -> list[dict[str, Any]]:
    """Every catalog and segment the business owns (id, name, is_catalog_segment, product_count)."""
    return list(
        client.paginate(f"{business_id}/owned_product_catalogs", {"fields": CATALOG_FIELDS, "limit": 200})
    )


def find_segment(
    client: GraphClient, *, business_id: str, name: str, parent_catalog_id: str | None = None
) -> dict[str, Any] | None:
    """The business's segment called ``name`` (the lowest id if Meta holds several), or None.

    When Meta's answer carries ``parent_catalog_id`` a segment of another parent does not match.
    """
    found = [
        c
        for c in list_owned_catalogs(client, business_id)
        if c.get("is_catalog_segment")
        and c.get("name") == name
        and (parent_catalog_id is None or c.get("parent_catalog_id") in (None, parent_catalog_id))
    ]
    if not found:
        return None
    found.sort(key=lambda c: int(c["id"]) if str(c["id"]).isdigit() else 0)
    if len(found) > 1:
        log.warning(
            "business %s holds %d segments named %r (%s); using %s",
            business_id,
            len(found),
            name,
            ", ".join(str(c["id"]) for c in found),
            found[0]["id"],
        )
    return found[0]


def find_or_create_segment(
    client: GraphClient,
    *,
    business_id: str,
    parent_catalog_id: str,
    name: str,
    filter: Mapping[str, Any] | str,
) -> tuple[str, bool]:
    """Find the segment ``name`` under ``business_id`` (the retailer, or the marketing partner business that
    owns the parent catalog), or cut it from ``parent_catalog_id`` with ``filter``. Returns (segment_id, created).

    The filter is validated locally first (:class:`~kobi_cpas.registry.filters.FilterError`, no API call). The
    creating POST is sent once, never retried automatically; after a failure that may have been applied
    (timeout, 5xx) the segment is looked up again before the error is raised. Meta's 2310068 raises
    :class:`~kobi_cpas.meta.MetaSegmentNotCompliantError` ("parent catalog is not Collaborative Ads compliant —
    check its status in Commerce Manager").
    """
    rule = validate_rule(filter)
    existing = find_segment(client, business_id=business_id, name=name, parent_catalog_id=parent_catalog_id)
    if existing is not None:
        return str(existing["id"]), False
    data = {
        "name": name,
        "parent_catalog_id": parent_catalog_id,
        "catalog_segment_filter": canonical_json(rule),
    }
    try:
        answer = post_once(client, f"{business_id}/owned_product_catalogs", data)
    except MetaSegmentNotCompliantError as exc:
        raise with_hint(
            exc,
            f"{SEGMENT_NOT_COMPLIANT_HINT} (parent catalog {parent_catalog_id} of business {business_id})",
        ) from None
    except MetaAPIError as exc:
        if exc.retryable:
            again = find_segment(
                client, business_id=business_id, name=name, parent_catalog_id=parent_catalog_id
            )
            if again is not None:
                return str(again["id"]), True
        raise
    return str(answer["id"]), True


@dataclass(frozen=True)
class SegmentShares:
    """Who a segment is shared with: ``agencies`` (accepted, by business id) and ``share_settings`` (every
    share, accepted or pending, by business id).

    Meta's agencies edge returns Business objects (id, name): the tasks and collab terms of a share are sent
    when sharing and cannot be read back."""

    agencies: dict[str, dict[str, Any]] = field(default_factory=dict)
    share_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def status_for(self, business_id: str) -> str:
        """accepted | pending | not_shared for one business."""
        if business_id in self.agencies:
            return "accepted"
        if business_id in self.share_settings:
            return "pending"
        return "not_shared"


def read_segment_shares(client: GraphClient, segment_id: str) -> SegmentShares:
    agencies = {
        str(a["id"]): a
        for a in client.paginate(f"{segment_id}/agencies", {"fields": "id,name", "limit": 100})
    }
    settings: dict[str, dict[str, Any]] = {}
    for s in client.paginate(
        f"{segment_id}/collaborative_ads_share_settings",
        {"fields": "id,agency_business,utm_campaign,utm_medium,utm_source", "limit": 100},
    ):
        biz = (s.get("agency_business") or {}).get("id")
        if biz:
            settings[str(biz)] = s
    return SegmentShares(agencies=agencies, share_settings=settings)


def _check(values: Iterable[str], allowed: Sequence[str], what: str) -> list[str]:
    out = list(dict.fromkeys(values))
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ValueError(f"{what}: unknown value {bad[0]!r} (allowed: {', '.join(allowed)})")
    return out


def share_segment(
    client: GraphClient,
    segment_id: str,
    brand_business_id: str,
    permitted_tasks: Iterable[str] = ("ADVERTISE",),
    utm_settings: Mapping[str, str] | None = None,
    collab_terms: Iterable[str] = (),
) -> bool:
    """Share the segment with the brand's business unless it already is (accepted or awaiting acceptance).

    Returns True when this call shared it. The brand still has to accept the segment in Collaboration Center
    (no API for that); until then it is listed in share settings but not in agencies.
    """
    tasks = _check(permitted_tasks, SHARE_TASKS, "permitted_tasks")
    if not tasks:
        raise ValueError("permitted_tasks must not be empty (ADVERTISE and/or MANAGE)")
    terms = _check(collab_terms, COLLAB_TERMS, "collab_terms")
    utm = dict(utm_settings or {})
    _check(utm, UTM_KEYS, "utm_settings")
    shares = read_segment_shares(client, segment_id)
    if shares.status_for(brand_business_id) != "not_shared":
        return False
    data: dict[str, Any] = {"business": brand_business_id, "permitted_tasks": tasks}
    if utm:
        data["utm_settings"] = utm
    if terms:
        data["enabled_collab_terms"] = terms
    client.post(f"{segment_id}/agencies", data=data)  # re-sharing is harmless: Meta updates the share
    return True


def unshare_segment(client: GraphClient, segment_id: str, business_id: str) -> bool:
    """Stop sharing (retailer side). Returns False when it was not shared with that business."""
    if read_segment_shares(client, segment_id).status_for(business_id) == "not_shared":
        return False
    client.delete(f"{segment_id}/agencies", {"business": business_id})
    return True
