"""Sandbox Batch API: items_batch rejections and validation, async processing on the world clock, upsert
rules and the reference check_batch_request_status sample, through the real Graph client over HTTP."""

from __future__ import annotations

import json
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
    sandbox_items,
    stored,
    to_csv,
    upload,
)
from meta_sandbox import load_fixture

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]


def batch(
    client: MetaGraphClient, reqs: Any, *, allow_upsert: bool | None = None, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"item_type": "PRODUCT_ITEM", **extra}
    data["requests"] = reqs if isinstance(reqs, str) else json.dumps(reqs)
    if allow_upsert is not None:
        data["allow_upsert"] = "true" if allow_upsert else "false"
    return client.post(f"{CATALOG}/items_batch", data=data)


def status(client: MetaGraphClient, handle: str, **params: Any) -> dict[str, Any]:
    (entry,) = client.get(f"{CATALOG}/check_batch_request_status", params={"handle": handle, **params})[
        "data"
    ]
    return entry


def seed_items(client: MetaGraphClient, *rids: str) -> None:
    upload(client, create_feed(client), to_csv([item(r) for r in rids]))


def update(rid: str, **fields: str) -> dict[str, Any]:
    return {"method": "UPDATE", "data": {"id": rid, **fields}}


# -- whole-call rejections -----------------------------------------------------------------------------


def test_more_than_5000_requests_rejected(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    reqs = [update(f"sku-{i}", price="1.00 TRY") for i in range(5001)]
    with pytest.raises(MetaAPIError) as info:
        batch(meta_client, reqs)
    assert info.value.code == 100 and "5000" in info.value.message
    assert sandbox.admin.state("items_batches") == {}
    accepted = batch(meta_client, reqs[:5000])
    assert len(accepted["handles"]) == 1 and accepted["validation_status"] == []


def test_same_retailer_id_twice_rejects_the_whole_call(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    seed_items(meta_client, "a", "b")
    with pytest.raises(MetaAPIError) as info:
        batch(
            meta_client,
            [
                update("a", price="1.00 TRY"),
                update("b", price="2.00 TRY"),
                update("a", availability="out of stock"),
            ],
        )
    assert info.value.code == 100 and "'a'" in info.value.message
    assert sandbox.admin.state("items_batches") == {}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"item_type": "PRODUCT_ITEM", "requests": '[{"method": "UPDATE", "data": {"id": "a"}'}, "JSON"),
        ({"item_type": "PRODUCT_ITEM", "requests": '{"method": "UPDATE"}'}, "array"),
        ({"item_type": "PRODUCT_ITEM"}, "requests"),
        ({"requests": "[]"}, "item_type"),
        ({"item_type": "VEHICLE", "requests": "[]"}, "item_type"),
        ({"item_type": "PRODUCT_ITEM", "requests": '[{"method": "UPDATE"}]'}, "data"),
    ],
)
def test_malformed_calls_are_error_100(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, data: dict[str, str], needle: str
) -> None:
    with pytest.raises(MetaAPIError) as info:
        meta_client.post(f"{CATALOG}/items_batch", data=data)
    assert info.value.code == 100 and needle in info.value.message


def test_segment_catalog_refuses_batches(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    with pytest.raises(MetaAPIError) as info:
        meta_client.post("3000000000000001/items_batch", data={"item_type": "PRODUCT_ITEM", "requests": "[]"})
    assert info.value.code == 200


# -- processing -----------------------------------------------------------------------------------------


def test_status_progresses_with_the_world_clock_and_applies_at_finish(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    sandbox.admin.freeze_clock(True)
    seed_items(meta_client, "a", "b")
    before = sandbox_items(sandbox)
    resp = batch(
        meta_client,
        [
            update("a", price="99.90 TRY", availability="out of stock"),
            {"method": "DELETE", "data": {"id": "b"}},
        ],
        allow_upsert=False,
    )
    (handle,) = resp["handles"]
    assert resp["validation_status"] == []
    assert status(meta_client, handle)["status"] == "started"
    sandbox.admin.advance_clock(59)
    assert status(meta_client, handle)["status"] == "started"
    sandbox.admin.advance_clock(1)
    mid = status(meta_client, handle, load_ids_of_invalid_requests="true")
    assert mid == {
        "handle": handle,
        "status": "dispatched",
        "errors_total_count": 0,
        "errors": [],
        "warnings_total_count": 0,
        "warnings": [],
        "ids_of_invalid_requests": [],
    }
    assert sandbox_items(sandbox) == before  # nothing applied before it finishes
    sandbox.admin.advance_clock(60)
    done = status(meta_client, handle, load_ids_of_invalid_requests="true")
    assert done["status"] == "finished" and done["errors"] == [] and done["ids_of_invalid_requests"] == []
    assert sandbox_items(sandbox) == {
        "a": {**before["a"], "price": "99.90 TRY", "availability": "out of stock"}
    }


def test_batch_is_applied_when_due_even_if_nobody_asks(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, batch_processing_seconds=10)
    seed_items(meta_client, "a")
    batch(meta_client, [update("a", quantity_to_sell_on_facebook="3")])
    sandbox.admin.advance_clock(10)
    assert sandbox_items(sandbox)["a"]["quantity_to_sell_on_facebook"] == "3"


def test_unknown_item_with_allow_upsert_false_is_invalid(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    catalog_config(sandbox, batch_processing_seconds=0)
    seed_items(meta_client, "a")
    (handle,) = batch(
        meta_client, [update("a", price="5.00 TRY"), update("ghost", price="5.00 TRY")], allow_upsert=False
    )["handles"]
    entry = status(meta_client, handle, load_ids_of_invalid_requests="true")
    assert entry["status"] == "finished"
    assert entry["errors"] == [
        {"line": 1, "id": "ghost", "message": "Product item with retailer id ghost does not exist"}
    ]
    assert entry["ids_of_invalid_requests"] == ["ghost"]
    assert set(sandbox_items(sandbox)) == {"a"}  # never created

    # allow_upsert=true (Meta's default) creates it when the request carries a complete item ...
    full = {k: v for k, v in item("ghost").items() if k != "id"}
    (handle,) = batch(meta_client, [update("ghost", **full)])["handles"]
    assert status(meta_client, handle)["errors"] == []
    assert sandbox_items(sandbox)["ghost"] == stored(item("ghost"))
    # ... and reports the missing required fields when it does not.
    (handle,) = batch(meta_client, [update("partial", price="5.00 TRY")], allow_upsert=True)["handles"]
    entry = status(meta_client, handle, load_ids_of_invalid_requests="true")
    assert entry["ids_of_invalid_requests"] == ["partial"]
    assert all(e["message"].startswith("A required field is missing: ") for e in entry["errors"])
    assert "partial" not in sandbox_items(sandbox)


def test_validation_status_rejects_bad_formats_synchronously(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    catalog_config(sandbox, batch_processing_seconds=0)
    seed_items(meta_client, "a", "b", "c")
    resp = batch(
        meta_client,
        [
            update("a", price="12,50 TL"),
            update("b", availability="available"),
            update("c", price="12.50 TRY"),
            {"method": "PATCH", "data": {"id": "d"}},
        ],
    )
    by_id = {v["retailer_id"]: v for v in resp["validation_status"]}
    assert set(by_id) == {"a", "b", "d"}
    assert by_id["a"]["errors"][0]["message"].startswith("Invalid Price Format: ")
    assert by_id["b"]["errors"][0]["message"].startswith("Invalid Value for Property: ")
    assert "method" in by_id["d"]["errors"][0]["message"]
    entry = status(meta_client, resp["handles"][0], load_ids_of_invalid_requests="true")
    assert entry["errors_total_count"] == 3 and entry["ids_of_invalid_requests"] == ["a", "b", "d"]
    items = sandbox_items(sandbox)
    assert items["a"]["price"] == "199.90 TRY" and items["b"]["availability"] == "in stock"  # not applied
    assert items["c"]["price"] == "12.50 TRY"


def test_create_delete_and_blank_values(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    catalog_config(sandbox, batch_processing_seconds=0)
    seed_items(meta_client, "a")
    batch(meta_client, [update("a", sale_price="150.00 TRY")])
    assert sandbox_items(sandbox)["a"]["sale_price"] == "150.00 TRY"
    (handle,) = batch(
        meta_client,
        [
            update("a", sale_price=""),  # a blank value clears the field (what the sync sends)
            {"method": "CREATE", "data": item("n")},
            {"method": "DELETE", "data": {"id": "missing"}},
            update("b-blank", availability=""),
        ],
        allow_upsert=False,
    )["handles"]
    entry = status(meta_client, handle, load_ids_of_invalid_requests="true")
    assert entry["ids_of_invalid_requests"] == ["missing", "b-blank"]
    assert "sale_price" not in sandbox_items(sandbox)["a"]
    assert sandbox_items(sandbox)["n"] == stored(item("n"))
    (handle,) = batch(meta_client, [update("a", availability="")])["handles"]
    (err,) = status(meta_client, handle)["errors"]
    assert err["id"] == "a" and err["message"].startswith(
        "A required field is missing: Products need to have availability"
    )
    batch(meta_client, [{"method": "DELETE", "data": {"id": "n"}}])
    assert set(sandbox_items(sandbox)) == {"a"}


def test_reference_batch_status_sample_reproduced(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    catalog_config(sandbox, batch_processing_seconds=0)
    no_category = {k: v for k, v in item("retailed_id_3").items() if k != "google_product_category"}
    no_availability = {k: v for k, v in item("retailed_id_2").items() if k != "availability"}
    bad_url = item("retailed_id_1", link="https://user:secret@shop.example.com/p/1")
    resp = batch(
        meta_client,
        [
            {"method": "CREATE", "data": no_category},
            {"method": "CREATE", "data": no_availability},
            {"method": "CREATE", "data": bad_url},
        ],
    )
    (handle,) = resp["handles"]
    # The malformed URL is caught synchronously; the missing field when the batch is processed.
    assert [v["retailer_id"] for v in resp["validation_status"]] == ["retailed_id_1"]

    got = meta_client.get(
        f"{CATALOG}/check_batch_request_status", params={"handle": handle, "error_priority": "HIGH"}
    )
    (expected,) = load_fixture("batch_request_status")["data"]
    (entry,) = got["data"]
    # Every field of the sample, in the sample's order (plus warnings_total_count, which Meta also returns).
    assert [k for k in entry if k in expected] == list(expected)
    assert entry["handle"] == handle and entry["status"] == expected["status"]
    assert entry["errors_total_count"] == expected["errors_total_count"]
    assert entry["errors"] == expected["errors"]  # same lines, ids and messages
    assert entry["warnings_total_count"] == 1
    (warning,) = entry["warnings"]
    (expected_warning,) = expected["warnings"]
    assert (warning["id"], warning["message"]) == (expected_warning["id"], expected_warning["message"])
    assert list(warning) == list(expected_warning) and warning["line"] == 0
    assert entry["ids_of_invalid_requests"] == expected["ids_of_invalid_requests"] == []
    assert status(meta_client, handle, load_ids_of_invalid_requests="true")["ids_of_invalid_requests"] == [
        "retailed_id_1",
        "retailed_id_2",
    ]
    assert set(sandbox_items(sandbox)) == {"retailed_id_3"}


def test_json_body_and_unknown_handle(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    catalog_config(sandbox, batch_processing_seconds=0)
    seed_items(meta_client, "a")
    resp = meta_client.post(
        f"{CATALOG}/items_batch",
        json_body={"item_type": "PRODUCT_ITEM", "requests": [update("a", price="7.00 TRY")]},
    )
    assert status(meta_client, resp["handles"][0])["status"] == "finished"
    assert sandbox_items(sandbox)["a"]["price"] == "7.00 TRY"
    with pytest.raises(MetaAPIError) as info:
        status(meta_client, "AcNoSuchHandle")
    assert info.value.code == 100
    log = requests.get(
        f"{sandbox.url}/__sandbox/requests", params={"route": "catalog.items_batch"}, timeout=5
    ).json()
    assert len(log["data"]) == 1


def test_requests_as_a_form_encoded_list(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, sandbox_token: str
) -> None:
    catalog_config(sandbox, batch_processing_seconds=0)
    seed_items(meta_client, "a", "b")
    resp = requests.post(
        f"{sandbox.graph_url}/{CATALOG}/items_batch",
        data={
            "item_type": "PRODUCT_ITEM",
            "requests[0]": json.dumps(update("a", price="1.00 TRY")),
            "requests[1]": json.dumps(update("b", price="2.00 TRY")),
        },
        headers={"Authorization": f"Bearer {sandbox_token}"},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    assert [sandbox_items(sandbox)[r]["price"] for r in ("a", "b")] == ["1.00 TRY", "2.00 TRY"]
