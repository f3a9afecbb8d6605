"""Which retailers' catalog segments a dedicated ad account promotes, and which of the brand's ad accounts Meta
shows dedicated to which retailer.

Meta: "Once the dedicated ad account is linked to a retailer, it can only select catalog segments belonging
to that specific retailer." :func:`read_account_usage` reads the account's campaigns (every status but
DELETED, archived included) and the owner business of each promoted catalog, so partnership checks and QC can
tell when a second retailer's segment shows up in the same account.

:func:`read_dedicated_accounts` reads the brand's Collaborative Ads ad accounts from
``GET /{business_id}/cpas_business_setup_config`` (CPASBusinessSetupConfig.ad_accounts in Meta's SDK) and, for
each, the retailer it is dedicated to from ``GET /{ad_account_id}/collaborative_ads_partner_businesses``
(CollaborativeAdsPartnerBusinesses.dedicated_partner_business_info; Meta's reference "Ad Account Collaborative
Ads Partner Businesses").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kobi_cpas.cpas.graph import GraphClient, get_or_none, is_missing, status_filter
from kobi_cpas.meta.errors import MetaAPIError


@dataclass(frozen=True)
class PromotedCatalog:
    catalog_id: str
    exists: bool
    is_catalog_segment: bool | None  # None when the catalog is gone
    owner_business_id: str | None
    owner_name: str | None
    campaign_ids: tuple[str, ...]


@dataclass(frozen=True)
class AccountUsage:
    """What a dedicated ad account promotes. ``exists`` is False when Meta does not know the account (deleted,
    or Kobi's system user lost access)."""

    ad_account_id: str
    exists: bool
    name: str | None = None
    catalogs: dict[str, PromotedCatalog] = field(default_factory=dict)
    campaigns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def segment_owner_business_ids(self) -> set[str]:
        """Owner businesses of the catalog segments promoted by the account's (non-deleted) campaigns."""
        return {
            c.owner_business_id
            for c in self.catalogs.values()
            if c.is_catalog_segment and c.owner_business_id is not None
        }

    def foreign_segments(self, retailer_business_ids: Iterable[str]) -> list[PromotedCatalog]:
        """Promoted segments owned by a business other than the retailer's."""
        own = set(retailer_business_ids)
        return [
            c
            for c in self.catalogs.values()
            if c.is_catalog_segment and c.owner_business_id is not None and c.owner_business_id not in own
        ]


def read_account_usage(client: GraphClient, ad_account_id: str) -> AccountUsage:
    account = get_or_none(client, ad_account_id, {"fields": "id,account_id,name"})
    if account is None:
        return AccountUsage(ad_account_id=ad_account_id, exists=False)
    campaigns = list(
        client.paginate(
            f"{ad_account_id}/campaigns",
            {
                "fields": "id,name,objective,status,effective_status,promoted_object",
                "effective_status": status_filter("campaign", deleted=False),
                "limit": 200,
            },
        )
    )
    by_catalog: dict[str, list[str]] = {}
    for c in campaigns:
        cat = str((c.get("promoted_object") or {}).get("product_catalog_id") or "")
        if cat:
            by_catalog.setdefault(cat, []).append(str(c["id"]))
    catalogs: dict[str, PromotedCatalog] = {}
    for cat, ids in sorted(by_catalog.items()):
        node = get_or_none(client, cat, {"fields": "id,is_catalog_segment,business"})
        owner = (node or {}).get("business") or {}
        catalogs[cat] = PromotedCatalog(
            catalog_id=cat,
            exists=node is not None,
            is_catalog_segment=None if node is None else bool(node.get("is_catalog_segment")),
            owner_business_id=str(owner["id"]) if owner.get("id") else None,
            owner_name=owner.get("name"),
            campaign_ids=tuple(ids),
        )
    return AccountUsage(
        ad_account_id=ad_account_id,
        exists=True,
        name=account.get("name"),
        catalogs=catalogs,
        campaigns=campaigns,
    )


def _act(value: object) -> str:
    text = str(value)
    return f"act_{text}" if text.isdigit() else text


def read_dedicated_accounts(client: GraphClient, brand_business_id: str) -> dict[str, tuple[str, ...]]:
    """The brand's Collaborative Ads ad accounts by the retailer business Meta shows each dedicated to (sorted).
    An account Meta no longer lets Kobi read, or that is dedicated to no retailer, is left out."""
    try:
        configs = list(
            client.paginate(
                f"{brand_business_id}/cpas_business_setup_config", {"fields": "id,ad_accounts", "limit": 25}
            )
        )
    except MetaAPIError as exc:
        if is_missing(exc):
            return {}
        raise
    accounts = sorted({_act(a) for c in configs for a in c.get("ad_accounts") or []})
    out: dict[str, list[str]] = {}
    for act in accounts:
        try:
            infos = list(
                client.paginate(
                    f"{act}/collaborative_ads_partner_businesses",
                    {"fields": "dedicated_partner_business_info{id,name}", "limit": 25},
                )
            )
        except MetaAPIError as exc:
            if is_missing(exc):
                continue
            raise
        for info in infos:
            partner = (info.get("dedicated_partner_business_info") or {}).get("id")
            if partner:
                out.setdefault(str(partner), []).append(act)
    return {biz: tuple(sorted(set(acts))) for biz, acts in out.items()}
