"""The demo's two days: `make run` syncs the committed demo feeds (day 1), then the feeds change the way a
brand's feed changes between two syncs (day 2) and the incremental syncs send the change, so the demo shows
all three of Meta's sync methods and an item that left the feed, retained out of stock.

The committed feeds stay untouched: the demo registry and its feeds are copied next to the analyst file
(``data/demo/``), where day 2 is written over day 1. Day 2 changes, per tenant, items chosen by a hash of their
id (the same items on every run):

* price (+10 %) or stock (availability flipped, quantity to match) of a few items -> Batch API;
* the description of a few items -> update feed;
* one valid item leaves the feed -> retained out of stock (``catalog_item_state.desired_status``).

Files are replaced atomically (a temporary file renamed over the old one), so a second `make run` staging day 1
while this one reads day 2 never leaves half a feed to read.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb

from kobi_cpas.devenv.demo_feeds import write_rss
from kobi_cpas.feeds.parser import DELIMITERS, parse_feed
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY

REGISTRY_ENV = "KOBI_CPAS_TENANTS"
DEMO_DIR = "demo"
DAY2_SEED = "demo-day2"
# Shares of the valid-looking items changed on day 2, by bucket of md5(seed:id) % 100.
PRICE_BELOW, STOCK_BELOW, CONTENT_BELOW = 4, 8, 12
CONTENT_SUFFIX = " Now also in a new colour."
PRICE_RE = r"[0-9]+(\.[0-9]{1,2})? [A-Z]{3}"
# Meta takes about 2 minutes to process a Batch API call, and the sandbox models it; the update sync waits for a
# pending batch before it plans. `make run`'s own sandbox takes this long instead, so the demo's day 2 does not
# wait through Meta's latency three times over.
RUN_BATCH_PROCESSING_SECONDS = 1.0


def demo_dir(analyst_path: Path) -> Path:
    """Where the demo registry and feeds are staged: beside the analyst file (git-ignored ``data/``)."""
    return analyst_path.parent / DEMO_DIR


def use_demo_registry(analyst_path: Path, *, restage: bool) -> Path | None:
    """Without KOBI_CPAS_TENANTS, point it (for this process and its children) at the demo staged beside the
    analyst file and return that folder; None when a registry is configured. ``restage`` (`make run`) writes
    day 1 again; otherwise (`make dev`) what the last `make run` left is kept, so the feed sensor sees the feeds
    that were synced, and day 1 is staged only when nothing is."""
    if os.environ.get(REGISTRY_ENV):
        return None
    where = demo_dir(analyst_path)
    registry = where / DEFAULT_REGISTRY.name
    if restage or not registry.is_file():
        registry = stage_demo(where, day=1)
    os.environ[REGISTRY_ENV] = str(registry)
    return where


def day2_before_stage(where: Path, echo: Callable[[str], None]) -> Callable[[int], None]:
    """The ``before_stage`` hook of ``materialize_all``: day 2 is staged before the incremental stage."""
    from kobi_cpas.devenv.pipeline import INCREMENTAL_STAGE  # imports Dagster: only when a run needs it

    def before_stage(index: int) -> None:
        if index == INCREMENTAL_STAGE:
            echo("demo, day 2: the feeds change (prices, stock, descriptions, one item removed)")
            stage_demo(where, day=2)

    return before_stage


def speed_up_sandbox(sandbox_url: str) -> None:
    """Shorten the batch processing time of the sandbox this `make run` started (never a shared one)."""
    from meta_sandbox import SandboxAdmin

    SandboxAdmin(sandbox_url).catalog_config(batch_processing_seconds=RUN_BATCH_PROCESSING_SECONDS)


def _replace_atomically(dest: Path, write) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def stage_demo(dest: Path, day: int, source_registry: Path = DEFAULT_REGISTRY) -> Path:
    """Write the demo registry and the feeds of ``day`` (1: as committed, 2: changed) under ``dest``; returns
    the staged registry's path (what KOBI_CPAS_TENANTS points at)."""
    if day not in (1, 2):
        raise ValueError(f"the demo has days 1 and 2, not {day}")
    dest.mkdir(parents=True, exist_ok=True)
    registry = dest / source_registry.name
    _replace_atomically(registry, lambda tmp: shutil.copyfile(source_registry, tmp))
    for tenant in load_registry(source_registry).tenants:
        src = (source_registry.parent / tenant.feed.source).resolve()
        target = dest / tenant.feed.source
        target.parent.mkdir(parents=True, exist_ok=True)
        if day == 1:
            _replace_atomically(target, lambda tmp, src=src: shutil.copyfile(src, tmp))
        else:
            _replace_atomically(
                target, lambda tmp, src=src, t=tenant: write_day2_feed(src, tmp, t.feed.format.value, t.name)
            )
    return registry


def day2_sql(table: str, columns: list[str]) -> str:
    """SELECT of day 2 from the day-1 rows in ``table`` (the parsed feed), in file order, ``columns`` only."""
    bucket = f"md5_number_lower('{DAY2_SEED}:' || id) % 100"
    valid = (
        f"id IS NOT NULL AND title IS NOT NULL AND regexp_full_match(coalesce(price, ''), '{PRICE_RE}') "
        "AND starts_with(coalesce(link, ''), 'https://') AND starts_with(coalesce(image_link, ''), 'https://')"
    )
    changed = {
        "price": "CASE WHEN change = 'price' THEN round(split_part(price, ' ', 1)::DECIMAL(18, 2) * 1.1, 2)"
        "::DECIMAL(18, 2)::VARCHAR || ' ' || split_part(price, ' ', 2) ELSE price END",
        "availability": "CASE WHEN change = 'stock' THEN CASE WHEN availability = 'in stock' THEN 'out of stock' "
        "ELSE 'in stock' END ELSE availability END",
        "quantity_to_sell_on_facebook": "CASE WHEN change = 'stock' THEN CASE WHEN availability = 'in stock' "
        "THEN '0' ELSE '12' END ELSE quantity_to_sell_on_facebook END",
        "description": f"CASE WHEN change = 'content' THEN description || '{CONTENT_SUFFIX}' ELSE description END",
    }
    select = ", ".join(f"{changed.get(c, c)} AS {c}" for c in columns)
    return f"""
    WITH marked AS (
        SELECT *, CASE WHEN NOT ({valid}) THEN NULL
                       WHEN {bucket} < {PRICE_BELOW} THEN 'price'
                       WHEN {bucket} < {STOCK_BELOW} THEN 'stock'
                       WHEN {bucket} < {CONTENT_BELOW} THEN 'content' END AS change,
               -- One valid item leaves the feed: the first by hash among those changed in no other way.
               ({valid}) AND {bucket} >= {CONTENT_BELOW} AS may_leave
        FROM {table}
    ),
    leaving AS (SELECT arg_min(id, md5('{DAY2_SEED}:leave:' || id)) AS id FROM marked WHERE may_leave)
    SELECT {select} FROM marked
    WHERE id IS NULL OR id <> (SELECT id FROM leaving)
    ORDER BY _row_number
    """


def write_day2_feed(src: Path, dest: Path, fmt: str, title: str | None) -> None:
    """Day 2 of the feed ``src`` (any demo format) written to ``dest`` in the same format."""
    con = duckdb.connect()
    try:
        parsed = parse_feed(con, src, fmt, schema="demo", table="day1")
        columns = list(parsed.columns_present)
        day2 = day2_sql(parsed.table, columns)
        if fmt == "xml":  # DuckDB writes no XML: the demo feed's few hundred rows go through ElementTree
            write_rss(dest, columns, con.execute(day2).fetchall(), title or src.stem)
            return
        con.execute(
            f"COPY ({day2}) TO '{str(dest).replace(chr(39), chr(39) * 2)}' "
            f"(FORMAT csv, HEADER, DELIMITER '{DELIMITERS[fmt]}', QUOTE '\"')"
        )
    finally:
        con.close()
