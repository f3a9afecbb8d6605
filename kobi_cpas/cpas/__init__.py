"""Pure Collaborative Ads (CPAS) logic, no Dagster: segment rules, segments and sharing, partnership
reconciliation, QC and the execution manifest, the campaign template, product sets and retailer discovery.

Modules:

* :mod:`~kobi_cpas.registry.filters` (with the registry, which validates rules at load) — Meta's product-set rule language: validate, SQL (DuckDB) and Python evaluators;
* :mod:`~kobi_cpas.cpas.segments` — find-or-create a segment, share it, read its shares;
* :mod:`~kobi_cpas.cpas.partnerships` — registry vs Meta: observed status, drift codes, next action;
* :mod:`~kobi_cpas.cpas.accounts` — which retailers' segments a dedicated ad account promotes;
* :mod:`~kobi_cpas.cpas.qc` — collaborative-ads QC rules and the execution manifest;
* :mod:`~kobi_cpas.cpas.campaigns` — the PAUSED Advantage+ catalog sales template, QC'd before creation;
* :mod:`~kobi_cpas.cpas.product_sets` — declared product sets: plan and apply;
* :mod:`~kobi_cpas.cpas.directory` — directory merchants, suggested partners, collaboration requests;
* :mod:`~kobi_cpas.cpas.retailers` — retailer names, website domains and deep-link URL patterns.
"""

from kobi_cpas.cpas.accounts import AccountUsage, PromotedCatalog, read_account_usage
from kobi_cpas.cpas.campaigns import (
    CampaignPlan,
    CreatedIds,
    QcFailed,
    TemplateOptions,
    build_campaign_plan,
    create_campaign,
    qc_plan,
)
from kobi_cpas.cpas.directory import (
    DirectoryRow,
    collaboration_request_rows,
    directory_rows,
    read_merchants,
    send_collaboration_request,
    suggested_partner_rows,
)
from kobi_cpas.cpas.partnerships import DRIFT_CODES, PartnershipRow, reconcile_partnership
from kobi_cpas.cpas.product_sets import (
    Action,
    ActionResult,
    apply_product_set_actions,
    plan_product_sets,
    product_set_targets,
    read_existing_product_sets,
)
from kobi_cpas.cpas.qc import (
    QC_CODES,
    ManifestRow,
    QcConfig,
    QcIssue,
    manifest_rows,
    qc_ad,
    qc_campaign,
    qc_creative,
)
from kobi_cpas.cpas.retailers import DEFAULT_RETAILERS, RetailerDirectory, RetailerInfo
from kobi_cpas.cpas.segments import (
    SegmentShares,
    find_or_create_segment,
    find_segment,
    read_segment_shares,
    segment_name,
    share_segment,
    unshare_segment,
)
from kobi_cpas.registry.filters import (
    FilterError,
    canonical_json,
    compile_matcher,
    compile_sql,
    expected_membership,
    matches,
    parse_rule,
    validate_rule,
)
from kobi_cpas.registry.product_sets import DeclaredProductSet, ProductSetMetadata

__all__ = [
    "DEFAULT_RETAILERS",
    "DRIFT_CODES",
    "QC_CODES",
    "AccountUsage",
    "Action",
    "ActionResult",
    "CampaignPlan",
    "CreatedIds",
    "DeclaredProductSet",
    "DirectoryRow",
    "FilterError",
    "ManifestRow",
    "PartnershipRow",
    "ProductSetMetadata",
    "PromotedCatalog",
    "QcConfig",
    "QcFailed",
    "QcIssue",
    "RetailerDirectory",
    "RetailerInfo",
    "SegmentShares",
    "TemplateOptions",
    "apply_product_set_actions",
    "build_campaign_plan",
    "canonical_json",
    "collaboration_request_rows",
    "compile_matcher",
    "compile_sql",
    "create_campaign",
    "directory_rows",
    "expected_membership",
    "find_or_create_segment",
    "find_segment",
    "manifest_rows",
    "matches",
    "parse_rule",
    "plan_product_sets",
    "product_set_targets",
    "qc_ad",
    "qc_campaign",
    "qc_creative",
    "qc_plan",
    "read_account_usage",
    "read_existing_product_sets",
    "read_merchants",
    "read_segment_shares",
    "reconcile_partnership",
    "segment_name",
    "send_collaboration_request",
    "share_segment",
    "suggested_partner_rows",
    "unshare_segment",
    "validate_rule",
]
