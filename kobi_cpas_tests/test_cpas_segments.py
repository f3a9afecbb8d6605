"""Catalog segments over real HTTP: the retailer path end to end, 2310068, idempotent re-launch, sharing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from kobi_cpas.cpas import (
    FilterError,
    TemplateOptions,
    build_campaign_plan,
    create_campaign,
    find_or_create_segment,
    read_segment_shares,
    segment_name,
    share_segment,
    unshare_segment,
)
from kobi_cpas.meta import (
    MetaConnectionError,
    MetaGraphClient,
    MetaInvalidRequestError,
    MetaSegmentNotCompliantError,
)
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox.admin import CpasAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

TRENDYOL_BIZ = "9000000000000001"
TRENDYOL_PARENT = "9100000000000001"
ANATOLIA_BIZ = "1000000000000001"
ANATOLIA_TRENDYOL_ACT = "act_4000000000000001"
RULE = {"and": [{"brand": {"i_contains": "anatolia"}}, {"availability": {"is_any": ["in stock"]}}]}


@pytest.fixture(scope="module")
def registry():
    return load_registry(DEFAULT_REGISTRY).registry


def n11_parent(sandbox: SandboxHandle) -> tuple[str, str]:
    merchant = next(m for m in sandbox.world.collab_merchants.values() if m.retailer == "n11")
    parent = next(
        c for c in sandbox.world.catalogs_of_business(merchant.business_id) if not c.is_catalog_segment
    )
    return merchant.business_id, parent.id


def test_full_retailer_path(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, cpas_admin: CpasAdmin, registry
) -> None:
    name = segment_name("anatolia_home", "trendyol") + " | spring"
    seg_id, created = find_or_create_segment(
        meta_client, business_id=TRENDYOL_BIZ, parent_catalog_id=TRENDYOL_PARENT, name=name, filter=RULE
    )
    assert created
    node = meta_client.get(seg_id, {"fields": "id,name,is_catalog_segment,business"})
    assert node == {"id": seg_id, "name": name, "is_catalog_segment": True, "business": node["business"]}
    assert node["business"]["id"] == TRENDYOL_BIZ
    listed = {c["id"]: c for c in meta_client.paginate(f"{TRENDYOL_BIZ}/owned_product_catalogs")}
    assert seg_id in listed

    # The retailer shares it; the brand sees it only once accepted in Collaboration Center.
    assert share_segment(
        meta_client,
        seg_id,
        ANATOLIA_BIZ,
        ["ADVERTISE"],
        {"campaign_source": "facebook", "campaign_medium": "cpas"},
        ["ENFORCE_CREATE_NEW_AD_ACCOUNT"],
    )
    shares = read_segment_shares(meta_client, seg_id)
    assert shares.status_for(ANATOLIA_BIZ) == "pending"
    assert shares.share_settings[ANATOLIA_BIZ]["utm_source"] == "facebook"
    assert not share_segment(meta_client, seg_id, ANATOLIA_BIZ)  # already shared: nothing sent

    # Before acceptance the brand cannot advertise with it.
    retailer = (
        registry.tenant("anatolia_home")
        .retailer("trendyol")
        .model_copy(update={"catalog_segment_id": seg_id})
    )
    plan = build_campaign_plan(registry.tenant("anatolia_home"), retailer, TemplateOptions(page_id="555"))
    with pytest.raises(MetaInvalidRequestError, match="has not been accepted"):
        meta_client.post(
            f"{ANATOLIA_TRENDYOL_ACT}/campaigns",
            data={**plan.campaign, "name": "direct attempt"},
        )

    cpas_admin.accept_share(seg_id, ANATOLIA_BIZ)
    agencies = list(meta_client.paginate(f"{seg_id}/agencies", {"fields": "id,name"}))
    assert agencies == [{"id": ANATOLIA_BIZ, "name": "Anatolia Home"}]  # Business objects: no tasks

    ids = create_campaign(meta_client, plan)
    campaign = meta_client.get(ids.campaign_id, {"fields": "status,objective,promoted_object"})
    assert campaign["promoted_object"] == {"product_catalog_id": seg_id}
    assert campaign["status"] == "PAUSED" and campaign["objective"] == "OUTCOME_SALES"


def test_not_compliant_parent_raises_once(
    sandbox: SandboxHandle, make_meta_client: Callable[..., MetaGraphClient]
) -> None:
    client = make_meta_client(max_retries=5)
    business, parent = n11_parent(sandbox)
    sandbox.admin.clear_requests()
    with pytest.raises(MetaSegmentNotCompliantError) as info:
        find_or_create_segment(
            client, business_id=business, parent_catalog_id=parent, name="Kobi CPAS | x | n11", filter=RULE
        )
    err = info.value
    assert err.code == 2310068 and not err.retryable
    assert "parent catalog is not Collaborative Ads compliant — check its status in Commerce Manager" in str(
        err
    )
    assert parent in str(err)
    posts = sandbox.admin.requests(method="POST")
    assert len(posts) == 1 and posts[0]["error_code"] == 2310068
    assert client.stats.retries == 0


def test_compliance_knob(sandbox: SandboxHandle, meta_client: MetaGraphClient, cpas_admin: CpasAdmin) -> None:
    cpas_admin.set_compliance(TRENDYOL_PARENT, False)
    with pytest.raises(MetaSegmentNotCompliantError):
        find_or_create_segment(
            meta_client, business_id=TRENDYOL_BIZ, parent_catalog_id=TRENDYOL_PARENT, name="a", filter=RULE
        )
    cpas_admin.set_compliance(TRENDYOL_PARENT, True)
    assert find_or_create_segment(
        meta_client, business_id=TRENDYOL_BIZ, parent_catalog_id=TRENDYOL_PARENT, name="a", filter=RULE
    )[1]


def test_relaunch_creates_nothing(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    kwargs = {"business_id": TRENDYOL_BIZ, "parent_catalog_id": TRENDYOL_PARENT, "name": "Kobi CPAS | t | r"}
    first, created = find_or_create_segment(meta_client, filter=RULE, **kwargs)
    assert created
    sandbox.admin.clear_requests()
    again, created_again = find_or_create_segment(meta_client, filter=RULE, **kwargs)
    assert (again, created_again) == (first, False)
    assert sandbox.admin.count_requests(method="POST") == 0
    segments = [c for c in sandbox.world.catalogs.values() if c.name == "Kobi CPAS | t | r"]
    assert len(segments) == 1


def test_bad_filters(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    bad = {"and": [{"brand": {"eq": "x"}}, {"availability": {"is_anyy": ["in stock"]}}]}
    sandbox.admin.clear_requests()
    with pytest.raises(FilterError, match=r"and\[1\]\.availability: unknown operator 'is_anyy'"):
        find_or_create_segment(
            meta_client, business_id=TRENDYOL_BIZ, parent_catalog_id=TRENDYOL_PARENT, name="n", filter=bad
        )
    assert sandbox.admin.count_requests() == 0  # validated before any call
    # The sandbox itself answers Meta's error 100 naming the clause.
    with pytest.raises(MetaInvalidRequestError, match=r"and\[1\]\.availability: unknown operator 'is_anyy'"):
        meta_client.post(
            f"{TRENDYOL_BIZ}/owned_product_catalogs",
            data={"name": "n", "parent_catalog_id": TRENDYOL_PARENT, "catalog_segment_filter": bad},
        )
    with pytest.raises(MetaInvalidRequestError, match="not a valid rule"):
        meta_client.post(
            f"{TRENDYOL_BIZ}/owned_product_catalogs",
            data={"name": "n", "parent_catalog_id": TRENDYOL_PARENT, "catalog_segment_filter": "{oops"},
        )


def test_share_validation_unshare_and_assigned_users(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    seg = "3000000000000001"  # anatolia x trendyol: accepted in the seed
    assert read_segment_shares(meta_client, seg).status_for(ANATOLIA_BIZ) == "accepted"
    with pytest.raises(ValueError, match="permitted_tasks"):
        share_segment(meta_client, seg, ANATOLIA_BIZ, ["ADVERTIZE"])
    with pytest.raises(MetaInvalidRequestError, match=r"permitted_tasks\[0\]"):
        meta_client.post(f"{seg}/agencies", data={"business": ANATOLIA_BIZ, "permitted_tasks": ["SELL"]})
    assert unshare_segment(meta_client, seg, ANATOLIA_BIZ)
    shares = read_segment_shares(meta_client, seg)
    assert shares.status_for(ANATOLIA_BIZ) == "not_shared"
    assert not unshare_segment(meta_client, seg, ANATOLIA_BIZ)

    assert meta_client.post(f"{seg}/assigned_users", data={"user": "123456", "tasks": ["ADVERTISE"]}) == {
        "success": True
    }
    # Meta lists one business's users (business is required), with AssignedUser's fields: no tasks
    listed = {"business": ANATOLIA_BIZ, "fields": "id,user_type"}
    users = list(meta_client.paginate(f"{seg}/assigned_users", listed))
    assert users == [{"id": "123456", "user_type": "SYSTEM_USER"}]
    with pytest.raises(MetaInvalidRequestError, match="business"):
        list(meta_client.paginate(f"{seg}/assigned_users", {"fields": "id"}))
    meta_client.delete(f"{seg}/assigned_users", {"user": "123456"})
    assert list(meta_client.paginate(f"{seg}/assigned_users", listed)) == []


def test_segment_count_follows_brand_items(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, cpas_admin: CpasAdmin
) -> None:
    seg = "3000000000000001"  # filter: brand i_contains "anatolia"
    items = [
        {"id": f"AH-{i}", "brand": "Anatolia Home" if i % 3 else "Other", "availability": "in stock"}
        for i in range(30)
    ]
    cpas_admin.load_items("2000000000000001", items)
    assert meta_client.get(seg, {"fields": "product_count"})["product_count"] == 20
    cpas_admin.set_product_count(seg, 0)
    assert meta_client.get(seg, {"fields": "product_count"})["product_count"] == 0
    cpas_admin.set_product_count(seg, None)
    assert meta_client.get(seg, {"fields": "product_count"})["product_count"] == 20


def test_timed_out_create_is_not_retried_into_a_duplicate(
    sandbox: SandboxHandle, make_meta_client: Callable[..., MetaGraphClient]
) -> None:
    client = make_meta_client(timeout=0.2, max_retries=5)
    kwargs = {
        "business_id": TRENDYOL_BIZ,
        "parent_catalog_id": TRENDYOL_PARENT,
        "name": "Kobi CPAS | slow | r",
    }
    sandbox.admin.add_fault(
        "timeout", route="cpas.business.owned_product_catalogs.create", times=1, seconds=0.6
    )
    with pytest.raises(MetaConnectionError):
        find_or_create_segment(client, filter=RULE, **kwargs)
    assert sandbox.admin.count_requests(method="POST") == 1  # the client did not retry the POST
    # Meta applies the call after the client gave up. No time bound here: pytest-timeout ends a hung test.
    while not any(c.name == kwargs["name"] for c in list(sandbox.world.catalogs.values())):
        time.sleep(0.05)
    seg_id, created = find_or_create_segment(client, filter=RULE, **kwargs)
    assert not created
    assert [c.id for c in sandbox.world.catalogs.values() if c.name == kwargs["name"]] == [seg_id]
