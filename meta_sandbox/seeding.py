"""Seeding a ``World`` from the tenant registry: businesses, pixels, catalogs and feeds, ad accounts with their
campaigns, and the Collaborative Ads objects (retailer businesses, parent catalogs, segments, partners)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from meta_sandbox.nodes import (
    CPAS_DIRECTORY,
    RETAILER_SITES,
    Ad,
    AdAccount,
    AdSet,
    Business,
    Campaign,
    Catalog,
    CollabMerchant,
    CollabRequest,
    ExternalEventSource,
    PartnerRecommendation,
    SegmentShare,
)

if TYPE_CHECKING:
    from meta_sandbox.state import World


def _title(retailer: str) -> str:
    return " ".join(part.capitalize() for part in retailer.replace("-", "_").split("_"))


def populate(world: World) -> None:
    """Seed the world's objects from its registry and seed (businesses, pixels, catalogs, ad accounts, Collaborative Ads)."""
    first = True
    for tenant in world.registry.tenants:
        label = tenant.name or tenant.tenant_id
        short = label.split(" (", 1)[0]
        world.businesses.setdefault(
            tenant.business_id,
            Business(id=tenant.business_id, name=short, role="brand", tenant_id=tenant.tenant_id),
        )
        pixels: list[str] = []
        if "no pixel" not in label.lower():
            pixel_id = world.seeded_graph_id(f"pixel:{tenant.tenant_id}", "7")
            world.event_sources[pixel_id] = ExternalEventSource(
                id=pixel_id, name=f"{short} Pixel", source_type="pixel", business_id=tenant.business_id
            )
            pixels.append(pixel_id)
        world.catalogs[tenant.catalog_id] = Catalog(
            id=tenant.catalog_id,
            name=f"{short} Catalog",
            business_id=tenant.business_id,
            commerce_merchant_settings={
                "id": world.seeded_graph_id(f"cms:{tenant.tenant_id}", "22"),
                "cta": "ONSITE_CHECKOUT" if first else "OFFSITE_LINK",
            },
            external_event_source_ids=pixels,
            tenant_id=tenant.tenant_id,
        )
        first = False
        for rel in tenant.cpas_retailers:
            _populate_retailer(world, tenant.tenant_id, short, rel)
    _populate_cpas(world)


def _populate_retailer(world: World, tenant_id: str, tenant_label: str, rel: Any) -> None:
    retailer_name = _title(rel.retailer)
    retailer_biz = rel.retailer_business_id or world.seeded_graph_id(f"retailer-business:{rel.retailer}", "9")
    world.businesses.setdefault(
        retailer_biz,
        Business(id=retailer_biz, name=retailer_name, role="retailer", retailer=rel.retailer),
    )
    parent_id = rel.parent_catalog_id
    if parent_id and parent_id not in world.catalogs:
        world.catalogs[parent_id] = Catalog(
            id=parent_id,
            name=f"{retailer_name} Marketplace Catalog",
            business_id=retailer_biz,
            collaborative_ads_compliant=True,
            retailer=rel.retailer,
            seeded_product_count=world.seeded_int(f"parent-count:{parent_id}", 20_000, 250_000),
        )
    if rel.catalog_segment_id:
        tenant = world.registry.tenant(tenant_id)
        world.catalogs[rel.catalog_segment_id] = Catalog(
            id=rel.catalog_segment_id,
            name=f"{retailer_name} x {tenant.name or tenant_id}",
            business_id=retailer_biz,
            is_catalog_segment=True,
            parent_catalog_id=parent_id,
            segment_filter=rel.segment_filter,
            tenant_id=tenant_id,
            retailer=rel.retailer,
            seeded_product_count=world.seeded_int(f"segment-count:{rel.catalog_segment_id}", 40, 400),
        )
    if rel.dedicated_ad_account_id:
        account_id = rel.dedicated_ad_account_id.removeprefix("act_")
        world.ad_accounts[rel.dedicated_ad_account_id] = AdAccount(
            id=rel.dedicated_ad_account_id,
            account_id=account_id,
            name=f"{tenant_label} - {retailer_name} CPAS",
            business_id=world.registry.tenant(tenant_id).business_id,
            tenant_id=tenant_id,
            retailer=rel.retailer,
        )
        if rel.catalog_segment_id and rel.partnership_status.value == "accepted":
            world.ad_accounts[rel.dedicated_ad_account_id].dedicated_partner_business_id = retailer_biz
            _populate_ads(world, tenant_id, tenant_label, rel)


def _populate_ads(world: World, tenant_id: str, tenant_label: str, rel: Any) -> None:
    """Seed running CPAS campaigns in the dedicated ad account: 2 campaigns x 2 ad sets x 2-3 ads, with
    one archived and one deleted ad (insights must still count them) and, for QC, one ad whose creative
    breaks a collaborative-ads constraint (custom tracking specs) in the first tenant's first account."""
    act = rel.dedicated_ad_account_id
    site = RETAILER_SITES.get(rel.retailer, f"https://www.{rel.retailer}.com")
    created = world.clock.start - timedelta(days=120)
    key = f"{tenant_id}:{rel.retailer}"
    for c in range(2):
        cid = world.seeded_graph_id(f"campaign:{key}:{c}", "23")
        world.campaigns[cid] = Campaign(
            id=cid,
            account_id=act,
            name=f"{tenant_label} x {_title(rel.retailer)} - Advantage+ catalog sales {c + 1}",
            promoted_object={"product_catalog_id": rel.catalog_segment_id},
            created_time=created,
            tenant_id=tenant_id,
            retailer=rel.retailer,
        )
        for a in range(2):
            asid = world.seeded_graph_id(f"adset:{key}:{c}:{a}", "23")
            world.adsets[asid] = AdSet(
                id=asid,
                account_id=act,
                campaign_id=cid,
                name=f"Ad set {c + 1}.{a + 1}",
                promoted_object={"product_catalog_id": rel.catalog_segment_id},
                daily_budget=str(world.seeded_int(f"budget:{asid}", 200, 1500) * 100),
                created_time=created,
            )
            for n in range(2 + (a % 2)):
                adid = world.seeded_graph_id(f"ad:{key}:{c}:{a}:{n}", "23")
                status = "ACTIVE"
                if c == 1 and a == 1 and n == 2:
                    status = "DELETED"
                elif c == 1 and a == 0 and n == 1:
                    status = "ARCHIVED"
                world.ads[adid] = Ad(
                    id=adid,
                    account_id=act,
                    campaign_id=cid,
                    adset_id=asid,
                    name=f"Ad {c + 1}.{a + 1}.{n + 1}",
                    status=status,
                    effective_status=status,
                    creative={
                        "id": world.seeded_graph_id(f"creative:{adid}", "23"),
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
        tenant_id == world.registry.tenants[0].tenant_id
        and rel is world.registry.tenants[0].cpas_retailers[0]
    ):
        first_ad = next(ad for ad in world.ads.values() if ad.account_id == act)
        first_ad.tracking_specs = [{"action.type": ["offsite_conversion"], "fb_pixel": ["123"]}]


def _populate_cpas(world: World) -> None:
    """Collaborative Ads state implied by the registry: which brand catalogs each retailer parent carries,
    segment shares (accepted -> in agencies; pending -> share settings only), the retailer directory (with
    n11's non-compliant parent catalog), suggested partners and one open collaboration request per pending
    partnership that has no segment yet."""
    merchants_by_key: dict[str, str] = {}
    for biz in world.businesses.values():
        if biz.role == "retailer" and biz.retailer:
            merchants_by_key.setdefault(biz.retailer, biz.id)
    for key, (name, compliant) in CPAS_DIRECTORY.items():
        biz_id = merchants_by_key.get(key) or world.seeded_graph_id(f"retailer-business:{key}", "9")
        merchants_by_key[key] = biz_id
        world.businesses.setdefault(biz_id, Business(id=biz_id, name=name, role="retailer", retailer=key))
        world.collab_merchants[biz_id] = CollabMerchant(business_id=biz_id, name=name, retailer=key)
        if not any(c.business_id == biz_id and not c.is_catalog_segment for c in world.catalogs.values()):
            parent_id = world.seeded_graph_id(f"parent-catalog:{key}", "91")
            world.catalogs[parent_id] = Catalog(
                id=parent_id,
                name=f"{name} Marketplace Catalog",
                business_id=biz_id,
                collaborative_ads_compliant=compliant,
                retailer=key,
                seeded_product_count=world.seeded_int(f"parent-count:{parent_id}", 5_000, 90_000),
            )
    created = world.clock.start - timedelta(days=60)
    for tenant in world.registry.tenants:
        partnered: set[str] = set()
        for rel in tenant.cpas_retailers:
            partnered.add(rel.retailer)
            parent = world.catalogs.get(rel.parent_catalog_id or "")
            if parent is not None and tenant.catalog_id not in parent.carried_catalog_ids:
                parent.carried_catalog_ids.append(tenant.catalog_id)
            status = rel.partnership_status.value
            if rel.catalog_segment_id and status in ("accepted", "pending"):
                share_id = world.seeded_graph_id(f"share:{rel.catalog_segment_id}:{tenant.business_id}", "25")
                world.segment_shares[share_id] = SegmentShare(
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
                    req_id = world.seeded_graph_id(f"collab-request:{tenant.tenant_id}:{rel.retailer}", "26")
                    label = (tenant.name or tenant.tenant_id).split(" (", 1)[0]
                    world.collab_requests[req_id] = CollabRequest(
                        id=req_id,
                        sender_business_id=tenant.business_id,
                        receiver_business_id=receiver,
                        created_time=world.clock.start - timedelta(days=1),
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
            rec_id = world.seeded_graph_id(f"recommendation:{tenant.tenant_id}:{key}", "27")
            world.partner_recommendations[rec_id] = PartnerRecommendation(
                id=rec_id,
                brand_business_id=tenant.business_id,
                merchant_business_id=merchants_by_key[key],
                brands=[label],
            )
    for catalog in world.catalogs.values():
        catalog.__dict__["_world_catalogs"] = world.catalogs
