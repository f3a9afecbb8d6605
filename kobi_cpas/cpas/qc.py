"""QC of Collaborative Ads against Meta's catalog-segment constraints, and the execution manifest.

Rules (each issue has a stable ``code``):

=============================  ==========================================================================
``custom_tracking_specs``       the ad carries tracking specs: custom tracking specs are disabled on segments
``deeplink_off_merchant_site``  a template_url_spec http(s) link (web/ios/android/...) is not on the retailer's
                                domains (``{{product.url}}``-style placeholders and app schemes are allowed)
``multi_share_end_card``        multi_share_end_card is true (must stay false), on the creative or its
                                template_data
``description_changed``         template_data.description is set to something else than
                                ``{{product.description}}``
``unknown_retailer_domain``     no website domain configured for the retailer: the deep-link rule cannot be
                                checked (configure RetailerInfo.domains)
``wrong_objective``             campaign objective is not a catalog sales objective: OUTCOME_SALES, or the legacy
                                PRODUCT_CATALOG_SALES of campaigns made before v21.0 (still read and reported)
``no_catalog_segment``          the campaign's promoted_object has no product_catalog_id
``segment_of_other_retailer``   promoted_object.product_catalog_id is not a segment of this retailer
``ad_account_mixed_retailers``  the ad account promotes segments of more than one retailer
=============================  ==========================================================================

Inputs are the dicts the Graph API returns (``ad`` with ``creative{...}`` and ``tracking_specs``, ``campaign``
with ``objective`` and ``promoted_object``), so the same rules check live ads (:func:`manifest_rows`) and a
campaign plan before anything is created (:func:`kobi_cpas.cpas.campaigns.qc_plan`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kobi_cpas.cpas.accounts import read_account_usage
from kobi_cpas.cpas.graph import GraphClient, status_filter
from kobi_cpas.cpas.retailers import DEFAULT_DIRECTORY, RetailerDirectory
from kobi_cpas.registry.models import CpasRetailer, Tenant

DEFAULT_DESCRIPTION = "{{product.description}}"
# New campaigns take only outcome-based objectives (Marketing API v21.0 changelog): catalog sales is OUTCOME_SALES
# with the catalog segment in promoted_object. Campaigns made earlier keep PRODUCT_CATALOG_SALES and still run.
CATALOG_OBJECTIVE = "OUTCOME_SALES"
LEGACY_CATALOG_OBJECTIVE = "PRODUCT_CATALOG_SALES"
QC_CODES = (
    "custom_tracking_specs",
    "deeplink_off_merchant_site",
    "multi_share_end_card",
    "description_changed",
    "unknown_retailer_domain",
    "wrong_objective",
    "no_catalog_segment",
    "segment_of_other_retailer",
    "ad_account_mixed_retailers",
)


@dataclass(frozen=True)
class QcIssue:
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class QcConfig:
    retailers: RetailerDirectory = DEFAULT_DIRECTORY
    allowed_objectives: frozenset[str] = frozenset({CATALOG_OBJECTIVE, LEGACY_CATALOG_OBJECTIVE})
    default_description: str = DEFAULT_DESCRIPTION


DEFAULT_QC = QcConfig()


def issues_text(issues: Collection[QcIssue]) -> str:
    """``code: message; code: message`` (empty string when clean)."""
    return "; ".join(str(i) for i in issues)


def _urls(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, Mapping):
        return [u for k, v in value.items() for u in _urls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [u for i, v in enumerate(value) for u in _urls(v, f"{path}[{i}]")]
    return []


def qc_creative(
    creative: Mapping[str, Any] | None,
    tracking_specs: Any,
    retailer: str,
    *,
    config: QcConfig = DEFAULT_QC,
) -> list[QcIssue]:
    """The ad-level rules: tracking specs, deep links, multi_share_end_card, description."""
    issues: list[QcIssue] = []
    creative = creative or {}
    if tracking_specs:
        issues.append(
            QcIssue(
                "custom_tracking_specs",
                "the ad has custom tracking specs; they are disabled for catalog segments — remove them",
            )
        )
    info = config.retailers.get(retailer)
    url_spec = creative.get("template_url_spec")
    links = [(p, u) for p, u in _urls(url_spec, "template_url_spec") if u.startswith(("http://", "https://"))]
    if links and not info.domains:
        issues.append(
            QcIssue(
                "unknown_retailer_domain",
                f"no website domain is configured for retailer '{retailer}': the deep links cannot be checked",
            )
        )
    for path, url in links:
        if info.domains and not info.owns_url(url):
            issues.append(
                QcIssue(
                    "deeplink_off_merchant_site",
                    f"{path} points to {url}; deep links must point to {info.display_name}'s website "
                    f"({', '.join(info.domains)})",
                )
            )
    template_data = (creative.get("object_story_spec") or {}).get("template_data") or {}
    if creative.get("multi_share_end_card") or template_data.get("multi_share_end_card"):
        issues.append(
            QcIssue(
                "multi_share_end_card",
                "multi_share_end_card is true; it must stay false for catalog segments",
            )
        )
    if "description" in template_data and template_data["description"] != config.default_description:
        issues.append(
            QcIssue(
                "description_changed",
                f"template_data.description is {template_data['description']!r}; it cannot be changed for catalog "
                f"segments (leave it out or use {config.default_description!r})",
            )
        )
    return issues


def qc_campaign(
    campaign: Mapping[str, Any],
    retailer: str,
    segment_ids_of_retailer: Collection[str],
    account_retailers: Collection[str],
    *,
    config: QcConfig = DEFAULT_QC,
) -> list[QcIssue]:
    """The campaign-level rules: objective, promoted segment of this retailer, one retailer per ad account.

    ``account_retailers``: the retailers (names or owner business ids) whose segments the ad account promotes.
    """
    issues: list[QcIssue] = []
    objective = campaign.get("objective")
    if objective not in config.allowed_objectives:
        issues.append(
            QcIssue(
                "wrong_objective",
                f"objective is {objective}; Collaborative Ads campaigns use "
                f"{' or '.join(sorted(config.allowed_objectives))}",
            )
        )
    catalog_id = str((campaign.get("promoted_object") or {}).get("product_catalog_id") or "")
    name = config.retailers.name(retailer)
    if not catalog_id:
        issues.append(
            QcIssue(
                "no_catalog_segment", f"promoted_object has no product_catalog_id ({name}'s catalog segment)"
            )
        )
    elif catalog_id not in {str(s) for s in segment_ids_of_retailer}:
        issues.append(
            QcIssue(
                "segment_of_other_retailer",
                f"promoted_object.product_catalog_id {catalog_id} is not a catalog segment of {name}",
            )
        )
    distinct = sorted({str(r) for r in account_retailers})
    if len(distinct) > 1:
        issues.append(
            QcIssue(
                "ad_account_mixed_retailers",
                f"the ad account promotes segments of {len(distinct)} retailers ({', '.join(distinct)}); a "
                "dedicated ad account is linked to one retailer only",
            )
        )
    return issues


def qc_ad(
    ad: Mapping[str, Any],
    campaign: Mapping[str, Any],
    adset: Mapping[str, Any] | None,
    retailer: str,
    segment_ids_of_retailer: Collection[str],
    account_retailers: Collection[str],
    *,
    config: QcConfig = DEFAULT_QC,
) -> list[QcIssue]:
    """Every rule for one ad: :func:`qc_campaign` on its campaign plus :func:`qc_creative` on its creative.

    ``adset`` is accepted for symmetry (its promoted product set is not constrained by Meta's rules).
    """
    return qc_campaign(
        campaign, retailer, segment_ids_of_retailer, account_retailers, config=config
    ) + qc_creative(ad.get("creative"), ad.get("tracking_specs"), retailer, config=config)


# -- the execution manifest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestRow:
    """One ad (or an ad set / campaign without ads) of a dedicated CPAS ad account, with its QC verdict."""

    tenant_id: str
    retailer: str
    ad_account_id: str
    campaign_id: str
    campaign_name: str | None
    campaign_status: str | None  # effective status
    objective: str | None
    catalog_segment_id: str | None
    adset_id: str | None
    adset_name: str | None
    adset_status: str | None
    product_set_id: str | None
    ad_id: str | None
    ad_name: str | None
    ad_status: str | None
    creative_id: str | None
    qc_status: str  # pass | fail
    qc_codes: tuple[str, ...]
    qc_issues: str  # "code: message; ..." ("" when pass)
    observed_at: datetime
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_record(self) -> dict[str, Any]:
        """Column -> value for a table row (``qc_codes`` comma-separated)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        out["qc_codes"] = ",".join(self.qc_codes)
        return out


AD_FIELDS = (
    "id,name,campaign_id,adset_id,status,effective_status,tracking_specs,"
    "creative{id,name,object_story_spec,template_url_spec,product_set_id}"
)


def retailer_segment_ids(
    retailer_cfg: CpasRetailer, owner_of: Mapping[str, str | None], retailer_business_id: str | None
) -> set[str]:
    """Segments that belong to the retailer: the registry's segment plus every promoted segment owned by the
    retailer's business."""
    ids = {retailer_cfg.catalog_segment_id} if retailer_cfg.catalog_segment_id else set()
    if retailer_business_id:
        ids |= {cat for cat, owner in owner_of.items() if owner == retailer_business_id}
    return {str(i) for i in ids}


def manifest_rows(
    client: GraphClient,
    tenant: Tenant,
    retailer_cfg: CpasRetailer,
    *,
    config: QcConfig = DEFAULT_QC,
    now: datetime | None = None,
) -> list[ManifestRow]:
    """Campaigns, ad sets and ads (archived and deleted included) of the retailer's dedicated ad account whose
    promoted object is a catalog segment (or a catalog that no longer exists), each QC'd.

    An account that does not exist (or no dedicated account) gives no rows; partnership checks report that.
    """
    observed = now or datetime.now(UTC)
    act = retailer_cfg.dedicated_ad_account_id
    if not act:
        return []
    usage = read_account_usage(client, act)
    if not usage.exists:
        return []
    owner_of = {c.catalog_id: c.owner_business_id for c in usage.catalogs.values()}
    retailer_biz = retailer_cfg.retailer_business_id or owner_of.get(retailer_cfg.catalog_segment_id or "")
    own_segments = retailer_segment_ids(retailer_cfg, owner_of, retailer_biz)
    account_retailers = usage.segment_owner_business_ids
    relevant = {
        cat for cat, c in usage.catalogs.items() if c.is_catalog_segment or not c.exists
    }  # segments, and catalogs gone since
    campaigns = {
        str(c["id"]): c
        for c in client.paginate(
            f"{act}/campaigns",
            {
                "fields": "id,name,objective,status,effective_status,promoted_object",
                "effective_status": status_filter("campaign"),
                "limit": 200,
            },
        )
    }
    adsets = list(
        client.paginate(
            f"{act}/adsets",
            {
                "fields": "id,name,campaign_id,status,effective_status,promoted_object",
                "effective_status": status_filter("adset"),
                "limit": 200,
            },
        )
    )
    ads = list(
        client.paginate(
            f"{act}/ads", {"fields": AD_FIELDS, "effective_status": status_filter("ad"), "limit": 200}
        )
    )
    rows: list[ManifestRow] = []
    adsets_by_campaign: dict[str, list[dict[str, Any]]] = {}
    for s in adsets:
        adsets_by_campaign.setdefault(str(s.get("campaign_id")), []).append(s)
    ads_by_adset: dict[str, list[dict[str, Any]]] = {}
    for a in ads:
        ads_by_adset.setdefault(str(a.get("adset_id")), []).append(a)

    def row(
        campaign: Mapping[str, Any],
        adset: Mapping[str, Any] | None,
        ad: Mapping[str, Any] | None,
        issues: list[QcIssue],
    ) -> ManifestRow:
        creative = (ad or {}).get("creative") or {}
        product_set = (adset or {}).get("promoted_object", {}) or {}
        return ManifestRow(
            tenant_id=tenant.tenant_id,
            retailer=retailer_cfg.retailer,
            ad_account_id=act,
            campaign_id=str(campaign["id"]),
            campaign_name=campaign.get("name"),
            campaign_status=campaign.get("effective_status"),
            objective=campaign.get("objective"),
            catalog_segment_id=(campaign.get("promoted_object") or {}).get("product_catalog_id"),
            adset_id=str(adset["id"]) if adset else None,
            adset_name=(adset or {}).get("name"),
            adset_status=(adset or {}).get("effective_status"),
            product_set_id=product_set.get("product_set_id") or creative.get("product_set_id"),
            ad_id=str(ad["id"]) if ad else None,
            ad_name=(ad or {}).get("name"),
            ad_status=(ad or {}).get("effective_status"),
            creative_id=creative.get("id"),
            qc_status="fail" if issues else "pass",
            qc_codes=tuple(dict.fromkeys(i.code for i in issues)),
            qc_issues=issues_text(issues),
            observed_at=observed,
        )

    for cid, campaign in sorted(campaigns.items()):
        cat = str((campaign.get("promoted_object") or {}).get("product_catalog_id") or "")
        if cat not in relevant and cat not in own_segments:
            continue
        campaign_issues = qc_campaign(
            campaign, retailer_cfg.retailer, own_segments, account_retailers, config=config
        )
        camp_adsets = sorted(adsets_by_campaign.get(cid, []), key=lambda s: str(s["id"]))
        if not camp_adsets:
            rows.append(row(campaign, None, None, campaign_issues))
        for adset in camp_adsets:
            set_ads = sorted(ads_by_adset.get(str(adset["id"]), []), key=lambda a: str(a["id"]))
            if not set_ads:
                rows.append(row(campaign, adset, None, campaign_issues))
            for ad in set_ads:
                issues = campaign_issues + qc_creative(
                    ad.get("creative"), ad.get("tracking_specs"), retailer_cfg.retailer, config=config
                )
                rows.append(row(campaign, adset, ad, issues))
    return rows
