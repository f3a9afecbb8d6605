"""The sandbox's world: every Graph object the fake API serves, seeded from the tenant registry.

State is plain dataclasses in dicts keyed by Graph id, guarded by one ``threading.RLock`` (``world.lock``).
The server runs each Graph handler under that lock, so handlers may read and mutate freely.

Adding state in a later issue:
1. add a dataclass here and a ``dict[str, YourType]`` field on ``World`` (``field(default_factory=dict)``);
2. if its ids are Graph nodes (``GET /{id}``), add ``"kind": ("attribute", "MetaTypeName")`` to
   ``NODE_KINDS`` so the router can dispatch ``/{id}`` and ``/{id}/{edge}`` to it;
3. seed it in ``_populate`` if the registry implies it. ``reset()`` rebuilds every field automatically.
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

# kind -> (World attribute holding the objects, Meta node type name used in error messages)
NODE_KINDS: dict[str, tuple[str, str]] = {
    "business": ("businesses", "Business"),
    "catalog": ("catalogs", "ProductCatalog"),
    "ad_account": ("ad_accounts", "AdAccount"),
    "external_event_source": ("event_sources", "AdsPixel"),
}

DEFAULT_SEED = 42
CPAS_CURRENCY = "TRY"
CPAS_TIMEZONE = "Europe/Istanbul"


@dataclass
class Business:
    id: str
    name: str
    role: str  # "brand" (a Kobi tenant) or "retailer"
    tenant_id: str | None = None
    retailer: str | None = None


@dataclass
class ExternalEventSource:
    id: str
    name: str
    source_type: str = "pixel"  # "pixel" | "app"
    business_id: str | None = None


@dataclass
class Catalog:
    id: str
    name: str
    business_id: str
    vertical: str = "commerce"
    is_catalog_segment: bool = False
    parent_catalog_id: str | None = None
    # Parent catalogs of retailers: can catalog segments be cut from it (Meta error 2310068 when not)?
    collaborative_ads_compliant: bool = False
    commerce_merchant_settings: dict[str, str] | None = None
    external_event_source_ids: list[str] = field(default_factory=list)
    segment_filter: dict[str, Any] | None = None
    tenant_id: str | None = None
    retailer: str | None = None
    # Product items keyed by retailer_id (the feed's `id`); filled by later issues (feeds, batch API).
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    feed_ids: list[str] = field(default_factory=list)
    # Fixed product count for catalogs whose items the sandbox does not model (retailer parents, segments).
    seeded_product_count: int | None = None

    @property
    def product_count(self) -> int:
        return self.seeded_product_count if self.seeded_product_count is not None else len(self.items)

    @property
    def feed_count(self) -> int:
        return len(self.feed_ids)


@dataclass
class AdAccount:
    id: str  # "act_<digits>"
    account_id: str
    name: str
    currency: str = CPAS_CURRENCY
    timezone_name: str = CPAS_TIMEZONE
    account_status: int = 1
    business_id: str | None = None
    tenant_id: str | None = None
    retailer: str | None = None


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


def _title(retailer: str) -> str:
    return " ".join(part.capitalize() for part in retailer.replace("-", "_").split("_"))


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
        first = True
        for tenant in self.registry.tenants:
            label = tenant.name or tenant.tenant_id
            short = label.split(" (", 1)[0]
            self.businesses.setdefault(
                tenant.business_id,
                Business(id=tenant.business_id, name=short, role="brand", tenant_id=tenant.tenant_id),
            )
            pixels: list[str] = []
            if "no pixel" not in label.lower():
                pixel_id = self.seeded_graph_id(f"pixel:{tenant.tenant_id}", "7")
                self.event_sources[pixel_id] = ExternalEventSource(
                    id=pixel_id, name=f"{short} Pixel", source_type="pixel", business_id=tenant.business_id
                )
                pixels.append(pixel_id)
            self.catalogs[tenant.catalog_id] = Catalog(
                id=tenant.catalog_id,
                name=f"{short} Catalog",
                business_id=tenant.business_id,
                commerce_merchant_settings={
                    "id": self.seeded_graph_id(f"cms:{tenant.tenant_id}", "22"),
                    "cta": "ONSITE_CHECKOUT" if first else "OFFSITE_LINK",
                },
                external_event_source_ids=pixels,
                tenant_id=tenant.tenant_id,
            )
            first = False
            for rel in tenant.cpas_retailers:
                self._populate_retailer(tenant.tenant_id, short, rel)

    def _populate_retailer(self, tenant_id: str, tenant_label: str, rel: Any) -> None:
        retailer_name = _title(rel.retailer)
        retailer_biz = rel.retailer_business_id or self.seeded_graph_id(
            f"retailer-business:{rel.retailer}", "9"
        )
        self.businesses.setdefault(
            retailer_biz,
            Business(id=retailer_biz, name=retailer_name, role="retailer", retailer=rel.retailer),
        )
        parent_id = rel.parent_catalog_id
        if parent_id and parent_id not in self.catalogs:
            self.catalogs[parent_id] = Catalog(
                id=parent_id,
                name=f"{retailer_name} Marketplace Catalog",
                business_id=retailer_biz,
                collaborative_ads_compliant=True,
                retailer=rel.retailer,
                seeded_product_count=self.seeded_int(f"parent-count:{parent_id}", 20_000, 250_000),
            )
        if rel.catalog_segment_id:
            tenant = self.registry.tenant(tenant_id)
            self.catalogs[rel.catalog_segment_id] = Catalog(
                id=rel.catalog_segment_id,
                name=f"{retailer_name} x {tenant.name or tenant_id}",
                business_id=retailer_biz,
                is_catalog_segment=True,
                parent_catalog_id=parent_id,
                segment_filter=rel.segment_filter,
                tenant_id=tenant_id,
                retailer=rel.retailer,
                seeded_product_count=self.seeded_int(f"segment-count:{rel.catalog_segment_id}", 40, 400),
            )
        if rel.dedicated_ad_account_id:
            account_id = rel.dedicated_ad_account_id.removeprefix("act_")
            self.ad_accounts[rel.dedicated_ad_account_id] = AdAccount(
                id=rel.dedicated_ad_account_id,
                account_id=account_id,
                name=f"{tenant_label} - {retailer_name} CPAS",
                business_id=self.registry.tenant(tenant_id).business_id,
                tenant_id=tenant_id,
                retailer=rel.retailer,
            )

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
