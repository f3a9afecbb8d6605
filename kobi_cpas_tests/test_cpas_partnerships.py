"""Partnership reconciliation: observed status, every drift code with its call to action."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import duckdb
import pytest

from kobi_cpas.cpas import DRIFT_CODES, expected_membership, read_account_usage, reconcile_partnership
from kobi_cpas.cpas.api_onboarding import ensure_api_segment
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.registry import CpasRetailer, OnboardingMode, PartnershipStatus, Tenant, load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox.admin import CpasAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

ANATOLIA_BIZ = "1000000000000001"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def anatolia() -> Tenant:
    return load_registry(DEFAULT_REGISTRY).registry.tenant("anatolia_home")


@pytest.fixture(scope="module")
def bosphorus() -> Tenant:
    return load_registry(DEFAULT_REGISTRY).registry.tenant("bosphorus_outdoor")


def reconcile(client: MetaGraphClient, tenant: Tenant, retailer: CpasRetailer, **kwargs):
    return reconcile_partnership(client, tenant, retailer, now=NOW, **kwargs)


def test_healthy_accepted_partnership(meta_client: MetaGraphClient, anatolia: Tenant) -> None:
    r = anatolia.retailer("trendyol")
    row = reconcile(meta_client, anatolia, r)
    assert row.partnership_status == row.declared_status == "accepted"
    assert row.drift == () and row.next_action is None
    assert row.shared_with_business_id == ANATOLIA_BIZ
    assert row.permitted_tasks == () and row.collab_terms == ()  # Meta does not expose them
    assert row.segment_product_count and row.segment_product_count > 0
    assert row.segment_filter == '{"brand":{"i_contains":"anatolia"}}'
    record = row.as_record()
    assert record["drift"] == "" and record["permitted_tasks"] == "" and record["observed_at"] == NOW


def test_meta_count_equals_expected_from_feed_snapshot(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant
) -> None:
    items = [
        {"id": f"AH-{i:03d}", "brand": ["Anatolia Home", "ANATOLIA", "Other brand"][i % 3], "price": "10 TRY"}
        for i in range(90)
    ]
    cpas_admin.load_items(anatolia.catalog_id, items)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE feed_items (tenant_id VARCHAR, retailer_id VARCHAR, brand VARCHAR, price VARCHAR)"
    )
    con.executemany(
        "INSERT INTO feed_items VALUES (?, ?, ?, ?)",
        [("anatolia_home", i["id"], i["brand"], i["price"]) for i in items],
    )
    r = anatolia.retailer("trendyol")
    expected, sample = expected_membership(con, r.segment_filter, "feed_items", "anatolia_home")
    assert expected == 60 and sample[:2] == ["AH-000", "AH-001"]
    row = reconcile(meta_client, anatolia, r, expected_count=expected)
    assert row.segment_product_count == 60 and row.expected_product_count == 60
    assert row.drift == ()
    # The feed grew by 10 % but Meta's segment did not: outside a 2 % tolerance.
    row = reconcile(meta_client, anatolia, r, expected_count=66)
    assert row.drift == ("count_mismatch",)
    assert "has 60 products on Meta but Kobi expects 66" in (row.next_action or "")
    assert reconcile(meta_client, anatolia, r, expected_count=66, tolerance=0.1).drift == ()
    assert reconcile(meta_client, anatolia, r, expected_count=66, tolerance=0, tolerance_abs=6).drift == ()


def test_unshared_segment_is_revoked(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant
) -> None:
    r = anatolia.retailer("trendyol")
    cpas_admin.unshare(r.catalog_segment_id, ANATOLIA_BIZ)
    row = reconcile(meta_client, anatolia, r)
    assert row.partnership_status == "revoked" and row.drift == ("unshared",)
    assert row.shared_with_business_id is None
    assert "Trendyol no longer shares segment 3000000000000001" in (row.next_action or "")
    assert "partnership_status: revoked" in (row.next_action or "")


def test_revoke_through_the_api(meta_client: MetaGraphClient, anatolia: Tenant) -> None:
    r = anatolia.retailer("hepsiburada")
    meta_client.delete(f"{r.catalog_segment_id}/agencies", {"business": ANATOLIA_BIZ})
    row = reconcile(meta_client, anatolia, r)
    assert (row.partnership_status, row.drift) == ("revoked", ("unshared",))
    assert "Hepsiburada" in (row.next_action or "")


def test_empty_segment(meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant) -> None:
    r = anatolia.retailer("trendyol")
    cpas_admin.set_product_count(r.catalog_segment_id, 0)
    row = reconcile(meta_client, anatolia, r, expected_count=120)
    assert row.drift == ("segment_empty",) and row.segment_product_count == 0
    assert "has 0 products (Kobi expects 120 from the feed)" in (row.next_action or "")


def test_missing_segment(meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant) -> None:
    r = anatolia.retailer("trendyol")
    cpas_admin.delete_catalog(r.catalog_segment_id)
    row = reconcile(meta_client, anatolia, r)
    assert row.partnership_status == "revoked" and row.drift == ("segment_missing",)
    assert row.segment_product_count is None
    assert "no longer exists on Meta" in (row.next_action or "")


def test_not_a_segment(meta_client: MetaGraphClient, anatolia: Tenant) -> None:
    r = anatolia.retailer("trendyol").model_copy(update={"catalog_segment_id": "9100000000000001"})
    row = reconcile(meta_client, anatolia, r)
    assert row.drift == ("not_a_segment",)
    assert "is a regular catalog, not a catalog segment" in (row.next_action or "")


def test_shares_are_read_as_meta_exposes_them(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, anatolia: Tenant
) -> None:
    """The agencies edge returns Business objects: only id and name are asked for, and a share's tasks are not
    claimed (a MANAGE-only share reads as accepted, like any other)."""
    r = anatolia.retailer("trendyol")
    meta_client.post(
        f"{r.catalog_segment_id}/agencies", data={"business": ANATOLIA_BIZ, "permitted_tasks": ["MANAGE"]}
    )
    sandbox.admin.clear_requests()
    row = reconcile(meta_client, anatolia, r)
    assert row.partnership_status == "accepted" and row.drift == () and row.permitted_tasks == ()
    (call,) = sandbox.admin.requests(route="cpas.catalog.agencies.list")
    assert call["fields"] == "id,name"


def test_missing_ad_account(meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant) -> None:
    r = anatolia.retailer("trendyol")
    cpas_admin.delete_ad_account(r.dedicated_ad_account_id)
    row = reconcile(meta_client, anatolia, r)
    assert row.drift == ("ad_account_missing",)
    assert "create a new dedicated ad account for Trendyol" in (row.next_action or "")


def test_mixed_retailers_in_one_ad_account(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant
) -> None:
    trendyol, hepsiburada = anatolia.retailer("trendyol"), anatolia.retailer("hepsiburada")
    # Meta itself refuses this through the API (the account is linked to Trendyol)...
    with pytest.raises(Exception, match="linked to retailer trendyol"):
        meta_client.post(
            f"{trendyol.dedicated_ad_account_id}/campaigns",
            data={
                "name": "x",
                "objective": "OUTCOME_SALES",
                "special_ad_categories": [],
                "is_adset_budget_sharing_enabled": False,
                "promoted_object": {"product_catalog_id": hepsiburada.catalog_segment_id},
            },
        )
    # ... but a legacy account can still hold such a campaign.
    injected = cpas_admin.inject_campaign(trendyol.dedicated_ad_account_id, hepsiburada.catalog_segment_id)
    usage = read_account_usage(meta_client, trendyol.dedicated_ad_account_id)
    assert usage.segment_owner_business_ids == {"9000000000000001", "9000000000000002"}
    row = reconcile(meta_client, anatolia, trendyol, account_usage=usage)
    assert row.drift == ("ad_account_mixed_retailers",)
    assert f"segment 3000000000000002 of Hepsiburada (campaigns {injected})" in (row.next_action or "")


def test_pending_partnerships_and_registry_drift(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, anatolia: Tenant, bosphorus: Tenant
) -> None:
    # No segment yet, manual mode: ask the retailer.
    row = reconcile(meta_client, bosphorus, bosphorus.retailer("hepsiburada"))
    assert (row.partnership_status, row.drift) == ("pending", ())
    assert (row.next_action or "").startswith("Ask Hepsiburada to create a catalog segment")

    # Shared but not accepted, manual mode: the Collaboration Center steps.
    seg = "3000000000000002"
    meta_client.delete(f"{seg}/agencies", {"business": ANATOLIA_BIZ})
    meta_client.post(f"{seg}/agencies", data={"business": ANATOLIA_BIZ, "permitted_tasks": ["ADVERTISE"]})
    pending = anatolia.retailer("hepsiburada").model_copy(
        update={"partnership_status": PartnershipStatus.pending}
    )
    row = reconcile(meta_client, anatolia, pending)
    assert row.partnership_status == "pending" and row.drift == ()
    assert row.next_action == (
        "In Meta Business Suite > Collaboration Center, select Anatolia Home (business 1000000000000001), "
        "Partners, click 'Accept assets' for Hepsiburada's catalog segment 3000000000000002, accept the Terms of "
        "Service and the retailer's terms (create a new ad account / share ad performance access) — then set "
        "partnership_status: accepted in the registry for anatolia_home x hepsiburada."
    )
    api_mode = pending.model_copy(update={"onboarding_mode": OnboardingMode.api})
    assert (reconcile(meta_client, anatolia, api_mode).next_action or "").startswith(
        "Kobi has created and shared Hepsiburada's segment 3000000000000002"
    )

    # Accepted on Meta while the registry still says pending.
    cpas_admin.accept_share(seg, ANATOLIA_BIZ)
    row = reconcile(meta_client, anatolia, pending)
    assert row.partnership_status == "accepted" and row.drift == ("registry_outdated",)
    assert "set partnership_status: accepted" in (row.next_action or "")


def test_api_mode_without_segment_says_what_kobi_will_do(
    meta_client: MetaGraphClient, bosphorus: Tenant
) -> None:
    r = bosphorus.retailer("hepsiburada").model_copy(
        update={
            "onboarding_mode": OnboardingMode.api,
            "segment_filter": {"brand": {"eq": "Bosphorus Outdoor"}},
        }
    )
    row = reconcile(meta_client, bosphorus, r)
    assert (row.next_action or "").startswith(
        "Kobi will create the segment 'Kobi CPAS | bosphorus_outdoor | hepsiburada' from parent catalog "
        '9100000000000002 with filter {"brand":{"eq":"Bosphorus Outdoor"}} under Hepsiburada\'s business '
        "9000000000000002"
    )


def test_drift_codes_documented() -> None:
    assert set(DRIFT_CODES) >= {
        "segment_missing",
        "not_a_segment",
        "unshared",
        "segment_empty",
        "count_mismatch",
        "ad_account_missing",
        "ad_account_mixed_retailers",
    }


def test_api_segment_on_a_non_compliant_parent_is_a_call_to_action_sent_once(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, bosphorus: Tenant
) -> None:
    parent = next(
        c
        for c in sandbox.world.catalogs.values()
        if not c.is_catalog_segment and not c.collaborative_ads_compliant
    )
    r = bosphorus.retailer("hepsiburada").model_copy(
        update={
            "onboarding_mode": OnboardingMode.api,
            "retailer_business_id": parent.business_id,
            "parent_catalog_id": parent.id,
            "segment_filter": {"brand": {"eq": "Bosphorus Outdoor"}},
        }
    )
    sandbox.admin.clear_requests()
    step = ensure_api_segment(meta_client, bosphorus, r, expected_count=12)
    assert step.segment_id is None and step.origin is None and not step.shared_now
    assert "bosphorus_outdoor x hepsiburada" in (step.blocked or "")
    assert "not Collaborative Ads compliant" in (step.blocked or "")
    assert (
        sandbox.admin.count_requests(route="cpas.business.owned_product_catalogs.create") == 1
    )  # never retried
    row = reconcile(meta_client, bosphorus, r, api_blocked=step.blocked)
    assert row.drift == ("api_step_blocked",) and row.next_action == step.blocked
