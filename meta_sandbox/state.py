"""The sandbox's world: every Graph object the fake API serves, seeded from the tenant registry.

State is plain dataclasses in dicts keyed by Graph id, guarded by one ``threading.RLock`` (``world.lock``).
The server runs each Graph handler under that lock, so handlers may read and mutate freely.

Adding state in a later issue:
1. add a dataclass to ``nodes.py`` and a ``dict[str, YourType]`` field on ``World`` (``field(default_factory=dict)``);
2. if its ids are Graph nodes (``GET /{id}``), add ``"kind": ("attribute", "MetaTypeName")`` to
   ``NODE_KINDS`` so the router can dispatch ``/{id}`` and ``/{id}/{edge}`` to it;
3. seed it in ``seeding.populate`` if the registry implies it. ``reset()`` rebuilds every field automatically.
Ids created at run time come from ``world.new_id()`` (deterministic for a seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kobi_cpas.registry import Registry
from meta_sandbox.nodes import (
    CPAS_CURRENCY,
    CPAS_DIRECTORY,
    CPAS_TIMEZONE,
    DEFAULT_SEED,
    NODE_KINDS,
    RETAILER_SITES,
    Ad,
    AdAccount,
    AdCreative,
    AdSet,
    Business,
    Campaign,
    Catalog,
    CatalogConfig,
    CollabMerchant,
    CollabRequest,
    CpasConfig,
    ExternalEventSource,
    FeedUpload,
    ItemsBatch,
    PartnerRecommendation,
    ProductFeed,
    ProductItem,
    ProductSet,
    ReportRun,
    SegmentShare,
    carried_items,
    segment_items,
)
from meta_sandbox.seeding import populate


class WorldClock:
    """World time: a start instant plus an offset tests move forward, running with real time unless frozen."""

    def __init__(self, start: datetime | None = None, frozen: bool = False) -> None:
        start = start or datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = start
        self.frozen = frozen
        self.offset = 0.0
        self._mono0 = time.monotonic()

    def now(self) -> datetime:
        running = 0.0 if self.frozen else time.monotonic() - self._mono0
        return self.start + timedelta(seconds=running + self.offset)

    def advance(self, seconds: float) -> datetime:
        self.offset += float(seconds)
        return self.now()

    def freeze(self, frozen: bool) -> None:
        if frozen == self.frozen:
            return
        # Keep now() continuous across the switch.
        current = self.now()
        self.frozen = frozen
        self._mono0 = time.monotonic()
        self.offset = 0.0
        self.start = current


@dataclass
class World:
    registry: Registry
    seed: int = DEFAULT_SEED
    clock_start: datetime | None = None
    clock_frozen: bool = False
    businesses: dict[str, Business] = field(default_factory=dict)
    catalogs: dict[str, Catalog] = field(default_factory=dict)
    event_sources: dict[str, ExternalEventSource] = field(default_factory=dict)
    ad_accounts: dict[str, AdAccount] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    adsets: dict[str, AdSet] = field(default_factory=dict)
    ads: dict[str, Ad] = field(default_factory=dict)
    product_feeds: dict[str, ProductFeed] = field(default_factory=dict)
    feed_uploads: dict[str, FeedUpload] = field(default_factory=dict)
    product_items: dict[str, ProductItem] = field(default_factory=dict)
    # catalog_id -> retailer_id -> product_item_id
    product_item_index: dict[str, dict[str, str]] = field(default_factory=dict)
    items_batches: dict[str, ItemsBatch] = field(default_factory=dict)  # by handle
    # "catalog_id/retailer_id" -> {error_type: True (forced) | False (suppressed)}
    item_error_overrides: dict[str, dict[str, bool]] = field(default_factory=dict)
    catalog_config: CatalogConfig = field(default_factory=CatalogConfig)
    report_runs: dict[str, ReportRun] = field(default_factory=dict)
    # Insights knobs, request log and cache (owned by sandbox/insights_model/knobs.py; '_' keeps it out of /state).
    _insights: dict[str, Any] = field(default_factory=dict)
    # Collaborative Ads (routes_cpas*.py, routes_ads.py)
    segment_shares: dict[str, SegmentShare] = field(default_factory=dict)
    product_sets: dict[str, ProductSet] = field(default_factory=dict)
    adcreatives: dict[str, AdCreative] = field(default_factory=dict)
    collab_merchants: dict[str, CollabMerchant] = field(default_factory=dict)  # by business id
    partner_recommendations: dict[str, PartnerRecommendation] = field(default_factory=dict)
    collab_requests: dict[str, CollabRequest] = field(default_factory=dict)
    catalog_assigned_users: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # catalog -> user
    cpas_config: CpasConfig = field(default_factory=CpasConfig)
    clock: WorldClock = field(default_factory=WorldClock)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _id_counter: int = 0

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_registry(
        cls,
        registry: Any,
        seed: int = DEFAULT_SEED,
        *,
        clock_start: datetime | None = None,
        clock_frozen: bool = False,
    ) -> World:
        """Build the world of a ``Registry`` (or a ``LoadedRegistry``, whose ``.registry`` is used)."""
        reg = getattr(registry, "registry", registry)
        if not isinstance(reg, Registry):
            raise TypeError(
                f"World.from_registry needs a kobi_cpas.registry.Registry, got {type(registry).__name__}"
            )
        world = cls(
            registry=reg,
            seed=int(seed),
            clock_start=clock_start,
            clock_frozen=clock_frozen,
            clock=WorldClock(clock_start, clock_frozen),
        )
        world._populate()
        return world

    def reset(self, seed: int | None = None) -> None:
        """Rebuild every field from the registry and the seed, in place (references to the world stay valid)."""
        fresh = World.from_registry(
            self.registry,
            self.seed if seed is None else seed,
            clock_start=self.clock_start,
            clock_frozen=self.clock_frozen,
        )
        with self.lock:
            for f in dataclasses.fields(self):
                if f.name != "lock":
                    setattr(self, f.name, getattr(fresh, f.name))

    def seeded_int(self, key: str, lo: int, hi: int) -> int:
        """A deterministic integer in [lo, hi] for (seed, key), independent of creation order."""
        digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        return lo + int.from_bytes(digest[:8], "big") % (hi - lo + 1)

    def seeded_graph_id(self, key: str, prefix: str = "") -> str:
        digits = 16 - len(prefix)
        return prefix + str(self.seeded_int(key, 10 ** (digits - 1), 10**digits - 1))

    def new_id(self) -> str:
        """A fresh 16-digit Graph id for objects created through the API (deterministic sequence)."""
        with self.lock:
            while True:
                self._id_counter += 1
                candidate = str(self.seeded_int("id-base", 5 * 10**15, 6 * 10**15) + self._id_counter)
                if self.kind_of(candidate) is None:
                    return candidate

    def now(self) -> datetime:
        return self.clock.now()

    def _populate(self) -> None:
        populate(self)

    def attach_catalog(self, catalog: Catalog) -> Catalog:
        """Add a catalog to the world (segments need the world's catalogs to compute their product count)."""
        self.catalogs[catalog.id] = catalog
        catalog.__dict__["_world_catalogs"] = self.catalogs
        return catalog

    def catalog_items(self, catalog: Catalog) -> list[dict[str, Any]]:
        """The items of a catalog as the sandbox models them: its own items, for a retailer parent the items of
        the brand catalogs it carries, for a segment the parent's items matching the segment filter."""
        if catalog.is_catalog_segment:
            return segment_items(self.catalogs, catalog) or []
        if catalog.carried_catalog_ids:
            return carried_items(self.catalogs, catalog) or []
        return list(catalog.items.values())

    def retailer_of_catalog(self, catalog: Catalog) -> str | None:
        """The retailer key owning a catalog or segment (from its owner business)."""
        biz = self.businesses.get(catalog.business_id)
        if biz is not None and biz.role == "retailer":
            return biz.retailer
        return catalog.retailer

    def product_set_is_live(self, product_set: ProductSet) -> bool:
        """Used by an ad set or an ad that is not deleted, published to a shop, or forced by the admin knob."""
        if product_set.live_override is not None:
            return product_set.live_override
        if product_set.publish_to_shops:
            return True
        for adset in self.adsets.values():
            if (
                adset.status != "DELETED"
                and str(adset.promoted_object.get("product_set_id")) == product_set.id
            ):
                return True
        return any(
            ad.status != "DELETED" and str((ad.creative or {}).get("product_set_id")) == product_set.id
            for ad in self.ads.values()
        )

    def collab_request_status(self, request: CollabRequest) -> str:
        if request.status_override:
            return request.status_override
        age = (self.now() - request.created_time).total_seconds()
        return "APPROVED" if age >= self.cpas_config.request_approval_seconds else "PENDING"

    # -- lookups ------------------------------------------------------------------------------------

    def kind_of(self, obj_id: str) -> str | None:
        for kind, (attr, _type_name) in NODE_KINDS.items():
            if obj_id in getattr(self, attr):
                return kind
        return None

    def get(self, obj_id: str) -> tuple[str, Any] | None:
        for kind, (attr, _type_name) in NODE_KINDS.items():
            obj = getattr(self, attr).get(obj_id)
            if obj is not None:
                return kind, obj
        return None

    @staticmethod
    def type_name(kind: str) -> str:
        return NODE_KINDS.get(kind, (kind, kind))[1]

    def business_id_of(self, obj_id: str) -> str | None:
        """The business whose rate limits a call on this object counts against (X-Business-Use-Case-Usage)."""
        found = self.get(obj_id)
        if found is None:
            return None
        kind, obj = found
        if kind == "business":
            return obj.id
        return getattr(obj, "business_id", None)

    def catalogs_of_business(self, business_id: str) -> list[Catalog]:
        return [c for c in self.catalogs.values() if c.business_id == business_id]

    def snapshot(self, kind: str | None = None, obj_id: str | None = None) -> Any:
        """JSON-able view of the state for /__sandbox/state (kind = a World attribute such as 'catalogs')."""
        with self.lock:
            if kind is None:
                return {
                    "seed": self.seed,
                    "now": self.now().isoformat(),
                    "counts": {attr: len(getattr(self, attr)) for attr, _ in NODE_KINDS.values()},
                    "tenants": self.registry.tenant_ids,
                }
            collection = getattr(self, kind, None)
            if not isinstance(collection, dict) or kind.startswith("_"):
                raise KeyError(kind)
            if obj_id is not None:
                return _jsonable(collection[obj_id])
            return {k: _jsonable(v) for k, v in collection.items()}


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name in ("product_count", "feed_count"):
            if hasattr(type(obj), name):
                out[name] = getattr(obj, name)
        return out
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


__all__ = [
    "CPAS_CURRENCY",
    "CPAS_DIRECTORY",
    "CPAS_TIMEZONE",
    "DEFAULT_SEED",
    "NODE_KINDS",
    "RETAILER_SITES",
    "Ad",
    "AdAccount",
    "AdCreative",
    "AdSet",
    "Business",
    "Campaign",
    "Catalog",
    "CatalogConfig",
    "CollabMerchant",
    "CollabRequest",
    "CpasConfig",
    "ExternalEventSource",
    "FeedUpload",
    "ItemsBatch",
    "PartnerRecommendation",
    "ProductFeed",
    "ProductItem",
    "ProductSet",
    "ReportRun",
    "SegmentShare",
    "World",
    "WorldClock",
    "carried_items",
    "segment_items",
]
