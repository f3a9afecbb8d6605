"""Converted product ids are the RETAILER's product items: looked up once each on the sandbox (GET
/{product-item-id}), cached in retailer_product_items (unknown ids as not_found), matched to the brand's feed by
retailer id (GTIN / MPN only when the feed has such a column), with match rates per tenant and retailer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
from facebook_business.adobjects.productitem import ProductItem

from kobi_cpas.insights.products import (
    LOOKUP_FIELDS,
    lookup_product_items,
    match_rates,
    match_to_feed,
)
from kobi_cpas.insights.pull import pull_account_days
from kobi_cpas.insights.schema import CPAS_DASHBOARD_SQL, ensure_schema
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.sync.tables import FEED_ITEMS
from meta_sandbox import catalog_model as cm

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

TENANT = "anatolia_home"
BRAND_CATALOG = "2000000000000001"
ACCOUNTS = {"trendyol": "act_4000000000000001", "hepsiburada": "act_4000000000000002"}
N_ITEMS = 80
LEFT_OUT_OF_FEED = {"AH-0003", "AH-0007"}  # in the brand catalog, not in the brand's current feed
# Every GET of one node with the lookup fields (an unknown id has no route in the request log, so match paths).
LOOKUP_PATH = r"^/v[0-9.]+/[0-9]+$"


def _brand_items() -> list[dict[str, str]]:
    return [
        {
            "title": f"Anatolia towel {i}",
            "brand": "Anatolia Home",
            "price": f"{100 + i}.90 TRY",
            "id": f"AH-{i:04d}",
        }
        for i in range(N_ITEMS)
    ]


def _today(sandbox: SandboxHandle) -> date:
    return sandbox.admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()


@pytest.fixture
def world_with_brand(sandbox: SandboxHandle) -> SandboxHandle:
    """The brand's catalog holds its items (as after a feed upload); the clock is frozen."""
    sandbox.admin.freeze_clock(True)
    world = sandbox.world
    with world.lock:
        catalog = world.catalogs[BRAND_CATALOG]
        for item in _brand_items():
            values = {k: v for k, v in item.items() if k != "id"}
            cm.upsert_item(world, catalog, item["id"], values, replace=True, at=world.now())
    return sandbox


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An analyst-like database with the brand's feed items (all catalog items but LEFT_OUT_OF_FEED)."""
    db = duckdb.connect()
    ensure_schema(db)
    db.execute(FEED_ITEMS.ddl())
    db.executemany(
        "INSERT INTO feed_items (tenant_id, snapshot_id, retailer_id, title, brand) VALUES (?, 's1', ?, ?, ?)",
        [
            (TENANT, i["id"], i["title"], i["brand"])
            for i in _brand_items()
            if i["id"] not in LEFT_OUT_OF_FEED
        ],
    )
    yield db
    db.close()


def _pull(
    client: MetaGraphClient,
    con: Any,
    retailer: str,
    days: list[date],
    families: tuple[str, ...] = ("product",),
) -> None:
    pull_account_days(
        client,
        con,
        tenant_id=TENANT,
        retailer=retailer,
        ad_account_id=ACCOUNTS[retailer],
        days=days,
        levels=("campaign",),
        families=families,
        sleep=lambda s: None,
        poll_interval=0.01,
    )


def _ids(con: Any, retailer: str | None = None) -> set[str]:
    where = "WHERE retailer = ?" if retailer else ""
    rows = con.execute(
        f"SELECT DISTINCT action_converted_product_id FROM shared_item_product_metrics {where}",
        [retailer] if retailer else [],
    ).fetchall()
    return {r[0] for r in rows}


def _lookups(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    calls = sandbox.admin.requests(method="GET", path_regex=LOOKUP_PATH)
    return [c for c in calls if c["fields"] == ",".join(LOOKUP_FIELDS)]


def _map(client: MetaGraphClient, con: Any) -> Any:
    report = lookup_product_items(client, con, tenant_id=TENANT)
    match_to_feed(con, TENANT)
    return report


def test_lookup_fields_exist_on_metas_product_item() -> None:
    assert set(LOOKUP_FIELDS) <= set(dir(ProductItem.Field))


def test_converted_ids_are_retailer_items_mapped_through_lookups(
    meta_client: MetaGraphClient, world_with_brand: SandboxHandle, con: Any
) -> None:
    sandbox = world_with_brand
    today = _today(sandbox)
    _pull(meta_client, con, "trendyol", [today - timedelta(days=3), today - timedelta(days=2)])
    ids = _ids(con)
    world = sandbox.world
    brand_ids = set(world.product_item_index[BRAND_CATALOG].values())
    assert ids and not ids & brand_ids  # the retailer's items, never the brand catalog's

    sandbox.admin.clear_requests()
    report = _map(meta_client, con)
    calls = _lookups(sandbox)
    assert report.requested == len(ids) == len(calls)
    assert sorted(c["path"].rsplit("/", 1)[-1] for c in calls) == sorted(ids)  # each id once
    assert len(sandbox.admin.requests(method="GET", path_regex=LOOKUP_PATH)) == len(calls)  # no other fields

    cached = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT product_item_id, lookup_status, retailer_id, gtin, feed_retailer_id, match_method "
            "FROM retailer_product_items WHERE tenant_id = ? AND retailer = 'trendyol'",
            [TENANT],
        ).fetchall()
    }
    assert set(cached) == ids
    feed_ids = {i["id"] for i in _brand_items()} - LEFT_OUT_OF_FEED
    shared = own_sku = 0
    for pid, (status, sku, gtin, feed_rid, method) in cached.items():
        node = world.product_items.get(pid)
        if node is None:
            assert (status, sku, method) == ("not_found", None, "unmatched")
            continue
        fields = world.catalogs[node.catalog_id].items[node.retailer_id]
        assert (status, sku, gtin) == ("found", node.retailer_id, fields["gtin"])
        if node.retailer_id in feed_ids:
            shared += 1
            assert (feed_rid, method) == (node.retailer_id, "retailer_id")
        else:
            own_sku += 1
            assert (feed_rid, method) == (None, "unmatched")
    assert shared and own_sku  # both cases occur, so the mapping (not an id coincidence) is what is tested

    # the product metrics rows carry the brand feed item through the mapping
    rows = con.execute(
        """SELECT p.retailer_id, p.product_title, p.match_method, m.feed_retailer_id, f.title
           FROM shared_item_product_metrics p
           JOIN retailer_product_items m ON m.tenant_id = p.tenant_id AND m.retailer = p.retailer
                AND m.product_item_id = p.action_converted_product_id
           LEFT JOIN feed_items f ON f.tenant_id = p.tenant_id AND f.retailer_id = m.feed_retailer_id"""
    ).fetchall()
    assert rows and all(r[0] == r[3] and r[1] == r[4] and r[2] is not None for r in rows)
    assert any(r[0] is not None for r in rows) and any(r[0] is None for r in rows)


def test_second_run_makes_no_lookup_requests_for_cached_ids(
    meta_client: MetaGraphClient, world_with_brand: SandboxHandle, con: Any
) -> None:
    sandbox = world_with_brand
    today = _today(sandbox)
    _pull(meta_client, con, "trendyol", [today - timedelta(days=3)])
    first_ids = _ids(con)
    first = _map(meta_client, con)
    assert first.requested == len(first_ids) > 0

    sandbox.admin.clear_requests()
    again = _map(meta_client, con)
    assert again.requested == 0 and _lookups(sandbox) == []

    # a pull of more days: only the ids never seen are asked for
    _pull(meta_client, con, "trendyol", [today - timedelta(days=3), today - timedelta(days=2)])
    new_ids = _ids(con) - first_ids
    sandbox.admin.clear_requests()
    third = _map(meta_client, con)
    asked = {c["path"].rsplit("/", 1)[-1] for c in _lookups(sandbox)}
    assert third.requested == len(asked) == len(new_ids) and asked == new_ids


def test_unknown_ids_cached_as_not_found_and_failures_retried(
    make_meta_client: Any, world_with_brand: SandboxHandle, con: Any
) -> None:
    sandbox = world_with_brand
    client = make_meta_client(max_retries=0)
    _pull(client, con, "trendyol", [_today(sandbox) - timedelta(days=2)])
    world = sandbox.world
    ids = sorted(_ids(con))
    known = [pid for pid in ids if pid in world.product_items]
    # the retailer delists one converted item after the conversion: Meta no longer knows its id
    gone = known[0]
    with world.lock:
        node = world.product_items[gone]
        cm.delete_item(world, world.catalogs[node.catalog_id], node.retailer_id)
    unknown = {pid for pid in ids if pid not in world.product_items}
    assert unknown  # the delisted item at least
    # and one lookup hits a transient error (no client retries here): cached as failed, asked again next run;
    # the lookups stop there (the rest wait for the next run, not to burn the budget)
    flaky = max(pid for pid in ids if pid not in unknown)
    sandbox.admin.add_fault("http_500", path_regex=f"/{flaky}$", times=1)

    report = _map(client, con)
    status = dict(con.execute("SELECT product_item_id, lookup_status FROM retailer_product_items").fetchall())
    after_flaky = {pid for pid in ids if pid > flaky}  # one retailer: looked up in id order
    assert set(status) == set(ids) - after_flaky and gone in status
    assert {pid for pid, s in status.items() if s == "not_found"} == unknown - after_flaky
    assert status[flaky] == "failed" and report.failed == 1 and flaky in report.errors[0]
    assert "anatolia_home" in report.errors[0] and "trendyol" in report.errors[0]
    errors = con.execute(
        "SELECT lookup_error FROM retailer_product_items WHERE lookup_status = 'not_found'"
    ).fetchall()
    assert errors and all("does not exist" in e[0] for e in errors)

    sandbox.admin.clear_requests()
    retry = _map(client, con)
    asked = {c["path"].rsplit("/", 1)[-1] for c in _lookups(sandbox)}
    assert asked == {flaky} | after_flaky  # not_found is never asked again; failed is
    assert retry.failed == 0 and retry.requested == len(asked)
    final = dict(con.execute("SELECT product_item_id, lookup_status FROM retailer_product_items").fetchall())
    assert set(final) == set(ids) and {pid for pid, s in final.items() if s == "not_found"} == unknown


def test_match_rate_per_tenant_and_retailer(
    meta_client: MetaGraphClient, world_with_brand: SandboxHandle, con: Any
) -> None:
    sandbox = world_with_brand
    days = [_today(sandbox) - timedelta(days=3), _today(sandbox) - timedelta(days=2)]
    for retailer in ACCOUNTS:
        _pull(meta_client, con, retailer, days, families=("segment", "product"))
    _map(meta_client, con)
    world = sandbox.world
    feed_ids = {i["id"] for i in _brand_items()} - LEFT_OUT_OF_FEED
    values = dict(
        con.execute(
            """SELECT retailer || '|' || action_converted_product_id, sum(value) FROM shared_item_product_metrics
               WHERE level = 'campaign' AND metric = 'converted_product_value' AND attribution_window = '7d_click'
               GROUP BY ALL"""
        ).fetchall()
    )
    rates = {(r["tenant_id"], r["retailer"]): r for r in match_rates(con)}
    assert set(rates) == {(TENANT, r) for r in ACCOUNTS}
    for retailer in ACCOUNTS:
        ids = _ids(con, retailer)
        found = {pid for pid in ids if pid in world.product_items}
        matched = {pid for pid in found if world.product_items[pid].retailer_id in feed_ids}
        # some items are unmatched: the retailer's own SKU, delisted, or left out of the brand's feed
        assert 0 < len(matched) < len(ids)
        row = rates[(TENANT, retailer)]
        assert row["product_items"] == len(ids) and row["found"] == len(found)
        assert row["not_found"] == len(ids) - len(found) and row["pending"] == 0
        assert row["matched"] == row["matched_by_retailer_id"] == len(matched)
        assert row["matched_by_gtin"] == row["matched_by_mpn"] == 0  # the brand feed has no gtin/mpn column
        assert row["unmatched"] == len(ids) - len(matched)
        assert row["match_rate"] == pytest.approx(len(matched) / len(ids), abs=1e-4)
        total = sum(values.get(f"{retailer}|{pid}", Decimal(0)) for pid in ids)
        part = sum(values.get(f"{retailer}|{pid}", Decimal(0)) for pid in matched)
        assert row["converted_value"] == total and row["matched_value"] == part
        assert row["value_match_rate"] == pytest.approx(float(part / total), abs=1e-4)
    assert rates[(TENANT, "trendyol")]["match_rate"] != rates[(TENANT, "hepsiburada")]["match_rate"]

    # the dashboard's product columns go through the same mapping
    con.execute(
        "CREATE TABLE execution_manifest (tenant_id VARCHAR, retailer VARCHAR, campaign_id VARCHAR, "
        "campaign_name VARCHAR, catalog_segment_id VARCHAR)"
    )
    dash = con.execute(
        f"SELECT retailer, sum(converted_product_value), sum(matched_product_value) FROM ({CPAS_DASHBOARD_SQL}) "
        "GROUP BY ALL"
    ).fetchall()
    by_retailer = {r[0]: (r[1], r[2]) for r in dash}
    for retailer in ACCOUNTS:
        row = rates[(TENANT, retailer)]
        assert by_retailer[retailer] == (row["converted_value"], row["matched_value"])


def test_gtin_then_mpn_when_the_feed_has_those_columns() -> None:
    db = duckdb.connect()
    ensure_schema(db)
    db.execute(
        "CREATE TABLE feed_items (tenant_id VARCHAR, retailer_id VARCHAR, title VARCHAR, brand VARCHAR, "
        "gtin VARCHAR, mpn VARCHAR)"
    )
    db.executemany(
        "INSERT INTO feed_items VALUES (?, ?, ?, 'B', ?, ?)",
        [
            ("t", "SKU-1", "one", "111", None),
            ("t", "SKU-2", "two", "222", "M-2"),
            ("t", "SKU-3", "three", None, "M-3"),
        ],
    )
    rows = [  # (product item, retailer's SKU, gtin, mpn)
        ("p1", "SKU-1", "222", None),  # retailer id wins over a GTIN pointing elsewhere
        ("p2", "TY-9", "222", "M-3"),  # GTIN wins over MPN
        ("p3", "TY-8", None, "M-3"),  # MPN
        ("p4", "TY-7", "999", "M-9"),  # nothing
    ]
    db.executemany(
        "INSERT INTO retailer_product_items (tenant_id, retailer, product_item_id, retailer_id, gtin, mpn, "
        "lookup_status, looked_up_at, match_method, matched_at) VALUES ('t', 'r', ?, ?, ?, ?, 'found', now(), "
        "'unmatched', now())",
        rows,
    )
    match_to_feed(db, "t")
    got = db.execute(
        "SELECT product_item_id, feed_retailer_id, match_method FROM retailer_product_items ORDER BY 1"
    ).fetchall()
    assert got == [
        ("p1", "SKU-1", "retailer_id"),
        ("p2", "SKU-2", "gtin"),
        ("p3", "SKU-3", "mpn"),
        ("p4", None, "unmatched"),
    ]
