"""Content / volatile hashes: which change moves which hash; the one-item helper agrees with the bulk SQL."""

from __future__ import annotations

import duckdb
import pytest

from kobi_cpas.feeds import hashing, ingest_feed
from kobi_cpas.feeds.fields import COLUMNS, CONTENT_COLUMNS, VOLATILE_COLUMNS
from kobi_cpas.feeds.generator import generate_feed, mutate_volatile, mutation_predicate_sql
from kobi_cpas.feeds.hashing import hash_scheme, item_hashes


@pytest.fixture(scope="module")
def feeds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hash")
    base = generate_feed(tmp / "base.csv", 4_000, seed=11)
    volatile = mutate_volatile(base, tmp / "volatile.csv", share=0.05, seed=5)
    content = tmp / "content.csv"
    con = duckdb.connect()
    # A content-only change: new titles for the items of every 10th product.
    con.execute(
        f"""COPY (SELECT * REPLACE (CASE WHEN hash(item_group_id) % 10 = 0 THEN title || ' (new)' ELSE title END
                                    AS title)
                  FROM read_csv('{base}', all_varchar=true))
            TO '{content}' (FORMAT csv, HEADER)"""
    )
    for tenant, path in (("base", base), ("volatile", volatile), ("content", content)):
        ingest_feed(con, tenant_id=tenant, snapshot_id="1", path=path, fmt="csv", source_label=tenant)
    yield con
    con.close()


def _diff(con, other: str) -> tuple[int, int, int]:
    return con.execute(
        f"""SELECT count(*) FILTER (WHERE a.content_hash <> b.content_hash),
                   count(*) FILTER (WHERE a.volatile_hash <> b.volatile_hash),
                   count(*)
            FROM feed_stage.items_base a JOIN feed_stage.items_{other} b USING (id)"""
    ).fetchone()


def test_volatile_only_change_moves_only_the_volatile_hash(feeds):
    con = feeds
    content_changed, volatile_changed, total = _diff(con, "volatile")
    assert total == 4_000
    assert content_changed == 0
    expected = con.execute(
        f"SELECT count(*) FROM feed_stage.items_base WHERE {mutation_predicate_sql(5, 0.05)}"
    ).fetchone()[0]
    assert 100 <= expected <= 300  # about 5 %
    assert volatile_changed == expected
    mismatched = con.execute(
        f"""SELECT count(*) FROM feed_stage.items_base a JOIN feed_stage.items_volatile b USING (id)
            WHERE (a.volatile_hash <> b.volatile_hash) <> ({mutation_predicate_sql(5, 0.05, "a.id")})"""
    ).fetchone()[0]
    assert mismatched == 0


def test_content_change_moves_only_the_content_hash(feeds):
    con = feeds
    content_changed, volatile_changed, _ = _diff(con, "content")
    changed_titles = con.execute(
        """SELECT count(*) FROM feed_stage.items_base a JOIN feed_stage.items_content b USING (id)
           WHERE a.title <> b.title"""
    ).fetchone()[0]
    assert changed_titles > 0
    assert content_changed == changed_titles
    assert volatile_changed == 0


def test_item_hashes_equals_the_bulk_sql(feeds):
    con = feeds
    rows = con.execute(
        f"SELECT {', '.join(COLUMNS)}, content_hash, volatile_hash FROM feed_stage.items_base "
        "ORDER BY row_number LIMIT 50"
    ).fetchall()
    assert len(rows) == 50
    for r in rows:
        values = dict(zip(COLUMNS, r[: len(COLUMNS)], strict=True))
        assert item_hashes(con, values) == (r[-2], r[-1])


def test_hash_covers_the_right_columns():
    con = duckdb.connect()
    v = {c: "x" for c in COLUMNS}
    base_c, base_v = item_hashes(con, v)
    for col in COLUMNS:
        c, vol = item_hashes(con, {**v, col: "y"})
        assert (c != base_c) is (col in CONTENT_COLUMNS), col
        assert (vol != base_v) is (col in VOLATILE_COLUMNS), col
    # a value moving to the next column is a change, and a blank is not a missing value
    assert item_hashes(con, {**v, "size": "M", "color": None}) != item_hashes(
        con, {**v, "size": None, "color": "M"}
    )
    assert item_hashes(con, {**v, "size": "ab", "color": "c"}) != item_hashes(
        con, {**v, "size": "a", "color": "bc"}
    )
    assert item_hashes(con, {**v, "size": ""}) != item_hashes(con, {**v, "size": None})


def test_hash_scheme_names_the_columns_and_is_stable(monkeypatch):
    con = duckdb.connect()
    scheme = hash_scheme(con)
    assert scheme == hash_scheme(duckdb.connect())  # same DuckDB, same definition
    assert scheme.startswith("v2:duckdb-hash:")
    # a new field changes every content hash, so it must change the scheme (and trigger the re-hash)
    monkeypatch.setattr(hashing, "CONTENT_COLUMNS", (*CONTENT_COLUMNS, "new_meta_field"))
    assert hash_scheme(con) != scheme


def test_normalisation_makes_cosmetic_differences_hash_equal(tmp_path):
    header = "id,title,description,availability,condition,price,link,image_link,brand\n"
    a = tmp_path / "a.csv"
    b = tmp_path / "b.tsv"
    a.write_text(
        header + "1,T,D,in stock,new,10.00 TRY,https://a.b/c,https://a.b/i.jpg,B\n", encoding="utf-8"
    )
    b.write_text(
        header.replace(",", "\t")
        + "1\t T \tD\tIn Stock \tNEW\t10.00 try\thttps://a.b/c\thttps://a.b/i.jpg\tB\n",
        encoding="utf-8",
    )
    con = duckdb.connect()
    ra = ingest_feed(con, tenant_id="a", snapshot_id="1", path=a, fmt="csv", source_label="a")
    rb = ingest_feed(con, tenant_id="b", snapshot_id="1", path=b, fmt="tsv", source_label="b")
    ha = con.execute(f"SELECT content_hash, volatile_hash FROM {ra.items_table}").fetchall()
    hb = con.execute(f"SELECT content_hash, volatile_hash FROM {rb.items_table}").fetchall()
    assert ha == hb
