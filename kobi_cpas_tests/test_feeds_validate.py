"""Validation rules, issues table, normalisation, stage tables per tenant."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from kobi_cpas.feeds import FeedFileError, ingest_feed, stage_table_names, tenant_slug
from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.feeds.snapshot import SnapshotResult
from kobi_cpas.feeds.validate import ISSUE_COLUMNS, ROW_RULES, STORED_RESULT_COLUMNS

BASE = {
    "title": "Linen shirt",
    "description": "A light linen shirt.",
    "availability": "in stock",
    "condition": "new",
    "price": "100.00 TRY",
    "link": "https://shop.example.com/p/1",
    "image_link": "https://cdn.example.com/1.jpg",
    "brand": "Acme",
    "google_product_category": "Apparel & Accessories > Clothing",
    "quantity_to_sell_on_facebook": "3",
}

# retailer id -> overrides; the expected issues are listed in EXPECTED below.
ITEMS: list[tuple[str, dict[str, str]]] = [
    ("good-1", {}),
    (
        "good-full",
        {
            "sale_price": "80 TRY",
            "sale_price_effective_date": "2025-06-01T00:00+03:00/2025-06-30T23:59+03:00",
            "additional_image_link": "https://cdn.example.com/2.jpg, https://cdn.example.com/3.jpg",
            "gender": "Unisex",
            "age_group": "All Ages",
            "item_group_id": "GOK",
            "shipping": "TR::Std:0 TRY",
            "rich_text_description": "<p>A <b>light</b> linen shirt.</p>",
            "video": '[{"url": "https://cdn.example.com/1.mp4", "tag": ["360"]}, {"url": "https://cdn.example.com/2.mp4"}]',
        },
    ),
    (
        "good-group-2",
        {"item_group_id": "GOK", "shipping": "TR::Std:0 TRY", "link": "http://shop.example.com/x?a=b@c"},
    ),
    (
        "case-and-spaces",
        {
            "availability": "  IN STOCK ",
            "condition": "New",
            "price": " 19.99 eur ",
            "title": "\tPadded title  ",
        },
    ),
    ("miss-title", {"title": "   "}),
    ("miss-brand", {"brand": ""}),
    ("bad-avail", {"availability": "Maybe"}),
    ("bad-cond", {"condition": "mint"}),
    ("bad-gender", {"gender": "women"}),
    ("bad-age", {"age_group": "grown-up"}),
    ("price-dollar", {"price": "$299"}),
    ("price-no-currency", {"price": "299"}),
    ("price-comma", {"price": "19,99 EUR"}),
    ("price-3-decimals", {"price": "19.999 EUR"}),
    ("price-unknown-currency", {"price": "19.99 XYZ"}),
    ("price-integer-ok", {"price": "1299 TRY"}),
    ("sale-higher", {"sale_price": "120.00 TRY"}),
    ("sale-equal", {"sale_price": "100 TRY"}),
    ("sale-currency", {"sale_price": "80.00 EUR"}),
    ("sale-bad", {"sale_price": "cheap"}),
    ("date-no-slash", {"sale_price": "80 TRY", "sale_price_effective_date": "2025-06-01"}),
    ("date-garbage", {"sale_price": "80 TRY", "sale_price_effective_date": "2025-13-45/2025-14-01"}),
    ("date-reversed", {"sale_price": "80 TRY", "sale_price_effective_date": "2025-06-30/2025-06-01"}),
    ("date-no-sale", {"sale_price_effective_date": "2025-06-01/2025-06-30"}),
    ("url-ftp", {"link": "ftp://shop.example.com/p"}),
    ("url-space", {"image_link": "https://cdn.example.com/my image.jpg"}),
    ("url-userinfo", {"link": "https://user:secret@shop.example.com/p"}),
    ("url-no-scheme", {"image_link": "cdn.example.com/1.jpg"}),
    ("url-list-bad", {"additional_image_link": "https://cdn.example.com/2.jpg,not a url"}),
    ("long-title", {"title": "t" * 151}),
    ("title-150-multibyte", {"title": "ğ" * 150}),
    ("long-brand", {"brand": "b" * 101}),
    ("long-desc", {"description": "d" * 5001}),
    ("i" * 101, {}),
    ("qty-negative", {"quantity_to_sell_on_facebook": "-1"}),
    ("qty-decimal", {"quantity_to_sell_on_facebook": "3.5"}),
    ("qty-zero", {"quantity_to_sell_on_facebook": "0"}),
    ("no-category", {"google_product_category": ""}),
    ("video-bare-url", {"video": "https://cdn.example.com/1.mp4"}),
    ("video-ftp", {"video": '[{"url": "ftp://cdn.example.com/1.mp4"}]'}),
    ("dup", {"title": "first copy"}),
    ("dup", {"title": "second copy"}),
    ("gm-1", {"item_group_id": "GM", "brand": "Acme", "shipping": "TR::Std:0 TRY"}),
    ("gm-2", {"item_group_id": "GM", "brand": "Other", "shipping": "TR::Std:0 TRY"}),
    ("gs-1", {"item_group_id": "GS", "shipping": "TR::Std:0 TRY"}),
    ("gs-2", {"item_group_id": "GS", "shipping": "TR::Express:50 TRY"}),
    ("gn-1", {"item_group_id": "GN", "shipping": "TR::Std:0 TRY"}),
    ("gn-2", {"item_group_id": "GN", "shipping": ""}),  # no value differs from a value
    ("", {"title": "no id"}),
    ("dup", {"title": "third copy"}),
]
LONG_ID = "i" * 101

EXPECTED_ERRORS = {
    ("miss-title", "title", "missing_required_field"),
    ("miss-brand", "brand", "missing_required_field"),
    ("bad-avail", "availability", "invalid_value"),
    ("bad-cond", "condition", "invalid_value"),
    ("bad-gender", "gender", "invalid_value"),
    ("bad-age", "age_group", "invalid_value"),
    ("price-dollar", "price", "invalid_price_format"),
    ("price-no-currency", "price", "invalid_price_format"),
    ("price-comma", "price", "invalid_price_format"),
    ("price-3-decimals", "price", "invalid_price_format"),
    ("price-unknown-currency", "price", "unknown_currency"),
    ("sale-higher", "sale_price", "sale_price_not_lower"),
    ("sale-equal", "sale_price", "sale_price_not_lower"),
    ("sale-currency", "sale_price", "sale_price_currency_mismatch"),
    ("sale-bad", "sale_price", "invalid_price_format"),
    ("date-no-slash", "sale_price_effective_date", "invalid_date_range"),
    ("date-garbage", "sale_price_effective_date", "invalid_date_range"),
    ("date-reversed", "sale_price_effective_date", "date_range_start_not_before_end"),
    ("url-ftp", "link", "invalid_url"),
    ("url-space", "image_link", "invalid_url"),
    ("url-userinfo", "link", "invalid_url"),
    ("url-no-scheme", "image_link", "invalid_url"),
    ("url-list-bad", "additional_image_link", "invalid_url"),
    ("long-title", "title", "too_long"),
    ("long-brand", "brand", "too_long"),
    ("long-desc", "description", "too_long"),
    (LONG_ID, "id", "too_long"),
    ("qty-negative", "quantity_to_sell_on_facebook", "invalid_quantity"),
    ("qty-decimal", "quantity_to_sell_on_facebook", "invalid_quantity"),
    ("dup", "id", "duplicate_id"),
    # Meta rejects the items whose shipping differs from the group's first item ("Group Mismatch for Property:
    # shipping", a fatal upload error in Meta's Product Feed Upload Errors reference); the first stays valid.
    ("gs-2", "shipping", "item_group_mismatch"),
    ("gn-2", "shipping", "item_group_mismatch"),
    (None, "id", "missing_required_field"),
}
EXPECTED_WARNINGS = {
    ("date-no-sale", "sale_price_effective_date", "sale_dates_without_sale_price"),
    ("no-category", "google_product_category", "missing_category"),
    # Meta reports a video it cannot fetch on the item and keeps the item: a warning, the item is sent.
    ("video-bare-url", "video", "invalid_video"),
    ("video-ftp", "video", "invalid_video"),
    # No Meta source requires one brand per group: a warning for the group, both items stay valid.
    (None, "brand", "item_group_inconsistent"),
}


def write_feed(
    path: Path, items: list[tuple[str, dict[str, str]]], extra_columns: tuple[str, ...] = ()
) -> Path:
    cols = [*COLUMNS, *extra_columns]
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for rid, over in items:
            row = {**BASE, "id": rid, **over}
            w.writerow([row.get(c, "") for c in cols])
    return path


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate")
    path = write_feed(tmp / "feed.csv", ITEMS, extra_columns=("mpn",))
    con = duckdb.connect(str(tmp / "v.duckdb"))
    result = ingest_feed(
        con, tenant_id="acme", snapshot_id="snap-1", path=path, fmt="csv", source_label="test"
    )
    yield con, result
    con.close()


def _ingest_items(tmp_path: Path, tenant_id: str, items) -> tuple[duckdb.DuckDBPyConnection, SnapshotResult]:
    """Ingest ``items`` (see ``write_feed``) as tenant ``tenant_id``'s CSV feed into an in-memory database."""
    con = duckdb.connect()
    path = write_feed(tmp_path / f"{tenant_id}.csv", items)
    return con, ingest_feed(
        con, tenant_id=tenant_id, snapshot_id="1", path=path, fmt="csv", source_label=tenant_id
    )


def _issues(con, result, severity: str) -> set[tuple]:
    return set(
        con.execute(
            f"SELECT retailer_id, field, code FROM {result.issues_table} WHERE severity = ?", [severity]
        ).fetchall()
    )


def test_each_rule_reports_the_named_issue_and_nothing_else(ingested):
    con, result = ingested
    errors = _issues(con, result, "error")
    assert errors - EXPECTED_ERRORS == set(), "unexpected errors"
    assert EXPECTED_ERRORS - errors == set(), "missing errors"
    assert _issues(con, result, "warning") == EXPECTED_WARNINGS
    assert _issues(con, result, "info") == {(None, "mpn", "unknown_column")}


def test_every_row_rule_is_exercised():
    codes = {(f, c) for _, f, c in EXPECTED_ERRORS | EXPECTED_WARNINGS}
    assert {(r.field, r.code) for r in ROW_RULES} - codes <= {
        (f, "missing_required_field")
        for f in ("description", "availability", "condition", "price", "link", "image_link")
    } | {("sale_price", "unknown_currency")}


def test_validity_per_item(ingested):
    con, result = ingested
    rows = con.execute(
        f"SELECT id, row_number, is_valid, error_count, warning_count FROM {result.items_table}"
    ).fetchall()
    invalid_ids = {rid for rid, _, _ in EXPECTED_ERRORS}
    for rid, rn, valid, n_err, n_warn in rows:
        if rid == "dup":
            assert valid is (rn == ITEMS.index(("dup", {"title": "first copy"})) + 1), rn
            continue
        assert valid is (rid not in invalid_ids), rid
        assert (n_err > 0) is (not valid), rid
        if rid in ("date-no-sale", "no-category"):
            assert n_warn == 1
    assert result.item_count == len(ITEMS)
    assert result.invalid_count == len(invalid_ids) - 1 + 2  # 'dup' counted once above, two copies invalid
    assert result.valid_count + result.invalid_count == result.item_count
    assert result.issue_counts == {
        "error": len(EXPECTED_ERRORS) + 1,  # two duplicate_id issues share one key
        "warning": len(EXPECTED_WARNINGS),
        "info": 1,
    }


def test_valid_rows_are_unique_by_id_even_when_the_first_copy_is_invalid(tmp_path):
    """feed_items and the replace view take the valid rows as they are: no id may be valid twice, and a
    later copy never stands in for an invalid first one."""
    items = [("d-1", {"price": "10 dollars"}), ("d-1", {}), ("d-2", {}), ("d-2", {}), ("ok", {})]
    con, r = _ingest_items(tmp_path, "u", items)
    valid = con.execute(
        f"SELECT id, row_number FROM {r.items_table} WHERE is_valid ORDER BY row_number"
    ).fetchall()
    assert valid == [("d-2", 3), ("ok", 5)]


def test_normalised_values(ingested):
    con, result = ingested
    row = con.execute(
        f"SELECT availability, condition, price, title FROM {result.items_table} WHERE id = 'case-and-spaces'"
    ).fetchone()
    assert row == ("in stock", "new", "19.99 EUR", "Padded title")
    row = con.execute(
        f"SELECT gender, age_group, sale_price, title FROM {result.items_table} WHERE id IN ('good-full', 'miss-title') "
        "ORDER BY id"
    ).fetchall()
    assert row == [("unisex", "all ages", "80 TRY", "Linen shirt"), (None, None, None, None)]
    # invalid values are kept as written (trimmed): the issue shows what the retailer sent
    rows = con.execute(
        f"SELECT i.availability, i.sale_price, s.message FROM {result.items_table} i "
        f"JOIN {result.issues_table} s ON s.row_number = i.row_number "
        "WHERE i.id IN ('bad-avail', 'sale-bad') ORDER BY i.id"
    ).fetchall()
    assert rows[0][0] == "Maybe" and "'Maybe'" in rows[0][2]
    assert rows[1][1] == "cheap" and "'cheap'" in rows[1][2]


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "two words",
        "  both  ",
        "trailing tab\t",
        "trailing newline\n",
        "trailing cr\r",
        "\r\n\t mixed \t\n",
        "",
        "   ",
        "\t",
        "control kept\x0b",
        "\x0bcontrol first",
        "no-break space\u00a0",
        "Hotiç",
        "emoji 😀",
        "combining e\u0301",
        None,
    ],
)
def test_normalisation_removes_exactly_the_surrounding_whitespace(value):
    # The SQL that normalises every value against its definition: space, tab, CR and LF around the value go, a
    # blank is no value; every other character stays, at either end.
    from kobi_cpas.feeds.row_rules import trimmed_sql

    (got,) = (
        duckdb.connect()
        .execute(f"SELECT {trimmed_sql('v')} FROM (SELECT $v::VARCHAR AS v)", {"v": value})
        .fetchone()
    )
    expected = None if value is None else (value.strip(" \t\r\n") or None)
    assert got == expected


def test_messages_name_field_value_and_give_a_call_to_action(ingested):
    con, result = ingested
    msg, cta, rn = con.execute(
        f"SELECT message, call_to_action, row_number FROM {result.issues_table} WHERE retailer_id = 'price-dollar'"
    ).fetchone()
    assert "price" in msg and "'$299'" in msg
    assert "ISO 4217" in cta
    assert rn == next(i for i, (rid, _) in enumerate(ITEMS, 1) if rid == "price-dollar")
    msg = con.execute(
        f"SELECT message FROM {result.issues_table} WHERE retailer_id = 'long-desc'"
    ).fetchone()[0]
    assert "5001 characters (max 5000)" in msg and msg.count("d") < 200  # value truncated
    dup_rows = [i for i, (rid, _) in enumerate(ITEMS, 1) if rid == "dup"]
    dups = con.execute(
        f"SELECT row_number, message FROM {result.issues_table} WHERE code = 'duplicate_id' ORDER BY 1"
    ).fetchall()
    assert [r for r, _ in dups] == dup_rows[1:]
    assert all(f"duplicates row {dup_rows[0]}" in m and "appears 3 times" in m for _, m in dups)
    gm = con.execute(
        f"SELECT message FROM {result.issues_table} WHERE code = 'item_group_inconsistent' AND field = 'brand'"
    ).fetchone()[0]
    assert "'GM' (2 items" in gm and "different brand values ('Acme' ... 'Other')" in gm
    gs = con.execute(
        f"SELECT message FROM {result.issues_table} WHERE retailer_id = 'gs-2' AND code = 'item_group_mismatch'"
    ).fetchone()[0]
    assert "'GS' (2 items)" in gs and "rejects the 1 item(s)" in gs and "'gs-2'" in gs
    assert (
        con.execute(
            f"SELECT count(*) FROM {result.issues_table} WHERE call_to_action IS NULL OR call_to_action = ''"
        ).fetchone()[0]
        == 0
    )


def test_issue_table_columns(ingested):
    con, result = ingested
    cols = [r[0] for r in con.execute(f"DESCRIBE {result.issues_table}").fetchall()]
    assert tuple(cols) == ISSUE_COLUMNS
    tenants = con.execute(f"SELECT DISTINCT tenant_id, snapshot_id FROM {result.issues_table}").fetchall()
    assert tenants == [("acme", "snap-1")]
    con.execute(f"CREATE TABLE feed_item_issues AS SELECT * FROM {result.issues_table} LIMIT 0")
    con.execute(f"INSERT INTO feed_item_issues SELECT * FROM {result.issues_table}")
    assert con.execute("SELECT count(*) FROM feed_item_issues").fetchone()[0] == sum(
        result.issue_counts.values()
    )


def test_two_tenants_in_one_database_and_failed_ingest_keeps_old_tables(tmp_path):
    con = duckdb.connect()
    a = write_feed(tmp_path / "a.csv", [("a-1", {}), ("a-2", {})])
    b = write_feed(tmp_path / "b.csv", [("b-1", {"price": "oops"})])
    ra = ingest_feed(con, tenant_id="Tenant A", snapshot_id="1", path=a, fmt="csv", source_label="a")
    rb = ingest_feed(con, tenant_id="tenant_b", snapshot_id="1", path=b, fmt="csv", source_label="b")
    assert ra.items_table != rb.items_table and rb.items_table == "feed_stage.items_tenant_b"
    assert ra.items_table == stage_table_names("Tenant A")[0]
    assert tenant_slug("Tenant A") != tenant_slug("tenant-a")
    assert con.execute(f"SELECT count(*) FROM {ra.items_table}").fetchone()[0] == 2
    assert con.execute(f"SELECT id, is_valid FROM {rb.items_table}").fetchall() == [("b-1", False)]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,title\n1,x\n", encoding="utf-8")
    with pytest.raises(FeedFileError):
        ingest_feed(con, tenant_id="Tenant A", snapshot_id="2", path=bad, fmt="csv", source_label="a")
    assert con.execute(f"SELECT DISTINCT snapshot_id FROM {ra.items_table}").fetchall() == [("1",)]
    again = ingest_feed(con, tenant_id="Tenant A", snapshot_id="3", path=b, fmt="csv", source_label="a")
    assert again.items_table == ra.items_table
    assert con.execute(f"SELECT id, snapshot_id FROM {ra.items_table}").fetchall() == [("b-1", "3")]
    assert con.execute(f"SELECT DISTINCT snapshot_id FROM {ra.issues_table}").fetchall() == [("3",)]
    leftovers = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%building%'"
    ).fetchall()
    assert leftovers == []


def test_xml_feed_ingests_like_csv(tmp_path):
    fixtures = Path(__file__).parent / "feeds_fixtures"
    con = duckdb.connect()
    hashes = {}
    for name, fmt in (("sample.csv", "csv"), ("sample_rss.xml", "xml"), ("sample_atom.xml", "xml")):
        r = ingest_feed(
            con,
            tenant_id=name.replace(".", "_"),
            snapshot_id="1",
            path=fixtures / name,
            fmt=fmt,
            source_label=name,
        )
        assert (r.item_count, r.valid_count, r.issue_counts["error"]) == (3, 3, 0), name
        hashes[name] = con.execute(
            f"SELECT id, content_hash, volatile_hash FROM {r.items_table} ORDER BY row_number"
        ).fetchall()
    assert hashes["sample.csv"] == hashes["sample_rss.xml"] == hashes["sample_atom.xml"]


def test_safe_path_gives_the_same_tables_as_the_fast_path(ingested, tmp_path, monkeypatch):
    """When DuckDB plans the items SELECT with an operator that could reorder rows, ingest copies the file
    to a table first; the result must not depend on the path taken."""
    from kobi_cpas.feeds import snapshot

    con, result = ingested
    path = write_feed(tmp_path / "feed.csv", ITEMS, extra_columns=("mpn",))
    calls = []
    real = snapshot.create_table_streaming

    def not_streaming(*a):
        calls.append(a)
        real(*a)  # the table it built must be discarded, not used
        return False

    monkeypatch.setattr(snapshot, "create_table_streaming", not_streaming)
    safe = ingest_feed(
        con, tenant_id="acme-safe", snapshot_id="snap-1", path=path, fmt="csv", source_label="test"
    )
    assert calls, "the safe path was not taken"
    assert (safe.item_count, safe.valid_count, safe.issue_counts) == (
        result.item_count,
        result.valid_count,
        result.issue_counts,
    )
    cols = f"row_number, {', '.join(COLUMNS)}, {', '.join(STORED_RESULT_COLUMNS)}"
    assert (
        con.execute(f"SELECT {cols} FROM {safe.items_table} ORDER BY row_number").fetchall()
        == con.execute(f"SELECT {cols} FROM {result.items_table} ORDER BY row_number").fetchall()
    )
    issue_cols = ", ".join(ISSUE_COLUMNS[2:])
    assert (
        con.execute(f"SELECT {issue_cols} FROM {safe.issues_table}").fetchall()
        == con.execute(f"SELECT {issue_cols} FROM {result.issues_table}").fetchall()
    )


def test_stage_items_have_the_full_shape_and_absent_fields_are_null(tmp_path):
    """The stored rows leave out what is constant in a snapshot; the items view puts it back."""
    path = tmp_path / "narrow.csv"
    path.write_text(
        "id,title,description,availability,condition,price,link,image_link,brand\n"
        "n-1,T,D,in stock,new,10.00 TRY,https://s.example/1,https://s.example/1.jpg,B\n",
        encoding="utf-8",
    )
    con = duckdb.connect()
    r = ingest_feed(con, tenant_id="narrow", snapshot_id="s-9", path=path, fmt="csv", source_label="t")
    cur = con.execute(f"SELECT * FROM {r.items_table}")
    names = [d[0] for d in cur.description]
    assert names == ["tenant_id", "snapshot_id", "row_number", *COLUMNS, *STORED_RESULT_COLUMNS]
    row = dict(zip(names, cur.fetchone(), strict=True))
    assert (row["tenant_id"], row["snapshot_id"], row["row_number"], row["id"]) == ("narrow", "s-9", 1, "n-1")
    assert row["shipping"] is None and row["previous_id"] is None and row["is_valid"] is True
    stored = [d[0] for d in con.execute("SELECT * FROM feed_stage.item_rows_narrow LIMIT 0").description]
    assert "tenant_id" not in stored and "shipping" not in stored
    # what the next ingest of the tenant reuses (feeds.incremental), under the view only
    assert stored[-2:] == ["_issue_mask", "_raw_hash"]


def test_a_stage_table_from_before_the_view_is_replaced(tmp_path):
    """Work databases written before the items view have a plain table under the view's name."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA feed_stage")
    con.execute("CREATE TABLE feed_stage.items_old AS SELECT 'old' AS tenant_id, 1 AS row_number")
    from kobi_cpas.feeds.snapshot import stage_exists

    assert stage_exists(con, "old")
    path = write_feed(tmp_path / "f.csv", ITEMS[:2])
    r = ingest_feed(con, tenant_id="old", snapshot_id="s", path=path, fmt="csv", source_label="t")
    assert r.item_count == 2 and stage_exists(con, "old")
    assert con.execute(f"SELECT count(*), min(tenant_id) FROM {r.items_table}").fetchone() == (2, "old")
    assert con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'feed_stage' AND view_name = 'items_old'"
    ).fetchone() == (1,)
    assert not stage_exists(con, "never-ingested")


def test_issue_rows_are_stored_in_row_then_field_then_code_order(ingested):
    """The issues table is written in file order (file-level notes first) so that a plain SELECT lists them
    as the retailer reads the feed."""
    con, result = ingested
    rows = con.execute(f"SELECT row_number, field, code FROM {result.issues_table}").fetchall()
    expected = sorted(rows, key=lambda r: (r[0] is not None, r[0] or 0, r[1], r[2]))
    assert rows == expected and rows[0] == (None, "mpn", "unknown_column") and len(rows) > 30
    kinds = con.execute(
        f"SELECT DISTINCT field, code, severity, call_to_action FROM {result.issues_table}"
    ).fetchall()
    ctas = {(f, c): (sev, cta) for f, c, sev, cta in kinds}
    assert len(ctas) == len(kinds)  # one severity and call to action per field and code
    for r in ROW_RULES:
        if (r.field, r.code) in ctas:
            assert ctas[(r.field, r.code)] == (r.severity, r.call_to_action)
    assert ctas[("brand", "item_group_inconsistent")][0] == "warning"
    assert ctas[("shipping", "item_group_mismatch")][0] == "error"
    assert "Use the same shipping" in ctas[("shipping", "item_group_mismatch")][1]
    assert ctas[("id", "duplicate_id")] == (
        "error",
        "Give every item a unique id; remove or rename the duplicate row.",
    )


def test_group_warning_message_quotes_and_truncates_like_the_other_messages(tmp_path):
    """Examples longer than 60 characters are cut with '...' (characters, not bytes), a blank value is shown
    as '', and the first row and member count are those of the group."""
    long_a, long_b = "A" * 61, "B" * 70
    wide = "ğ" * 60  # 120 bytes, 60 characters: shown whole
    items = [
        ("l-1", {"item_group_id": "L", "title": long_a}),
        ("l-2", {"item_group_id": "L", "title": long_b}),
        ("w-1", {"item_group_id": "W", "title": wide}),
        ("w-2", {"item_group_id": "W", "title": "Plain"}),
        ("w-3", {"item_group_id": "W"}),
        ("b-1", {"item_group_id": "B", "brand": ""}),
        ("b-2", {"item_group_id": "B", "brand": "Acme"}),
    ]
    con, r = _ingest_items(tmp_path, "t", items)
    rows = con.execute(
        f"SELECT row_number, field, severity, message FROM {r.issues_table} "
        "WHERE code = 'item_group_inconsistent' ORDER BY row_number, field"
    ).fetchall()
    tail = "; Meta ingests them all, but shows the variants of one product under one"
    assert rows == [
        (
            1,
            "title",
            "warning",
            f"item_group_id 'L' (2 items, from row 1) has different title values ('{'A' * 60}...' ... "
            f"'{'B' * 60}...'){tail} title.",
        ),
        (
            3,
            "title",
            "warning",
            f"item_group_id 'W' (3 items, from row 3) has different title values ('Linen shirt' ... '{wide}')"
            f"{tail} title.",
        ),
        (
            6,
            "brand",
            "warning",
            f"item_group_id 'B' (2 items, from row 6) has different brand values ('' ... 'Acme'){tail} brand.",
        ),
    ]
    assert r.invalid_count == 1  # the blank brand (a required field), not the group warnings


def test_group_mismatch_sample_is_bounded(tmp_path):
    items = [(f"v-{i}", {"item_group_id": "BIG", "brand": f"Brand {i:02d}"}) for i in range(8)]
    con, r = _ingest_items(tmp_path, "g", items)
    assert r.invalid_count == 0  # a brand per variant is a warning, not a reason to drop the items
    (msg,) = con.execute(
        f"SELECT message FROM {r.issues_table} WHERE code = 'item_group_inconsistent'"
    ).fetchone()
    assert "has different brand values ('Brand 00' ... 'Brand 07')" in msg


def test_one_issue_row_per_group_and_property(tmp_path):
    """Three variants per group with three brands and titles, and one group whose shipping differs: one warning
    row per group and property, the shipping error only for the item Meta rejects."""
    items = [
        (f"p{g}-{v}", {"item_group_id": f"G{g}", "brand": f"Brand {v}", "title": f"Shirt {v}"})
        for g in range(50)
        for v in range(3)
    ]
    items += [("s-1", {"item_group_id": "S", "shipping": "TR::Std:0 TRY"})]
    items += [("s-2", {"item_group_id": "S", "shipping": "TR::Express:50 TRY"})]
    items += [("s-3", {"item_group_id": "S", "shipping": "TR::Std:0 TRY"})]
    con, r = _ingest_items(tmp_path, "g", items)
    rows = con.execute(
        f"SELECT field, severity, code, count(*) FROM {r.issues_table} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("brand", "warning", "item_group_inconsistent", 50),
        ("shipping", "error", "item_group_mismatch", 1),
        ("title", "warning", "item_group_inconsistent", 50),
    ]
    invalid = con.execute(f"SELECT id FROM {r.items_table} WHERE NOT is_valid").fetchall()
    assert invalid == [("s-2",)] and r.valid_count == len(items) - 1


@pytest.mark.parametrize(
    ("pattern_name", "values"),
    [
        (
            "URL_RE",
            [
                "https://a.com/x",
                "http://a.com",
                "HTTPS://A.COM/x",
                "https://",
                "https:///x",
                "https://?x",
                "https://#x",
                "https://u:p@a.com/",
                "https://a.com/@me",
                "https://a.com/a b",
                "https://a.com/a\tb",
                "ftp://a.com",
                "a.com/x",
                "https://a.com?q=1",
            ],
        ),
        (
            "URL_LIST_RE",
            [
                "https://a.com/1.jpg,https://a.com/2.jpg",
                "https://a.com/1.jpg, https://a.com/2.jpg",
                "https://a.com/1.jpg,ftp://x",
                "https://a.com/1.jpg,https://",
                "https://a.com/1.jpg,https:///x",
                "https://a.com/x,y",
                "https://a.com/1.jpg,,https://b.com",
                "https://a.com/1.jpg,https://?x",
                "https://u:p@a.com/1.jpg",
                "https://a.com/1.jpg,http://b.com",
                "https://a.com/1.jpg,https://b.com/@x",
                "https://a.com/1.jpg,",
                ",https://a.com/1.jpg",
                "https://a.com/1.jpg,https://#x",
                "https://a.com/1.jpg,https://b.com/x\fy",
                "HTTPS://A.COM/1.jpg,https://b.com",
                "https://a.com/1.jpg,https://b.com?q=1,https://c.com#f",
                "https://a.com/1.jpg,https://",
                "https://a.com/1.jpg,https:",
            ],
        ),
    ],
)
def test_url_fast_path_agrees_with_the_regex(pattern_name, values):
    from kobi_cpas.feeds import row_rules as validate

    pattern = getattr(validate, pattern_name)
    con = duckdb.connect()
    for v in values:
        fast, regex = con.execute(
            f"SELECT {validate._url_check('v', pattern)}, regexp_full_match(v, ?) FROM (SELECT ? AS v)",
            [pattern, v],
        ).fetchone()
        assert fast is regex, v


def test_items_select_is_a_single_streaming_pass(tmp_path):
    """ingest_feed's fast path (one pass, row numbers from rowid) needs a scan + projections plan;
    otherwise it silently falls back to a slower two-pass path."""
    from kobi_cpas.feeds.parser import is_streaming_plan, open_feed_source
    from kobi_cpas.feeds.validate import items_select_sql

    source = open_feed_source(write_feed(tmp_path / "f.csv", ITEMS[:3]), "csv")
    con = duckdb.connect()
    assert is_streaming_plan(con, items_select_sql(source.select_sql, columns=source.columns_present))


@pytest.mark.parametrize("rule", ROW_RULES, ids=lambda r: f"{r.code}:{r.field}")
def test_a_rule_message_reads_only_its_message_columns(rule):
    """The issues query reads only these columns of the flagged items: a message that needs another one
    would fail to bind there."""
    con = duckdb.connect()
    cols = ", ".join(f"'19.99 TRY' AS {c}" for c in rule.message_columns) or "1 AS _nothing"
    (message,) = con.execute(f"SELECT {rule.message} FROM (SELECT {cols})").fetchone()
    assert isinstance(message, str) and message
    assert set(rule.message_columns) <= {rule.field, "price", "sale_price"}


def test_feed_without_cross_row_findings_gets_the_same_issue_table(tmp_path):
    """Without duplicate ids or disagreeing groups the cross-row statements are skipped: the issues table keeps
    its column types and the row-local issues are those of the same items with a duplicate added."""
    clean = [(rid, {k: v for k, v in over.items() if k != "item_group_id"}) for rid, over in ITEMS[:12]]
    con = duckdb.connect()
    results = {}
    for name, items in (("clean", clean), ("dup", [*clean, clean[0]])):
        path = write_feed(tmp_path / f"{name}.csv", items, extra_columns=("mpn",))
        results[name] = ingest_feed(
            con, tenant_id=name, snapshot_id="s", path=path, fmt="csv", source_label="test"
        )
    types = {
        n: con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {r.issues_table})").fetchall()
        for n, r in results.items()
    }
    assert types["clean"] == types["dup"]
    rows = {
        n: con.execute(
            f"SELECT retailer_id, row_number, field, severity, code, message, call_to_action FROM {r.issues_table} "
            "ORDER BY row_number NULLS FIRST, field, code"
        ).fetchall()
        for n, r in results.items()
    }
    assert not any(
        r[4] in ("duplicate_id", "item_group_mismatch", "item_group_inconsistent") for r in rows["clean"]
    )
    assert [r for r in rows["dup"] if r[4] != "duplicate_id" and r[1] != len(clean) + 1] == rows["clean"]
    assert [r[4] for r in rows["dup"] if r[1] == len(clean) + 1 and r[4] == "duplicate_id"] == [
        "duplicate_id"
    ]
    assert results["clean"].issue_counts["error"] > 0 and results["clean"].issue_counts["info"] == 1
    assert results["dup"].invalid_count == results["clean"].invalid_count + 1
