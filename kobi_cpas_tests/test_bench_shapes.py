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
