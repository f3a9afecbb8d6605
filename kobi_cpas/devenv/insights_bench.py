"""Benchmark: pull a demo ad account with many ads over the 28-day restatement window from an in-process
sandbox, and report API requests issued against the minimum needed, and rows per second loaded.

Minimum needed = for every (level, family) of the plan: one job submit, one status poll that sees it complete,
and ceil(rows / page_limit) result pages (at least one). The puller's count adds the extra status polls of
running jobs and any retries / splits; ``http_requests`` also counts transport-level retries.

    kobi-cpas bench insights --ads 400 --days 28 --page-limit 500
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from kobi_cpas.insights.jobs import DEFAULT_MAX_IN_FLIGHT
from kobi_cpas.insights.parse import reparse_days
from kobi_cpas.insights.pull import pull_account_days, restatement_window, today_in_timezone
from kobi_cpas.meta import DEFAULT_API_VERSION, MetaGraphClient
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox import SandboxServer, World
from meta_sandbox import insights_model as im

BENCH_ACCOUNT = "act_4000000000000001"
BENCH_TENANT = ("anatolia_home", "trendyol")
BENCH_TOKEN = "EAAbenchTOKENnotAsecret0000"


def run_insights_benchmark(
    *,
    n_ads: int = 400,
    days: int = 28,
    page_limit: int = 500,
    seed: int = 42,
    polls_to_complete: int = 2,
    too_much_data_max_days: int | None = None,
    workdir: Path | str | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    poll_interval: float = 0.0,
) -> dict[str, Any]:
    """Run one pull of ``days`` days for an account with ``n_ads`` extra ads; returns the figures as a dict.

    ``too_much_data_max_days`` makes the sandbox refuse requests longer than that many days (code 100 subcode
    1487534), to show what splitting costs. ``max_in_flight`` report jobs run at once; with ``poll_interval`` > 0
    the pull's Meta wait (never really slept) is ``job_stats.waited_seconds``: what overlapping jobs save.
    """
    world = World.from_registry(load_registry(DEFAULT_REGISTRY), seed=seed, clock_frozen=True)
    with world.lock:
        seeded = im.seed_extra_ads(world, BENCH_ACCOUNT, n_ads)
        im.configure(world, {"polls_to_complete": polls_to_complete})
        if too_much_data_max_days:
            im.set_drift(
                world, {"account_id": BENCH_ACCOUNT, "too_much_data": {"max_days": too_much_data_max_days}}
            )
    tmp = tempfile.TemporaryDirectory(prefix="insights-bench-") if workdir is None else None
    base = Path(tmp.name if tmp else workdir)  # type: ignore[arg-type]
    base.mkdir(parents=True, exist_ok=True)
    db_path = base / f"insights_bench_{datetime.now(UTC):%Y%m%d%H%M%S%f}.duckdb"
    try:
        with SandboxServer(world) as server:
            client = MetaGraphClient(
                server.url,
                DEFAULT_API_VERSION,
                BENCH_TOKEN,
                max_retries=2,
                sleep=lambda s: None,
                rng=random.Random(0),
            )
            con = duckdb.connect(str(db_path))
            con.execute("SET enable_progress_bar = false")
            try:
                tz = world.ad_accounts[BENCH_ACCOUNT].timezone_name
                window = restatement_window(today_in_timezone(tz, world.now()), days)
                t0 = time.perf_counter()
                report = pull_account_days(
                    client,
                    con,
                    tenant_id=BENCH_TENANT[0],
                    retailer=BENCH_TENANT[1],
                    ad_account_id=BENCH_ACCOUNT,
                    days=window,
                    page_limit=page_limit,
                    poll_interval=poll_interval,
                    max_poll_interval=max(60.0, poll_interval),
                    sleep=lambda s: None,
                    max_in_flight=max_in_flight,
                )
                seconds = time.perf_counter() - t0
                facts = con.execute("SELECT count(*) FROM shared_item_metrics").fetchone()[0]
                products = con.execute("SELECT count(*) FROM shared_item_product_metrics").fetchone()[0]
                # Parse + replace alone, from raw (what a re-parse of the window costs).
                t1 = time.perf_counter()
                reparsed = 0
                for level in report.levels:
                    for family in report.families:
                        if family == "product" and level == "account":
                            continue
                        reparsed += sum(
                            reparse_days(
                                con,
                                tenant_id=BENCH_TENANT[0],
                                ad_account_id=BENCH_ACCOUNT,
                                level=level,
                                family=family,
                                days=window,
                            ).values()
                        )
                reparse_seconds = time.perf_counter() - t1
                minimum = _minimum_requests(con, report.pull_id, page_limit)
            finally:
                con.close()
            sandbox_requests = len(server.app.logged_requests())
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows = facts + products
    return {
        "account": BENCH_ACCOUNT,
        "ads": sum(1 for a in world.ads.values() if a.account_id == BENCH_ACCOUNT),
        "extra_ads_seeded": seeded["ads"],
        "days": days,
        "page_limit": page_limit,
        "too_much_data_max_days": too_much_data_max_days,
        "max_in_flight": max_in_flight,
        "api_requests_issued": report.api_requests,
        "http_requests": report.http_requests,
        "sandbox_requests_logged": sandbox_requests,
        "minimum_requests": minimum["total"],
        "minimum_breakdown": minimum,
        "request_overhead_ratio": round(report.api_requests / minimum["total"], 3)
        if minimum["total"]
        else None,
        "job_stats": report.job_stats,
        "raw_rows": report.raw_rows,
        "rows_loaded": rows,
        "shared_item_metrics_rows": facts,
        "shared_item_product_metrics_rows": products,
        "pull_seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds else None,
        "reparse_rows": reparsed,
        "reparse_seconds": round(reparse_seconds, 3),
        "reparse_rows_per_second": round(reparsed / reparse_seconds, 1) if reparse_seconds else None,
        "complete": report.complete,
    }


def _minimum_requests(con: Any, pull_id: str, page_limit: int) -> dict[str, int]:
    """One submit + one completing poll + ceil(rows / page_limit) pages per planned (level, family) root."""
    rows = con.execute(
        """
        WITH roots AS (
            SELECT level, family, since, until FROM raw.insights_pieces WHERE pull_id = ? AND parent_id IS NULL
        ),
        raw_rows AS (
            SELECT level, family, sum(row_count) AS n FROM raw.insights_pages WHERE pull_id = ? GROUP BY ALL
        )
        SELECT r.level, r.family, coalesce(n, 0) FROM roots r LEFT JOIN raw_rows USING (level, family)
        """,
        [pull_id, pull_id],
    ).fetchall()
    jobs = len(rows)
    pages = sum(max(1, math.ceil(int(n) / page_limit)) for _lvl, _fam, n in rows)
    return {"jobs": jobs, "submits": jobs, "polls": jobs, "pages": pages, "total": 2 * jobs + pages}
