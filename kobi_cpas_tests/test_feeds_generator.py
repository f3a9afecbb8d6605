"""Synthetic feed generator (determinism, shape, scale) and the benchmark harness."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from kobi_cpas.feeds import ingest_feed
from kobi_cpas.feeds.bench import run_ingest_benchmark
from kobi_cpas.feeds.fields import VOLATILE_COLUMNS
from kobi_cpas.feeds.generator import GENERATED_COLUMNS, generate_feed, mutate_volatile


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def feed_20k(tmp_path_factory):
    return generate_feed(tmp_path_factory.mktemp("gen") / "a.csv", 20_000, seed=7)


def test_same_seed_same_bytes_other_seed_other_bytes(feed_20k, tmp_path):
    again = generate_feed(tmp_path / "b.csv", 20_000, seed=7, threads=1)
    other = generate_feed(tmp_path / "c.csv", 20_000, seed=8)
    assert _sha(again) == _sha(feed_20k)
    assert _sha(other) != _sha(feed_20k)


def test_generated_feed_shape_and_validity(feed_20k):
    con = duckdb.connect()
    header = feed_20k.open(encoding="utf-8").readline().strip().split(",")
    assert tuple(header) == GENERATED_COLUMNS
    r = ingest_feed(con, tenant_id="gen", snapshot_id="1", path=feed_20k, fmt="csv", source_label="gen")
    assert (r.item_count, r.valid_count, r.issue_counts) == (
        20_000,
        20_000,
        {"error": 0, "warning": 0, "info": 0},
    )
    stats = con.execute(
        f"""SELECT count(DISTINCT id), count(DISTINCT item_group_id),
                   count(*) FILTER (WHERE item_group_id IS NULL),
                   count(*) FILTER (WHERE sale_price IS NOT NULL),
                   count(*) FILTER (WHERE availability = 'in stock'),
                   count(DISTINCT brand), bool_and(price LIKE '% TRY')
            FROM {r.items_table}"""
    ).fetchone()
    n_ids, n_groups, ungrouped, on_sale, in_stock, brands, all_try = stats
    assert n_ids == 20_000
    assert 3_000 < n_groups < 5_000 and 2_000 < ungrouped < 6_000
    assert 1_500 < on_sale < 4_500
    assert 14_000 < in_stock < 18_000
    assert brands >= 15 and all_try
    # variants of a group share brand, title and shipping, and differ in size
    assert (
        con.execute(
            f"""SELECT count(*) FROM (SELECT item_group_id FROM {r.items_table} WHERE item_group_id IS NOT NULL
            GROUP BY 1 HAVING count(DISTINCT brand) > 1 OR count(DISTINCT title) > 1
                            OR count(DISTINCT size) <> count(*))"""
        ).fetchone()[0]
        == 0
    )


def test_error_share_produces_invalid_items(tmp_path):
    p = generate_feed(tmp_path / "e.csv", 10_000, seed=3, error_share=0.05)
    con = duckdb.connect()
    r = ingest_feed(con, tenant_id="err", snapshot_id="1", path=p, fmt="csv", source_label="e")
    assert 350 < r.invalid_count < 650
    codes = {c for (c,) in con.execute(f"SELECT DISTINCT code FROM {r.issues_table}").fetchall()}
    assert {"invalid_price_format", "invalid_value", "invalid_url", "missing_required_field"} <= codes


def test_mutate_volatile_changes_only_volatile_columns(feed_20k, tmp_path):
    out = mutate_volatile(feed_20k, tmp_path / "m.csv", share=0.01, seed=2)
    con = duckdb.connect()
    cols = list(GENERATED_COLUMNS)
    diff = con.execute(
        f"""WITH a AS (SELECT row_number() OVER () AS n, * FROM read_csv('{feed_20k}', all_varchar=true)),
                 b AS (SELECT row_number() OVER () AS n, * FROM read_csv('{out}', all_varchar=true))
            SELECT {", ".join(f"count(*) FILTER (WHERE a.{c} IS DISTINCT FROM b.{c})" for c in cols)},
                   count(*) FILTER (WHERE {" OR ".join(f"a.{c} IS DISTINCT FROM b.{c}" for c in cols)})
            FROM a JOIN b USING (n)"""
    ).fetchone()
    per_col = dict(zip(cols, diff[:-1], strict=True))
    changed_rows = diff[-1]
    assert 120 < changed_rows < 280  # ~1 % of 20,000
    for c, n in per_col.items():
        if c in ("price", "availability", "quantity_to_sell_on_facebook"):
            assert n == changed_rows, c
        elif c not in VOLATILE_COLUMNS:
            assert n == 0, c
    assert _sha(mutate_volatile(feed_20k, tmp_path / "m2.csv", share=0.01, seed=2)) == _sha(out)


@pytest.mark.bench
def test_benchmark_harness_runs(tmp_path):
    r = run_ingest_benchmark(2_000, tmp_path, repeat=2, warmup=1)
    assert r["n_items"] == 2_000 and r["bare_read_csv_seconds"] > 0 and r["ingest_seconds"] > 0
    # the warm-up pair is reported apart and not counted
    assert len(r["warmup_runs_seconds"]) == 1 and len(r["bare_runs_seconds"]) == len(r["paired_ratios"]) == 2
    assert r["bare_read_csv_seconds"] == min(r["bare_runs_seconds"])
    assert r["ratio"] == pytest.approx(r["ingest_seconds"] / r["bare_read_csv_seconds"])
    assert 0 < r["ingest_peak_rss_mb"] < 4_000
    assert r["ingest_valid"] < 2_000  # the benchmark feed carries 1 % broken items


def test_variant_mismatch_shape_stays_valid(tmp_path):
    """The benchmark's second shape: brands and titles differ inside groups, which Meta ingests; the validator
    warns once per group and property and keeps every item as valid as in the clean shape."""
    import duckdb

    from kobi_cpas.feeds.snapshot import ingest_feed

    results = {}
    for shape in (False, True):
        path = generate_feed(tmp_path / f"f{shape}.csv", 2_000, seed=5, variant_mismatch=shape)
        con = duckdb.connect()
        r = ingest_feed(con, tenant_id="t", snapshot_id="s", path=path, fmt="csv", source_label="x")
        groups = con.execute(
            f"SELECT count(DISTINCT item_group_id) FROM {r.items_table} WHERE item_group_id IS NOT NULL"
        ).fetchone()[0]
        warnings = dict(
            con.execute(
                f"SELECT field, count(*) FROM {r.issues_table} WHERE code = 'item_group_inconsistent' GROUP BY 1"
            ).fetchall()
        )
        results[shape] = (r.valid_count, groups, warnings)
    assert results[False][0] == results[True][0] == 2_000
    assert results[False][2] == {}
    assert results[True][2] == {"brand": results[True][1], "title": results[True][1]}


@pytest.mark.bench
def test_benchmark_shapes_read_the_same_items_as_tsv_and_longer_texts_with_invalid_ones(tmp_path):
    clean = run_ingest_benchmark(4_000, tmp_path, repeat=1, warmup=0)
    tsv = run_ingest_benchmark(4_000, tmp_path, repeat=1, warmup=0, shape="tsv")
    rich = run_ingest_benchmark(4_000, tmp_path, repeat=1, warmup=0, shape="rich")
    xml = run_ingest_benchmark(4_000, tmp_path, repeat=1, warmup=0, shape="xml")
    for other in (tsv, xml):
        assert (
            other["ingest_valid"] == clean["ingest_valid"]
            and other["ingest_issues"] == clean["ingest_issues"]
        )
    # The XML's bare read lands every item, with as many fields as the CSV's (empty ones are left out of the XML)
    assert xml["bare_rows"] == clean["bare_rows"] == 4_000 and xml["bare_columns"] == clean["bare_columns"]
    assert rich["feed_mb"] > 2 * clean["feed_mb"]  # longer texts, more columns
    invalid_share = 1 - rich["ingest_valid"] / 4_000
    assert 0.06 < invalid_share - (1 - clean["ingest_valid"] / 4_000) < 0.09  # ~7.5 % more items invalid
    with pytest.raises(ValueError, match="unknown feed shape"):
        run_ingest_benchmark(10, tmp_path, shape="xlsx")
