"""Feed parsing: CSV / TSV / RSS / Atom, dialect problems reported as FeedFileError."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path

import duckdb
import pytest

from kobi_cpas.feeds import FeedFileError, ingest_feed, parse_feed
from kobi_cpas.feeds.fields import COLUMNS, MAX_LINE_CHARS, canonical_column, normalise_header
from kobi_cpas.feeds.parser import (
    create_table_streaming,
    find_invalid_utf8,
    is_streaming_plan,
    open_feed_source,
)

FIXTURES = Path(__file__).parent / "feeds_fixtures"
HEADER = "id,title,description,availability,condition,price,link,image_link,brand"


def _row(i: int, **over: str) -> str:
    values = {
        "id": f"SKU-{i}",
        "title": f"Item {i}",
        "description": f"Description {i}",
        "availability": "in stock",
        "condition": "new",
        "price": "10.00 TRY",
        "link": f"https://shop.example.com/p/{i}",
        "image_link": f"https://cdn.example.com/{i}.jpg",
        "brand": "Acme",
    }
    values.update(over)
    return ",".join(values[c] for c in HEADER.split(","))


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


def _parsed_rows(con, table: str) -> list[tuple]:
    return con.execute(
        f"SELECT {', '.join(COLUMNS)}, _row_number FROM {table} ORDER BY _row_number"
    ).fetchall()


def test_csv_tsv_rss_atom_parse_to_the_same_rows(con):
    results = {}
    for name, fmt in (
        ("sample.csv", "csv"),
        ("sample.tsv", "tsv"),
        ("sample_rss.xml", "xml"),
        ("sample_atom.xml", "xml"),
    ):
        table = name.replace(".", "_")
        r = parse_feed(con, FIXTURES / name, fmt, schema="t", table=table)
        assert r.row_count == 3
        results[name] = _parsed_rows(con, f"t.{table}")
    reference = results["sample.csv"]
    for name, rows in results.items():
        assert rows == reference, name
    by_id = {r[0]: dict(zip([*COLUMNS, "_row_number"], r, strict=True)) for r in reference}
    first = by_id["SKU-1-S"]
    # multi-line quoted value with escaped quotes and non-ASCII text survives every format
    assert first["description"] == 'Hafif, nefes alan "keten" gömlek.\nYaz için ideal.'
    assert first["title"] == "Kadın Keten Gömlek"
    # nested <g:shipping> is flattened to Meta's country:region:service:price
    assert first["shipping"] == "TR::Standard:29.90 TRY"
    # repeated <g:additional_image_link> elements are joined like the CSV value
    assert (
        first["additional_image_link"]
        == "https://cdn.example.com/img/g1_2.jpg,https://cdn.example.com/img/g1_3.jpg"
    )
    assert first["item_group_id"] == "G1"  # from the "Item Group ID" header
    assert [r[-1] for r in reference] == [1, 2, 3]
    assert by_id["SKU-2"]["_row_number"] == 3
    # absent columns exist and are NULL
    assert first["fb_product_category"] is None


def test_atom_uses_alternate_link_and_ignores_entry_id(con):
    parse_feed(con, FIXTURES / "sample_atom.xml", "atom", schema="t", table="atom")
    rows = con.execute("SELECT id, link FROM t.atom ORDER BY _row_number").fetchall()
    assert rows[0] == ("SKU-1-S", "https://shop.example.com/p/G1?variant=SKU-1-S")


def test_bom_and_crlf(con, tmp_path):
    body = (HEADER + "\r\n" + _row(1) + "\r\n" + _row(2) + "\r\n").encode()
    p = _write(tmp_path / "bom.csv", codecs.BOM_UTF8 + body)
    r = parse_feed(con, p, "csv", schema="t", table="bom")
    assert r.row_count == 2
    assert r.columns_present[0] == "id"  # the BOM is not part of the first header
    assert con.execute("SELECT id, brand FROM t.bom ORDER BY _row_number").fetchall() == [
        ("SKU-1", "Acme"),
        ("SKU-2", "Acme"),
    ]


def test_quoted_multiline_fields_keep_item_numbers(con, tmp_path):
    p = _write(
        tmp_path / "ml.csv",
        HEADER + "\n" + _row(1, description='"line one\nline two, with comma"') + "\n" + _row(2) + "\n",
    )
    parse_feed(con, p, "csv", schema="t", table="ml")
    assert con.execute("SELECT _row_number, id, description FROM t.ml ORDER BY 1").fetchall() == [
        (1, "SKU-1", "line one\nline two, with comma"),
        (2, "SKU-2", "Description 2"),
    ]


def test_line_over_5_mb_reports_its_line_number(con, tmp_path):
    long_desc = "x" * (MAX_LINE_CHARS + 10)
    p = _write(
        tmp_path / "long.csv",
        "\n".join([HEADER, _row(1, description='"a\nb"'), _row(2), _row(3, description=long_desc), _row(4)])
        + "\n",
    )
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, p, "csv", schema="t", table="long")
    e = ei.value
    # header = line 1, the quoted two-line value counts as one line: item 3 is on line 4
    assert e.line_number == 4
    assert "line 4 (item 3)" in str(e)
    assert "5 MB" in str(e)
    assert str(p) in str(e)


def test_line_just_under_the_limit_is_accepted(con, tmp_path):
    row = _row(1, description="y" * 1000)
    p = _write(tmp_path / "ok.csv", HEADER + "\n" + row + "\n")
    assert parse_feed(con, p, "csv", schema="t", table="ok").row_count == 1


def test_invalid_utf8_names_file_line_and_byte_offset(con, tmp_path):
    good = (HEADER + "\n" + _row(1) + "\n").encode()
    bad_line = _row(2, title="Caf\udce9").encode("utf-8", "surrogateescape")  # a lone latin-1 0xE9
    p = _write(tmp_path / "latin1.csv", good + bad_line + b"\n" + _row(3).encode() + b"\n")
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, p, "csv", schema="t", table="enc")
    e = ei.value
    assert "not valid UTF-8" in str(e) and str(p) in str(e)
    assert e.byte_offset == len(good) + bad_line.index(b"\xe9")
    assert e.line_number == 3
    assert f"byte offset {e.byte_offset}" in str(e)


def test_invalid_utf8_in_header(con, tmp_path):
    p = _write(tmp_path / "h.csv", b"id,t\xefitle\n1,2\n")
    with pytest.raises(FeedFileError, match=r"not valid UTF-8.*byte offset 4"):
        parse_feed(con, p, "csv", schema="t", table="h")


def test_find_invalid_utf8_across_chunks(tmp_path):
    data = b"a" * 10 + "é".encode() + b"\n" * 3 + b"\xc3"  # truncated sequence at the very end
    p = _write(tmp_path / "x.bin", data)
    assert find_invalid_utf8(p, chunk_size=4) == (len(data) - 1, 4, 0xC3)
    p2 = _write(tmp_path / "y.bin", "é".encode() * 10)
    assert find_invalid_utf8(p2, chunk_size=3) == (None, None, None)


def test_tab_separated_file_declared_csv(con, tmp_path):
    p = _write(tmp_path / "tabs.csv", HEADER.replace(",", "\t") + "\n" + _row(1).replace(",", "\t") + "\n")
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, p, "csv", schema="t", table="x")
    assert "tab-separated" in str(ei.value) and str(p) in str(ei.value)


def test_comma_file_declared_tsv(con, tmp_path):
    p = _write(tmp_path / "commas.tsv", HEADER + "\n" + _row(1) + "\n")
    with pytest.raises(FeedFileError, match="comma-separated"):
        parse_feed(con, p, "tsv", schema="t", table="x")


def test_missing_required_columns_are_named(con, tmp_path):
    header = "id,title,description,availability,price,link"
    p = _write(tmp_path / "missing.csv", header + "\nSKU-1,t,d,in stock,1.00 TRY,https://a.b/c\n")
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, p, "csv", schema="t", table="x")
    e = ei.value
    assert e.columns == ("condition", "image_link", "brand")
    assert "condition, image_link, brand" in str(e) and str(p) in str(e)


def test_missing_required_columns_in_xml(con, tmp_path):
    p = _write(
        tmp_path / "x.xml",
        '<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>1</g:id><title>t</title>'
        "</item></channel></rss>",
    )
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, p, "xml", schema="t", table="x")
    assert "description" in ei.value.columns and "brand" in ei.value.columns


def test_row_with_extra_columns_reports_line(con, tmp_path):
    p = _write(tmp_path / "cols.csv", HEADER + "\n" + _row(1) + "\n" + _row(2) + ",extra\n" + _row(3) + "\n")
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, p, "csv", schema="t", table="x")
    assert ei.value.line_number == 3
    assert "10 columns but the header has 9" in str(ei.value)


def test_unterminated_quote(con, tmp_path):
    p = _write(tmp_path / "q.csv", HEADER + "\n" + _row(1, title='"open') + "\n")
    with pytest.raises(FeedFileError, match="unterminated quote"):
        parse_feed(con, p, "csv", schema="t", table="x")


@pytest.mark.parametrize("content", [b"", codecs.BOM_UTF8, b"\n\n"])
def test_empty_file(con, tmp_path, content):
    p = _write(tmp_path / "empty.csv", content)
    with pytest.raises(FeedFileError, match="empty file"):
        parse_feed(con, p, "csv", schema="t", table="x")


def test_header_only_file_is_refused_unless_allowed(con, tmp_path):
    p = _write(tmp_path / "h.csv", HEADER + "\n")
    with pytest.raises(FeedFileError, match="no items"):
        parse_feed(con, p, "csv", schema="t", table="x")
    assert parse_feed(con, p, "csv", schema="t", table="x", allow_empty=True).row_count == 0


def test_empty_xml_and_malformed_xml(con, tmp_path):
    p = _write(tmp_path / "e.xml", "<rss><channel><title>x</title></channel></rss>")
    with pytest.raises(FeedFileError, match="no <item>"):
        parse_feed(con, p, "xml", schema="t", table="x")
    bad = _write(tmp_path / "bad.xml", b"<rss><channel><item><g:id>1</g:id>\xe9</item></channel></rss>")
    with pytest.raises(FeedFileError) as ei:
        parse_feed(con, bad, "xml", schema="t", table="x")
    assert "malformed XML at line 1" in str(ei.value) and str(bad) in str(ei.value)


def test_unknown_and_aliased_columns(con, tmp_path):
    header = "G:ID,Title,Description,Availability,Condition,Price,Link,Image Link,Brand,Inventory,mpn,"
    p = _write(
        tmp_path / "alias.csv",
        header + "\nSKU-1,t,d,in stock,new,1.00 TRY,https://a.b/c,https://a.b/i.jpg,B,7,M-1,\n",
    )
    r = parse_feed(con, p, "csv", schema="t", table="alias")
    assert r.unknown_columns == ("mpn", "<blank column 12>")
    assert "image_link" in r.columns_present
    assert con.execute("SELECT id, quantity_to_sell_on_facebook FROM t.alias").fetchall() == [("SKU-1", "7")]
    cols = [c[0] for c in con.execute("DESCRIBE t.alias").fetchall()]
    assert "mpn" not in cols and cols[-1] == "_row_number"


def test_two_headers_mapping_to_the_same_field(con, tmp_path):
    p = _write(tmp_path / "dup.csv", HEADER + ",g:id\n" + _row(1) + ",x\n")
    with pytest.raises(FeedFileError, match="both map to the field 'id'"):
        parse_feed(con, p, "csv", schema="t", table="x")


def test_header_normalisation():
    assert normalise_header("  G:Item Group ID ") == "item_group_id"
    assert normalise_header("Quantity to sell on Facebook") == "quantity_to_sell_on_facebook"
    assert canonical_column("sale-price") == "sale_price"
    assert canonical_column("quantity") is None  # deliberately not an alias


def test_row_numbers_follow_file_order_on_a_parallel_read(tmp_path):
    """Large enough for DuckDB to read the file with several threads."""
    from kobi_cpas.feeds.generator import generate_feed

    p = generate_feed(tmp_path / "big.csv", 60_000, seed=3)
    db = duckdb.connect(str(tmp_path / "order.duckdb"))
    db.execute("SET threads = 4")
    db.execute("SET preserve_insertion_order = false")  # must be overridden for the CTAS
    parse_feed(db, p, "csv", schema="t", table="big")
    ingest_feed(db, tenant_id="order", snapshot_id="s", path=p, fmt="csv", source_label="t")
    # position in the file -> id, read independently with the csv module
    with p.open(encoding="utf-8", newline="") as f:
        expected_ids = {n: row[0] for n, row in enumerate(csv.reader(f)) if n > 0}
    for table, rn in (("t.big", "_row_number"), ("feed_stage.items_order", "row_number")):
        got = db.execute(f"SELECT {rn}, id FROM {table}").fetchall()
        assert len(got) == 60_000
        assert all(expected_ids[n] == i for n, i in got), table
    assert db.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0] is False


def test_streaming_plan_guard(con):
    con.execute("CREATE TABLE s AS SELECT 'a' AS v")
    assert is_streaming_plan(con, "SELECT upper(v) FROM s WHERE v <> 'b'") is True
    # DuckDB turns a long IN list into a join: not streaming, so ingest takes its safe path
    assert is_streaming_plan(con, "SELECT v IN ('a','b','c','d','e','f','g','h') FROM s") is False


def test_create_table_streaming_judges_the_plan_that_ran(con, tmp_path):
    """The CREATE TABLE AS runs once (no separate EXPLAIN) and reports the same verdict as the guard."""
    con.execute("CREATE TABLE s AS SELECT 'a' AS v UNION ALL SELECT 'b'")
    source = open_feed_source(
        _write(tmp_path / "f.csv", "id,title,price\n1,A,1.00 TRY\n"), "csv", required_columns=("id",)
    )
    assert create_table_streaming(con, "t1", "SELECT upper(v) AS u FROM s WHERE v <> 'b'", source) is True
    assert con.execute("SELECT u FROM t1").fetchall() == [("A",)]
    joined = "SELECT v IN ('a','b','c','d','e','f','g','h') AS x FROM s"
    assert create_table_streaming(con, "t2", joined, source) is False
    assert con.execute("SELECT count(*) FROM t2").fetchone() == (2,)
    assert create_table_streaming(con, "t3", source.select_sql, source) is True
    assert con.execute("SELECT id, title FROM t3").fetchall() == [("1", "A")]


def test_create_table_streaming_reports_csv_errors_as_feed_file_errors(con, tmp_path):
    source = open_feed_source(
        _write(tmp_path / "f.csv", "id,title,price\n1,A,1.00 TRY\n2,B\n"), "csv", required_columns=("id",)
    )
    with pytest.raises(FeedFileError, match=r"line 3 .*2 columns but the header has 3"):
        create_table_streaming(con, "t", source.select_sql, source)
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'").fetchone()[0]


def _rss_from_csv(src: Path, dest: Path) -> Path:
    from xml.sax.saxutils import escape

    with src.open(encoding="utf-8", newline="") as f, dest.open("w", encoding="utf-8") as out:
        rows = csv.reader(f)
        header = next(rows)
        out.write('<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><title>t</title>\n')
        for row in rows:
            out.write(
                "<item>"
                + "".join(f"<g:{h}>{escape(v)}</g:{h}>" for h, v in zip(header, row, strict=True) if v)
            )
            out.write("</item>\n")
        out.write("</channel></rss>\n")
    return dest


def test_xml_memory_does_not_grow_with_the_number_of_items(tmp_path):
    import tracemalloc

    from kobi_cpas.feeds.generator import generate_feed
    from kobi_cpas.feeds.xml_items import iter_xml_items

    peaks = {}
    for n in (500, 5_000):
        xml = _rss_from_csv(generate_feed(tmp_path / f"{n}.csv", n, seed=1), tmp_path / f"{n}.xml")
        tracemalloc.start()
        count = sum(1 for _ in iter_xml_items(xml))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == n
    # ten times the items, (nearly) the same peak: finished items are freed as we go
    assert peaks[5_000] < 1.5 * peaks[500], peaks


def test_generated_feed_round_trips_through_rss(tmp_path):
    from kobi_cpas.feeds.generator import generate_feed

    src = generate_feed(tmp_path / "g.csv", 500, seed=4)
    xml = _rss_from_csv(src, tmp_path / "g.xml")
    con = duckdb.connect()
    a = ingest_feed(con, tenant_id="csv", snapshot_id="1", path=src, fmt="csv", source_label="c")
    b = ingest_feed(con, tenant_id="xml", snapshot_id="1", path=xml, fmt="rss", source_label="x")
    q = "SELECT row_number, id, content_hash, volatile_hash, is_valid FROM {} ORDER BY row_number"
    assert con.execute(q.format(a.items_table)).fetchall() == con.execute(q.format(b.items_table)).fetchall()
