"""The reference JSON samples pinned as sandbox fixtures keep every field the Meta guide shows."""

from __future__ import annotations

import json

import pytest

from meta_sandbox import REFERENCE_FIXTURES, load_fixture
from meta_sandbox.reference import FIXTURES_DIR

DIAGNOSTIC_KEYS = ["error_type", "error_priority", "title", "description", "call_to_action"]


def test_every_fixture_is_valid_json() -> None:
    files = sorted(p.stem for p in FIXTURES_DIR.glob("*.json"))
    assert files == sorted(REFERENCE_FIXTURES)
    for name in files:
        text = (FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8")
        json.loads(text)
        for bad in ("“", "”", "..."):
            assert bad not in text, f"{name}.json still has {bad!r}"


def test_commerce_merchant_settings() -> None:
    data = load_fixture("commerce_merchant_settings")
    assert data == {
        "commerce_merchant_settings": {"id": "2214103588714027", "cta": "ONSITE_CHECKOUT"},
        "id": "1181538518900034",
    }
    assert list(data) == ["commerce_merchant_settings", "id"]


def test_feed_upload_errors() -> None:
    (row,) = load_fixture("feed_upload_errors")["data"]
    assert row == {
        "id": 1510567479166488,
        "summary": "Group Mismatch for Property: shipping.",
        "description": "Property shipping must have the same value for all items in the same group.",
        "severity": "fatal",
        "row_number": 10,
        "column_number": 5,
    }


def test_batch_request_status() -> None:
    (status,) = load_fixture("batch_request_status")["data"]
    assert status["handle"] == "abc" and status["status"] == "finished"
    assert status["errors_total_count"] == 2 == len(status["errors"])
    assert [(e["line"], e["id"]) for e in status["errors"]] == [(2, "retailed_id_1"), (1, "retailed_id_2")]
    assert status["errors"][0]["message"].startswith("URL Incorrectly Formatted")
    assert '"in stock", "out of stock", "preorder"' in status["errors"][1]["message"]
    assert status["warnings"] == [
        {
            "line": 2,
            "id": "retailed_id_3",
            "message": "These fields have missing information: Make items easier to discover by providing "
            "google_product_category information.",
        }
    ]
    assert status["ids_of_invalid_requests"] == []


def _check_diagnostic(err: dict) -> None:
    assert list(err) == DIAGNOSTIC_KEYS
    assert (err["error_type"], err["error_priority"]) == ("IMAGE_RESOLUTION_LOW", "HIGH")
    assert err["title"] == "Missing or invalid images"
    assert (
        '<a href="https://www.facebook.com/business/help/686259348512056?id=725943027795860">'
        in err["description"]
    )
    assert err["call_to_action"].startswith("After you've made changes")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("catalog_all_errors", ("all",)),
        ("products_with_errors", ("data", 0, "errors")),
        ("item_errors", ("errors",)),
    ],
)
def test_diagnostic_samples(name: str, path: tuple) -> None:
    data = load_fixture(name)
    node = data
    for key in path:
        node = node[key]
    assert len(node) == 1
    _check_diagnostic(node[0])


def test_products_and_item_ids_and_envelope() -> None:
    products = load_fixture("products_with_errors")
    assert products["data"][0]["id"] == "4405565689470921"
    assert products["paging"] == {} and products["summary"] == {}
    assert load_fixture("item_errors")["id"] == "4405565689470921"


def test_load_fixture_returns_copies() -> None:
    load_fixture("item_errors")["id"] = "changed"
    assert load_fixture("item_errors")["id"] == "4405565689470921"
    with pytest.raises(KeyError, match="no sandbox fixture"):
        load_fixture("nope")
