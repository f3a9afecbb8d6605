"""`make bench`, the feed_snapshot step per feed shape and the floor under its targets.

1. :func:`bench_snapshot_shapes`: the whole first snapshot of a tenant (ingest, replace view, feed tables, item
   state and the publish to the analyst file) on every feed shape of the ingest benchmark, against the bare read
   of the same file, in pairs of subprocesses (bare, then snapshot) so each ratio is taken side by side. The
   feed_file asset's work before it (stating and hashing the file) is timed apart.
2. :func:`bench_floor`: what any snapshot must do at least, measured the same way on the clean shape. Each part
   is a subprocess into a fresh database file, against a bare read run just before it:

   - ``reader``: the feed's own SELECT (explicit dialect, every column as text) into a table, no other work;
   - ``whitespace``: that, with the surrounding whitespace of every value removed (the cheapest normalisation
     Meta's rules need: " in stock " is a valid availability);
   - ``row_rules``: that, with every row-local rule, the stored result columns and the two content hashes (the
     ingest's single pass, without the cross-row rules, the row numbers, the issues and the incremental hash);
   - ``analyst_copy``: a copy of the valid items, as validated, into a second database file (the publish of
     ``feed_items``; analysts read a file of their own because a DuckDB file that a process writes cannot be
     opened by another process);
   - ``sync_state``: the least sync state of the valid items, one narrow row each (tenant, shard, id, both
     hashes, status: what the replace feed and the delta need; ``desired_state`` holds more);
   - ``no_row_rules``: the real ``ingest_feed`` with Meta's row-local rules taken out (the module's rule list
     emptied in that subprocess only): the normalisation, hashes, row numbers, cross-row rules and issues it must
     do whatever its rules, so no implementation of the rules can make the ingest cheaper than this.

   The ingest cannot be cheaper than ``row_rules``. A first snapshot reads the file, copies its items to the
   analyst file and writes their sync state whatever its rules cost (``reader`` + ``analyst_copy`` +
   ``sync_state``), and with this ingest's rules it costs at least ``row_rules`` + ``analyst_copy`` +
   ``sync_state``: the report puts those sums next to the issue's targets. ``no_row_rules`` + ``analyst_copy`` +
   ``sync_state`` is what a first snapshot costs at least with rules that cost nothing.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from pathlib import Path

import yaml

from kobi_cpas.devenv.statement_profile import ProfiledConnection, Statement
from kobi_cpas.feeds.bench import PEAK_SNIPPET, SHAPES, bare_phase, run_phase, shape_feed
from kobi_cpas.registry import LoadedRegistry, Tenant, load_registry
from kobi_cpas.sync.feed_download import download_feed
from kobi_cpas.sync.snapshot_step import SnapshotOutcome, ingest_snapshot
from kobi_cpas.warehouse import Warehouse

# The XML of a million items is about 1 GB and its stream parse alone takes half a minute here.
XML_SCALE = 200_000


def shape_items(n: int, shape: str) -> int:
    """The items of a benchmark of ``n`` items on ``shape``: the XML shape at :data:`XML_SCALE` at most."""
    return min(n, XML_SCALE) if shape == "xml" else n


def bench_tenant(work: Path, feed: Path, fmt: str = "csv") -> tuple[LoadedRegistry, Tenant]:
    """A registry in ``work`` of one tenant, ``bench``, fed from the local ``feed``."""
    reg = work / "tenants.yaml"
    source = {"source": str(feed), "format": fmt, "feeds_root": str(feed.parent)}
    reg.write_text(
        yaml.safe_dump(
            {"tenants": [{"tenant_id": "bench", "business_id": "1", "catalog_id": "2", "feed": source}]}
        )
    )
    registry = load_registry(reg)
    return registry, registry.tenant("bench")


def time_asset_snapshot(
    wh: Warehouse,
    registry: LoadedRegistry,
    tenant: Tenant,
    workdir: Path,
    now: datetime,
    profile: list[Statement] | None = None,
) -> tuple[SnapshotOutcome, float, float]:
    """What the feed_snapshot asset does for a tenant (ingest, feed tables, replace view, item state, publish),
    from the manifest the feed_file asset leaves: (outcome with ``publish`` among its stage seconds and end times,
    the asset's seconds, the feed_file asset's seconds before it: stating and hashing the file). With ``profile``,
    every statement runs through a :class:`ProfiledConnection` and its records are added to that list."""
    t = time.perf_counter()
    manifest = download_feed(registry, tenant, workdir)
    feed_file = time.perf_counter() - t
    with wh.connect() as raw:
        con = ProfiledConnection(raw) if profile is not None else raw
        t = time.perf_counter()
        s = ingest_snapshot(con, tenant=tenant, workdir=workdir, manifest=manifest, now=now, force=True)  # type: ignore[arg-type]
        t_publish = time.perf_counter()
        wh.publish(con)  # type: ignore[arg-type]
        end = time.perf_counter()
    if isinstance(con, ProfiledConnection) and profile is not None:
        profile.extend(con.statements)
    s.stage_seconds["publish"] = end - t_publish
    s.stage_ends["publish"] = end
    return s, end - t, feed_file


FLOOR_PARTS = ("reader", "whitespace", "row_rules", "analyst_copy", "sync_state", "no_row_rules")

# argv: feed, db path (its folder is the run's work folder), settings (unused), format.
_SNAPSHOT_PHASE = (
    PEAK_SNIPPET
    + """
import json, shutil, sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from kobi_cpas.devenv.shapes_bench import bench_tenant, time_asset_snapshot
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse

# The analyst file is the phase's database file; the work database and the run's files go in a folder of its own.
feed, analyst, fmt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[4]
work = analyst.with_suffix(".d")
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
registry, tenant = bench_tenant(work, feed, fmt)
wh = Warehouse(analyst, schema=SCHEMA, work_dir=work / "work")
s, seconds, feed_file = time_asset_snapshot(wh, registry, tenant, work / "w", datetime(2026, 11, 1, tzinfo=UTC))
with duckdb.connect(str(analyst), read_only=True) as ro:
    (published,) = ro.execute("SELECT count(*) FROM feed_items").fetchone()
if s.status != "ok":
    raise SystemExit(f"snapshot {s.status}: {s.message}")
shutil.rmtree(work)
print(json.dumps({"seconds": seconds, "feed_file_seconds": feed_file, "items": s.ingest.item_count,
                  "valid": s.ingest.valid_count, "feed_items": published, "stages": s.stage_seconds,
                  "peak_rss_mb": PEAK()}))
"""
)

# argv: feed, db path, settings (unused), format; __PART__ is one of FLOOR_PARTS.
_FLOOR_PHASE = (
    PEAK_SNIPPET
    + """
import duckdb, json, sys, time
from pathlib import Path

from kobi_cpas.feeds.parser import open_feed_source
from kobi_cpas.feeds.row_rules import trimmed_sql
from kobi_cpas.feeds.validate import items_select_sql

part, feed, db_path = "__PART__", Path(sys.argv[1]), Path(sys.argv[2])
con = duckdb.connect(str(db_path))
con.execute("SET enable_progress_bar = false")
if part == "no_row_rules":
    import kobi_cpas.feeds.validate as validate
    from kobi_cpas.feeds.snapshot import ingest_feed

    validate.ROW_RULES = ()  # this subprocess only: the ingest with no row-local rule at all
    t, c = time.perf_counter(), CPU()
    r = ingest_feed(con, tenant_id="bench", snapshot_id="s1", path=feed, fmt=sys.argv[4], source_label="bench")
    con.execute("CHECKPOINT")
    seconds, cpu = time.perf_counter() - t, CPU() - c
    con.close()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": r.item_count, "valid": r.valid_count,
                      "peak_rss_mb": PEAK()}))
    sys.exit(0)
source = open_feed_source(feed, sys.argv[4], tmp_dir=db_path.parent)
present = source.columns_present
con.execute("SET preserve_insertion_order = true")  # as the ingest runs
rules = items_select_sql(source.select_sql, columns=present)
other = db_path.with_suffix(".analyst")
if part in ("analyst_copy", "sync_state"):
    # The validated rows first (not timed).
    con.execute(f"CREATE TABLE t AS {rules}")
    con.execute("CHECKPOINT")
if part == "analyst_copy":
    # Their valid items into a file of their own.
    other.unlink(missing_ok=True)
    con.execute(f"ATTACH '{other}' AS analyst")
    sql = f"CREATE TABLE analyst.feed_items AS SELECT * EXCLUDE (row_number, _issue_mask) FROM t WHERE is_valid"
    checkpoint, result = "CHECKPOINT analyst", "analyst.feed_items"
elif part == "sync_state":
    sql = ("CREATE TABLE s AS SELECT 'bench' AS tenant_id, (hash(id) % 4)::INTEGER AS shard, id, content_hash, "
           "volatile_hash, 'active' AS status FROM t WHERE is_valid")
    checkpoint, result = "CHECKPOINT", "s"
else:
    sql = {
        "reader": f"CREATE TABLE t AS {source.select_sql}",
        "whitespace": "CREATE TABLE t AS SELECT "
        + ", ".join(f"{trimmed_sql(c)} AS {c}" for c in present) + f" FROM ({source.select_sql})",
        "row_rules": f"CREATE TABLE t AS {rules}",
    }[part]
    checkpoint, result = "CHECKPOINT", "t"
t, c = time.perf_counter(), CPU()
con.execute(sql)
con.execute(checkpoint)
seconds, cpu = time.perf_counter() - t, CPU() - c
(rows,) = con.execute(f"SELECT count(*) FROM {result}").fetchone()
con.close()
if part == "analyst_copy":
    other.unlink()
source.cleanup()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "peak_rss_mb": PEAK()}))
"""
)


def _paired(bares: list[dict], runs: list[dict]) -> dict:
    ratios = [r["seconds"] / b["seconds"] for b, r in zip(bares, runs, strict=True)]
    return {
        "seconds": min(r["seconds"] for r in runs),
        "bare_seconds": min(b["seconds"] for b in bares),
        "paired_ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def bench_snapshot_shapes(n: int, workdir: Path, *, pairs: int = 2, shapes: tuple[str, ...] = SHAPES) -> dict:
    """Per shape: the first snapshot and its publish against the bare read of the same file, ``pairs`` times
    (bare, then snapshot); the ratio is the median of the pairs. The XML shape runs at :data:`XML_SCALE` items at
    most. ``workdir`` holds the shapes' feeds (shared with the ingest benchmark)."""
    out: dict = {}
    for shape in shapes:
        size = shape_items(n, shape)
        feed, fmt = shape_feed(size, workdir, shape)
        bares, runs = [], []
        for _ in range(max(1, pairs)):
            bares.append(run_phase(bare_phase(fmt), feed, workdir / "shape_bare.duckdb", {}, fmt))
            runs.append(run_phase(_SNAPSHOT_PHASE, feed, workdir / "shape_snapshot.duckdb", {}, fmt))
        res = _paired(bares, runs)
        # In Dagster the publish runs at the run's end (or from analyst_publish_sensor): the step alone, beside.
        steps = [
            (r["seconds"] - r["stages"]["publish"]) / b["seconds"] for b, r in zip(bares, runs, strict=True)
        ]
        res["median_step_ratio"] = statistics.median(steps)
        last = runs[-1]
        res.update(
            n_items=size,
            feed_mb=feed.stat().st_size / 2**20,
            items=last["items"],
            valid=last["valid"],
            feed_items=last["feed_items"],
            stages=last["stages"],
            feed_file_seconds=last["feed_file_seconds"],
        )
        out[shape] = res
    return out


def bench_floor(n: int, workdir: Path, *, rounds: int = 3) -> dict:
    """The floor parts (:data:`FLOOR_PARTS`) on the clean shape, each against a bare read just before it,
    ``rounds`` times; ratios are medians of the pairs, each part also with ``fastest_ratio`` and ``cpu_ratio``.
    Adds ``ingest_floor`` (``row_rules``), ``snapshot_floor`` (``row_rules`` + ``analyst_copy`` + ``sync_state``),
    ``snapshot_floor_any_rules`` (``reader`` in place of ``row_rules``: whatever the rules cost), and
    ``ingest_floor_no_row_rules`` / ``snapshot_floor_no_row_rules`` (``no_row_rules`` in its place: rules that
    cost nothing)."""
    feed, fmt = shape_feed(n, workdir, "clean")
    bares: dict[str, list[dict]] = {p: [] for p in FLOOR_PARTS}
    runs: dict[str, list[dict]] = {p: [] for p in FLOOR_PARTS}
    for _ in range(max(1, rounds)):
        for part in FLOOR_PARTS:
            bares[part].append(run_phase(bare_phase(fmt), feed, workdir / "floor_bare.duckdb", {}, fmt))
            code = _FLOOR_PHASE.replace("__PART__", part)
            runs[part].append(run_phase(code, feed, workdir / "floor_part.duckdb", {}, fmt))
    out: dict = {"n_items": n, "feed_mb": feed.stat().st_size / 2**20}
    for part in FLOOR_PARTS:
        out[part] = {**_paired(bares[part], runs[part]), "rows": runs[part][-1]["rows"]}
        # Also fastest against fastest, as the ingest benchmark reports: the bare read's wall time has two modes
        # here (the same CPU time spread over the two cores well or less well), and a run's median may see
        # only the slow one.
        out[part]["fastest_ratio"] = out[part]["seconds"] / out[part]["bare_seconds"]
        out[part]["cpu_ratio"] = min(r["cpu_seconds"] for r in runs[part]) / min(
            b["cpu_seconds"] for b in bares[part]
        )
    out["no_row_rules"]["valid"] = runs["no_row_rules"][-1]["valid"]
    writes = out["analyst_copy"]["median_ratio"] + out["sync_state"]["median_ratio"]
    out["ingest_floor"] = out["row_rules"]["median_ratio"]
    out["snapshot_floor"] = out["row_rules"]["median_ratio"] + writes
    out["snapshot_floor_any_rules"] = out["reader"]["median_ratio"] + writes
    out["ingest_floor_no_row_rules"] = out["no_row_rules"]["median_ratio"]
    out["snapshot_floor_no_row_rules"] = out["no_row_rules"]["median_ratio"] + writes
    return out


def print_shapes(shapes: dict, floor: dict) -> None:
    print("feed_snapshot step per feed shape, first snapshot with its publish (target <= 2 x the bare read):")
    for shape, r in shapes.items():
        st = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        print(
            f"  {shape:9s} {r['n_items']:>9,} items {r['feed_mb']:5.0f} MB: {r['seconds']:6.2f} s against "
            f"{r['bare_seconds']:.2f} s, median {r['median_ratio']:.2f} x "
            f"({' / '.join(f'{x:.2f}' for x in r['paired_ratios'])}), without the publish {r['median_step_ratio']:.2f} x; "
            f"peak {r['peak_rss_mb']:.0f} MB; {st}; feed_file before it {r['feed_file_seconds']:.2f}"
        )
    print(f"the floor under the targets, clean shape at {floor['n_items']:,} items (median of paired runs):")
    for part in FLOOR_PARTS:
        r = floor[part]
        print(
            f"  {part:13s} {r['median_ratio']:5.2f} x the bare read ({r['seconds']:.2f} s, {r['rows']:,} rows; "
            f"fastest against fastest {r['fastest_ratio']:.2f} x, CPU {r['cpu_ratio']:.2f} x)"
        )
    print(
        f"  this ingest costs at least {floor['ingest_floor']:.2f} x (target 1.25 x); a first snapshot at least "
        f"{floor['snapshot_floor']:.2f} x with its rules, {floor['snapshot_floor_any_rules']:.2f} x whatever its rules "
        "cost (target 2 x)"
    )
    nr = floor["no_row_rules"]
    print(
        f"  with no row-local rule at all ({nr['valid']:,} of {nr['rows']:,} items valid) the ingest costs "
        f"{floor['ingest_floor_no_row_rules']:.2f} x (fastest against fastest {nr['fastest_ratio']:.2f} x; target "
        f"1.25 x) and a first snapshot at least {floor['snapshot_floor_no_row_rules']:.2f} x (target 2 x)"
    )
