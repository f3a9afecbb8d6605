"""Benchmark: full ``ingest_feed`` against a bare ``read_csv`` of the same generated feed.

Each phase runs in its own subprocess (fresh interpreter, fresh DuckDB database file in ``workdir``) so
the two peak-RSS figures are separate and neither phase profits from the other's caches, except the OS
page cache, which is warmed for both by generating the file first.

    kobi-cpas bench feeds --items 1000000 --workdir .bench/feeds --repeat 3
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from kobi_cpas.feeds.generator import generate_feed, mutation_predicate_sql

_REPO_ROOT = Path(__file__).resolve().parents[2]

# Peak RSS of this process only: VmHWM belongs to the address space created by exec, whereas
# ru_maxrss survives fork+exec and would report the parent's peak.
PEAK_SNIPPET = """
def CPU():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def PEAK():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

# Every phase opens its database file with the same settings, then starts its clocks.
_OPEN_AND_START = """
con = duckdb.connect(db_path)
con.execute("SET enable_progress_bar = false")
for k, v in settings.items():
    con.execute(f"SET {k} = '{v}'")
t, c = time.perf_counter(), CPU()
"""

_PHASE_BARE = (
    PEAK_SNIPPET
    + """
import duckdb, json, sys, time
csv_path, db_path, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
"""
    + _OPEN_AND_START
    + """con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{csv_path}')")
con.execute("CHECKPOINT")
seconds, cpu = time.perf_counter() - t, CPU() - c
rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
columns = len(con.execute("DESCRIBE t").fetchall())
con.close()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "columns": columns, "peak_rss_mb": PEAK()}))
"""
)

_PHASE_INGEST = (
    PEAK_SNIPPET
    + """
import duckdb, json, resource, sys, time
from kobi_cpas.feeds.snapshot import ingest_feed
csv_path, db_path, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
"""
    + _OPEN_AND_START
    + """r = ingest_feed(con, tenant_id="bench", snapshot_id="s1", path=csv_path, fmt=sys.argv[4], source_label="bench")
con.execute("CHECKPOINT")
seconds, cpu = time.perf_counter() - t, CPU() - c
con.close()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": r.item_count, "valid": r.valid_count,
                  "issues": r.issue_counts, "peak_rss_mb": PEAK()}))
"""
)


# The bare read of an XML feed: DuckDB has no XML reader, so the least work that lands the file's rows in a
# table is a stream parse with the same C parser the ingest uses (ElementTree.iterparse), each item's children
# written as a CSV row as they are, then one read_csv. No field mapping, validation or hashing.
_PHASE_BARE_XML = (
    PEAK_SNIPPET
    + """
import csv, duckdb, json, os, sys, tempfile, time
import xml.etree.ElementTree as ET
xml_path, db_path, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
"""
    + _OPEN_AND_START
    + """fd, tmp = tempfile.mkstemp(suffix=".csv", dir=os.path.dirname(db_path))
names, depth = {}, 0  # tag -> column, in order of first appearance
with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
    w = csv.writer(out)
    for event, elem in ET.iterparse(xml_path, events=("start", "end")):
        if event == "start":
            depth += 1
            continue
        depth -= 1
        if depth == 2:  # an <item> of <rss><channel>
            row = [None] * len(names)
            for ch in elem:
                i = names.setdefault(ch.tag, len(names))
                if i == len(row):
                    row.append(None)
                row[i] = ch.text
            w.writerow(row)
            elem.clear()
# Columns only ever grow, so earlier rows are short: null_padding fills them.
cols = [n.rsplit("}", 1)[-1] for n in names]
con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{tmp}', header=false, names={cols}, all_varchar=true, null_padding=true)")
con.execute("CHECKPOINT")
os.unlink(tmp)
seconds, cpu = time.perf_counter() - t, CPU() - c
rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
columns = len(con.execute("DESCRIBE t").fetchall())
con.close()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "columns": columns, "peak_rss_mb": PEAK()}))
"""
)


def run_phase(code: str, csv_path: Path, db_path: Path, settings: dict[str, str], fmt: str = "csv") -> dict:
    for p in (db_path, db_path.with_name(db_path.name + ".wal")):
        p.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code, str(csv_path), str(db_path), json.dumps(settings), fmt],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark phase failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["db_size_mb"] = db_path.stat().st_size / 2**20
    for p in (db_path, db_path.with_name(db_path.name + ".wal")):
        p.unlink(missing_ok=True)
    return result


def bare_phase(fmt: str) -> str:
    """The code of the bare read of a file of ``fmt`` (for :func:`run_phase`)."""
    return _PHASE_BARE_XML if fmt == "xml" else _PHASE_BARE


# Feed shapes of the ingest benchmark: the generator's own (clean), variant groups whose brand and title differ
# (variants), the same items as TSV (tsv), and an exporter of longer texts (rich): descriptions four times as long
# with an HTML rich_text_description, five more text columns, and 7.5 % more items invalid (a price without
# currency, or an unknown availability), and the same items as an RSS 2.0 XML feed with g: elements (xml).
SHAPES = ("clean", "variants", "tsv", "rich", "xml")
_XML_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">\n'
    "<channel>\n<title>Kobi bench feed</title>\n"
)


def write_rss_xml(con: duckdb.DuckDBPyConnection, rel: str, dst: Path) -> None:
    """The rows of ``rel`` as an RSS 2.0 feed, one <item> of <g:field> elements per row (empty fields left out),
    each line built in SQL."""
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]

    def esc(c: str) -> str:
        return f"replace(replace(replace(\"{c}\", '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"

    parts = " || ".join(f"coalesce('<g:{c}>' || {esc(c)} || '</g:{c}>', '')" for c in cols)
    cur = con.execute(f"SELECT '<item>' || {parts} || '</item>' FROM {rel}")
    with dst.open("w", encoding="utf-8") as out:
        out.write(_XML_HEAD)
        while batch := cur.fetchmany(50_000):
            out.write("\n".join(r[0] for r in batch))
            out.write("\n")
        out.write("</channel>\n</rss>\n")


def _reshape(src: Path, dst: Path, shape: str, seed: int) -> None:
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        rel = f"read_csv('{src}', header=true, all_varchar=true)"
        if shape == "tsv":
            con.execute(f"COPY (SELECT * FROM {rel}) TO '{dst}' (HEADER, DELIMITER '\t')")
            return
        if shape == "xml":
            write_rss_xml(con, rel, dst)
            return
        bad_price = mutation_predicate_sql(seed + 1, 0.05)
        bad_availability = mutation_predicate_sql(seed + 2, 0.025)
        con.execute(
            f"""COPY (
                SELECT * REPLACE (
                         description || ' ' || description || ' ' || description || ' ' || description AS description,
                         CASE WHEN {bad_price} THEN split_part(price, ' ', 1) ELSE price END AS price,
                         CASE WHEN {bad_availability} THEN 'sometimes' ELSE availability END AS availability),
                       '<p>' || title || '</p><ul><li>' || description || '</li></ul>' AS rich_text_description,
                       'Collection ' || (md5_number_lower(id) % 40) AS custom_label_1,
                       'Season ' || (md5_number_lower(id || 's') % 4) AS custom_label_2,
                       'Warehouse ' || (md5_number_lower(id || 'w') % 9) AS custom_label_3,
                       'Margin band ' || (md5_number_lower(id || 'm') % 5) AS custom_label_4,
                       google_product_category || ' > ' || coalesce(color, 'Any') AS product_type
                FROM {rel}
            ) TO '{dst}' (HEADER, DELIMITER ',')"""
        )
    finally:
        con.close()


def shape_feed(
    n_items: int, workdir: str | Path, shape: str, *, seed: int = 42, error_share: float = 0.01
) -> tuple[Path, str]:
    """The ``n_items`` feed of ``shape`` (one of :data:`SHAPES`) in ``workdir``, generated on first use, and its
    format (csv, tsv or xml)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown feed shape {shape!r}: one of {', '.join(SHAPES)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fmt = shape if shape in ("tsv", "xml") else "csv"
    path = workdir / f"bench_feed_{n_items}_{seed}_{shape}.{fmt}"
    # tsv, rich and xml are made from the clean shape's file (generated once for all of them)
    base = path if shape == "variants" else workdir / f"bench_feed_{n_items}_{seed}_clean.csv"
    if not base.exists():
        generate_feed(base, n_items, seed=seed, error_share=error_share, variant_mismatch=shape == "variants")
    if not path.exists():
        _reshape(base, path, shape, seed)
    return path, fmt


def run_ingest_benchmark(
    n_items: int,
    workdir: str | Path,
    *,
    seed: int = 42,
    error_share: float = 0.01,
    settings: dict[str, str] | None = None,
    keep_feed: bool = True,
    repeat: int = 1,
    warmup: int = 1,
    variant_mismatch: bool = False,
    shape: str | None = None,
) -> dict:
    """Generate an ``n_items`` CSV in ``workdir``, then time (a) bare ``CREATE TABLE t AS SELECT * FROM
    read_csv(file)`` and (b) ``ingest_feed`` (parse + validate + hash + store), each into a fresh
    DuckDB file and each in its own subprocess, both followed by a CHECKPOINT. For the ``xml`` shape the bare
    read is the stream parse described at ``_PHASE_BARE_XML`` (DuckDB has no XML reader).

    Returns seconds (fastest of ``repeat`` alternating runs) and peak RSS (MB, highest run) per phase,
    ``ratio`` = ingest / bare, and the feed size. ``warmup`` pairs run first and are reported but not counted:
    in some ``make bench`` runs the first bare read (right after the install step) was 17 % faster than every
    later run of either phase, and that bonus went only to the phase that runs first.
    ``settings`` are DuckDB settings applied in both phases (e.g. ``{"threads": "2"}``).
    """
    shape = shape or ("variants" if variant_mismatch else "clean")
    workdir = Path(workdir)
    t = time.perf_counter()
    csv_path, fmt = shape_feed(n_items, workdir, shape, seed=seed, error_share=error_share)
    generate_seconds = time.perf_counter() - t
    # Warm the page cache for both phases alike.
    with csv_path.open("rb") as f:
        while f.read(1 << 24):
            pass
    s = settings or {}
    # Alternate the phases and keep each one's fastest run: on a shared machine this filters out
    # the noise of other processes better than a single pair of runs.
    bares: list[dict] = []
    ingests: list[dict] = []
    for _ in range(max(0, warmup) + max(1, repeat)):
        bares.append(run_phase(bare_phase(fmt), csv_path, workdir / "bench_bare.duckdb", s, fmt))
        ingests.append(run_phase(_PHASE_INGEST, csv_path, workdir / "bench_ingest.duckdb", s, fmt))
    warm = [(b["seconds"], i["seconds"]) for b, i in zip(bares[:warmup], ingests[:warmup], strict=True)]
    bares, ingests = bares[max(0, warmup) :], ingests[max(0, warmup) :]
    bare = min(bares, key=lambda r: r["seconds"])
    paired = [i["seconds"] / b["seconds"] for b, i in zip(bares, ingests, strict=True)]
    ingest = min(ingests, key=lambda r: r["seconds"])
    result = {
        "n_items": n_items,
        "shape": shape,
        "feed_mb": csv_path.stat().st_size / 2**20,
        "generate_seconds": generate_seconds,
        "bare_read_csv_seconds": bare["seconds"],
        "bare_rows": bare["rows"],
        "bare_columns": bare["columns"],
        "ingest_seconds": ingest["seconds"],
        "ratio": ingest["seconds"] / bare["seconds"] if bare["seconds"] else float("inf"),
        # Each ingest run against the bare run just before it: robust to one lucky or unlucky run.
        "paired_ratios": paired,
        "median_paired_ratio": statistics.median(paired),
        # CPU time (user + sys, all threads) is less disturbed by other processes than wall time
        "bare_cpu_seconds": min(r["cpu_seconds"] for r in bares),
        "ingest_cpu_seconds": min(r["cpu_seconds"] for r in ingests),
        "cpu_ratio": min(r["cpu_seconds"] for r in ingests) / max(1e-9, min(r["cpu_seconds"] for r in bares)),
        "warmup_runs_seconds": warm,  # (bare, ingest) pairs, not counted
        "bare_runs_seconds": [r["seconds"] for r in bares],
        "ingest_runs_seconds": [r["seconds"] for r in ingests],
        "bare_peak_rss_mb": max(r["peak_rss_mb"] for r in bares),
        "ingest_peak_rss_mb": max(r["peak_rss_mb"] for r in ingests),
        "bare_db_mb": bare["db_size_mb"],
        "ingest_db_mb": ingest["db_size_mb"],
        "ingest_valid": ingest["valid"],
        "ingest_issues": ingest["issues"],
        "settings": s,
        "cpu_count": os.cpu_count(),
    }
    if not keep_feed:
        csv_path.unlink(missing_ok=True)
    return result
