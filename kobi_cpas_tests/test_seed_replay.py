"""Meta's own sample shapes through the real client and collection code: the JSON samples of the Catalog
Integration page (shared/reference/002) served by a minimal stand-in (kobi_cpas_tests/seed_standin.py, not the
sandbox), collected into a temp Warehouse, and the analyst rows each sample implies asserted exactly.

What the samples imply:

- feed fatals (``/{upload-id}/errors?error_priority=HIGH``): one HIGH fatal GROUP_MISMATCH on field shipping at
  row 10 / column 5 — the item the sync wrote in row 10, or a file-level row naming row 10 when no row map
  exists; Kobi's group-mismatch CTA although the error carries no ``error_type``;
- ``check_batch_request_status``: two HIGH fatals (INVALID_URL on retailed_id_1 line 2, MISSING_REQUIRED_FIELD
  on retailed_id_2 line 1) and one MEDIUM warning (MISSING_RECOMMENDED_FIELD on retailed_id_3 line 2);
- ``catalog_all_errors``: one dictionary row, IMAGE_RESOLUTION_LOW / HIGH with Meta's CTA;
- products with errors and the item view: IMAGE_RESOLUTION_LOW / HIGH on product item 4405565689470921, which
  the samples give without ``retailer_id``: mapped through ``/{id}?fields=retailer_id``, or kept open as an
  unmapped row naming the product item id (never resolving the item's open problem);
- ``commerce_merchant_settings`` with ``ONSITE_CHECKOUT``: the catalog backs an onsite shop.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from kobi_cpas.catalogs.reads import NO_EVENT_SOURCE_CTA, read_catalog
from kobi_cpas.diagnostics import after_sync, check_items, item_ids, poll_catalog
from kobi_cpas.diagnostics import collect as col
from kobi_cpas.diagnostics import meta_checks as mc
from kobi_cpas.diagnostics.dictionary import (
    GENERIC_CTA,
    INGESTION_CTA,
    INGESTION_TITLE_TYPES,
    KOBI_INGESTION_CTA,
)
from kobi_cpas.diagnostics.lifecycle import merge_problems
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.meta.versions import DEFAULT_API_VERSION
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse, replace_rows
from kobi_cpas.warehouse.tables import META_CATALOGS
from kobi_cpas_tests import seed_standin as seed
from kobi_cpas_tests.warehouse_template import seed_work_database

TENANT = "seed_brand"
CATALOG = seed.CATALOG_ID
PID = seed.PRODUCT_ITEM_ID
NOW = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)
GENERIC_TEXTS = set(GENERIC_CTA.values()) | set(INGESTION_CTA.values())
COLUMNS = (
    "source",
    "level",
    "retailer_id",
    "product_item_id",
    "error_type",
    "field",
    "priority",
    "severity",
    "title",
    "description",
    "message",
    "row_number",
    "column_number",
    "cta_source",
    "call_to_action",
    "is_open",
)

FEED_FATAL = seed.seed_json("feed_upload_errors_high")["data"][0]
BATCH = seed.seed_json("check_batch_request_status")["data"][0]
DICTIONARY_ENTRY = seed.seed_json("catalog_all_errors")["all"][0]
ITEM_ERROR = seed.seed_json("products_with_errors")["data"][0]["errors"][0]


@dataclasses.dataclass
class _Dispatch:
    """The module's one stand-in server, answering with the current test's ``SeedStandin`` (stopping a server
    waits out its poll interval, up to 0.5 s per test)."""

    current: seed.SeedStandin | None = None
    url: str = ""

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.current is not None, "a request outside a test"
        return self.current.app(environ, start_response)


@pytest.fixture(scope="module")
def standin_server() -> Iterator[_Dispatch]:
    yield from seed.serve(_Dispatch())  # type: ignore[arg-type]  # serve() only uses .app and .url


@pytest.fixture
def standin(standin_server: _Dispatch) -> Iterator[seed.SeedStandin]:
    """A fresh stand-in (no requests recorded, the lookup's retailer ids) for each test."""
    standin_server.current = seed.SeedStandin(retailer_ids={PID: "10024_1_000"}, url=standin_server.url)
    try:
        yield standin_server.current
    finally:
        standin_server.current = None


@pytest.fixture
def client(standin: seed.SeedStandin) -> Iterator[MetaGraphClient]:
    with MetaGraphClient(
        base_url=standin.url,
        api_version=DEFAULT_API_VERSION,
        access_token="seed-replay-token",
        timeout=10.0,
        max_retries=0,
        sleep=lambda _s: None,
        rng=random.Random(0),
    ) as c:
        yield c


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(seed_work_database(tmp_path / "k.duckdb"), schema=SCHEMA)


def add_sync(
    con: duckdb.DuckDBPyConnection, sync_id: str, method: str, started_at: datetime, **ids: Any
) -> None:
    """A finished catalog_syncs row as kobi_cpas.sync.methods writes it."""
    con.execute(
        """INSERT INTO main.catalog_syncs (sync_id, tenant_id, catalog_id, method, shard, started_at, finished_at,
             items_sent, status, upload_session_id, handle, errors_count, warnings_count)
           VALUES (?, ?, ?, ?, ?, ?, ?, 10, 'finished', ?, ?, ?, ?)""",
        [
            sync_id,
            TENANT,
            CATALOG,
            method,
            -1 if method == "batch" else 0,
            started_at,
            started_at,
            ids.get("upload_session_id"),
            ids.get("handle"),
            ids.get("errors", 0),
            ids.get("warnings", 0),
        ],
    )


def add_upload_sync(con: duckdb.DuckDBPyConnection, *, with_rows: bool) -> None:
    add_sync(
        con, "upload-1", "replace", NOW - timedelta(minutes=20), upload_session_id=seed.UPLOAD_ID, errors=1
    )
    if with_rows:  # the sync wrote coat-1 .. coat-10 in rows 1 .. 10
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _export AS SELECT i AS _rn, 'coat-' || i AS id FROM range(1, 11) t(i)"
        )
        assert col.record_upload_rows(con, "upload-1") == 10


def table(con: duckdb.DuckDBPyConnection, where: str = "true") -> list[dict[str, Any]]:
    cur = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM main.catalog_diagnostics WHERE tenant_id = ? AND {where} "
        "ORDER BY source, retailer_id, error_type",
        [TENANT],
    )
    return [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]


def feed_fatal_row(retailer_id: str, level: str) -> dict[str, Any]:
    return {
        "source": "feed_upload",
        "level": level,
        "retailer_id": retailer_id,
        "product_item_id": None,
        "error_type": "GROUP_MISMATCH",
        "field": "shipping",
        "priority": "HIGH",
        "severity": "fatal",
        "title": "Group Mismatch for Property",
        "description": "Property shipping must have the same value for all items in the same group.",
        "message": "Group Mismatch for Property: shipping.",
        "row_number": 10,
        "column_number": 5,  # not requested (the SDK lacks it) but read when Meta sends it, as its sample does
        "cta_source": "kobi_ingestion",
        "call_to_action": KOBI_INGESTION_CTA["GROUP_MISMATCH"],
        "is_open": True,
    }


def batch_rows() -> list[dict[str, Any]]:
    url_error, availability_error = BATCH["errors"]
    (warning,) = BATCH["warnings"]
    out = []
    for msg, error_type, priority, severity in (
        (url_error, "INVALID_URL", "HIGH", "fatal"),
        (availability_error, "MISSING_REQUIRED_FIELD", "HIGH", "fatal"),
        (warning, "MISSING_RECOMMENDED_FIELD", "MEDIUM", "warning"),
    ):
        title, description = msg["message"].split(": ", 1)
        out.append(
            {
                "source": "batch_request",
                "level": "item",
                "retailer_id": msg["id"],
                "product_item_id": None,
                "error_type": error_type,
                "field": "",
                "priority": priority,
                "severity": severity,
                "title": title,
                "description": description,
                "message": msg["message"],
                "row_number": msg["line"],
                "column_number": None,
                "cta_source": "kobi_ingestion",
                "call_to_action": KOBI_INGESTION_CTA[error_type],
                "is_open": True,
            }
        )
    return out


def item_row(retailer_id: str, level: str = "item", message: str | None = None) -> dict[str, Any]:
    return {
        "source": "meta_item_check",
        "level": level,
        "retailer_id": retailer_id,
        "product_item_id": PID,
        "error_type": "IMAGE_RESOLUTION_LOW",
        "field": "",
        "priority": "HIGH",
        "severity": "MUST_FIX",
        "title": DICTIONARY_ENTRY["title"],
        "description": DICTIONARY_ENTRY["description"],
        "message": message,
        "row_number": None,
        "column_number": None,
        "cta_source": "dictionary",
        "call_to_action": DICTIONARY_ENTRY["call_to_action"],
        "is_open": True,
    }


# -- the samples themselves -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "feed_upload_errors_high",
        "check_batch_request_status",
        "catalog_all_errors",
        "products_with_errors",
        "item_errors",
        "commerce_merchant_settings",
    ],
)
def test_samples_are_parsed_with_only_the_documented_edits(name: str) -> None:
    edits = seed.seed_edits(name)
    assert edits, "the page prints none of its samples as valid JSON"
    for printed, parsed_as in edits:
        dropped = parsed_as == "" and printed.replace("...", "").strip(" \n,") == "" and "," in printed
        requoted = printed.rstrip(",") in ("“", "”") and parsed_as == '"'
        assert dropped or requoted, (printed, parsed_as)


def test_the_samples_carry_the_shapes_this_module_asserts() -> None:
    # Meta's upload error has no error_type and gives row and column at the top level.
    assert "error_type" not in FEED_FATAL and (FEED_FATAL["row_number"], FEED_FATAL["column_number"]) == (
        10,
        5,
    )
    # The products and item samples have no retailer_id.
    assert set(seed.seed_json("products_with_errors")["data"][0]) == {"id", "errors"}
    assert set(seed.seed_json("item_errors")) == {"id", "errors"}
    assert ITEM_ERROR == DICTIONARY_ENTRY  # the same error text in all three samples


# -- feed upload fatals -----------------------------------------------------------------------------------


def test_feed_fatal_sample_lands_on_the_item_of_row_10(client: MetaGraphClient, wh: Warehouse) -> None:
    with wh.connect() as con:
        add_upload_sync(con, with_rows=True)
        report = after_sync.fatal_errors_for_sync(client, con, TENANT, CATALOG, "upload-1", now=NOW)
        assert (report.status, report.fatal_errors, report.warnings, report.items_rejected) == (
            "finished",
            1,
            0,
            1,
        )
        assert table(con) == [feed_fatal_row("coat-10", "item")]


def test_feed_fatal_sample_without_a_row_map_is_a_file_row_naming_row_10(
    client: MetaGraphClient, wh: Warehouse
) -> None:
    with wh.connect() as con:
        add_upload_sync(con, with_rows=False)
        after_sync.fatal_errors_for_sync(client, con, TENANT, CATALOG, "upload-1", now=NOW)
        assert table(con) == [feed_fatal_row("", "file")]


@pytest.mark.parametrize("title", sorted(INGESTION_TITLE_TYPES))
def test_every_known_ingestion_title_finds_its_cta_without_an_error_type(wh: Warehouse, title: str) -> None:
    """The sample's shape (summary "<Title>: <field>.", no error_type) for each title the dictionary knows."""
    error_type = INGESTION_TITLE_TYPES[title]
    printed = " ".join(
        w.capitalize() for w in title.split()
    )  # Meta capitalises titles; the match ignores case
    error = {**FEED_FATAL, "summary": f"{printed}: shipping.", "error_priority": "HIGH", "_n": 0}
    with wh.connect() as con:
        add_upload_sync(con, with_rows=True)
        fetched = col.FetchedSyncErrors(col.sync_ref(con, "upload-1"), "finished", upload_errors=[error])
        col.store_sync_errors(con, fetched, NOW)
        col.stage_sync_problems(con, TENANT, CATALOG, NOW)
        merge_problems(con, TENANT, CATALOG, NOW)
        (row,) = table(con)
    assert (row["error_type"], row["field"], row["retailer_id"]) == (error_type, "shipping", "coat-10")
    assert row["call_to_action"] == KOBI_INGESTION_CTA[error_type] and row["cta_source"] == "kobi_ingestion"


# -- batch errors and warning -----------------------------------------------------------------------------


def test_batch_sample_gives_two_fatals_and_a_warning(client: MetaGraphClient, wh: Warehouse) -> None:
    with wh.connect() as con:
        add_sync(
            con, "batch-1", "batch", NOW - timedelta(minutes=10), handle=seed.HANDLE, errors=2, warnings=1
        )
        report = after_sync.fatal_errors_for_sync(client, con, TENANT, CATALOG, "batch-1", now=NOW)
        assert (report.fatal_errors, report.warnings, report.items_rejected) == (2, 1, 2)
        assert table(con) == batch_rows()


# -- the whole poll: dictionary, ingestion errors and item errors -------------------------------------------


def test_one_poll_of_every_sample_gives_the_analyst_rows_each_implies(
    client: MetaGraphClient, standin: seed.SeedStandin, wh: Warehouse
) -> None:
    with wh.connect() as con:
        add_upload_sync(con, with_rows=True)
        add_sync(
            con, "batch-1", "batch", NOW - timedelta(minutes=10), handle=seed.HANDLE, errors=2, warnings=1
        )
    report = poll_catalog(client, wh, TENANT, CATALOG, now=NOW, catalog_diagnostics=False)
    assert report.ok and report.syncs_fetched == 2 and report.items_with_errors == 1
    with wh.connect() as con:
        got = table(con)
        dictionary = con.execute(
            "SELECT locale, error_type, error_priority, title, description, call_to_action, cta_is_generic "
            "FROM main.catalog_error_types"
        ).fetchall()
    assert dictionary == [
        (
            "en_US",
            "IMAGE_RESOLUTION_LOW",
            "HIGH",
            DICTIONARY_ENTRY["title"],
            DICTIONARY_ENTRY["description"],
            DICTIONARY_ENTRY["call_to_action"],
            False,
        )
    ]
    expected = sorted(
        [*batch_rows(), feed_fatal_row("coat-10", "item"), item_row("10024_1_000")],
        key=lambda r: (r["source"], r["retailer_id"], r["error_type"]),
    )
    assert got == expected
    assert all(r["call_to_action"].strip() and r["call_to_action"] not in GENERIC_TEXTS for r in got)
    assert standin.lookups() == [PID]  # the product item id the sample gave without retailer_id

    # The item view of the same item (Meta's item sample, again without retailer_id): mapped from the row
    # the poll stored, without another lookup, and the problem stays the same open row.
    counts = check_items(client, wh, TENANT, CATALOG, [PID], now=NOW + timedelta(hours=1))
    assert (counts.new, counts.seen, counts.resolved) == (0, 1, 0)
    assert standin.lookups() == [PID]
    with wh.connect() as con:
        assert table(con, "source = 'meta_item_check'") == [item_row("10024_1_000")]


def test_lookup_is_once_per_unknown_id_per_run(client: MetaGraphClient, standin: seed.SeedStandin) -> None:
    lookup = item_ids.RetailerIdLookup(client)
    products = [{"id": PID, "errors": [ITEM_ERROR]}, {"id": PID, "errors": [ITEM_ERROR]}, {"id": "77"}]
    fetch = mc.ItemErrorsFetch(products, ("HIGH",))
    item_ids.map_retailer_ids(fetch, {}, lookup)
    item_ids.map_retailer_ids(
        mc.ItemErrorsFetch([{"id": PID}], ("MEDIUM",)), {}, lookup
    )  # same run, asks nothing
    assert standin.lookups() == [PID, "77"] and lookup.requests == 2
    assert fetch.retailer_ids == {PID: "10024_1_000"} and [p.get("retailer_id") for p in products] == [
        "10024_1_000",
        "10024_1_000",
        None,
    ]
    assert set(fetch.unmapped) == {"77"} and "does not exist" in fetch.unmapped["77"]
    # An id earlier polls already mapped is not asked for at all.
    known = mc.ItemErrorsFetch([{"id": "88", "errors": [ITEM_ERROR]}], ("HIGH",))
    item_ids.map_retailer_ids(known, {"88": "sku-88"}, lookup)
    assert known.products[0]["retailer_id"] == "sku-88" and "88" not in standin.lookups()
    # Beyond the run's limit nothing is asked: the item stays unmapped, saying why.
    capped = item_ids.RetailerIdLookup(client, max_requests=0)
    over = mc.ItemErrorsFetch([{"id": PID, "errors": [ITEM_ERROR]}], ("HIGH",))
    item_ids.map_retailer_ids(over, {}, capped)
    assert capped.requests == 0 and "limit of 0 lookups" in over.unmapped[PID]
    assert standin.lookups() == [PID, "77"]


def test_a_failed_lookup_keeps_the_items_high_problem_open_and_names_the_product_item(
    client: MetaGraphClient, standin: seed.SeedStandin, wh: Warehouse
) -> None:
    # Earlier, Meta reported the image error on coat-10 under another product item id (the item was
    # re-created since); now the products sample reports it on 4405565689470921, without retailer_id.
    earlier = NOW - timedelta(hours=1)
    with wh.connect() as con:
        prior = mc.ItemErrorsFetch(
            [{"id": "999", "retailer_id": "coat-10", "errors": [ITEM_ERROR]}], ("HIGH",)
        )
        mc.stage_item_errors(con, TENANT, CATALOG, prior, earlier)
        assert merge_problems(con, TENANT, CATALOG, earlier).new == 1
    standin.retailer_ids.clear()  # the lookup fails
    report = poll_catalog(client, wh, TENANT, CATALOG, now=NOW, sync_errors=False, catalog_diagnostics=False)
    assert report.ok and report.merge.resolved == 0
    with wh.connect() as con:
        got = table(con, "source = 'meta_item_check'")
    (unmapped,) = [r for r in got if r["level"] == "unmapped_item"]
    assert got == [
        {**item_row("", "unmapped_item"), "message": unmapped["message"]},
        # still open; its texts are those of its last sighting (before the dictionary was read)
        {**item_row("coat-10"), "product_item_id": "999", "cta_source": "meta"},
    ]
    assert PID in unmapped["message"] and "retailer_id" in unmapped["message"]
    assert standin.lookups() == [PID]

    # The lookup works again: the unmapped row resolves, the item's problem is reported under coat-10.
    standin.retailer_ids[PID] = "coat-10"
    later = NOW + timedelta(hours=1)
    report = poll_catalog(
        client, wh, TENANT, CATALOG, now=later, sync_errors=False, catalog_diagnostics=False
    )
    with wh.connect() as con:
        got = table(con, "source = 'meta_item_check'")
    assert [(r["level"], r["retailer_id"], r["product_item_id"], r["is_open"]) for r in got] == [
        ("unmapped_item", "", PID, False),
        ("item", "coat-10", PID, True),
    ]


# -- the catalog node -------------------------------------------------------------------------------------


def test_commerce_merchant_settings_sample_marks_an_onsite_shop(
    client: MetaGraphClient, wh: Warehouse
) -> None:
    rec = read_catalog(client, TENANT, CATALOG, NOW)
    with wh.connect() as con:
        replace_rows(con, META_CATALOGS, [dataclasses.asdict(rec)], "tenant_id = ?", [TENANT])
        row = con.execute(
            "SELECT catalog_id, commerce_merchant_settings_id, commerce_cta, is_onsite_shop, has_event_source, "
            "call_to_action FROM main.meta_catalogs WHERE tenant_id = ?",
            [TENANT],
        ).fetchall()
    assert row == [
        (
            CATALOG,
            "2214103588714027",
            "ONSITE_CHECKOUT",
            True,
            False,
            NO_EVENT_SOURCE_CTA.format(catalog_id=CATALOG),
        )
    ]
