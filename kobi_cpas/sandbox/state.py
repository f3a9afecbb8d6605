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
    "campaign": ("campaigns", "Campaign"),
    "adset": ("adsets", "AdSet"),
    "ad": ("ads", "Ad"),
    "product_feed": ("product_feeds", "ProductFeed"),
    "feed_upload": ("feed_uploads", "ProductFeedUpload"),
    "product_item": ("product_items", "ProductItem"),
    "report_run": ("report_runs", "AdReportRun"),
    # Collaborative Ads (routes_cpas.py / routes_ads.py)
    "product_set": ("product_sets", "ProductSet"),
    "adcreative": ("adcreatives", "AdCreative"),
    "collab_request": ("collab_requests", "CPASCollaborationRequest"),
    "partner_recommendation": ("partner_recommendations", "CPASAdvertiserPartnershipRecommendation"),
}

RETAILER_SITES = {"trendyol": "https://www.trendyol.com", "hepsiburada": "https://www.hepsiburada.com"}

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
    # CPAS admin knob: a forced product_count (0 = "the segment went empty"); None = computed.
    product_count_override: int | None = None
    # Retailer parent catalogs: the brand catalogs whose products this marketplace catalog carries (a segment's
    # items are the parent's items matching its filter; see World.catalog_items).
    carried_catalog_ids: list[str] = field(default_factory=list)

    @property
    def product_count(self) -> int:
        if self.product_count_override is not None:
            return self.product_count_override
        if self.is_catalog_segment:
            computed = _segment_item_count(self)
            if computed is not None:
                return computed
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


@dataclass
class Campaign:
    id: str
    account_id: str  # "act_<digits>"
    name: str
    objective: str = "PRODUCT_CATALOG_SALES"
    status: str = "ACTIVE"  # configured status: ACTIVE | PAUSED | ARCHIVED | DELETED
    effective_status: str = "ACTIVE"
    promoted_object: dict[str, Any] = field(default_factory=dict)  # {"product_catalog_id": <segment id>}
    created_time: datetime | None = None
    tenant_id: str | None = None
    retailer: str | None = None
    special_ad_categories: list[str] = field(default_factory=list)


@dataclass
class AdSet:
    id: str
    account_id: str
    campaign_id: str
    name: str
    status: str = "ACTIVE"
    effective_status: str = "ACTIVE"
    promoted_object: dict[str, Any] = field(default_factory=dict)  # {"product_set_id": ...} or catalog
    daily_budget: str | None = None
    billing_event: str | None = None
    optimization_goal: str | None = None
    targeting: dict[str, Any] | None = None
    created_time: datetime | None = None


@dataclass
class Ad:
    id: str
    account_id: str
    campaign_id: str
    adset_id: str
    name: str
    status: str = "ACTIVE"
    effective_status: str = "ACTIVE"
    # The creative as Meta returns it under creative{...}: object_story_spec.template_data, template_url_spec,
    # multi_share_end_card, tracking_specs live here.
    creative: dict[str, Any] = field(default_factory=dict)
    tracking_specs: list[dict[str, Any]] | None = None
    created_time: datetime | None = None


@dataclass
class ProductFeed:
    id: str
    catalog_id: str
    name: str
    business_id: str | None = None
    schedule: dict[str, Any] | None = None
    # A replace upload deletes the items of this feed it does not contain (Meta's primary feed behaviour).
    deletion_enabled: bool = True
    created_time: datetime | None = None
    upload_ids: list[str] = field(default_factory=list)


@dataclass
class FeedUpload:
    """An upload session (``POST /{feed_id}/uploads``). The file is parsed at POST and applied when the session
    completes (see kobi_cpas.sandbox.catalog_model)."""

    id: str
    feed_id: str
    catalog_id: str
    start_time: datetime
    update_only: bool = False
    business_id: str | None = None
    input_method: str = "Manual Upload"
    filename: str | None = None
    url: str | None = None
    parsed: Any = None  # catalog_model.ParsedFeed until applied
    polls: int = 0
    # Captured at POST so later config changes do not move an upload already in flight.
    processing_seconds: float = 0.0
    pending_polls: int = 1
    end_time: datetime | None = None
    num_detected_items: int | None = None
    num_persisted_items: int | None = None
    num_invalid_items: int | None = None
    num_deleted_items: int | None = None
    error_count: int | None = None
    warning_count: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)  # aggregated, Meta's upload error shape


@dataclass
class ProductItem:
    """Graph node of a catalog item; its fields live in ``Catalog.items[retailer_id]``."""

    id: str  # product_item_id
    catalog_id: str
    retailer_id: str
    business_id: str | None = None
    feed_id: str | None = None  # the feed whose upload last wrote it (replace uploads delete per feed)
    created_time: datetime | None = None
    updated_time: datetime | None = None


@dataclass
class ItemsBatch:
    """An ``items_batch`` call, applied when its processing time has passed on the world clock."""

    handle: str
    catalog_id: str
    created_time: datetime
    allow_upsert: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    processing_seconds: float = 120.0
    sync_errors: list[dict[str, Any]] = field(default_factory=list)  # {line, id, message}
    applied: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    invalid_ids: list[str] = field(default_factory=list)
    # A terminal status other than finished set by the admin API (canceled, error, ...): answered as is.
    outcome: str | None = None


@dataclass
class CatalogConfig:
    """Admin knobs of the catalog model (``/__sandbox/catalog_config``)."""

    upload_pending_polls: int = 1  # status polls answered with end_time null before an upload completes
    upload_processing_seconds: float = 0.0  # > 0: complete by world clock instead of by polls
    batch_processing_seconds: float = 120.0  # started -> dispatched (half) -> finished
    problem_rate_scale: float = 1.0  # multiplies the generated item problem rates (0 = none)


@dataclass
class ReportRun:
    """An async insights job (``POST /{object}/insights`` -> ``report_run_id``). Its answer rows are computed at
    submission; ``script`` is the (async_status, async_percent_completion) each poll moves to (the last sticks).
    Driven by kobi_cpas.sandbox.insights_model."""

    id: str
    account_id: str  # "act_<digits>"
    object_id: str
    params: dict[str, Any]
    date_start: str
    date_stop: str
    created_time: datetime
    business_id: str | None = None
    async_status: str = "Job Not Started"
    async_percent_completion: int = 0
    script: list[tuple[str, int]] = field(default_factory=list)
    polls: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    early_reads: int = 0  # reads of /{id}/insights before the job completed (a client bug)
    time_completed: datetime | None = None


@dataclass
class SegmentShare:
    """A catalog segment shared with a business (``POST /{segment_id}/agencies``). Listed under
    ``collaborative_ads_share_settings`` at once; under ``agencies`` only once the brand accepted it in
    Collaboration Center (admin knob ``/__sandbox/cpas/segments/<id>/accept``)."""

    id: str
    catalog_id: str
    business_id: str  # the brand (or agency) business the segment is shared with
    permitted_tasks: list[str] = field(default_factory=list)
    utm_settings: dict[str, str] = field(default_factory=dict)
    enabled_collab_terms: list[str] = field(default_factory=list)
    accepted: bool = False
    created_time: datetime | None = None
    accepted_time: datetime | None = None


@dataclass
class ProductSet:
    id: str
    catalog_id: str  # a catalog or a catalog segment
    name: str
    filter: dict[str, Any] | None = None  # Meta's rule language; None = every product
    metadata: dict[str, Any] = field(default_factory=dict)  # cover_image_url, external_url, description
    publish_to_shops: list[dict[str, Any]] = field(default_factory=list)
    live_override: bool | None = None  # admin knob; None = live when an ad set/ad/shop uses it
    created_time: datetime | None = None


@dataclass
class AdCreative:
    id: str
    account_id: str
    name: str
    # object_story_spec (template_data), template_url_spec, product_set_id, url_tags, ...
    spec: dict[str, Any] = field(default_factory=dict)
    created_time: datetime | None = None


@dataclass
class CollabMerchant:
    """A retailer of the Collaborative Ads directory."""

    business_id: str
    name: str
    retailer: str  # Kobi's retailer key (trendyol, hepsiburada, n11, ...)
    countries: list[str] = field(default_factory=lambda: ["TR"])
    vertical: str = "commerce"


@dataclass
class PartnerRecommendation:
    """``GET /{business_id}/collaborative_ads_suggested_partners`` (CPASAdvertiserPartnershipRecommendation)."""

    id: str
    brand_business_id: str
    merchant_business_id: str
    advertiser_business_id: str | None = None
    brands: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=lambda: ["TR"])
    merchant_categories: list[str] = field(default_factory=list)
    status: str = "ACTIVE"
    status_reason: str | None = None


@dataclass
class CollabRequest:
    """``POST /{business_id}/collaborative_ads_collaboration_requests``: PENDING until the retailer answers
    (APPROVED after ``CpasConfig.request_approval_seconds`` of world time, or the status an admin knob set)."""

    id: str
    sender_business_id: str
    receiver_business_id: str
    created_time: datetime
    brands: list[str] = field(default_factory=list)
    contact_email: str | None = None
    contact_first_name: str | None = None
    contact_last_name: str | None = None
    phone_number: str | None = None
    requester_agency_or_brand: str = "AGENCY"
    source: str = "EXTERNAL"
    request_type: str = "SENDER"
    status_override: str | None = None


@dataclass
class CpasConfig:
    """Admin knobs of the Collaborative Ads model (``/__sandbox/cpas/config``)."""

    auto_accept_shares: bool = False  # a segment shared with a brand is accepted at once
    request_approval_seconds: float = 2 * 86400.0  # collaboration request PENDING -> APPROVED


# Collaborative Ads directory (beyond the registry's retailers): key -> (name, compliant parent catalog?).
# n11's parent catalog is not Collaborative Ads compliant: cutting a segment from it fails with 2310068.
CPAS_DIRECTORY: dict[str, tuple[str, bool]] = {
    "trendyol": ("Trendyol", True),
    "hepsiburada": ("Hepsiburada", True),
    "n11": ("n11", False),
    "amazon_tr": ("Amazon TR", True),
    "pazarama": ("Pazarama", True),
}


def _segment_item_count(catalog: Catalog) -> int | None:
    """A segment's product count from its parent's items (None when the sandbox models none of them)."""
    catalogs = catalog.__dict__.get("_world_catalogs")
    if catalogs is None:
        return None
    items = _segment_items(catalogs, catalog)
    return None if items is None else len(items)


def _carried_items(catalogs: dict[str, Catalog], parent: Catalog) -> list[dict[str, Any]] | None:
    sources = [catalogs[c] for c in parent.carried_catalog_ids if c in catalogs]
    if not any(src.items for src in sources):
        return None
    return [item for src in sources for item in src.items.values()]


def _segment_items(catalogs: dict[str, Catalog], segment: Catalog) -> list[dict[str, Any]] | None:
    parent = catalogs.get(segment.parent_catalog_id or "")
    if parent is None:
        return None
    carried = _carried_items(catalogs, parent)
    if carried is None:
        return None
    if not segment.segment_filter:
        return carried
    from kobi_cpas.cpas.filters import compile_matcher

    match = compile_matcher(segment.segment_filter)
    return [item for item in carried if match(item)]


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
    # Insights knobs, request log and cache (owned by sandbox/insights_model.py; '_' keeps it out of /state).
    _insights: dict[str, Any] = field(default_factory=dict)
    # Collaborative Ads (routes_cpas.py, routes_ads.py)
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
        self._populate_cpas()

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
            if rel.catalog_segment_id and rel.partnership_status.value == "accepted":
                self._populate_ads(tenant_id, tenant_label, rel)

    def _populate_ads(self, tenant_id: str, tenant_label: str, rel: Any) -> None:
        """Seed running CPAS campaigns in the dedicated ad account: 2 campaigns x 2 ad sets x 2-3 ads, with
        one archived and one deleted ad (insights must still count them) and, for QC, one ad whose creative
        breaks a collaborative-ads constraint (custom tracking specs) in the first tenant's first account."""
        act = rel.dedicated_ad_account_id
        site = RETAILER_SITES.get(rel.retailer, f"https://www.{rel.retailer}.com")
        created = self.clock.start - timedelta(days=120)
        key = f"{tenant_id}:{rel.retailer}"
        for c in range(2):
            cid = self.seeded_graph_id(f"campaign:{key}:{c}", "23")
            self.campaigns[cid] = Campaign(
                id=cid,
                account_id=act,
                name=f"{tenant_label} x {_title(rel.retailer)} - Advantage+ catalog sales {c + 1}",
                promoted_object={"product_catalog_id": rel.catalog_segment_id},
                created_time=created,
                tenant_id=tenant_id,
                retailer=rel.retailer,
            )
            for a in range(2):
                asid = self.seeded_graph_id(f"adset:{key}:{c}:{a}", "23")
                self.adsets[asid] = AdSet(
                    id=asid,
                    account_id=act,
                    campaign_id=cid,
                    name=f"Ad set {c + 1}.{a + 1}",
                    promoted_object={"product_catalog_id": rel.catalog_segment_id},
                    daily_budget=str(self.seeded_int(f"budget:{asid}", 200, 1500) * 100),
                    created_time=created,
                )
                for n in range(2 + (a % 2)):
                    adid = self.seeded_graph_id(f"ad:{key}:{c}:{a}:{n}", "23")
                    status = "ACTIVE"
                    if c == 1 and a == 1 and n == 2:
                        status = "DELETED"
                    elif c == 1 and a == 0 and n == 1:
                        status = "ARCHIVED"
                    self.ads[adid] = Ad(
                        id=adid,
                        account_id=act,
                        campaign_id=cid,
                        adset_id=asid,
                        name=f"Ad {c + 1}.{a + 1}.{n + 1}",
                        status=status,
                        effective_status=status,
                        creative={
                            "id": self.seeded_graph_id(f"creative:{adid}", "23"),
                            "product_set_id": None,
                            "template_url_spec": {"web": {"url": f"{site}/p/{{{{product.retailer_id}}}}"}},
                            "multi_share_end_card": False,
                            "object_story_spec": {
                                "template_data": {
                                    "message": "Shop {{product.name}} now",
                                    "link": site,
                                    "name": "{{product.name}}",
                                    "description": "{{product.description}}",
                                }
                            },
                        },
                        tracking_specs=None,
                        created_time=created,
                    )
        if (
            tenant_id == self.registry.tenants[0].tenant_id
            and rel is self.registry.tenants[0].cpas_retailers[0]
        ):
            first_ad = next(ad for ad in self.ads.values() if ad.account_id == act)
            first_ad.tracking_specs = [{"action.type": ["offsite_conversion"], "fb_pixel": ["123"]}]

    def _populate_cpas(self) -> None:
        """Collaborative Ads state implied by the registry: which brand catalogs each retailer parent carries,
        segment shares (accepted -> in agencies; pending -> share settings only), the retailer directory (with
        n11's non-compliant parent catalog), suggested partners and one open collaboration request per pending
        partnership that has no segment yet."""
        merchants_by_key: dict[str, str] = {}
        for biz in self.businesses.values():
            if biz.role == "retailer" and biz.retailer:
                merchants_by_key.setdefault(biz.retailer, biz.id)
        for key, (name, compliant) in CPAS_DIRECTORY.items():
            biz_id = merchants_by_key.get(key) or self.seeded_graph_id(f"retailer-business:{key}", "9")
            merchants_by_key[key] = biz_id
            self.businesses.setdefault(biz_id, Business(id=biz_id, name=name, role="retailer", retailer=key))
            self.collab_merchants[biz_id] = CollabMerchant(business_id=biz_id, name=name, retailer=key)
            if not any(c.business_id == biz_id and not c.is_catalog_segment for c in self.catalogs.values()):
                parent_id = self.seeded_graph_id(f"parent-catalog:{key}", "91")
                self.catalogs[parent_id] = Catalog(
                    id=parent_id,
                    name=f"{name} Marketplace Catalog",
                    business_id=biz_id,
                    collaborative_ads_compliant=compliant,
                    retailer=key,
                    seeded_product_count=self.seeded_int(f"parent-count:{parent_id}", 5_000, 90_000),
                )
        created = self.clock.start - timedelta(days=60)
        for tenant in self.registry.tenants:
            partnered: set[str] = set()
            for rel in tenant.cpas_retailers:
                partnered.add(rel.retailer)
                parent = self.catalogs.get(rel.parent_catalog_id or "")
                if parent is not None and tenant.catalog_id not in parent.carried_catalog_ids:
                    parent.carried_catalog_ids.append(tenant.catalog_id)
                status = rel.partnership_status.value
                if rel.catalog_segment_id and status in ("accepted", "pending"):
                    share_id = self.seeded_graph_id(
                        f"share:{rel.catalog_segment_id}:{tenant.business_id}", "25"
                    )
                    self.segment_shares[share_id] = SegmentShare(
                        id=share_id,
                        catalog_id=rel.catalog_segment_id,
                        business_id=tenant.business_id,
                        permitted_tasks=["ADVERTISE"],
                        utm_settings={"campaign_source": "facebook", "campaign_medium": "cpas"},
                        enabled_collab_terms=["ENFORCE_CREATE_NEW_AD_ACCOUNT"],
                        accepted=status == "accepted",
                        created_time=created,
                        accepted_time=created + timedelta(days=2) if status == "accepted" else None,
                    )
                if status == "pending" and not rel.catalog_segment_id:
                    receiver = rel.retailer_business_id or merchants_by_key.get(rel.retailer)
                    if receiver:
                        req_id = self.seeded_graph_id(
                            f"collab-request:{tenant.tenant_id}:{rel.retailer}", "26"
                        )
                        label = (tenant.name or tenant.tenant_id).split(" (", 1)[0]
                        self.collab_requests[req_id] = CollabRequest(
                            id=req_id,
                            sender_business_id=tenant.business_id,
                            receiver_business_id=receiver,
                            created_time=self.clock.start - timedelta(days=1),
                            brands=[label],
                            contact_email="partnerships@kobi.example",
                            contact_first_name="Kobi",
                            contact_last_name="Partnerships",
                            phone_number="+900000000000",
                        )
            label = (tenant.name or tenant.tenant_id).split(" (", 1)[0]
            for key in CPAS_DIRECTORY:
                if key in partnered:
                    continue
                rec_id = self.seeded_graph_id(f"recommendation:{tenant.tenant_id}:{key}", "27")
                self.partner_recommendations[rec_id] = PartnerRecommendation(
                    id=rec_id,
                    brand_business_id=tenant.business_id,
                    merchant_business_id=merchants_by_key[key],
                    brands=[label],
                )
        for catalog in self.catalogs.values():
            catalog.__dict__["_world_catalogs"] = self.catalogs

    def attach_catalog(self, catalog: Catalog) -> Catalog:
        """Add a catalog to the world (segments need the world's catalogs to compute their product count)."""
        self.catalogs[catalog.id] = catalog
        catalog.__dict__["_world_catalogs"] = self.catalogs
        return catalog

    def catalog_items(self, catalog: Catalog) -> list[dict[str, Any]]:
        """The items of a catalog as the sandbox models them: its own items, for a retailer parent the items of
        the brand catalogs it carries, for a segment the parent's items matching the segment filter."""
        if catalog.is_catalog_segment:
            return _segment_items(self.catalogs, catalog) or []
        if catalog.carried_catalog_ids:
            return _carried_items(self.catalogs, catalog) or []
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
