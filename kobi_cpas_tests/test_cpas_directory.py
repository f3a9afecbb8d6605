"""Retailer discovery: directory merchants (paged), suggested partners, collaboration requests over time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from kobi_cpas.cpas import (
    collaboration_request_rows,
    directory_rows,
    read_merchants,
    send_collaboration_request,
)
from kobi_cpas.meta import MetaGraphClient, MetaInvalidRequestError
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox.admin import CpasAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONTACT = {
    "contact_email": "partnerships@kobi.example",
    "contact_first_name": "Ada",
    "contact_last_name": "Yilmaz",
    "phone_number": "+905550000000",
}


@pytest.fixture(scope="module")
def registry():
    return load_registry(DEFAULT_REGISTRY).registry


def test_merchants_follow_nested_paging(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    sandbox.admin.clear_requests()
    merchants = read_merchants(meta_client, page_size=2)
    assert [m["name"] for m in merchants] == ["Amazon TR", "Hepsiburada", "n11", "Pazarama", "Trendyol"]
    assert all(m["countries"] == ["TR"] for m in merchants)
    assert sandbox.admin.count_requests(method="GET") == 3  # the field, then two pages of the edge
    with pytest.raises(MetaInvalidRequestError, match="collaborative_ads_merchants"):
        meta_client.get("collaborative_ads_directory")


def test_directory_rows(meta_client: MetaGraphClient, registry) -> None:
    rows = directory_rows(meta_client, registry.tenants, now=NOW)
    directory = [r for r in rows if r.source == "directory"]
    assert len(directory) == 5 and all(r.tenant_id is None for r in directory)
    suggested = {(r.tenant_id, r.merchant_name) for r in rows if r.source == "suggested"}
    # Suggestions are the directory retailers each brand does not work with yet.
    assert ("anatolia_home", "n11") in suggested and ("anatolia_home", "Trendyol") not in suggested
    assert ("cappadocia_ceramics", "Hepsiburada") in suggested
    requests = [r for r in rows if r.source == "request"]
    assert [(r.tenant_id, r.merchant_name, r.status, r.requester) for r in requests] == [
        ("bosphorus_outdoor", "Hepsiburada", "PENDING", "AGENCY")
    ]
    node = meta_client.get(
        "1000000000000001",
        {"fields": "name,collaborative_ads_suggested_partners{merchant_business_id,status}"},
    )
    assert node["name"] == "Anatolia Home" and len(node["collaborative_ads_suggested_partners"]["data"]) == 3
    record = requests[0].as_record()
    assert "contact_email" not in record and "phone_number" not in record  # no personal data in the table
    assert record["brands"] == "Bosphorus Outdoor" and record["observed_at"] == NOW


def test_requests_are_approved_over_time_and_not_sent_twice(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, cpas_admin: CpasAdmin, registry
) -> None:
    tenant = registry.tenant("bosphorus_outdoor")
    hepsiburada = "9000000000000002"
    existing, sent = send_collaboration_request(
        meta_client, tenant, receiver_business_id=hepsiburada, brands=["Bosphorus Outdoor"], **CONTACT
    )
    assert not sent
    n11 = next(m.business_id for m in sandbox.world.collab_merchants.values() if m.retailer == "n11")
    new_id, sent = send_collaboration_request(
        meta_client, tenant, receiver_business_id=n11, brands=["Bosphorus Outdoor"], **CONTACT
    )
    assert sent and new_id != existing
    assert send_collaboration_request(
        meta_client, tenant, receiver_business_id=n11, brands=["B"], **CONTACT
    ) == (
        new_id,
        False,
    )
    node = meta_client.get(new_id, {"fields": "phone_number,receiver_business,source,status"})
    assert node["status"] == "PENDING" and node["receiver_business"]["id"] == n11
    assert node["phone_number"] == CONTACT["phone_number"] and node["source"] == "EXTERNAL"

    sandbox.admin.advance_clock(2 * 86400 + 60)
    statuses = {r.object_id: r.status for r in collaboration_request_rows(meta_client, tenant)}
    assert statuses == {existing: "APPROVED", new_id: "APPROVED"}
    cpas_admin.set_request_status(new_id, "DECLINED")
    assert meta_client.get(new_id, {"fields": "status"})["status"] == "DECLINED"

    with pytest.raises(MetaInvalidRequestError, match="not a retailer of the Collaborative Ads directory"):
        send_collaboration_request(
            meta_client, tenant, receiver_business_id="1000000000000001", brands=["B"], **CONTACT
        )
