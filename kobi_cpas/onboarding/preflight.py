"""The preflight of a tenant: what Kobi's token can read and what the catalog already holds, as findings with a
call to action each.

Checks (``check_name``):

* ``business`` — the brand's business is readable (blocking otherwise: nothing else can work);
* ``catalog`` — the catalog is readable, a product (``commerce``) catalog and not a catalog segment (blocking);
* ``checkout`` — whether the catalog's shop sells with onsite checkout (``commerce_merchant_settings.cta``);
* ``event_sources`` — a pixel or app is connected to the catalog (warning: catalog ads cannot match events);
* ``ad_account`` — each retailer's dedicated ad account is readable (blocking for an accepted partnership,
  warning for a pending one) and promotes only that retailer's segments (blocking);
* ``other_feed`` — a feed on the catalog that Kobi's state does not record (warning when it uploads on a
  schedule: switch it off for what Kobi replaces; Kobi never deletes it);
* ``existing_items`` — items already in the catalog before Kobi's first upload: the first sync waits for a
  person's yes (``confirm``), with what the first replace keeps, links and leaves in front of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kobi_cpas.catalogs.reads import NO_EVENT_SOURCE_CTA, SEGMENT_AS_CATALOG_CTA
from kobi_cpas.cpas.accounts import read_account_usage
from kobi_cpas.cpas.graph import get_or_none
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.errors import MetaInvalidRequestError, MetaPermissionError
from kobi_cpas.onboarding.existing import ExistingCounts
from kobi_cpas.registry.models import PartnershipStatus, Tenant
from kobi_cpas.sync.existing_catalog import CONFIRM_EXISTING_TAG as CONFIRM_TAG


@dataclass(frozen=True)
class Finding:
    check_name: str
    object_id: str
    status: str  # ok | warning | blocking | confirm
    finding: str
    next_action: str | None = None
    item_count: int | None = None
    counts: ExistingCounts | None = None

    def as_record(self, tenant_id: str) -> dict[str, Any]:
        c = self.counts
        return {
            "tenant_id": tenant_id,
            "check_name": self.check_name,
            "object_id": self.object_id,
            "status": self.status,
            "finding": self.finding,
            "next_action": self.next_action,
            "item_count": self.item_count,
            "kept_items": c.kept if c else None,
            "linked_items": c.linked if c else None,
            "left_items": c.left if c else None,
            "new_items": c.new if c else None,
        }


def _read(client: MetaGraphClient, node: str, fields: str) -> tuple[dict[str, Any] | None, str | None]:
    """The node, or None and why Meta refused it (missing, no permission)."""
    try:
        found = get_or_none(client, node, {"fields": fields})
    except (MetaPermissionError, MetaInvalidRequestError) as exc:
        # a finding about this object; a dead token or an outage is not one, and stops the run instead
        return None, str(exc)
    return found, None if found is not None else "does not exist or Kobi's system user cannot see it"


def check_access(client: MetaGraphClient, tenant: Tenant) -> list[Finding]:
    """Business, catalog, event sources and the dedicated ad accounts."""
    out: list[Finding] = []
    grant = (
        "In Business settings > Users > System users, assign Kobi's system user to {what} {id} with full "
        "control (catalog_management, ads_management), then materialize tenant_onboarding again."
    )
    biz, why = _read(client, tenant.business_id, "id,name")
    if biz is None:
        out.append(
            Finding(
                "business",
                tenant.business_id,
                "blocking",
                f"business {tenant.business_id} cannot be read: {why}",
                grant.format(what="business", id=tenant.business_id),
            )
        )
    else:
        out.append(Finding("business", tenant.business_id, "ok", f"business '{biz.get('name')}' readable"))
    out.extend(_check_catalog(client, tenant, grant))
    for r in tenant.cpas_retailers:
        if r.dedicated_ad_account_id:
            out.append(_check_account(client, r.retailer, r.dedicated_ad_account_id, r.partnership_status, r))
    return out


def _check_catalog(client: MetaGraphClient, tenant: Tenant, grant: str) -> list[Finding]:
    cid = tenant.catalog_id
    node, why = _read(
        client, cid, "id,name,vertical,product_count,is_catalog_segment,commerce_merchant_settings{id,cta}"
    )
    if node is None:
        return [
            Finding(
                "catalog",
                cid,
                "blocking",
                f"catalog {cid} cannot be read: {why}",
                grant.format(what="catalog", id=cid),
            )
        ]
    count = int(node.get("product_count") or 0)
    if node.get("is_catalog_segment"):
        return [
            Finding(
                "catalog",
                cid,
                "blocking",
                f"{cid} is a catalog segment",
                SEGMENT_AS_CATALOG_CTA.format(catalog_id=cid),
            )
        ]
    out = []
    vertical = node.get("vertical")
    if vertical not in (None, "commerce"):
        out.append(
            Finding(
                "catalog",
                cid,
                "blocking",
                f"catalog '{node.get('name')}' is a {vertical} catalog; Kobi syncs products (commerce catalogs)",
                "Create a catalog of type E-commerce in Commerce Manager for the brand and put its id in the "
                "registry's catalog_id.",
                count,
            )
        )
    else:
        out.append(
            Finding(
                "catalog", cid, "ok", f"catalog '{node.get('name')}' readable, {count:,} items", None, count
            )
        )
    out.append(_checkout_finding(cid, node.get("commerce_merchant_settings") or {}))
    sources = list(client.paginate(f"{cid}/external_event_sources", params={"fields": "id,name,source_type"}))
    if sources:
        names = ", ".join(f"{s.get('source_type', 'source')} {s['id']}" for s in sources)
        out.append(Finding("event_sources", cid, "ok", f"connected: {names}"))
    else:
        out.append(
            Finding(
                "event_sources",
                cid,
                "warning",
                "no pixel or app is connected to the catalog",
                NO_EVENT_SOURCE_CTA.format(catalog_id=cid),
            )
        )
    return out


def _checkout_finding(catalog_id: str, cms: dict[str, Any]) -> Finding:
    """Whether the catalog sells with onsite checkout (Catalog Integration step 1 reads
    commerce_merchant_settings{id,cta}): such a shop needs stock counts, not only availability."""
    if not cms:
        return Finding("checkout", catalog_id, "ok", "no shop on the catalog (no commerce_merchant_settings)")
    if str(cms.get("cta") or "").upper() == "ONSITE_CHECKOUT":
        return Finding(
            "checkout",
            catalog_id,
            "ok",
            f"onsite checkout (commerce_merchant_settings {cms.get('id')}): Meta sells from "
            "quantity_to_sell_on_facebook",
            "Send quantity_to_sell_on_facebook for every item in the feed: an item without it cannot be bought "
            "on the shop.",
        )
    return Finding(
        "checkout",
        catalog_id,
        "ok",
        f"offsite shop (commerce_merchant_settings {cms.get('id')}, cta {cms.get('cta')}): buyers check out on "
        "the brand's website",
    )


def _check_account(
    client: MetaGraphClient, retailer: str, account_id: str, status: PartnershipStatus, r: Any
) -> Finding:
    usage = read_account_usage(client, account_id)
    if not usage.exists:
        return Finding(
            "ad_account",
            account_id,
            "blocking" if status == PartnershipStatus.accepted else "warning",
            f"{retailer}'s dedicated ad account {account_id} cannot be read",
            f"Create the dedicated ad account for {retailer} in the brand's Business Manager (or fix "
            "dedicated_ad_account_id in the registry) and assign Kobi's system user to it.",
        )
    retailer_biz = r.retailer_business_id
    foreign = usage.foreign_segments([retailer_biz]) if retailer_biz else []
    if foreign:
        return Finding(
            "ad_account",
            account_id,
            "blocking",
            f"{retailer}'s dedicated ad account {account_id} also promotes segments of "
            + ", ".join(sorted({p.owner_name or p.owner_business_id or "?" for p in foreign})),
            f"A dedicated ad account serves one retailer only: move those campaigns to their retailer's own "
            f"account and keep {account_id} for {retailer}.",
        )
    return Finding(
        "ad_account", account_id, "ok", f"{retailer}'s dedicated ad account '{usage.name}' readable"
    )


def check_feeds(feeds: list[dict[str, Any]], kobi_feeds: dict[str, str], tenant_id: str) -> list[Finding]:
    """The catalog's feeds that Kobi's state does not record for the tenant."""
    out = []
    for f in feeds:
        fid = str(f["id"])
        if kobi_feeds.get(fid) == tenant_id:
            continue
        owner = kobi_feeds.get(fid)
        name = f.get("name", "")
        count = f.get("product_count")
        if owner is not None:
            out.append(
                Finding(
                    "other_feed",
                    fid,
                    "blocking",
                    f"feed {fid} '{name}' is tenant '{owner}''s feed in Kobi's state",
                    f"Two tenants sharing one catalog delete each other's items: give tenant '{tenant_id}' its own "
                    "catalog in the registry.",
                    count,
                )
            )
        elif f.get("schedule"):
            out.append(
                Finding(
                    "other_feed",
                    fid,
                    "warning",
                    f"feed {fid} '{name}' ({count} items) uploads on a schedule",
                    f"In Commerce Manager > Catalog > Data sources, pause the schedule of '{name}' once Kobi sends "
                    "the same items, or its uploads and Kobi's will overwrite each other. Kobi never deletes it.",
                    count,
                )
            )
        else:
            out.append(
                Finding(
                    "other_feed", fid, "ok", f"feed {fid} '{name}' ({count} items), no schedule", None, count
                )
            )
    return out


def existing_items_finding(
    catalog_id: str, first_upload: bool, counts: ExistingCounts, retention_days: int | None = None
) -> Finding:
    """What the first replace would do with the items already in the catalog. ``retention_days``: how long the
    items the feed does not send stay out of stock before Kobi deletes them (None: ``sync.adopted_items: keep``)."""
    c = counts
    fate = (
        "kept out of stock, never deleted by Kobi (sync.adopted_items: keep)"
        if retention_days is None
        else f"kept out of stock for {retention_days} days (sync.retention_days), then deleted by Kobi through the "
        "Batch API, never on the first day; sync.adopted_items: keep keeps them"
    )
    summary = (
        f"{c.existing:,} items already in the catalog: the feed sends {c.kept:,} of them again (their values are "
        f"overwritten), {c.linked:,} come back as variants (linked by previous_id), {c.left:,} are not in the "
        f"feed (marked out of stock by the confirmed first sync, {fate}); {c.new:,} feed items are new"
    )
    if c.existing == 0:
        return Finding("existing_items", catalog_id, "ok", "the catalog is empty", None, 0, c)
    if not first_upload:
        return Finding("existing_items", catalog_id, "ok", summary, None, c.existing, c)
    return Finding(
        "existing_items",
        catalog_id,
        "confirm",
        summary,
        f"Check these counts and the other feeds above; then run the tenant's first catalog sync with the run tag "
        f"{CONFIRM_TAG}=true (until then every sync stops before sending anything).",
        c.existing,
        c,
    )
