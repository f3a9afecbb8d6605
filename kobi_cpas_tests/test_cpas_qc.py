"""QC rules of Collaborative Ads ads, the execution manifest, and the campaign template."""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any

import pytest

from kobi_cpas.cpas import (
    QC_CODES,
    QcConfig,
    QcFailed,
    RetailerDirectory,
    RetailerInfo,
    TemplateOptions,
    build_campaign_plan,
    create_campaign,
    manifest_rows,
    qc_ad,
    qc_plan,
)
from kobi_cpas.meta import MetaGraphClient, MetaInvalidRequestError
from kobi_cpas.registry import Tenant, load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox.admin import CpasAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

SEGMENT = "3000000000000001"
CLEAN_AD: dict[str, Any] = {
    "id": "1",
    "creative": {
        "id": "c1",
        "template_url_spec": {
            "web": {"url": "https://www.trendyol.com/p/{{product.retailer_id}}"},
            "ios": {"url": "trendyol://product/{{product.retailer_id}}"},
        },
        "object_story_spec": {
            "template_data": {"name": "{{product.name}}", "description": "{{product.description}}"}
        },
    },
}
CLEAN_CAMPAIGN = {
    "id": "c",
    "objective": "OUTCOME_SALES",
    "promoted_object": {"product_catalog_id": SEGMENT},
}


@pytest.fixture(scope="module")
def anatolia() -> Tenant:
    return load_registry(DEFAULT_REGISTRY).registry.tenant("anatolia_home")


def codes(ad: dict[str, Any] = CLEAN_AD, campaign: dict[str, Any] = CLEAN_CAMPAIGN, **kw: Any) -> list[str]:
    args: dict[str, Any] = {
        "retailer": "trendyol",
        "segment_ids_of_retailer": {SEGMENT},
        "account_retailers": {"t"},
    }
    args.update(kw)
    return [i.code for i in qc_ad(ad, campaign, None, **args)]


def with_creative(**changes: Any) -> dict[str, Any]:
    ad = copy.deepcopy(CLEAN_AD)
    for path, value in changes.items():
        node = ad
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return ad


def test_clean_ad_passes() -> None:
    assert codes() == []


@pytest.mark.parametrize(
    ("ad", "campaign", "kwargs", "code"),
    [
        (with_creative(tracking_specs=[{"action.type": ["offsite_conversion"]}]), CLEAN_CAMPAIGN, {},
         "custom_tracking_specs"),
        (with_creative(creative__template_url_spec={"web": {"url": "https://shop.brand.com/p/1"}}), CLEAN_CAMPAIGN, {},
         "deeplink_off_merchant_site"),
        (with_creative(creative__template_url_spec={"android": {"url": "https://trendyol.com.evil.io/x"}}),
         CLEAN_CAMPAIGN, {}, "deeplink_off_merchant_site"),
        (with_creative(creative__multi_share_end_card=True), CLEAN_CAMPAIGN, {}, "multi_share_end_card"),
        (with_creative(creative__object_story_spec__template_data__multi_share_end_card=True), CLEAN_CAMPAIGN, {},
         "multi_share_end_card"),
        (with_creative(creative__object_story_spec__template_data__description="Best towels!"), CLEAN_CAMPAIGN, {},
         "description_changed"),
        (CLEAN_AD, {**CLEAN_CAMPAIGN, "objective": "OUTCOME_TRAFFIC"}, {}, "wrong_objective"),
        (CLEAN_AD, {**CLEAN_CAMPAIGN, "promoted_object": {}}, {}, "no_catalog_segment"),
        (CLEAN_AD, {**CLEAN_CAMPAIGN, "promoted_object": {"product_catalog_id": "3000000000000002"}}, {},
         "segment_of_other_retailer"),
        (CLEAN_AD, CLEAN_CAMPAIGN, {"account_retailers": {"trendyol", "hepsiburada"}}, "ad_account_mixed_retailers"),
        (CLEAN_AD, CLEAN_CAMPAIGN, {"retailer": "newmarket"}, "unknown_retailer_domain"),
    ],
)  # fmt: skip
def test_each_constraint_fails(
    ad: dict[str, Any], campaign: dict[str, Any], kwargs: dict[str, Any], code: str
) -> None:
    found = codes(ad, campaign, **kwargs)
    assert found == [code] and code in QC_CODES


def test_domains_are_configurable() -> None:
    ad = with_creative(creative__template_url_spec={"web": {"url": "https://m.newmarket.com.tr/p/1"}})
    config = QcConfig(
        retailers=RetailerDirectory(
            {"newmarket": RetailerInfo("newmarket", "New Market", ("newmarket.com.tr",), "")}
        )
    )
    assert codes(ad, retailer="newmarket", config=config) == []
    assert codes(ad, retailer="newmarket") == ["unknown_retailer_domain"]


def test_manifest_reads_archived_and_deleted_ads(meta_client: MetaGraphClient, anatolia: Tenant) -> None:
    rows = manifest_rows(meta_client, anatolia, anatolia.retailer("trendyol"))
    assert len(rows) == 10  # 2 campaigns x (2 + 3) ads, archived and deleted included
    assert {r.ad_status for r in rows} == {"ACTIVE", "ARCHIVED", "DELETED"}
    assert {r.catalog_segment_id for r in rows} == {SEGMENT}
    failed = [r for r in rows if r.qc_status == "fail"]
    assert len(failed) == 1 and failed[0].qc_codes == ("custom_tracking_specs",)  # the seeded bad ad
    assert failed[0].qc_issues.startswith("custom_tracking_specs: ")
    assert all(r.qc_issues == "" for r in rows if r.qc_status == "pass")
    record = failed[0].as_record()
    assert record["qc_codes"] == "custom_tracking_specs" and "extra" not in record


def test_manifest_flags_edited_ads_and_mixed_accounts(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, sandbox: SandboxHandle, anatolia: Tenant
) -> None:
    retailer = anatolia.retailer("trendyol")
    ad = next(
        a
        for a in sandbox.world.ads.values()
        if a.account_id == retailer.dedicated_ad_account_id and not a.tracking_specs
    )
    cpas_admin.patch_ad(
        ad.id,
        creative={
            # Meta's SDK has multi_share_end_card only in the link/template data, not on AdCreative.
            "object_story_spec": {"page_id": "555", "template_data": {"multi_share_end_card": True}},
            "template_url_spec": {"web": {"url": "https://anatolia-home.example/p/1"}},
        },
    )
    cpas_admin.inject_campaign(
        retailer.dedicated_ad_account_id, "3000000000000002", name="legacy hepsiburada"
    )
    rows = manifest_rows(meta_client, anatolia, retailer)
    patched = next(r for r in rows if r.ad_id == ad.id)
    assert {"multi_share_end_card", "deeplink_off_merchant_site", "ad_account_mixed_retailers"} <= set(
        patched.qc_codes
    )
    legacy = next(r for r in rows if r.campaign_name == "legacy hepsiburada")
    assert legacy.ad_id is None and "segment_of_other_retailer" in legacy.qc_codes
    assert all("ad_account_mixed_retailers" in r.qc_codes for r in rows)


def test_manifest_of_a_missing_account_is_empty(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant
) -> None:
    retailer = anatolia.retailer("trendyol")
    cpas_admin.delete_ad_account(retailer.dedicated_ad_account_id)
    assert manifest_rows(meta_client, anatolia, retailer) == []


# -- the campaign template ------------------------------------------------------------------------------


def test_legacy_catalog_campaigns_still_pass() -> None:
    # Campaigns made before v21.0 keep PRODUCT_CATALOG_SALES and still run: read and reported, not flagged.
    assert codes(CLEAN_AD, {**CLEAN_CAMPAIGN, "objective": "PRODUCT_CATALOG_SALES"}) == []


def test_plan_is_clean_and_paused(anatolia: Tenant) -> None:
    plan = build_campaign_plan(anatolia, anatolia.retailer("trendyol"), TemplateOptions(page_id="555"))
    assert qc_plan(plan) == []
    # Outcome-based objective and the fields Meta requires today for ad-set budgets.
    assert plan.campaign["objective"] == "OUTCOME_SALES"
    assert plan.campaign["special_ad_categories"] == []
    assert plan.campaign["is_adset_budget_sharing_enabled"] is False
    assert plan.adset["promoted_object"] == {"custom_event_type": "PURCHASE"}
    legacy = dataclasses.replace(plan, campaign={**plan.campaign, "objective": "PRODUCT_CATALOG_SALES"})
    assert [i.code for i in qc_plan(legacy)] == ["wrong_objective"]
    assert plan.campaign["status"] == plan.adset["status"] == plan.ad["status"] == "PAUSED"
    assert plan.campaign["promoted_object"] == {"product_catalog_id": SEGMENT}
    assert plan.creative["template_url_spec"]["web"]["url"].startswith("https://www.trendyol.com/")
    assert plan.creative["object_story_spec"]["template_data"]["multi_share_end_card"] is False
    assert "tracking_specs" not in plan.ad


def test_plan_qc_blocks_creation(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, anatolia: Tenant
) -> None:
    retailer = anatolia.retailer("trendyol")
    bad = build_campaign_plan(
        anatolia,
        retailer,
        TemplateOptions(page_id="555", url_template="https://anatolia-home.example/{{product.id}}"),
    )
    no_page = build_campaign_plan(anatolia, retailer)
    sandbox.admin.clear_requests()
    with pytest.raises(QcFailed) as info:
        create_campaign(meta_client, bad)
    assert [i.code for i in info.value.issues] == ["deeplink_off_merchant_site"]
    assert "QC failed: deeplink_off_merchant_site" in str(info.value)
    with pytest.raises(QcFailed, match="no_page"):
        create_campaign(meta_client, no_page)
    assert sandbox.admin.count_requests() == 0  # nothing sent to Meta


def test_create_campaign_and_rerun(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, anatolia: Tenant
) -> None:
    plan = build_campaign_plan(anatolia, anatolia.retailer("trendyol"), TemplateOptions(page_id="555"))
    ids = create_campaign(meta_client, plan)
    assert ids.created == ("campaign", "product_set", "adset", "creative", "ad")
    campaign = meta_client.get(
        ids.campaign_id, {"fields": "name,status,objective,promoted_object,effective_status"}
    )
    assert campaign["status"] == "PAUSED" and campaign["effective_status"] == "PAUSED"
    assert campaign["promoted_object"] == {"product_catalog_id": SEGMENT}
    adset = meta_client.get(ids.adset_id, {"fields": "promoted_object"})
    assert adset["promoted_object"] == {"custom_event_type": "PURCHASE", "product_set_id": ids.product_set_id}
    ad = meta_client.get(ids.ad_id, {"fields": "effective_status,creative{template_url_spec,product_set_id}"})
    assert ad["effective_status"] == "PAUSED"
    assert ad["creative"]["product_set_id"] == ids.product_set_id
    again = create_campaign(meta_client, plan)
    assert again.created == () and again.campaign_id == ids.campaign_id and again.ad_id == ids.ad_id
    # Our campaign shows up in the manifest and passes QC.
    rows = [
        r for r in manifest_rows(meta_client, anatolia, anatolia.retailer("trendyol")) if r.ad_id == ids.ad_id
    ]
    assert len(rows) == 1 and rows[0].qc_status == "pass" and rows[0].ad_status == "PAUSED"


def test_create_campaign_refused_on_a_mixed_account(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant
) -> None:
    retailer = anatolia.retailer("trendyol")
    cpas_admin.inject_campaign(retailer.dedicated_ad_account_id, "3000000000000002")
    with pytest.raises(QcFailed) as info:
        create_campaign(meta_client, build_campaign_plan(anatolia, retailer, TemplateOptions(page_id="555")))
    assert [i.code for i in info.value.issues] == ["ad_account_mixed_retailers"]


def test_sandbox_enforces_segment_ad_rules(meta_client: MetaGraphClient, anatolia: Tenant) -> None:
    act = anatolia.retailer("trendyol").dedicated_ad_account_id
    plan = build_campaign_plan(anatolia, anatolia.retailer("trendyol"), TemplateOptions(page_id="555"))
    ids = create_campaign(meta_client, plan)
    creative = meta_client.post(
        f"{act}/adcreatives",
        data={
            **plan.creative,
            "name": "off-site",
            "template_url_spec": {"web": {"url": "https://evil.example/p"}},
        },
    )["id"]
    with pytest.raises(MetaInvalidRequestError, match="must point to the merchant's website"):
        meta_client.post(
            f"{act}/ads", data={"name": "x", "adset_id": ids.adset_id, "creative": {"creative_id": creative}}
        )
    with pytest.raises(MetaInvalidRequestError, match="tracking specs"):
        meta_client.post(
            f"{act}/ads",
            data={
                "name": "y",
                "adset_id": ids.adset_id,
                "creative": {"creative_id": ids.creative_id},
                "tracking_specs": [{"action.type": ["offsite_conversion"]}],
            },
        )


def test_list_filtering_by_effective_status(meta_client: MetaGraphClient, anatolia: Tenant) -> None:
    act = anatolia.retailer("trendyol").dedicated_ad_account_id
    default = list(meta_client.paginate(f"{act}/ads", {"fields": "id,effective_status"}))
    assert {a["effective_status"] for a in default} == {"ACTIVE"} and len(default) == 8
    only_gone = list(
        meta_client.paginate(
            f"{act}/ads",
            {
                "fields": "id,effective_status",
                "filtering": [
                    {"field": "ad.effective_status", "operator": "IN", "value": ["ARCHIVED", "DELETED"]}
                ],
            },
        )
    )
    assert sorted(a["effective_status"] for a in only_gone) == ["ARCHIVED", "DELETED"]
    with pytest.raises(MetaInvalidRequestError, match="Filtering field"):
        meta_client.get(f"{act}/ads", {"filtering": [{"field": "spend", "operator": "IN", "value": [1]}]})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"objective": "PRODUCT_CATALOG_SALES"}, "Param objective must be one of"),
        ({"is_adset_budget_sharing_enabled": None}, "is_adset_budget_sharing_enabled"),
    ],
)
def test_sandbox_refuses_what_meta_refuses(
    meta_client: MetaGraphClient, anatolia: Tenant, change: dict[str, Any], expected: str
) -> None:
    plan = build_campaign_plan(anatolia, anatolia.retailer("trendyol"), TemplateOptions(page_id="555"))
    data = {k: v for k, v in {**plan.campaign, **change}.items() if v is not None}
    with pytest.raises(MetaInvalidRequestError, match=expected):
        meta_client.post(f"{plan.ad_account_id}/campaigns", data=data)
    # With a campaign budget the flag is not needed.
    budgeted = {k: v for k, v in plan.campaign.items() if k != "is_adset_budget_sharing_enabled"}
    assert meta_client.post(f"{plan.ad_account_id}/campaigns", data={**budgeted, "daily_budget": 10000})["id"]
