"""Reading a tenant's catalog from Meta into one flat record (pure: no Dagster)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kobi_cpas.meta.client import MetaGraphClient

CATALOG_FIELDS = "id,name,vertical,product_count,is_catalog_segment,commerce_merchant_settings{id,cta}"

NO_EVENT_SOURCE_CTA = (
    "Connect the brand's Meta Pixel (or app) to catalog {catalog_id}: Commerce Manager > Catalog > Events > "
    "Connect tracking, or POST /{catalog_id}/external_event_sources with the pixel id. Without it, catalog ads "
    "cannot match events to products."
)
SEGMENT_AS_CATALOG_CTA = (
    "catalog_id {catalog_id} is a catalog segment, not the brand's catalog: put the brand's own catalog id in "
    "the registry and list segments under cpas_retailers."
)


@dataclass(frozen=True)
class CatalogRecord:
    tenant_id: str
    catalog_id: str
    catalog_name: str | None
    vertical: str | None
    product_count: int | None
    is_catalog_segment: bool | None
    commerce_merchant_settings_id: str | None
    commerce_cta: str | None
    is_onsite_shop: bool
    pixel_count: int
    app_count: int
    external_event_sources: str
    has_event_source: bool
    call_to_action: str | None
    observed_at: datetime


def read_catalog(client: MetaGraphClient, tenant_id: str, catalog_id: str, now: datetime) -> CatalogRecord:
    node = client.get(catalog_id, params={"fields": CATALOG_FIELDS})
    sources = list(
        client.paginate(f"{catalog_id}/external_event_sources", params={"fields": "id,name,source_type"})
    )
    cms = node.get("commerce_merchant_settings") or {}
    pixels = [s for s in sources if (s.get("source_type") or "pixel").lower() == "pixel"]
    apps = [s for s in sources if (s.get("source_type") or "").lower() == "app"]
    actions = []
    if node.get("is_catalog_segment"):
        actions.append(SEGMENT_AS_CATALOG_CTA.format(catalog_id=catalog_id))
    if not sources:
        actions.append(NO_EVENT_SOURCE_CTA.format(catalog_id=catalog_id))
    pc = node.get("product_count")
    return CatalogRecord(
        tenant_id=tenant_id,
        catalog_id=str(node.get("id") or catalog_id),
        catalog_name=node.get("name"),
        vertical=node.get("vertical"),
        product_count=int(pc) if pc is not None else None,
        is_catalog_segment=node.get("is_catalog_segment"),
        commerce_merchant_settings_id=cms.get("id"),
        commerce_cta=cms.get("cta"),
        is_onsite_shop=cms.get("cta") == "ONSITE_CHECKOUT",
        pixel_count=len(pixels),
        app_count=len(apps),
        external_event_sources="; ".join(
            f"{(s.get('source_type') or 'pixel').lower()}:{s.get('id')}:{s.get('name') or ''}"
            for s in sources
        ),
        has_event_source=bool(sources),
        call_to_action=" ".join(actions) or None,
        observed_at=now,
    )
