"""The Graph objects of the sandbox's world, as plain dataclasses, and the kinds of node ``/{id}`` dispatches on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
    # Collaborative Ads (routes_cpas*.py / routes_ads.py)
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
    # The retailer's business this Collaborative Ads account is dedicated to (the brand linked it when accepting
    # the retailer's segment); listed in the brand's cpas_business_setup_config. None: not a CPAS account.
    dedicated_partner_business_id: str | None = None


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
    completes (see meta_sandbox.catalog_model)."""

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
    # Meta processes big files longer: world-clock seconds added per row of the file (> 0 also selects the clock rule)
    upload_seconds_per_item: float = 0.0
    batch_processing_seconds: float = 120.0  # started -> dispatched (half) -> finished
    problem_rate_scale: float = 1.0  # multiplies the generated item problem rates (0 = none)


@dataclass
class ReportRun:
    """An async insights job (``POST /{object}/insights`` -> ``report_run_id``). Its answer rows are computed at
    submission; ``script`` is the (async_status, async_percent_completion) each poll moves to (the last sticks).
    Driven by meta_sandbox.insights_model."""

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
    items = segment_items(catalogs, catalog)
    return None if items is None else len(items)


def carried_items(catalogs: dict[str, Catalog], parent: Catalog) -> list[dict[str, Any]] | None:
    sources = [catalogs[c] for c in parent.carried_catalog_ids if c in catalogs]
    if not any(src.items for src in sources):
        return None
    return [item for src in sources for item in src.items.values()]


def segment_items(catalogs: dict[str, Catalog], segment: Catalog) -> list[dict[str, Any]] | None:
    parent = catalogs.get(segment.parent_catalog_id or "")
    if parent is None:
        return None
    carried = carried_items(catalogs, parent)
    if carried is None:
        return None
    if not segment.segment_filter:
        return carried
    from kobi_cpas.registry.filters import compile_matcher

    match = compile_matcher(segment.segment_filter)
    return [item for item in carried if match(item)]
