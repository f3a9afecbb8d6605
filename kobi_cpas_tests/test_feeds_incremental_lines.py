"""The incremental ingest by lines is taken only when each item of the file is one line, and leaves exactly what a
full ingest of the same file leaves; a file whose items span lines, a line the line reader refuses, blank lines,
CRLF line ends and a byte order mark are each handled, and a tenant returns to the way by lines as soon as its
file allows it."""

from __future__ import annotations

from pathlib import Path

import duckdb

from kobi_cpas.feeds import incremental_lines, ingest_feed
from kobi_cpas.feeds.incremental import RAW_HASH
from kobi_cpas.feeds.parser import LINE_DELIMITER
from kobi_cpas.feeds.snapshot import stage_lines_table_name, stage_rows_table_name
from kobi_cpas_tests.test_feeds_incremental import TENANT, Feed, assert_same_as_full, ingest

HEADER = "id,title,description,availability,condition,price,link,image_link,brand"


def _item(i: int, description: str = "plain", price: str = "10.00 TRY") -> str:
    if any(ch in description for ch in ',"\n'):
        description = '"' + description.replace('"', '""') + '"'
    return (
        f"SKU-{i},Shirt {i},{description},in stock,new,{price},https://shop.example/p/{i},"
        f"https://shop.example/i/{i}.jpg,Acme"
    )


def _write(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    text = newline.join([HEADER, *lines]) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _seeded(con: duckdb.DuckDBPyConnection) -> int | None:
    try:
        return con.execute(f"SELECT count(*) FROM {stage_lines_table_name(TENANT)}").fetchone()[0]  # type: ignore[index]
    except duckdb.CatalogException:
        return None


def _raw_hashes(con: duckdb.DuckDBPyConnection) -> int:
    """How many stored rows have their raw hash."""
    return con.execute(f"SELECT count({RAW_HASH}) FROM {stage_rows_table_name(TENANT)}").fetchone()[0]  # type: ignore[index]


def test_items_spanning_lines_are_compared_by_their_rows_until_the_file_is_one_line_per_item_again(
    tmp_path: Path,
) -> None:
    con, path = duckdb.connect(), tmp_path / "feed.csv"
    items = [_item(i) for i in range(1, 201)]
    items[5] = _item(6, description="two\nlines")
    ingest(con, _write(path, items), "csv", "s1")
    assert _seeded(con) is None  # 201 lines for 200 items: the lines are not the items
    assert _raw_hashes(con) == 200  # filled in from another pass: the next ingest compares by rows

    items[7] = _item(8, price="11.00 TRY")
    second = assert_same_as_full(con, _write(path, items), "csv", "s2")
    assert second.incremental_by == "rows" and second.incremental_rows == 1
    assert _seeded(con) is None

    items[5] = _item(6, description="one line")
    third = assert_same_as_full(con, _write(path, items), "csv", "s3")
    assert third.incremental_by == "rows" and _seeded(con) == 200  # its lines are its items again

    items[9] = _item(10, price="12.00 TRY")
    fourth = assert_same_as_full(con, _write(path, items), "csv", "s4")
    assert fourth.incremental_by == "lines" and fourth.incremental_rows == 1


def test_a_changed_line_opening_a_field_that_spans_lines_is_read_whole_then_by_rows(tmp_path: Path) -> None:
    con, path = duckdb.connect(), tmp_path / "feed.csv"
    items = [_item(i) for i in range(1, 201)]
    ingest(con, _write(path, items), "csv", "s1")
    assert _seeded(con) == 200 and _raw_hashes(con) == 0  # rows kept for the way by lines need no raw hash
    # Its second line is the line of an item that left: as a line, unchanged. Only the lines around it tell.
    items[3] = _item(4, description=f"see\n{_item(150)}\nend")
    del items[149]
    got = assert_same_as_full(con, _write(path, items), "csv", "s2")
    # Rows without their raw hash cannot be compared by rows: the whole file is read, and keeps them.
    assert got.incremental_by is None and _seeded(con) is None and _raw_hashes(con) == 199
    items[9] = _item(10, price="12.00 TRY")
    third = assert_same_as_full(con, _write(path, items), "csv", "s3")
    assert third.incremental_by == "rows" and third.incremental_rows == 1


def test_blank_lines_crlf_and_a_byte_order_mark_are_compared_by_lines(tmp_path: Path) -> None:
    con, path = duckdb.connect(), tmp_path / "feed.csv"
    items = [_item(i) for i in range(1, 201)]
    spaced = [*items[:50], "", *items[50:150], "", "", *items[150:]]
    ingest(con, _write(path, spaced, newline="\r\n", bom=True), "csv", "s1")
    assert _seeded(con) == 200
    spaced[10] = _item(11, description='with "quotes", commas, and more')
    spaced.insert(0, _item(999))  # every row number moves
    del spaced[-1]
    got = assert_same_as_full(con, _write(path, spaced, newline="\r\n", bom=True), "csv", "s2")
    assert got.incremental_by == "lines" and got.incremental_rows == 2
    items_view = f"feed_stage.items_{TENANT}"
    assert con.execute(
        f"SELECT id, row_number FROM {items_view} WHERE id IN ('SKU-999', 'SKU-11') ORDER BY 2"
    ).fetchall() == [
        ("SKU-999", 1),
        ("SKU-11", 12),
    ]


def test_a_line_the_line_reader_refuses_leaves_the_way_by_rows(tmp_path: Path) -> None:
    con, path = duckdb.connect(), tmp_path / "feed.csv"
    items = [_item(i) for i in range(1, 201)]
    items[20] = _item(21, description=f"odd{LINE_DELIMITER}bytes")
    ingest(con, _write(path, items), "csv", "s1")
    assert _seeded(con) is None
    items[30] = _item(31, price="13.00 TRY")
    got = assert_same_as_full(con, _write(path, items), "csv", "s2")
    assert got.incremental_by == "rows" and got.incremental_rows == 1


def test_generated_feeds_edited_many_ways_go_by_lines_in_csv_and_tsv(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(incremental_lines, "_WRITE_BATCH", 7)  # the changed lines are written in many batches
    for fmt in ("csv", "tsv"):
        feed, con = Feed(tmp_path / fmt, fmt), duckdb.connect()
        ingest(con, feed.save(), fmt, "s1")
        feed.edit(
            "UPDATE f SET title = title || ' v2' WHERE hash(id) % 40 = 0",
            "DELETE FROM f WHERE hash(id) % 60 = 1",
            "INSERT INTO f SELECT pos + 5 AS pos, * EXCLUDE (pos) REPLACE ('add-' || id AS id) FROM f "
            "WHERE hash(id) % 70 = 2",
        )
        got = assert_same_as_full(con, feed.save(), fmt, "s2")
        assert got.incremental_by == "lines" and got.incremental_rows


def test_an_xml_feed_goes_by_rows_and_leaves_no_spool_file_behind(tmp_path: Path) -> None:
    feed, con, spool = Feed(tmp_path, "xml"), duckdb.connect(), tmp_path / "spool"
    spool.mkdir()

    def ingest_xml(snapshot: str):
        return ingest_feed(
            con,
            tenant_id=TENANT,
            snapshot_id=snapshot,
            path=feed.path,
            fmt="xml",
            source_label="feed",
            tmp_dir=spool,
        )

    feed.save()
    assert ingest_xml("s1").incremental_by is None and _seeded(con) is None
    feed.edit("UPDATE f SET title = title || ' v2' WHERE hash(id) % 40 = 0")
    feed.save()
    assert ingest_xml("s2").incremental_by == "rows"
    assert list(spool.iterdir()) == []  # the CSV each read spooled the XML to
