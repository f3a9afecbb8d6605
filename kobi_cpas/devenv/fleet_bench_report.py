"""Figures of a fleet benchmark cycle and the capacity extrapolated from them."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import duckdb
import yaml

from kobi_cpas.devenv.fleet_bench_fleet import FleetTenant, feed_path

BATCH_LIMIT = 5000  # items per items_batch call
WINDOWS_S = {"replace": 86_400.0, "update": 3_600.0, "batch": 900.0}
REPO_ROOT = Path(__file__).resolve().parents[2]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)


def _dist(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": _pct(values, 0.5),
        "p95": _pct(values, 0.95),
        "max": _pct(values, 1.0),
        "mean": round(statistics.fmean(values), 3) if values else None,
    }


def meta_diff(admin: Any, workdir: Path, t: FleetTenant) -> dict[str, int]:
    """How the tenant's feed differs from its catalog at the sandbox: ids only in the feed (new), only at Meta and
    still offered (removed), and in both with another price or availability (changed)."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT id, price, availability FROM read_csv(?, header=true, all_varchar=true, delim=',', "
            "quote='\"', escape='\"')",
            [str(feed_path(workdir, t.tenant_id))],
        ).fetchall()
    finally:
        con.close()
    feed = {r[0]: (r[1], r[2]) for r in rows}
    meta = {
        rid: (v.get("price"), v.get("availability")) for rid, v in admin.catalog_items(t.catalog_id).items()
    }
    return {
        "new": sum(1 for rid in feed if rid not in meta),
        # Items gone from the feed stay at Meta as out of stock for the tenant's retention_days.
        "removed": sum(1 for rid, v in meta.items() if rid not in feed and v[1] != "out of stock"),
        "changed": sum(1 for rid, v in feed.items() if rid in meta and meta[rid] != v),
    }


def _reached(method: str, after: dict[str, int]) -> bool:
    """Did the cycle's method bring to Meta what it is responsible for?"""
    if method == "update":
        return after["new"] == 0
    if method == "batch":
        return after["changed"] == 0
    return after == {"new": 0, "removed": 0, "changed": 0}


def cadence_figures(
    *,
    method: str,
    fleet: list[FleetTenant],
    runs: list[dict[str, Any]],
    workers: dict[str, tuple[float, int]],
    cpu: dict[str, float],
    bench_process_cpu: float,
    peak_rss: int,
    t0: float,
    t1: float,
    written: dict[str, float],
    applied: dict[str, tuple[float | None, int]],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    requests: list[dict[str, Any]],
) -> dict[str, Any]:
    n = len(fleet)
    latency = [applied[t][0] - written[t] for t in written if applied[t][0] is not None]
    hold: dict[str, float] = {}
    wait: dict[str, float] = {}
    for r in runs:  # a fleet run's waits and holds are shared evenly by its tenants
        share = len(r["tenants"]) or 1
        for t in r["tenants"]:
            hold[t] = hold.get(t, 0.0) + r["writer_hold_s"] / share
            wait[t] = wait.get(t, 0.0) + r["writer_wait_s"] / share
    worker_cpu = [c for c, _ in workers.values()]
    if method == "batch":
        minimum = sum(math.ceil(before[t.tenant_id]["changed"] / BATCH_LIMIT) for t in fleet)
    elif method == "update":
        minimum = sum(1 for t in fleet if before[t.tenant_id]["new"])
    else:
        minimum = n  # one replace upload per tenant
    by_route: dict[str, int] = {}
    for r in requests:
        key = f"{r['method']} {r.get('route') or r['path']}"
        by_route[key] = by_route.get(key, 0) + 1
    total_cpu = sum(cpu.values())
    ends = [r["end"] for r in runs if r["end"]]
    reached = sum(1 for t in fleet if _reached(method, after[t.tenant_id]))
    return {
        "runs": len(runs),
        "runs_succeeded": sum(1 for r in runs if r["success"]),
        "makespan_s": round(max(ends) - t0, 3) if ends else None,
        "until_meta_applied_s": round(t1 - t0, 3),
        "change_to_meta_latency_s": {**_dist(latency), "tenants_measured": len(latency)},
        "duckdb_writer_hold_per_tenant_s": _dist(list(hold.values())),
        "duckdb_writer_wait_per_tenant_s": _dist(list(wait.values())),
        "run_wall_s": _dist([r["wall_s"] for r in runs]),
        "tenants_per_run": round(n / len(runs), 2) if runs else 0.0,
        "run_slot_per_tenant_s": round(sum(r["wall_s"] for r in runs) / n, 3) if n else 0.0,
        "run_queued_s": _dist([r["queued_s"] for r in runs]),
        "dagster_overhead_per_run_s": _dist([r["overhead_s"] for r in runs]),
        "run_worker_cpu_s": {**_dist(worker_cpu), "runs_sampled": len(worker_cpu)},
        "run_worker_peak_rss_mb": round(max((m for _, m in workers.values()), default=0) / 2**20, 1),
        "cpu_s": {**{k: round(v, 2) for k, v in sorted(cpu.items())}, "total": round(total_cpu, 2)},
        "cpu_per_tenant_s": round(total_cpu / n, 3) if n else 0.0,
        "bench_process_cpu_s": round(bench_process_cpu, 2),
        "peak_memory_mb": round(peak_rss / 2**20, 1),
        "api_requests": {
            "total": len(requests),
            "writes": sum(1 for r in requests if r["method"] in ("POST", "DELETE")),
            "minimum_writes": minimum,
            "by_route": dict(sorted(by_route.items(), key=lambda kv: -kv[1])),
        },
        "delta_before": {
            k: sum(before[t.tenant_id][k] for t in fleet) for k in ("new", "changed", "removed")
        },
        "delta_after": {k: sum(after[t.tenant_id][k] for t in fleet) for k in ("new", "changed", "removed")},
        "changes_reached_meta": f"{reached}/{n}",
    }


def publish_figures(
    timing: dict[str, Any], worker: Any, cpu: dict[str, float], analyst: Path, interval: float
) -> dict[str, Any]:
    """One analyst publish after a cycle (what the publish sensor runs at most once per ``interval``)."""
    return {
        "success": timing["success"],
        "wall_s": round(timing["wall_s"], 3),
        "run_worker_cpu_s": round(worker.cpu, 2) if worker is not None else None,
        "cpu_s": round(sum(cpu.values()), 2),
        "analyst_file_mb": round(analyst.stat().st_size / 2**20, 1) if analyst.exists() else 0.0,
        "per_hour": round(3600 / interval, 2),
    }


def status_figures(runs: list[dict[str, Any]], cpu: dict[str, float], n: int) -> dict[str, Any]:
    """Runs measured alone after a cycle: the status checks after a batch cycle (Meta's verdict on the batches),
    the diagnostics polls after an update cycle."""
    total = sum(cpu.values())
    return {
        "runs": len(runs),
        "runs_succeeded": sum(1 for r in runs if r["success"]),
        "cpu_s": round(total, 2),
        "cpu_per_tenant_s": round(total / n, 3) if n else 0.0,
        "run_slot_per_tenant_s": round(sum(r["wall_s"] for r in runs) / n, 3) if n else 0.0,
    }


def _max_concurrent_runs() -> int:
    cfg = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    return int(cfg["concurrency"]["runs"]["max_concurrent_runs"])


def capacity(cycles: dict[str, Any], fleet: list[FleetTenant], cores: int) -> dict[str, Any]:
    """The largest N whose every cadence fits its window, extrapolated linearly from the per-tenant costs
    measured at this N: CPU (run workers + daemon/webserver/code server + Postgres) per tenant per cycle, and run
    slots (max_concurrent_runs x run wall time). A cadence's runs must fit its window on the cores left by the
    other cadences' steady load, by the status checks confirming each batch and the hourly diagnostics polls, by
    the analyst publishes (one per
    publish interval, each costing in proportion to the whole warehouse: the last cycle's publish, scaled by
    N / this N) and by the daemon's schedule ticks (each cadence schedule every 15 minutes over every tenant)."""
    n = len(fleet)
    published = [c["analyst_publish"] for c in cycles.values() if c.get("analyst_publish")]
    # Per tenant per hour: a publish of N tenants' data costs N x (this publish / n), per_hour times an hour.
    publish_hour = published[-1]["cpu_s"] * published[-1]["per_hour"] / n if published and n else 0.0
    # The daemon evaluates each cadence schedule every 15 minutes over every tenant.
    ticks = [c["schedule_tick"] for c in cycles.values() if c.get("schedule_tick")]
    tick_hour = sum(t["cpu_s"] for t in ticks[-1].values()) * 4 / n if ticks and n else 0.0
    rate = {  # runs per tenant per hour
        "replace": statistics.fmean(1.0 if t.replace_cadence == "hourly" else 1 / 24 for t in fleet),
        "update": 1.0,
        "batch": statistics.fmean(60 / int(t.batch_cron.split()[0].removeprefix("*/")) for t in fleet),
    }
    # Each batch is confirmed by a status check ~2 minutes later (sync_status_sensor), at the batch's rate; the
    # diagnostics are polled hourly.
    status = cycles.get("batch", {}).get("status_check") or {}
    diagnostics = cycles.get("update", {}).get("diagnostics_poll") or {}
    status_hour = status.get("cpu_per_tenant_s", 0.0) * rate["batch"]
    diagnostics_hour = diagnostics.get("cpu_per_tenant_s", 0.0)
    cost = {k: cycles[k]["cpu_per_tenant_s"] for k in rate}
    # A run slot is taken for the run's wall time; a fleet run's is shared by its tenants.
    wall = {k: cycles[k].get("run_slot_per_tenant_s", cycles[k]["run_wall_s"]["mean"]) or 0.0 for k in rate}
    slots = _max_concurrent_runs()
    cpu_hour = (
        sum(cost[k] * rate[k] for k in rate) + publish_hour + tick_hour + status_hour + diagnostics_hour
    )
    slot_hour = (
        sum(wall[k] * rate[k] for k in rate)
        + status.get("run_slot_per_tenant_s", 0.0) * rate["batch"]
        + diagnostics.get("run_slot_per_tenant_s", 0.0)
    )
    bounds = []
    for k, window in WINDOWS_S.items():
        others = (cpu_hour - cost[k] * rate[k]) * window / 3600
        bounds.append(("cpu", k, cores * window / (cost[k] + others) if cost[k] + others else math.inf))
        others_slots = (slot_hour - wall[k] * rate[k]) * window / 3600
        per = wall[k] + others_slots
        bounds.append(("run_slots", k, slots * window / per if per else math.inf))
    kind, cadence, limit = min(bounds, key=lambda b: b[2])
    share = {k: round(cost[k] * rate[k] / cpu_hour, 3) if cpu_hour else 0.0 for k in rate}
    return {
        "max_tenants": int(limit),
        "extrapolated_from_tenants": n,
        "note": f"extrapolated linearly from the per-tenant costs measured at N={n} on {cores} cores; not measured "
        "at that N",
        "bound": {
            "resource": kind,
            "cadence": cadence,
            "window_s": WINDOWS_S[cadence],
            "cpu_per_tenant_run_s": cost[cadence],
            "run_slot_per_tenant_s": wall[cadence],
        },
        "per_tenant_per_hour": {
            "runs": {k: round(v, 3) for k, v in rate.items()},
            "cpu_s": round(cpu_hour, 2),
            "analyst_publish_cpu_s": round(publish_hour, 2),
            "status_check_cpu_s": round(status_hour, 2),
            "diagnostics_poll_cpu_s": round(diagnostics_hour, 2),
            "schedule_ticks_cpu_s": round(tick_hour, 3),
            "run_slot_s": round(slot_hour, 2),
            "cpu_share_by_cadence": share,
        },
        "bounds": [{"resource": b[0], "cadence": b[1], "max_tenants": int(b[2])} for b in bounds],
        "max_concurrent_runs": slots,
        "makespan_scaled": {
            k: int(n * WINDOWS_S[k] / cycles[k]["makespan_s"]) if cycles[k]["makespan_s"] else None
            for k in rate
        },
    }
