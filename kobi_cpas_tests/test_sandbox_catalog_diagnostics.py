"""Sandbox catalog diagnostics: catalog_all_errors, the products error filters and paging, the item errors
node, diagnostic groups, the time-varying problem generator and the admin item_errors knob."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import requests

from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas_tests.test_sandbox_catalog_feeds import (
    CATALOG,
    catalog_config,
    create_feed,
    item,
    to_csv,
    upload,
)
from meta_sandbox import load_fixture
from meta_sandbox.catalog_model import ERROR_TYPES, GENERATED_PROBLEMS, generated_problems, hour_bucket

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

NO_PIXEL_CATALOG = "2000000000000003"  # Cappadocia Ceramics: "no pixel yet"
REFERENCE_ERROR = load_fixture("catalog_all_errors")["all"][0]
ERROR_KEYS = ["error_type", "error_priority", "title", "description", "call_to_action"]


def item_errors_admin(
    sandbox: SandboxHandle, method: str, retailer_id: str, error_type: str | None, catalog: str = CATALOG
) -> requests.Response:
    body: dict[str, Any] = {"catalog_id": catalog, "retailer_id": retailer_id}
    if error_type is not None:
        body["error_type"] = error_type
    return requests.request(method, f"{sandbox.url}/__sandbox/item_errors", json=body, timeout=5)


def seed(client: MetaGraphClient, n: int, catalog: str = CATALOG, **overrides: str) -> list[str]:
    rids = [f"sku-{i:04d}" for i in range(n)]
    upload(client, create_feed(client, catalog), to_csv([item(r, **overrides) for r in rids]))
    return rids


def product_ids(client: MetaGraphClient, catalog: str = CATALOG) -> dict[str, str]:
    return {
        p["retailer_id"]: p["id"]
        for p in client.paginate(f"{catalog}/products", params={"fields": "id,retailer_id", "limit": 500})
    }


def errors_by_item(client: MetaGraphClient, catalog: str = CATALOG) -> dict[str, list[str]]:
    return {
        p["retailer_id"]: [e["error_type"] for e in p["errors"]]
        for p in client.paginate(f"{catalog}/products", params={"fields": "retailer_id,errors", "limit": 500})
    }


# -- catalog_all_errors ---------------------------------------------------------------------------------


def test_catalog_all_errors_serves_the_reference_entry(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    en = meta_client.get("catalog_all_errors", params={"locale": "en_US"})
    assert list(en) == ["all"]
    assert en["all"][0] == REFERENCE_ERROR  # verbatim
    assert len(en["all"]) >= 15
    types = [e["error_type"] for e in en["all"]]
    assert len(types) == len(set(types))
    assert all(list(e) == ERROR_KEYS and all(e.values()) for e in en["all"])
    assert {e["error_priority"] for e in en["all"]} == {"HIGH", "MEDIUM", "LOW"}
    assert "NEW_UNDOCUMENTED_ERROR" not in types  # items can carry types the dictionary lacks

    tr = meta_client.get("catalog_all_errors", params={"locale": "tr_TR"})["all"]
    assert [e["error_type"] for e in tr] == types
    assert (
        tr[0]["title"] == "Eksik veya geçersiz görseller"
        and tr[0]["description"] == REFERENCE_ERROR["description"]
    )
    assert sum(a["title"] != b["title"] for a, b in zip(en["all"], tr, strict=True)) == len(types)
    assert meta_client.get("catalog_all_errors", params={"locale": "de_DE"})["all"] == en["all"]
    assert meta_client.get("catalog_all_errors")["all"] == en["all"]  # en_US by default
    with pytest.raises(MetaAPIError) as info:
        meta_client.get("catalog_all_errors", params={"locale": "xx_YY"})
    assert info.value.code == 100 and "locale" in info.value.message


# -- products and item errors ---------------------------------------------------------------------------


def test_products_error_filters_and_paging(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    catalog_config(sandbox, problem_rate_scale=0)
    rids = seed(meta_client, 40)
    flagged = rids[3:10]
    for rid in flagged:
        assert item_errors_admin(sandbox, "POST", rid, "IMAGE_RESOLUTION_LOW").status_code == 200
    item_errors_admin(sandbox, "POST", rids[20], "QUALITY_ITEM_LINK_REDIRECTING")  # MEDIUM

    pages = list(
        meta_client.pages(
            f"{CATALOG}/products",
            params={
                "fields": "id,errors",
                "error_priority": "HIGH",
                "error_type": "IMAGE_RESOLUTION_LOW",
                "limit": 3,
            },
        )
    )
    assert [len(p["data"]) for p in pages] == [3, 3, 1]
    ids = product_ids(meta_client)
    assert [row["id"] for p in pages for row in p["data"]] == [ids[r] for r in flagged]
    for p in pages:
        for row in p["data"]:
            assert list(row) == ["id", "errors"] and row["errors"] == [REFERENCE_ERROR]

    high = list(
        meta_client.paginate(
            f"{CATALOG}/products", params={"fields": "retailer_id", "error_priority": "HIGH"}
        )
    )
    assert [r["retailer_id"] for r in high] == flagged
    medium = list(
        meta_client.paginate(
            f"{CATALOG}/products", params={"fields": "retailer_id", "error_priority": "MEDIUM"}
        )
    )
    assert [r["retailer_id"] for r in medium] == [rids[20]]
    assert (
        list(meta_client.paginate(f"{CATALOG}/products", params={"error_type": "DA_POLICY_VIOLATION"})) == []
    )

    everything = list(
        meta_client.paginate(
            f"{CATALOG}/products",
            params={"fields": "id,retailer_id,name,price,availability,brand,image_url,url", "limit": 15},
        )
    )
    assert [r["retailer_id"] for r in everything] == rids
    assert everything[0] == {
        "id": ids[rids[0]],
        "retailer_id": rids[0],
        "name": f"Item {rids[0]}",
        "price": "199.90 TRY",
        "availability": "in stock",
        "brand": "Acme",
        "image_url": f"https://cdn.example.com/{rids[0]}.jpg",
        "url": f"https://shop.example.com/p/{rids[0]}",
    }
    one = meta_client.get(
        f"{CATALOG}/products",
        params={"fields": "retailer_id", "filter": '{"retailer_id": {"eq": "sku-0005"}}'},
    )
    assert one["data"] == [{"retailer_id": "sku-0005", "id": ids["sku-0005"]}]
    some = meta_client.get(
        f"{CATALOG}/products",
        params={
            "fields": "retailer_id",
            "filter": '{"retailer_id": {"is_any": ["sku-0001", "sku-0039", "nope"]}}',
            "summary": "true",
        },
    )
    assert [r["retailer_id"] for r in some["data"]] == ["sku-0001", "sku-0039"] and some["summary"] == {
        "total_count": 2
    }
    for bad in (
        {"filter": "{not json"},
        {"filter": '{"retailer_id": {"like": "x"}}'},
        {"error_priority": "URGENT"},
    ):
        with pytest.raises(MetaAPIError) as info:
            meta_client.get(f"{CATALOG}/products", params=bad)
        assert info.value.code == 100


def test_item_errors_node_matches_the_reference_shape(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    catalog_config(sandbox, problem_rate_scale=0)
    seed(meta_client, 3)
    item_errors_admin(sandbox, "POST", "sku-0001", "IMAGE_RESOLUTION_LOW")
    pid = product_ids(meta_client)["sku-0001"]
    got = meta_client.get(pid, params={"fields": "errors"})
    expected = load_fixture("item_errors")
    assert list(got) == list(expected) == ["errors", "id"]
    assert got["errors"] == expected["errors"] and got["id"] == pid
    detail = meta_client.get(pid, params={"fields": "retailer_id,name,availability,inventory,errors"})
    assert detail["retailer_id"] == "sku-0001" and detail["name"] == "Item sku-0001"
    clean = meta_client.get(product_ids(meta_client)["sku-0002"], params={"fields": "errors"})
    assert clean["errors"] == []

    # The node goes away with the item.
    feed = create_feed(meta_client, name="second")
    upload(meta_client, feed, to_csv([]))  # another feed's empty replace leaves it alone
    assert meta_client.get(pid, params={"fields": "retailer_id"})["retailer_id"] == "sku-0001"
    catalog_config(sandbox, batch_processing_seconds=0)
    meta_client.post(
        f"{CATALOG}/items_batch",
        data={"item_type": "PRODUCT_ITEM", "requests": '[{"method": "DELETE", "data": {"id": "sku-0001"}}]'},
    )
    with pytest.raises(MetaAPIError) as info:
        meta_client.get(pid, params={"fields": "errors"})
    assert info.value.code == 100 and info.value.error_subcode == 33


def test_products_response_matches_the_reference_sample(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    catalog_config(sandbox, problem_rate_scale=0)
    seed(meta_client, 2)
    item_errors_admin(sandbox, "POST", "sku-0000", "IMAGE_RESOLUTION_LOW")
    got = meta_client.get(f"{CATALOG}/products", params={"fields": "id,errors", "error_priority": "HIGH"})
    expected = load_fixture("products_with_errors")
    (row,) = got["data"]
    (expected_row,) = expected["data"]
    assert list(row) == list(expected_row) and row["errors"] == expected_row["errors"]
    assert "paging" in got


# -- diagnostics ----------------------------------------------------------------------------------------


def test_diagnostics_groups(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    catalog_config(sandbox, problem_rate_scale=0)
    seed(meta_client, 20, price="0.00 TRY")  # a data fact: every item has a zero price
    for rid in ("sku-0001", "sku-0002", "sku-0003"):
        item_errors_admin(sandbox, "POST", rid, "IMAGE_RESOLUTION_LOW")
    item_errors_admin(sandbox, "POST", "sku-0002", "NOT_ENOUGH_IMAGES")
    item_errors_admin(sandbox, "POST", "sku-0004", "DUPLICATE_TITLE_AND_DESCRIPTION")

    groups = {g["type"]: g for g in meta_client.paginate(f"{CATALOG}/diagnostics")}
    assert set(groups) == {"IMAGE_QUALITY", "ATTRIBUTES_INVALID", "LOW_QUALITY_TITLE_AND_DESCRIPTION"}
    image = groups["IMAGE_QUALITY"]
    assert list(image)[:8] == [
        "title",
        "subtitle",
        "type",
        "severity",
        "error_code",
        "number_of_affected_items",
        "affected_channels",
        "affected_features",
    ]
    assert image["severity"] == "MUST_FIX" and image["number_of_affected_items"] == 3
    assert [(d["error_type"], d["number_of_affected_items"]) for d in image["diagnostics"]] == [
        ("IMAGE_RESOLUTION_LOW", 3),
        ("NOT_ENOUGH_IMAGES", 1),
    ]
    assert image["diagnostics"][0]["title"] == REFERENCE_ERROR["title"]
    assert groups["ATTRIBUTES_INVALID"]["number_of_affected_items"] == 20
    assert groups["ATTRIBUTES_INVALID"]["diagnostics"][0]["error_type"] == "ITEM_PRICE_NOT_POSITIVE"
    low = groups["LOW_QUALITY_TITLE_AND_DESCRIPTION"]
    assert low["severity"] == "OPPORTUNITY" and low["number_of_affected_items"] == 1
    assert isinstance(image["error_code"], int) and image["affected_channels"]

    # A catalog without a pixel gets a catalog-level opportunity, even with clean items.
    seed(meta_client, 4, catalog=NO_PIXEL_CATALOG)
    (group,) = meta_client.paginate(f"{NO_PIXEL_CATALOG}/diagnostics")
    assert group["severity"] == "OPPORTUNITY" and group["affected_entity"] == "product_catalog"
    assert group["number_of_affected_items"] == 4
    assert group["diagnostics"][0]["error_type"] == "CATALOG_NOT_CONNECTED_TO_EVENT_SOURCE"
    picked = meta_client.get(f"{NO_PIXEL_CATALOG}/diagnostics", params={"fields": "type,severity"})["data"]
    assert picked == [{"type": "DA_VISIBILITY_ISSUES", "severity": "OPPORTUNITY"}]


# -- the problem generator ------------------------------------------------------------------------------


def test_problem_generator_is_deterministic_rare_and_varies_over_time() -> None:
    fields = item("x")
    hour = hour_bucket(datetime(2026, 1, 1, tzinfo=UTC))
    rids = [f"r{i}" for i in range(3000)]
    at = {r: generated_problems(42, CATALOG, r, fields, hour) for r in rids}
    assert at == {r: generated_problems(42, CATALOG, r, fields, hour) for r in rids}  # deterministic
    affected = sum(1 for v in at.values() if v)
    assert 0 < affected < 0.1 * len(rids)  # most items are clean
    other_seed = {r: generated_problems(7, CATALOG, r, fields, hour) for r in rids}
    assert other_seed != at
    later = {r: generated_problems(42, CATALOG, r, fields, hour + 24) for r in rids}
    assert later != at
    appeared = {r for r in rids if later[r] and not at[r]}
    gone = {r for r in rids if at[r] and not later[r]}
    assert appeared and gone
    seen = {
        t
        for h in range(0, 48, 6)
        for r in rids[:1000]
        for t in generated_problems(42, CATALOG, r, fields, hour + h)
    }
    documented = {e.error_type for e in ERROR_TYPES}
    assert "NEW_UNDOCUMENTED_ERROR" in seen and "NEW_UNDOCUMENTED_ERROR" not in documented
    assert seen - {"ITEM_STALE_OUT_OF_STOCK"} == {p.error_type for p in GENERATED_PROBLEMS} - {
        "ITEM_STALE_OUT_OF_STOCK"
    }
    assert generated_problems(42, CATALOG, "r1", fields, hour, scale=0) == []
    stale = sum(
        "ITEM_STALE_OUT_OF_STOCK"
        in generated_problems(42, CATALOG, r, item(r, availability="out of stock"), hour)
        for r in rids
    )
    assert stale > 0 and all("ITEM_STALE_OUT_OF_STOCK" not in v for v in at.values())


def test_item_problems_over_http_follow_the_world_clock(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    sandbox.admin.freeze_clock(True)
    seed(meta_client, 300)
    first = errors_by_item(meta_client)
    assert errors_by_item(meta_client) == first  # same hour, same answer
    assert 0 < sum(1 for v in first.values() if v) < 60
    snapshots = [first]
    for _ in range(4):
        sandbox.admin.advance_clock(6 * 3600)
        snapshots.append(errors_by_item(meta_client))
    assert any(s != first for s in snapshots[1:])
    # Reset rebuilds the same world: the same seed and hour give the same problems.
    sandbox.admin.reset()
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, problem_rate_scale=0)
    seed(meta_client, 300)
    assert all(v == [] for v in errors_by_item(meta_client).values())


def test_admin_item_errors_knob(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    catalog_config(sandbox, problem_rate_scale=0)
    seed(meta_client, 3)
    resp = item_errors_admin(sandbox, "POST", "sku-0000", "NEW_UNDOCUMENTED_ERROR")
    assert resp.status_code == 200 and resp.json()["errors"] == ["NEW_UNDOCUMENTED_ERROR"]
    pid = product_ids(meta_client)["sku-0000"]
    (err,) = meta_client.get(pid, params={"fields": "errors"})["errors"]
    assert err["error_type"] == "NEW_UNDOCUMENTED_ERROR" and list(err) == ERROR_KEYS
    documented = {e["error_type"] for e in meta_client.get("catalog_all_errors")["all"]}
    assert err["error_type"] not in documented

    assert item_errors_admin(sandbox, "DELETE", "sku-0000", "NEW_UNDOCUMENTED_ERROR").json()["errors"] == []
    assert meta_client.get(pid, params={"fields": "errors"})["errors"] == []

    # DELETE also silences a problem the data or the generator produces; DELETE without a type undoes it.
    catalog_config(sandbox, batch_processing_seconds=0)
    meta_client.post(
        f"{CATALOG}/items_batch",
        data={
            "item_type": "PRODUCT_ITEM",
            "requests": '[{"method": "UPDATE", "data": {"id": "sku-0001", "price": "0 TRY"}}]',
        },
    )
    assert errors_by_item(meta_client)["sku-0001"] == ["ITEM_PRICE_NOT_POSITIVE"]
    item_errors_admin(sandbox, "DELETE", "sku-0001", "ITEM_PRICE_NOT_POSITIVE")
    assert errors_by_item(meta_client)["sku-0001"] == []
    item_errors_admin(sandbox, "DELETE", "sku-0001", None)
    assert errors_by_item(meta_client)["sku-0001"] == ["ITEM_PRICE_NOT_POSITIVE"]

    assert item_errors_admin(sandbox, "POST", "nope", "IMAGE_RESOLUTION_LOW").status_code == 404
    assert item_errors_admin(sandbox, "POST", "sku-0002", "not a type").status_code == 400
    assert item_errors_admin(sandbox, "POST", "sku-0002", "X", catalog="999").status_code == 404


def test_items_written_straight_into_the_catalog_get_nodes(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    """Other sandbox code (e.g. the CPAS admin loader) fills Catalog.items directly: those items still get a
    stable product item id and can be read, updated and deleted."""
    catalog_config(sandbox, problem_rate_scale=0, batch_processing_seconds=0)
    with sandbox.world.lock:
        sandbox.world.catalogs[CATALOG].items["direct"] = item("direct")
    pid = product_ids(meta_client)["direct"]
    assert product_ids(meta_client)["direct"] == pid
    assert meta_client.get(pid, params={"fields": "retailer_id,errors"}) == {
        "retailer_id": "direct",
        "errors": [],
        "id": pid,
    }
    meta_client.post(
        f"{CATALOG}/items_batch",
        data={
            "item_type": "PRODUCT_ITEM",
            "requests": '[{"method": "UPDATE", "data": {"id": "direct", "price": "5.00 TRY"}}]',
        },
    )
    assert meta_client.get(pid, params={"fields": "price"})["price"] == "5.00 TRY"
    with sandbox.world.lock:
        sandbox.world.catalogs[CATALOG].items.clear()
    with pytest.raises(MetaAPIError) as info:
        meta_client.get(pid)
    assert info.value.error_subcode == 33
