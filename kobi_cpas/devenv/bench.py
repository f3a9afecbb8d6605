"""`make bench`: speed and memory, measured side by side in one run and reported as ratios.

Catalog sync:
1. snapshot ingest (parse, validate, hash, store) vs a bare `CREATE TABLE AS SELECT * FROM read_csv(...)` of the
   same N-item file, each phase in its own subprocess (separate peak RSS);
2. the whole feed_snapshot step (ingest, feed tables, replace view, item state, publish; the feed_file asset's
   download and sha256 before it are timed apart) on an N-item feed and
   again after 1 % volatile, 0.2 % new and 0.2 % removed items, against a bare read of the same file, with the
   delta checked against the files and the analyst file's size against one published from scratch, in one
   subprocess with its peak RSS;
2b. the first snapshot on every feed shape of the ingest benchmark, and the floor under the targets
   (:mod:`kobi_cpas.devenv.shapes_bench`);
2c. a replace upload of the N-item feed and the fleet's change sent after it, and
3. exact request counts against the sandbox: K volatile-only changes must cost ceil(K / 5000) items_batch calls,
   new/changed items exactly one update upload, unchanged items nothing (both in :mod:`kobi_cpas.devenv.sync_bench`).

Later domains add their own phases through `EXTRA_BENCHMARKS`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from kobi_cpas.devenv.bench_phase import snapshot_feed, subprocess_json
from kobi_cpas.devenv.shapes_bench import print_shapes, shape_items
from kobi_cpas.devenv.statement_profile import print_profile
from kobi_cpas.devenv.sync_bench import bench_replace_upload, bench_request_counts, print_syncs
from kobi_cpas.feeds.bench import PEAK_SNIPPET

# Runs of the snapshot phase in `make bench` (about 20 s each at 1M items): its ratios are the runs' medians.
SNAPSHOT_REPEATS = 3


def _insights(scale: int, out: Path) -> dict:
    from kobi_cpas.devenv.insights_bench import run_insights_benchmark

    clean = run_insights_benchmark(n_ads=400, days=28)
    # the same pull when Meta refuses more than 7 days per job (too-much-data errors force splitting)
    split = run_insights_benchmark(n_ads=400, days=28, too_much_data_max_days=7)
    keys = (
        "ads",
        "days",
        "api_requests_issued",
        "minimum_requests",
        "request_overhead_ratio",
        "rows_loaded",
        "pull_seconds",
        "rows_per_second",
    )
    return {"clean": {k: clean.get(k) for k in keys}, "too_much_data_7_days": {k: split.get(k) for k in keys}}


# Extra phases: (name, fn(scale, out) -> dict); each domain adds its own.
EXTRA_BENCHMARKS: list[tuple[str, Callable[[int, Path], dict]]] = [("insights", _insights)]

_SNAPSHOT_PHASE = (
    PEAK_SNIPPET
    + """
import json, shutil, sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
import duckdb
from kobi_cpas.feeds.generator import FLEET_REMOVED_SQL as REMOVED, fleet_change, mutation_predicate_sql
from kobi_cpas.devenv.shapes_bench import bench_tenant, time_asset_snapshot
from kobi_cpas.devenv.statement_profile import by_stage
from kobi_cpas.sync.methods import batch_requests_sql
from kobi_cpas.sync.item_state import refresh_item_state
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse

a, work = Path(sys.argv[1]), Path(sys.argv[2])
profiled = sys.argv[3:] == ["profile"]  # every statement through DuckDB's profiler: its figures are not the timings
b = work / f"{a.stem}_changed.csv"
# The fleet benchmark's change: 1 % of the items with another price or stock, 0.2 % new, 0.2 % removed.
fleet_change(a, b, work / "volatile.csv")
out = {"feed_mb": a.stat().st_size / 2**20}
# The bare read of the same file, side by side.
bare_db = work / "bare.duckdb"
bare_db.unlink(missing_ok=True)
bare = duckdb.connect(str(bare_db))
t = time.perf_counter()
bare.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{a}')")
bare.execute("CHECKPOINT")
out["bare_read_seconds"] = time.perf_counter() - t
bare.close()
bare_db.unlink()
feed = work / "feed.csv"
registry, tenant = bench_tenant(work, feed)
# A fresh work database every run: state left by an earlier run would be part of the delta.
for d in (work / "wh", work / "w"):
    shutil.rmtree(d, ignore_errors=True)
wh = Warehouse(work / "wh" / "kobi.duckdb", schema=SCHEMA)
t0 = datetime(2026, 11, 1, tzinfo=UTC)

def snapshot(path, hours, key):
    feed.write_bytes(path.read_bytes())
    statements = [] if profiled else None
    s, seconds, out[f"{key}_feed_file_seconds"] = time_asset_snapshot(wh, registry, tenant, work / "w",
                                                                      t0 + timedelta(hours=hours), statements)
    if profiled:
        out.setdefault("profile", {})[key] = by_stage(statements, s.stage_ends["publish"] - seconds, s.stage_ends)
    return s, seconds

s1, out["first_snapshot_seconds"] = snapshot(a, 0, "first")
out["first_stages"] = s1.stage_seconds
out["fresh_file_mb"] = wh.analyst_path.stat().st_size / 2**20
with wh.connect() as con:
    # Meta holds the first snapshot, as after a finished replace upload, whose step then refreshes the item state
    # and publishes (not part of the second snapshot's time)
    con.execute("INSERT INTO sync_state.meta_items SELECT tenant_id, id, shard, content_hash, volatile_hash, "
                "'replace', 's', now() FROM sync_state.desired_state")
    refresh_item_state(con, tenant)
    wh.publish(con)
    # Ground truth from the two files: what the delta must find.
    truth = con.execute(f\"\"\"
        WITH x AS (SELECT id, {mutation_predicate_sql(7, 0.01)} AS vol, {REMOVED} AS rem FROM sync_state.desired_state)
        SELECT count(*) FILTER (WHERE vol AND NOT rem), count(*) FILTER (WHERE rem) FROM x\"\"\").fetchone()
    out["expected"] = {"new": con.execute(f"SELECT count(*) FROM read_csv('{b}', all_varchar=true) WHERE id LIKE 'NEW-%'").fetchone()[0],
                       "changed": 0, "volatile_only_at_least": truth[0], "removed": truth[1]}
s2, out["second_snapshot_seconds"] = snapshot(b, 1, "second")
out["second_stages"] = s2.stage_seconds
d = s2.delta
out["delta"] = {"new": d.new, "changed": d.changed, "volatile_only": d.volatile_only, "unchanged": d.unchanged,
                "removed": d.removed, "dropped": d.dropped, "retention_flips": d.retention_flips}
with wh.connect() as con:
    t = time.perf_counter()
    chunks = con.execute(batch_requests_sql(5000), {"t": "bench"}).fetchall()
    out["batch_planning_seconds"] = time.perf_counter() - t
    out["batch_calls_planned"] = len(chunks)
    out["batch_items_planned"] = sum(c[1] for c in chunks)
    out["max_items_per_call"] = max((c[1] for c in chunks), default=0)
    # The analyst file after the incremental publish against the same rows published from scratch.
    out["incremental_file_mb"] = wh.analyst_path.stat().st_size / 2**20
    wh.analyst_path.unlink()
    t = time.perf_counter()
    wh.publish(con)
    out["publish_full_seconds"] = time.perf_counter() - t
    out["rebuilt_file_mb"] = wh.analyst_path.stat().st_size / 2**20
out["peak_rss_mb"] = PEAK()
print(json.dumps(out))
"""
)


def bench_snapshot(n: int, out: Path, repeats: int = 1, profile: bool = False) -> dict:
    """The whole feed_snapshot step at ``n`` items, first and second snapshot, against a bare read; ``repeats``
    runs one after the other, each in a fresh work database. The ratios are taken within each run (its bare
    read, first and second snapshot come minutes apart at most) and their medians reported: on a shared machine
    two runs can differ by a third. The other figures are the first run's; the peak is the highest. With
    ``profile``, one more run passes every statement through DuckDB's profiler (not counted in the figures):
    ``profile`` holds, per snapshot and stage, its statements and the costliest
    (:func:`kobi_cpas.devenv.statement_profile.by_stage`)."""
    runs = [_snapshot_run(n, out) for _ in range(max(repeats, 1))]
    res = dict(runs[0])
    ratios = ("first_ratio_to_bare", "second_to_first")
    seconds = ("bare_read_seconds", "first_snapshot_seconds", "second_snapshot_seconds")
    res["runs"] = [{k: r[k] for k in seconds + ratios} for r in runs]
    for key in ratios:
        res[f"median_{key}"] = statistics.median(r[key] for r in runs)
    res["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    res["delta_exact"] = all(r["delta_exact"] for r in runs)
    res["batch_calls_exact"] = all(r["batch_calls_exact"] for r in runs)
    if profile:
        res["profile"] = _snapshot_run(n, out, profile=True)["profile"]
    return res


def _snapshot_run(n: int, out: Path, profile: bool = False) -> dict:
    work = out / "snapshot"
    work.mkdir(parents=True, exist_ok=True)
    args = ["profile"] if profile else []
    res = subprocess_json(_SNAPSHOT_PHASE, str(snapshot_feed(out, n)), str(work), *args)
    d, e = res["delta"], res["expected"]
    # The volatile mutation also turns some items out of stock, and the removed ones that were in stock turn
    # out of stock (retention): volatile-only holds at least the mutated items, nothing is content-changed.
    res["delta_exact"] = (
        d["new"] == e["new"]
        and d["changed"] == e["changed"]
        and d["removed"] == e["removed"]
        and d["dropped"] == 0
        and d["volatile_only"] >= e["volatile_only_at_least"]
        and d["volatile_only"] <= e["volatile_only_at_least"] + e["removed"]
    )
    res["expected_batch_calls"] = math.ceil(d["volatile_only"] / 5000)
    res["batch_calls_exact"] = res["batch_calls_planned"] == res["expected_batch_calls"]
    res["first_ratio_to_bare"] = res["first_snapshot_seconds"] / res["bare_read_seconds"]
    res["second_to_first"] = res["second_snapshot_seconds"] / res["first_snapshot_seconds"]
    res["file_growth"] = res["incremental_file_mb"] / res["rebuilt_file_mb"]
    return res


def run_benchmarks(scale: int = 1_000_000, out: Path = Path(".bench"), request_scale: int = 50_000) -> dict:
    from kobi_cpas.devenv.shapes_bench import bench_floor, bench_snapshot_shapes
    from kobi_cpas.feeds.bench import run_ingest_benchmark

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"scale": scale, "cpu_count": os.cpu_count()}
    print(f"[1/3] feed ingest vs bare read_csv at {scale:,} items ...", flush=True)
    report["ingest"] = run_ingest_benchmark(scale, out / "feeds", repeat=3)
    print(
        f"[1b/3] the same with variant groups that disagree on brand and title at {scale:,} items ...",
        flush=True,
    )
    report["ingest_variants"] = run_ingest_benchmark(scale, out / "feeds", repeat=3, variant_mismatch=True)
    for shape in ("tsv", "rich", "xml"):
        n = shape_items(scale, shape)
        print(f"[1c/3] the same as {shape} at {n:,} items ...", flush=True)
        report[f"ingest_{shape}"] = run_ingest_benchmark(n, out / "feeds", repeat=2, shape=shape)
    print(
        f"[2/3] the feed_snapshot step at {scale:,} items, twice (1 % volatile, 0.2 % new, 0.2 % removed) ...",
        flush=True,
    )
    report["snapshot"] = bench_snapshot(scale, out, repeats=SNAPSHOT_REPEATS, profile=True)
    print("[2b/3] the first snapshot on every feed shape, and the floor under the targets ...", flush=True)
    report["snapshot_shapes"] = bench_snapshot_shapes(scale, out / "feeds")
    report["floor"] = bench_floor(scale, out / "feeds")
    print(f"[2c/3] a replace upload of the {scale:,}-item feed, its peak memory ...", flush=True)
    report["replace_upload"] = bench_replace_upload(scale, out)
    print(f"[3/3] request counts against the sandbox at {request_scale:,} items ...", flush=True)
    report["requests"] = bench_request_counts(request_scale, out)
    for name, fn in EXTRA_BENCHMARKS:
        print(f"[+] {name} ...", flush=True)
        report[name] = fn(scale, out)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    _print(report)
    return report


def _print(r: dict) -> None:
    i, d, q = r["ingest"], r["snapshot"], r["requests"]
    print("\n== kobi_cpas benchmarks (ratios measured side by side in this run) ==")
    print(f"feed ingest, {i['n_items']:,} items ({i['feed_mb']:.0f} MB CSV):")
    print(f"  bare read_csv      {i['bare_read_csv_seconds']:7.2f} s   peak {i['bare_peak_rss_mb']:7.0f} MB")
    print(f"  ingest_feed        {i['ingest_seconds']:7.2f} s   peak {i['ingest_peak_rss_mb']:7.0f} MB")
    print(
        f"  ratio ingest/bare  {i['ratio']:7.2f} x  (target <= 1.25 x, <= 1536 MB; fastest of "
        f"{len(i['ingest_runs_seconds'])} alternating runs each, after {len(i['warmup_runs_seconds'])} "
        "warm-up pair not counted)"
    )
    print(
        f"  median of paired runs {i['median_paired_ratio']:5.2f} x  "
        f"({', '.join(f'{x:.2f}' for x in i['paired_ratios'])}); CPU-time ratio {i['cpu_ratio']:.2f} x"
    )
    v = r["ingest_variants"]
    print(
        f"feed ingest, variant groups with mismatched brand/title ({v['feed_mb']:.0f} MB CSV, "
        f"{v['ingest_valid']:,} valid, issues {v['ingest_issues']}):"
    )
    print(
        f"  ratio ingest/bare  {v['ratio']:7.2f} x  median of paired runs {v['median_paired_ratio']:.2f} x; "
        f"CPU-time ratio {v['cpu_ratio']:.2f} x; peak {v['ingest_peak_rss_mb']:.0f} MB "
        f"(clean shape: {i['median_paired_ratio']:.2f} x, {i['ingest_peak_rss_mb']:.0f} MB)"
    )
    for shape in ("tsv", "rich", "xml"):
        x = r[f"ingest_{shape}"]
        print(
            f"feed ingest, {shape} shape ({x['n_items']:,} items, {x['feed_mb']:.0f} MB, {x['ingest_valid']:,} valid, issues "
            f"{x['ingest_issues']}): ratio {x['ratio']:.2f} x, median of paired runs {x['median_paired_ratio']:.2f} x, "
            f"CPU-time ratio {x['cpu_ratio']:.2f} x, peak {x['ingest_peak_rss_mb']:.0f} MB (target <= 1.25 x)"
        )
    stages = lambda st: ", ".join(f"{k} {v:.2f}" for k, v in st.items())  # noqa: E731
    print(
        f"feed_snapshot step at {r['scale']:,} items (bare read of the same file {d['bare_read_seconds']:.2f} s):"
    )
    print(
        f"  first snapshot     {d['first_snapshot_seconds']:7.2f} s = {d['first_ratio_to_bare']:.2f} x the bare read "
        f"(target <= 2 x; without the publish, which Dagster runs at the run's end, "
        f"{(d['first_snapshot_seconds'] - d['first_stages']['publish']) / d['bare_read_seconds']:.2f} x): "
        f"{stages(d['first_stages'])}; the feed_file asset before it {d['first_feed_file_seconds']:.2f}"
    )
    print(
        f"  second snapshot    {d['second_snapshot_seconds']:7.2f} s = {d['second_to_first']:.2f} x the first "
        f"(target <= 0.5 x): {stages(d['second_stages'])}; the feed_file asset before it "
        f"{d['second_feed_file_seconds']:.2f}"
    )
    runs = d["runs"]
    print(
        f"  medians of {len(runs)} runs: first {d['median_first_ratio_to_bare']:.2f} x the bare read, second "
        f"{d['median_second_to_first']:.2f} x the first (per run: "
        + ", ".join(f"{x['first_ratio_to_bare']:.2f} / {x['second_to_first']:.2f}" for x in runs)
        + ")"
    )
    print(f"  delta {d['delta']} against {d['expected']}: exact {d['delta_exact']}")
    print(
        f"  batch planning     {d['batch_planning_seconds']:7.2f} s  -> {d['batch_calls_planned']} items_batch "
        f"calls (expected {d['expected_batch_calls']}), max {d['max_items_per_call']} per call"
    )
    print(
        f"  analyst file       {d['incremental_file_mb']:7.0f} MB after the incremental publish, "
        f"{d['rebuilt_file_mb']:.0f} MB published from scratch ({d['file_growth']:.2f} x; from scratch in "
        f"{d['publish_full_seconds']:.2f} s)"
    )
    print(f"  peak memory        {d['peak_rss_mb']:7.0f} MB (target <= 1536 MB)")
    print(
        "  where the time goes: one more run, every statement through DuckDB's profiler (slower than the runs above)"
    )
    for key, stages in d["profile"].items():
        print_profile(f"{key} snapshot", stages)
    print_shapes(r["snapshot_shapes"], r["floor"])
    print_syncs(r["replace_upload"], q)
    for key in r:
        if key not in (
            "ingest",
            "ingest_variants",
            "snapshot",
            "replace_upload",
            "requests",
            "snapshot_shapes",
            "floor",
            "scale",
            "cpu_count",
        ):
            print(f"{key}: {json.dumps(r[key], default=str)[:400]}")
