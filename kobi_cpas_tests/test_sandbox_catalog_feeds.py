"""Sandbox catalog feeds: product feeds, upload sessions, replace/update semantics and upload errors, through
the real Graph client over HTTP."""

from __future__ import annotations

import csv
import functools
import io
import json
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
import requests

from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.meta.errors import MetaAPIError
from meta_sandbox import load_fixture

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

CATALOG = "2000000000000001"
SEGMENT = "3000000000000001"
SESSION_FIELDS = (
    "id,start_time,end_time,num_detected_items,num_persisted_items,num_invalid_items,num_deleted_items,"
    "error_count,warning_count"
)
# What kobi_cpas.sync.methods asks for when it maps rejected rows back to items.
CLIENT_ERROR_FIELDS = "id,severity,row_number,samples{row_number,retailer_id}"
BASE_COLUMNS = (
    "id",
    "title",
    "description",
    "availability",
    "condition",
    "price",
    "link",
    "image_link",
    "brand",
    "google_product_category",
)


# -- helpers (used by the other test_sandbox_catalog_* modules too) --------------------------------------


def item(rid: str, **overrides: str) -> dict[str, str]:
    """A valid feed item."""
    fields = {
        "id": rid,
        "title": f"Item {rid}",
        "description": f"A fine item called {rid}.",
        "availability": "in stock",
        "condition": "new",
        "price": "199.90 TRY",
        "link": f"https://shop.example.com/p/{rid}",
        "image_link": f"https://cdn.example.com/{rid}.jpg",
        "brand": "Acme",
        "google_product_category": "Home & Garden",
    }
    fields.update(overrides)
    return fields


def to_csv(
    rows: Iterable[Mapping[str, str]], columns: Iterable[str] = BASE_COLUMNS, delimiter: str = ","
) -> bytes:
    buf = io.StringIO()
    cols = list(columns)
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([row.get(c, "") for c in cols])
    return buf.getvalue().encode()


def create_feed(client: MetaGraphClient, catalog: str = CATALOG, **params: Any) -> str:
    return str(client.post(f"{catalog}/product_feeds", data={"name": "Kobi primary feed", **params})["id"])


def upload(
    client: MetaGraphClient, feed_id: str, body: bytes, *, update_only: bool = False, max_polls: int = 10
) -> dict[str, Any]:
    """Upload like kobi_cpas.sync.methods does (multipart ``file``, optional update_only) and poll the
    session until end_time is set."""
    data = {"update_only": "true"} if update_only else {}
    upload_id = str(
        client.post(f"{feed_id}/uploads", data=data, files={"file": ("f.csv", body, "text/csv")})["id"]
    )
    for _ in range(max_polls):
        session = client.get(upload_id, params={"fields": SESSION_FIELDS})
        if session.get("end_time"):
            return session
    raise AssertionError(f"upload {upload_id} never finished")


def sandbox_items(sandbox: SandboxHandle, catalog: str = CATALOG) -> dict[str, dict[str, str]]:
    resp = requests.get(f"{sandbox.url}/__sandbox/catalogs/{catalog}/items", timeout=5)
    resp.raise_for_status()
    return resp.json()


def catalog_config(sandbox: SandboxHandle, **values: Any) -> dict[str, Any]:
    resp = requests.post(f"{sandbox.url}/__sandbox/catalog_config", json=values, timeout=5)
    resp.raise_for_status()
    return resp.json()


def stored(fields: Mapping[str, str]) -> dict[str, str]:
    """What the sandbox stores for a row: the non-blank fields as given."""
    return {k: v for k, v in fields.items() if v != ""}


def rejected_rows(client: MetaGraphClient, upload_id: str) -> dict[int, str]:
    """row_number -> retailer id of every fatal row, read the way the sync client reads them."""
    rows: dict[int, str] = {}
    for err in client.paginate(f"{upload_id}/errors", params={"fields": CLIENT_ERROR_FIELDS, "limit": 2}):
        if err["severity"] != "fatal":
            continue
        for s in err.get("samples", {}).get("data", []):
            rows[int(s["row_number"])] = s.get("retailer_id")
    return rows


# -- feeds ---------------------------------------------------------------------------------------------


def test_create_list_and_get_feeds(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    first = create_feed(meta_client)
    second = create_feed(
        meta_client, name="Kobi primary feed (shard 2 of 2)", schedule=json.dumps({"interval": "DAILY"})
    )
    listed = list(meta_client.paginate(f"{CATALOG}/product_feeds", params={"fields": "id,name", "limit": 1}))
    assert listed == [
        {"id": first, "name": "Kobi primary feed"},
        {"id": second, "name": "Kobi primary feed (shard 2 of 2)"},
    ]
    got = meta_client.get(second, params={"fields": "id,name,product_count,schedule,deletion_enabled"})
    assert got == {
        "id": second,
        "name": "Kobi primary feed (shard 2 of 2)",
        "product_count": 0,
        "schedule": {"interval": "DAILY"},
        "deletion_enabled": True,
    }
    assert meta_client.get(CATALOG, params={"fields": "feed_count"})["feed_count"] == 2
    with pytest.raises(MetaAPIError) as info:
        meta_client.post(f"{CATALOG}/product_feeds", data={})
    assert info.value.code == 100
    with pytest.raises(MetaAPIError) as info:
        meta_client.post(f"{SEGMENT}/product_feeds", data={"name": "x"})
    assert info.value.code == 200  # a catalog segment has no feeds of its own


def test_upload_completes_on_the_second_poll_and_applies_then(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    feed = create_feed(meta_client)
    rows = [item("a"), item("b")]
    upload_id = meta_client.post(f"{feed}/uploads", files={"file": ("f.csv", to_csv(rows), "text/csv")})["id"]
    assert sandbox_items(sandbox) == {}  # nothing applied before the session completes
    first = meta_client.get(upload_id, params={"fields": SESSION_FIELDS})
    assert "end_time" not in first and first["start_time"].endswith("+0000")
    second = meta_client.get(upload_id, params={"fields": SESSION_FIELDS})
    assert datetime.fromisoformat(second["end_time"]) >= datetime.fromisoformat(second["start_time"])
    assert {k: second[k] for k in SESSION_FIELDS.split(",")[3:]} == {
        "num_detected_items": 2,
        "num_persisted_items": 2,
        "num_invalid_items": 0,
        "num_deleted_items": 0,
        "error_count": 0,
        "warning_count": 0,
    }
    assert sandbox_items(sandbox) == {"a": stored(rows[0]), "b": stored(rows[1])}
    feed_view = meta_client.get(feed, params={"fields": "product_count,latest_upload{id,end_time}"})
    assert feed_view["product_count"] == 2
    assert feed_view["latest_upload"] == {"id": upload_id, "end_time": second["end_time"]}
    listed = list(meta_client.paginate(f"{feed}/uploads", params={"fields": "id,num_persisted_items"}))
    assert listed == [{"id": upload_id, "num_persisted_items": 2}]


def test_upload_processing_by_world_clock(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    sandbox.admin.freeze_clock(True)
    assert catalog_config(sandbox, upload_processing_seconds=300)["upload_processing_seconds"] == 300
    feed = create_feed(meta_client)
    upload_id = meta_client.post(
        f"{feed}/uploads", files={"file": ("f.csv", to_csv([item("a")]), "text/csv")}
    )["id"]
    for _ in range(5):  # polls alone do not finish it any more
        assert "end_time" not in meta_client.get(upload_id, params={"fields": "id,end_time"})
    sandbox.admin.advance_clock(299)
    assert "end_time" not in meta_client.get(upload_id, params={"fields": "id,end_time"})
    assert sandbox_items(sandbox) == {}
    sandbox.admin.advance_clock(1)
    assert set(sandbox_items(sandbox)) == {"a"}  # applied when due, even before the next poll
    session = meta_client.get(upload_id, params={"fields": "start_time,end_time"})
    start, end = (datetime.fromisoformat(session[k]) for k in ("start_time", "end_time"))
    assert (end - start).total_seconds() == 300


def test_upload_processing_grows_with_the_file(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, upload_processing_seconds=10, upload_seconds_per_item=2)
    feed = create_feed(meta_client)
    rows = [item(f"r{i}") for i in range(3)]
    upload_id = meta_client.post(f"{feed}/uploads", files={"file": ("f.csv", to_csv(rows), "text/csv")})["id"]
    sandbox.admin.advance_clock(15)  # past the fixed part, not past 10 + 3 x 2
    assert "end_time" not in meta_client.get(upload_id, params={"fields": "id,end_time"})
    sandbox.admin.advance_clock(1)
    session = meta_client.get(upload_id, params={"fields": "start_time,end_time"})
    start, end = (datetime.fromisoformat(session[k]) for k in ("start_time", "end_time"))
    assert (end - start).total_seconds() == 16
    assert set(sandbox_items(sandbox)) == {"r0", "r1", "r2"}


def test_catalog_config_admin(sandbox: SandboxHandle) -> None:
    defaults = requests.get(f"{sandbox.url}/__sandbox/catalog_config", timeout=5).json()
    assert defaults == {
        "upload_pending_polls": 1,
        "upload_processing_seconds": 0.0,
        "upload_seconds_per_item": 0.0,
        "batch_processing_seconds": 120.0,
        "problem_rate_scale": 1.0,
    }
    assert catalog_config(sandbox, upload_pending_polls=3)["upload_pending_polls"] == 3
    bad = requests.post(f"{sandbox.url}/__sandbox/catalog_config", json={"nope": 1}, timeout=5)
    assert bad.status_code == 400 and "nope" in bad.json()["error"]
    assert (
        requests.post(
            f"{sandbox.url}/__sandbox/catalog_config", json={"batch_processing_seconds": -1}, timeout=5
        ).status_code
        == 400
    )
    sandbox.admin.reset()
    assert requests.get(f"{sandbox.url}/__sandbox/catalog_config", timeout=5).json() == defaults


def test_pending_polls_knob(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    catalog_config(sandbox, upload_pending_polls=3)
    feed = create_feed(meta_client)
    upload_id = meta_client.post(
        f"{feed}/uploads", files={"file": ("f.csv", to_csv([item("a")]), "text/csv")}
    )["id"]
    seen = ["end_time" in meta_client.get(upload_id, params={"fields": "end_time"}) for _ in range(5)]
    assert seen == [False, False, False, True, True]


# -- replace and update semantics ----------------------------------------------------------------------


def test_replace_then_update_only_semantics(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    feed = create_feed(meta_client)
    a, b, c = item("a"), item("b"), item("c")
    s1 = upload(meta_client, feed, to_csv([a, b, c]))
    assert (s1["num_persisted_items"], s1["num_deleted_items"]) == (3, 0)
    assert sandbox_items(sandbox) == {"a": a, "b": b, "c": c}
    ids_before = {
        p["retailer_id"]: p["id"]
        for p in meta_client.paginate(f"{CATALOG}/products", params={"fields": "id,retailer_id"})
    }

    # Replace: c is missing -> deleted; b changes; d is new.
    b2, d = item("b", price="149.90 TRY", title="Item b v2"), item("d")
    s2 = upload(meta_client, feed, to_csv([a, b2, d]))
    assert (s2["num_detected_items"], s2["num_persisted_items"], s2["num_deleted_items"]) == (3, 3, 1)
    assert sandbox_items(sandbox) == {"a": a, "b": b2, "d": d}

    # Update only: never deletes, updates b, creates e (Meta allows creating in update feeds).
    b3, e = item("b", availability="out of stock"), item("e")
    s3 = upload(meta_client, feed, to_csv([b3, e]), update_only=True)
    assert (s3["num_persisted_items"], s3["num_deleted_items"]) == (2, 0)
    assert sandbox_items(sandbox) == {"a": a, "b": b3, "d": d, "e": e}

    ids_after = {
        p["retailer_id"]: p["id"]
        for p in meta_client.paginate(f"{CATALOG}/products", params={"fields": "id,retailer_id"})
    }
    assert (
        ids_after["a"] == ids_before["a"] and ids_after["b"] == ids_before["b"]
    )  # stable for the item's life
    assert "c" not in ids_after and len(set(ids_after.values())) == 4
    assert meta_client.get(CATALOG, params={"fields": "product_count"})["product_count"] == 4


def test_update_only_merges_given_columns(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    feed = create_feed(meta_client)
    upload(meta_client, feed, to_csv([item("a", sale_price="99.90 TRY")], [*BASE_COLUMNS, "sale_price"]))
    partial = to_csv(
        [{"id": "a", "price": "179.90 TRY", "sale_price": ""}, {"id": "new", "price": "1.00 TRY"}],
        ["id", "price", "sale_price"],
    )
    session = upload(meta_client, feed, partial, update_only=True)
    # The existing item takes the given columns (a blank one clears the field); the new one is incomplete.
    assert sandbox_items(sandbox) == {"a": item("a", price="179.90 TRY")}
    assert (session["num_persisted_items"], session["num_invalid_items"]) == (1, 1)
    assert rejected_rows(meta_client, session["id"]) == {2: "new"}


def test_empty_replace_upload_deletes_everything(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    feed = create_feed(meta_client)
    upload(meta_client, feed, to_csv([item(str(i)) for i in range(7)]))
    assert len(sandbox_items(sandbox)) == 7
    session = upload(meta_client, feed, to_csv([]))  # header only: what a buggy export would send
    assert (session["num_detected_items"], session["num_deleted_items"]) == (0, 7)
    assert sandbox_items(sandbox) == {}
    upload(meta_client, feed, to_csv([item("x")]))
    assert upload(meta_client, feed, b"")["num_deleted_items"] == 1  # a zero-byte file too
    assert sandbox_items(sandbox) == {}


def test_replace_deletes_only_its_own_feeds_items(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    shard1, shard2 = create_feed(meta_client, name="shard 1"), create_feed(meta_client, name="shard 2")
    upload(meta_client, shard1, to_csv([item("a"), item("b")]))
    upload(meta_client, shard2, to_csv([item("c")]))
    assert upload(meta_client, shard2, to_csv([]))["num_deleted_items"] == 1
    assert set(sandbox_items(sandbox)) == {"a", "b"}
    assert meta_client.get(shard1, params={"fields": "product_count"})["product_count"] == 2

    keep = create_feed(meta_client, name="no deletions", deletion_enabled="false")
    upload(meta_client, keep, to_csv([item("k")]))
    assert upload(meta_client, keep, to_csv([]))["num_deleted_items"] == 0
    assert set(sandbox_items(sandbox)) == {"a", "b", "k"}


# -- upload errors -------------------------------------------------------------------------------------


def test_upload_errors_map_to_row_numbers_and_retailer_ids(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    feed = create_feed(meta_client)
    rows = [
        item("ok1"),
        item("no-availability", availability=""),
        item("bad-price", price="1.299,90 TL"),
        item("long-title", title="x" * 151),
        item("bad-url", link="shop.example.com/p/1"),
        item("bad-condition", condition="brand new"),
        item("ok1", title="again"),  # duplicate id
        item("no-category", google_product_category=""),
        item("no-availability-2", availability=""),
        item("ok2"),
    ]
    session = upload(meta_client, feed, to_csv(rows))
    assert session["num_detected_items"] == 10
    assert session["num_invalid_items"] == 7
    assert session["num_persisted_items"] == 3
    assert session["error_count"] == 7 and session["warning_count"] == 1
    assert set(sandbox_items(sandbox)) == {"ok1", "no-category", "ok2"}
    assert sandbox_items(sandbox)["ok1"]["title"] == "Item ok1"  # the first of the duplicates

    assert rejected_rows(meta_client, session["id"]) == {
        2: "no-availability",
        3: "bad-price",
        4: "long-title",
        5: "bad-url",
        6: "bad-condition",
        7: "ok1",
        9: "no-availability-2",
    }
    fatal = list(
        meta_client.paginate(
            f"{session['id']}/errors",
            params={
                "error_priority": "HIGH",
                "fields": "summary,description,error_type,row_number,column_number,total_count,severity",
            },
        )
    )
    # error_type is accepted (the SDK defines it) but, as in Meta's sample, not served: errors are told apart
    # by their summary.
    assert all("error_type" not in e for e in fatal)
    by_summary = {e["summary"]: e for e in fatal}
    assert set(by_summary) == {
        "A required field is missing: availability.",
        "Invalid Price Format: price.",
        "Text Too Long: title.",
        "URL Incorrectly Formatted: link.",
        "Invalid Value for Property: condition.",
        "Duplicate ID: id.",
    }
    missing = by_summary["A required field is missing: availability."]
    assert missing["description"].startswith("Products need to have availability listed to run in ads.")
    assert (missing["row_number"], missing["column_number"], missing["total_count"]) == (2, 4, 2)
    assert by_summary["Invalid Price Format: price."]["row_number"] == 3
    assert by_summary["Text Too Long: title."]["row_number"] == 4
    assert by_summary["URL Incorrectly Formatted: link."]["row_number"] == 5
    assert by_summary["Invalid Value for Property: condition."]["column_number"] == 5
    assert by_summary["Duplicate ID: id."]["row_number"] == 7
    assert {e["severity"] for e in fatal} == {"fatal"}
    (warning,) = meta_client.paginate(
        f"{session['id']}/errors",
        params={"error_priority": "LOW", "fields": "summary,description,severity,row_number"},
    )
    assert warning.pop("id") and warning == {
        "summary": "These fields have missing information: google_product_category.",
        "description": "Make items easier to discover by providing google_product_category information.",
        "severity": "warning",
        "row_number": 8,
    }


def test_reference_group_mismatch_sample_reproduced(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    columns = (
        "id",
        "title",
        "description",
        "item_group_id",
        "shipping",
        "availability",
        "condition",
        "price",
        "link",
        "image_link",
        "brand",
        "google_product_category",
    )
    rows = [
        item(f"coat-{n}", item_group_id="WinterCoats", shipping="TR::Standard:49.90 TRY")
        for n in range(1, 10)
    ]
    rows.append(item("coat-10", item_group_id="WinterCoats", shipping="TR::Express:89.90 TRY"))
    feed = create_feed(meta_client)
    session = upload(meta_client, feed, to_csv(rows, columns))
    page = meta_client.get(f"{session['id']}/errors", params={"error_priority": "HIGH"})
    (expected,) = load_fixture("feed_upload_errors")["data"]
    (got,) = page["data"]
    assert list(got) == list(expected)  # the same fields, in the same order
    assert isinstance(got["id"], int) and got["id"] > 0
    assert {k: v for k, v in got.items() if k != "id"} == {k: v for k, v in expected.items() if k != "id"}
    assert "coat-10" not in sandbox_items(sandbox) and len(sandbox_items(sandbox)) == 9


def test_group_mismatch_on_shipping_rejects_every_differing_row(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    # Meta's Product Feed Upload Errors reference: "Group Mismatch for Property: shipping" is fatal for the
    # rows that differ; the rest of the feed is created. Brands and titles that differ within a group are not
    # an ingestion error in any Meta source, so those rows are created.
    rows = [
        item("v1", item_group_id="G", shipping="TR::Std:0 TRY", brand="Acme"),
        item("v2", item_group_id="G", shipping="TR::Express:50 TRY", brand="ACME"),
        item("v3", item_group_id="G", shipping="TR::Std:0 TRY", brand="Acme Co"),
        item("w1", item_group_id="H", shipping="TR::Express:50 TRY"),
        item("v4", item_group_id="G", shipping="", title="Other title"),
    ]
    feed = create_feed(meta_client)
    session = upload(meta_client, feed, to_csv(rows, [*BASE_COLUMNS, "item_group_id", "shipping"]))
    assert rejected_rows(meta_client, session["id"]) == {2: "v2", 5: "v4"}
    (err,) = meta_client.paginate(f"{session['id']}/errors", params={"fields": "summary,total_count"})
    assert (err["summary"], err["total_count"]) == ("Group Mismatch for Property: shipping.", 2)
    assert {"v1", "v3", "w1"} <= set(sandbox_items(sandbox))


def test_duckdb_copy_csv_with_multiline_descriptions(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, tmp_path: Path
) -> None:
    """The sync writes its feed file with DuckDB ``COPY ... (HEADER, DELIMITER ',')``: quoted values with
    newlines, commas and quotes must come through intact and row numbers must count records."""
    path = tmp_path / "feed.csv"
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE t AS SELECT * FROM (VALUES
             ('m1', 'Towel, "Deluxe"', 'Line one
Line two, with a comma
and "quotes"', 'in stock', '10.00 TRY'),
             ('m2', 'Plain', 'Simple', 'in stock', '11.00 TRY'),
             ('m3', 'Broken', 'Has
two lines', 'sold out', '12.00 TRY'),
             ('m4', 'Empty desc', NULL, 'in stock', '13.00 TRY')
           ) v(id, title, description, availability, price)"""
    )
    con.execute(
        f"""COPY (SELECT id, title, description, availability, 'new' AS condition, price,
                   'https://shop.example.com/p/' || id AS link, 'https://cdn.example.com/' || id || '.jpg' AS image_link,
                   'Acme' AS brand, 'Home' AS google_product_category FROM t ORDER BY id)
            TO '{path}' (HEADER, DELIMITER ',')"""
    )
    con.close()
    assert path.read_text().count("\n") > 5  # the multi-line values really span several lines
    feed = create_feed(meta_client)
    session = upload(meta_client, feed, path.read_bytes())
    assert session["num_detected_items"] == 4
    stored_items = sandbox_items(sandbox)
    assert stored_items["m1"]["description"] == 'Line one\nLine two, with a comma\nand "quotes"'
    assert stored_items["m1"]["title"] == 'Towel, "Deluxe"'
    assert stored_items["m2"]["description"] == "Simple"
    assert rejected_rows(meta_client, session["id"]) == {3: "m3", 4: "m4"}


def test_tsv_and_url_uploads(sandbox: SandboxHandle, meta_client: MetaGraphClient, tmp_path: Path) -> None:
    feed = create_feed(meta_client)
    tsv = to_csv([item("t1", title="Tab, with comma"), item("t2")], delimiter="\t")
    session = upload(meta_client, feed, tsv)
    assert session["num_persisted_items"] == 2
    assert sandbox_items(sandbox)["t1"]["title"] == "Tab, with comma"

    path = tmp_path / "feed.csv"
    path.write_bytes(to_csv([item("u1")]))
    upload_id = meta_client.post(f"{feed}/uploads", data={"url": path.as_uri()})["id"]
    meta_client.get(upload_id)
    session = meta_client.get(upload_id, params={"fields": "end_time,num_persisted_items,num_deleted_items"})
    assert session["num_persisted_items"] == 1 and session["num_deleted_items"] == 2
    assert set(sandbox_items(sandbox)) == {"u1"}

    missing = meta_client.post(f"{feed}/uploads", data={"url": (tmp_path / "nope.csv").as_uri()})["id"]
    meta_client.get(missing)
    failed = meta_client.get(missing, params={"fields": "error_count,num_deleted_items"})
    assert failed == {
        "id": missing,
        "error_count": 1,
        "num_deleted_items": 0,
    }  # a failed fetch deletes nothing
    (err,) = meta_client.paginate(f"{missing}/errors", params={"fields": "summary,severity"})
    assert err["summary"] == "Feed File Couldn't Be Fetched." and err["severity"] == "fatal"
    assert set(sandbox_items(sandbox)) == {"u1"}

    with pytest.raises(MetaAPIError) as info:
        meta_client.post(f"{feed}/uploads", data={"url": "https://feeds.example.com/f.csv"})
    assert info.value.code == 100
    with pytest.raises(MetaAPIError) as info:
        meta_client.post(f"{feed}/uploads", data={})
    assert info.value.code == 100


def test_upload_from_a_loopback_http_url(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, tmp_path: Path
) -> None:
    (tmp_path / "feed.csv").write_bytes(to_csv([item("h1"), item("h2")]))
    handler = functools.partial(QuietFiles, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        feed = create_feed(meta_client)
        url = f"http://127.0.0.1:{server.server_address[1]}/feed.csv"
        upload_id = meta_client.post(f"{feed}/uploads", data={"url": url, "update_only": "false"})["id"]
        meta_client.get(upload_id)
        session = meta_client.get(upload_id, params={"fields": "num_persisted_items,url,input_method"})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert session == {
        "id": upload_id,
        "num_persisted_items": 2,
        "url": url,
        "input_method": "Upload from URL",
    }
    assert set(sandbox_items(sandbox)) == {"h1", "h2"}


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_missing_id_column_is_a_file_error(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    feed = create_feed(meta_client)
    upload(meta_client, feed, to_csv([item("a")]))
    session = upload(meta_client, feed, to_csv([item("b")], ["title", "price"]))
    assert (session["error_count"], session["num_deleted_items"]) == (1, 0)
    (err,) = meta_client.paginate(f"{session['id']}/errors", params={"fields": "summary,row_number"})
    assert err["summary"] == "Missing Required Column." and "row_number" not in err  # about the whole file
    assert set(sandbox_items(sandbox)) == {"a"}


@pytest.mark.parametrize("header_has_id", [True, False])
def test_a_bad_byte_anywhere_refuses_the_whole_file(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, header_has_id: bool
) -> None:
    feed = create_feed(meta_client)
    upload(meta_client, feed, to_csv([item("a")]))
    columns = BASE_COLUMNS if header_has_id else BASE_COLUMNS[1:]
    # the bad byte is a megabyte past the header: the file is read as it is parsed, and still refused whole
    body = to_csv([item(f"n{i}") for i in range(12_000)], columns) + b"n9,\xff\n"
    assert len(body) > 2**20
    session = upload(meta_client, feed, body)
    (err,) = meta_client.paginate(f"{session['id']}/errors", params={"fields": "summary"})
    assert err["summary"] == "File Encoding Not Supported."
    assert (session["num_persisted_items"], session["num_deleted_items"]) == (0, 0)
    assert set(sandbox_items(sandbox)) == {"a"}


def test_a_utf16_file_with_its_byte_order_mark_is_read(
    sandbox: SandboxHandle, meta_client: MetaGraphClient
) -> None:
    feed = create_feed(meta_client)
    body = to_csv([item("ç1", title="Çanta")]).decode().encode("utf-16")
    session = upload(meta_client, feed, body)
    assert (session["error_count"], session["num_persisted_items"]) == (0, 1)
    assert sandbox_items(sandbox)["ç1"]["title"] == "Çanta"


def test_the_parser_reads_an_upload_in_bounded_chunks() -> None:
    from meta_sandbox.catalog_model import parse_feed

    class Recording(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.sizes: list[int] = []

        def read(self, size: int | None = -1) -> bytes:
            self.sizes.append(-1 if size is None else size)
            return super().read(size)

        def read1(self, size: int = -1) -> bytes:
            self.sizes.append(size)
            return super().read1(size)

    body = to_csv([item(f"r{i}") for i in range(20_000)])
    stream = Recording(body)
    parsed = parse_feed(stream)
    assert [r.fields["id"] for r in parsed.rows] == [f"r{i}" for i in range(20_000)]
    assert parsed.rows == parse_feed(body).rows
    # never the whole body at once: no unbounded read, no chunk near its size
    assert stream.sizes and all(0 <= n <= len(body) // 4 for n in stream.sizes), (len(body), stream.sizes)


# -- cross-cutting -------------------------------------------------------------------------------------


def test_feed_routes_count_as_catalog_management_and_take_faults(
    sandbox: SandboxHandle, make_meta_client: Any, recorded_sleeps: list[float], sandbox_token: str
) -> None:
    client = make_meta_client()
    feed = create_feed(client)
    upload_id = client.post(f"{feed}/uploads", files={"file": ("f.csv", to_csv([item("a")]), "text/csv")})[
        "id"
    ]
    sandbox.admin.script_faults([{"kind": "http_500"}], route="feed_upload.get")
    client.get(upload_id)  # retried after the injected 500
    assert recorded_sleeps, "the client should have backed off once"
    log = sandbox.admin.requests(route="feed_upload.get")
    assert [e["fault"] for e in log] == ["http_500", None]
    resp = requests.get(
        f"{sandbox.graph_url}/{upload_id}", headers={"Authorization": f"Bearer {sandbox_token}"}, timeout=5
    )
    usage = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    ((business, entries),) = usage.items()
    assert business == "1000000000000001" and entries[0]["type"] == "catalog_management"
    assert {e["route"] for e in sandbox.admin.requests()} >= {
        "catalog.product_feeds.create",
        "product_feed.uploads.create",
        "feed_upload.get",
    }


def test_the_sync_clients_upload_helpers_work_against_the_sandbox(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, tmp_path: Path
) -> None:
    """kobi_cpas.sync.methods is the contract: its upload, poll and error-row helpers on the real endpoints."""
    from types import SimpleNamespace

    from kobi_cpas.sync import methods

    ctx = SimpleNamespace(client=meta_client, poll_timeout=5.0, poll_interval=0.0, sleep=lambda _s: None)
    feed = create_feed(meta_client)
    path = tmp_path / "feed.csv"
    path.write_bytes(to_csv([item("a"), item("b", price="free"), item("c")]))
    upload_id = methods._upload(ctx, feed, path, update_only=False)  # type: ignore[arg-type]
    session = methods._poll_upload(ctx, upload_id)  # type: ignore[arg-type]
    assert session is not None and session["error_count"] == 1
    assert methods._upload_error_rows(ctx, upload_id) == [2]  # type: ignore[arg-type]
    assert set(sandbox_items(sandbox)) == {"a", "c"}


class _ReadRecorder(io.BufferedReader):
    """A file handle that records the size of every read."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.reads: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.reads.append(len(chunk))
        return chunk


def test_a_feed_file_is_streamed_to_meta_in_chunks_never_read_whole(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, tmp_path: Path
) -> None:
    path = tmp_path / "feed.csv"
    rows = [item(f"r{i}", description="x" * 500) for i in range(6000)]  # ~3.5 MB
    path.write_bytes(to_csv(rows))
    feed = create_feed(meta_client)
    with _ReadRecorder(path) as handle:
        upload_id = meta_client.post(f"{feed}/uploads", files={"file": ("feed.csv", handle, "text/csv")})[
            "id"
        ]
    assert sum(handle.reads) == path.stat().st_size  # all of it reached Meta...
    assert max(handle.reads) <= 1 << 20 < path.stat().st_size  # ...a chunk at a time
    meta_client.get(upload_id, params={"fields": "end_time"})  # Meta answers "pending" to the first poll
    session = meta_client.get(upload_id, params={"fields": "num_detected_items,end_time"})
    assert session["num_detected_items"] == 6000


def test_a_throttled_upload_is_sent_again_whole(
    sandbox: SandboxHandle, make_meta_client: Any, tmp_path: Path
) -> None:
    client = make_meta_client(max_retries=3)
    path = tmp_path / "feed.csv"
    path.write_bytes(to_csv([item(f"r{i}", description="y" * 300) for i in range(3000)]))
    feed = create_feed(client)
    sandbox.admin.add_fault("throttle", route="product_feed.uploads.create", times=1)
    with path.open("rb") as handle:
        upload_id = client.post(f"{feed}/uploads", files={"file": ("feed.csv", handle, "text/csv")})["id"]
    assert sandbox.admin.count_requests(route="product_feed.uploads.create") == 2  # refused, then sent again
    client.get(upload_id, params={"fields": "end_time"})  # Meta answers "pending" to the first poll
    session = client.get(upload_id, params={"fields": "num_detected_items,end_time"})
    assert session["num_detected_items"] == 3000
