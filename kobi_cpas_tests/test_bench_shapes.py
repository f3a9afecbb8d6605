"""The per-shape snapshot benchmark and the floor measure what they claim: every shape's first snapshot takes the
whole file and publishes its valid items, and each floor part does its work on every row of the same file."""

from __future__ import annotations

import duckdb
import pytest

from kobi_cpas.devenv.shapes_bench import FLOOR_PARTS, bench_floor, bench_snapshot_shapes
from kobi_cpas.feeds.bench import SHAPES, shape_feed

pytestmark = pytest.mark.bench

N = 3_000


def test_every_shape_snapshots_the_whole_file_and_publishes_its_valid_items(tmp_path):
    res = bench_snapshot_shapes(N, tmp_path, pairs=2)
    assert set(res) == set(SHAPES)
    for shape, r in res.items():
        assert r["items"] == N, shape
        assert 0 < r["valid"] <= N and r["feed_items"] == r["valid"], shape
        assert set(r["stages"]) >= {"ingest", "replace_view", "feed_tables", "item_state", "publish"}
        assert len(r["paired_ratios"]) == 2
        assert min(r["paired_ratios"]) <= r["median_ratio"] <= max(r["paired_ratios"])
        assert 0 < r["median_step_ratio"] < r["median_ratio"], shape  # the same runs without their publish
    # the rich shape's extra invalid items (a price without currency, an unknown availability) are left out
    assert res["rich"]["valid"] < res["clean"]["valid"]
    assert res["tsv"]["valid"] == res["clean"]["valid"] == res["xml"]["valid"]
    assert not list(tmp_path.glob("shape_*.duckdb*")) and not list(tmp_path.glob("shape_*.d"))


def test_the_floor_parts_read_every_row_and_write_the_valid_items(tmp_path):
    snap = bench_snapshot_shapes(N, tmp_path, pairs=1, shapes=("clean",))["clean"]
    res = bench_floor(N, tmp_path, rounds=1)
    for part in ("reader", "whitespace", "row_rules"):
        assert res[part]["rows"] == N, part
    # The clean shape has no duplicated id and no group that disagrees, so no cross-row rule rejects an item there:
    # the row-local rules alone keep exactly the items the whole ingest keeps, and those are copied.
    feed, _ = shape_feed(N, tmp_path, "clean")
    (dupes,) = (
        duckdb.connect()
        .execute(
            f"SELECT count(*) - count(DISTINCT id) FROM read_csv('{feed}', all_varchar=true) WHERE id IS NOT NULL"
        )
        .fetchone()
    )
    assert dupes == 0
    assert 0 < res["analyst_copy"]["rows"] == res["sync_state"]["rows"] == snap["valid"] < N
    writes = res["analyst_copy"]["median_ratio"] + res["sync_state"]["median_ratio"]
    assert res["ingest_floor"] == res["row_rules"]["median_ratio"]
    assert res["snapshot_floor"] == pytest.approx(res["row_rules"]["median_ratio"] + writes)
    assert res["snapshot_floor_any_rules"] == pytest.approx(res["reader"]["median_ratio"] + writes)
    assert all(res[p]["seconds"] > 0 for p in FLOOR_PARTS)
    # The ingest without row-local rules is the real one on every row, with none of the clean shape's ~1 % of items
    # that break a row-local rule rejected: nothing else in the clean shape rejects an item.
    assert res["no_row_rules"]["rows"] == res["no_row_rules"]["valid"] == N
    assert res["ingest_floor_no_row_rules"] == res["no_row_rules"]["median_ratio"]
    assert res["snapshot_floor_no_row_rules"] == pytest.approx(res["no_row_rules"]["median_ratio"] + writes)
    for p in FLOOR_PARTS:
        assert res[p]["fastest_ratio"] == pytest.approx(res[p]["seconds"] / res[p]["bare_seconds"])


def test_the_ingest_without_row_rules_is_the_ingest_with_its_rules_emptied(tmp_path):
    """The floor's rule-free ingest runs in a subprocess that empties the rule list; with no rule the mask is 0 and
    the ingest still runs its cross-row rules: a duplicated id is still rejected."""
    import kobi_cpas.feeds.validate as validate
    from kobi_cpas.feeds.snapshot import ingest_feed

    feed = tmp_path / "f.csv"
    feed.write_text(
        "id,title,description,availability,condition,price,link,image_link,brand\n"
        "a,T,D,in stock,new,10.00 TRY,https://x.example/a,https://x.example/a.jpg,B\n"
        "a,T,D,in stock,new,10.00 TRY,https://x.example/a,https://x.example/a.jpg,B\n"
        "b,T,D,sometimes,new,10,not a url,https://x.example/b.jpg,B\n"
    )
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    with_rules = ingest_feed(con, tenant_id="t1", snapshot_id="s", path=feed, fmt="csv", source_label="f")
    saved = validate.ROW_RULES
    try:
        validate.ROW_RULES = ()
        without = ingest_feed(con, tenant_id="t2", snapshot_id="s", path=feed, fmt="csv", source_label="f")
    finally:
        validate.ROW_RULES = saved
    assert (with_rules.item_count, with_rules.valid_count) == (3, 1)
    assert (without.item_count, without.valid_count) == (3, 2)
