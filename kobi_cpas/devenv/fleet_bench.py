"""Fleet benchmark (`kobi-cpas bench fleet`): N generated tenants synced through the real run queue.

The harness generates N tenants (registry, CSV feeds, sandbox catalogs), starts the Meta sandbox with Meta's
latencies divided by a time-scale factor (uploads take a fixed part plus a part proportional to the file's rows,
a Batch API handle ~2 minutes), and `dagster dev` on a fresh DAGSTER_HOME holding the repository's dagster.yaml:
its dagster-daemon runs the QueuedRunCoordinator (max_concurrent_runs, the catalog-shard tag limit) and the
DefaultRunLauncher starts one run worker per run. Runs are submitted over the webserver's GraphQL API the way
the schedules request them (one partition per tenant, the schedules' tags). The code location is the product's
definitions without schedules and sensors (`fleet_bench_fleet.defs`), so only the submitted runs exist.

Cycles, each preceded by writing every tenant's feed: the initial replace (a full first sync), then update, batch
and replace, each after a change of 1 % volatile, 0.2 % new and 0.2 % removed items per tenant. Per cycle:
makespan, change-to-Meta latency per tenant (feed written -> the cycle's last upload or batch of the tenant
applied at the sandbox), DuckDB writers' lock hold and wait per tenant (each run logs them at its end),
Dagster overhead per run (run wall time minus step time; run worker CPU sampled from /proc, see
fleet_bench_probe), CPU of the daemon/webserver/code server and of Postgres, peak memory, Graph API requests
against the minimum, and whether every change reached the sandbox. Capacity is extrapolated from the per-tenant
costs measured at this N (see `capacity`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kobi_cpas.devenv.fleet_bench_fleet import (
    FleetTenant,
    feed_path,
    plan_fleet,
    write_base_feed,
    write_changed_feed,
    write_registry,
)
from kobi_cpas.devenv.fleet_bench_probe import ProcessProbe, marked_processes, self_cpu
from kobi_cpas.devenv.fleet_bench_report import (
    cadence_figures,
    capacity,
    meta_diff,
    publish_figures,
    status_figures,
)
from kobi_cpas.warehouse.host import WRITER_TIME_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "kobi_fleet_bench"
BENCH_DB = "kobi_fleet_bench"
BENCH_TAG = "kobi/fleet_bench"
#: Meta's latencies (seconds of Meta time) before the time-scale factor.
META_UPLOAD_FIXED_S, META_UPLOAD_PER_ITEM_S, META_BATCH_S = 60.0, 0.002, 120.0
#: (cycle name, job, method) in the order they run; the first is the initial full sync.
CYCLES = (
    ("initial_replace", "catalog_replace_job", "replace"),
    ("update", "catalog_update_job", "update"),
    ("batch", "catalog_fleet_job", "batch"),  # as the batch schedule launches it: a run per group
    ("replace", "catalog_replace_job", "replace"),
)


#: Per cycle method: runs measured alone after the cycle, (figures key, job, method).
_EXTRA_RUNS = {
    "batch": ("status_check", "catalog_fleet_job", "status"),
    "update": ("diagnostics_poll", "catalog_fleet_job", "diagnostics"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], marker: str) -> None:
    """dagster dev shuts its webserver, daemon and code servers down on SIGINT; escalate if it hangs. Code
    servers run in sessions of their own: whatever still names the bench's DAGSTER_HOME (``marker``) after
    that is stopped too."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _submit_all(
    client: Any, job: str, method: str, tenants: list[FleetTenant], bench_id: str, per_run: int
) -> list[str]:
    """Submit the cycle's runs as the schedules request them: a run per tenant, or (batch) a fleet run per
    group of ``per_run`` tenants."""
    from datetime import UTC, datetime

    from dagster_graphql import DagsterGraphQLClientError

    from kobi_cpas.defs.catalog_sync.common import SHARD_TAG
    from kobi_cpas.defs.catalog_sync.fleet import fleet_run_requests

    submissions: list[tuple[dict[str, str], dict[str, Any] | None]] = []
    if job == "catalog_fleet_job":
        for request in fleet_run_requests(
            [t.tenant_id for t in tenants], per_run, f"{datetime.now(UTC):%Y%m%dT%H%M%S}", method
        ):
            submissions.append(({**request.tags, BENCH_TAG: bench_id}, dict(request.run_config)))
    else:
        for t in tenants:
            tags = {"dagster/partition": t.tenant_id, SHARD_TAG: t.tenant_id, "kobi/sync_method": method}
            submissions.append(({**tags, BENCH_TAG: bench_id}, None))
    ids = []
    for tags, run_config in submissions:
        deadline = time.monotonic() + 180
        while True:  # the first submission may come before the code location has loaded
            try:
                ids.append(
                    client.submit_job_execution(
                        job, repository_location_name=LOCATION, tags=tags, run_config=run_config
                    )
                )
                break
            except DagsterGraphQLClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
    return ids


def _schedule_ticks(instance: Any) -> dict[str, dict[str, float]]:
    """One tick of each cadence schedule over the whole fleet (the bench submits its runs itself, so the daemon's
    schedule evaluations are measured here, in this process): CPU seconds and run requests."""
    from datetime import UTC, datetime

    import dagster as dg

    from kobi_cpas.defs.catalog_sync import schedules
    from kobi_cpas.defs.resources import location_resources

    now = datetime.now(UTC)
    tick = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    resources = location_resources()
    out: dict[str, dict[str, float]] = {}
    for method in ("replace", "update", "batch"):
        schedule = getattr(schedules, f"catalog_{method}_schedule")
        cpu = time.process_time()
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, resources=resources
        ) as context:
            result = schedule(context)
        out[method] = {
            "cpu_s": round(time.process_time() - cpu, 3),
            "run_requests": len(result) if isinstance(result, list) else 0,
        }
    return out


def _submit_publish(client: Any, bench_id: str) -> str:
    return client.submit_job_execution(
        "analyst_publish_job", repository_location_name=LOCATION, tags={BENCH_TAG: bench_id}
    )


def _wait_runs(instance: Any, run_ids: list[str], timeout: float) -> list[Any]:
    import dagster as dg

    deadline = time.monotonic() + timeout
    while True:
        records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
        if len(records) == len(run_ids) and all(r.dagster_run.is_finished for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished after {timeout:.0f}s: see {instance.root_directory}")
        time.sleep(1.0)


# The run worker names its pid in an engine event: "Started process for run" (code server) or "Executing steps in
# process" (the in-process executor of the sync jobs).
_WORKER_PID = re.compile(r"(?:Started process for run|Executing steps in process) \(pid: (\d+)\)")


# What the warehouse resource logs at the end of a run (WRITER_TIME_PREFIX): the writers' lock waited and held.
_WRITER_TIME = re.compile(re.escape(WRITER_TIME_PREFIX) + r" waited ([\d.]+) s, held ([\d.]+) s")


def _run_timings(instance: Any, record: Any) -> dict[str, Any]:
    from dagster import DagsterEventType

    from kobi_cpas.defs.catalog_sync.fleet import fleet_tenants

    run = record.dagster_run
    start: dict[str, float] = {}
    steps: dict[str, float] = {}
    waited = held = 0.0
    worker_pid: int | None = None
    for e in instance.all_logs(run.run_id):
        ev, key, message = e.dagster_event, e.step_key, e.user_message or ""
        pid = _WORKER_PID.match(message)
        if pid and worker_pid is None:
            worker_pid = int(pid.group(1))
        writer = _WRITER_TIME.search(message)
        if writer:
            waited, held = waited + float(writer.group(1)), held + float(writer.group(2))
        if ev is None or key is None:
            continue
        if ev.event_type == DagsterEventType.STEP_START:
            start[key] = e.timestamp
        elif ev.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            steps[key] = e.timestamp - start.get(key, e.timestamp)
    wall = (record.end_time or 0.0) - (record.start_time or 0.0)
    return {
        "run_id": run.run_id,
        "worker_pid": worker_pid,
        "tenants": fleet_tenants(run) or [run.tags.get("dagster/partition")],
        "success": run.status.value == "SUCCESS",
        "created": record.create_timestamp.timestamp(),
        "start": record.start_time,
        "end": record.end_time,
        "wall_s": wall,
        "queued_s": (record.start_time or 0.0) - record.create_timestamp.timestamp(),
        "step_s": sum(steps.values()),
        "overhead_s": wall - sum(steps.values()),
        "writer_hold_s": held,
        "writer_wait_s": waited,
    }


def _applied_at(world: Any, catalog_id: str, since: float) -> tuple[float | None, int]:
    """When the catalog's last upload or batch created since ``since`` was applied at the sandbox (None while
    one is still processing), and how many there were."""
    import meta_sandbox.catalog_model as cm

    with world.lock:
        cm.settle(world)
        done: list[float | None] = []
        for u in world.feed_uploads.values():
            if u.catalog_id == catalog_id and u.start_time.timestamp() >= since:
                done.append(u.end_time.timestamp() if u.end_time else None)
        for b in world.items_batches.values():
            if b.catalog_id == catalog_id and b.created_time.timestamp() >= since:
                done.append(b.created_time.timestamp() + b.processing_seconds if b.applied else None)
    if not done or any(d is None for d in done):
        return None, len(done)
    return max(d for d in done if d is not None), len(done)


def run_fleet_bench(
    tenants: int = 20,
    min_items: int = 2_000,
    max_items: int = 20_000,
    large_items: tuple[int, ...] = (100_000,),
    out: Path = Path(".bench"),
    time_scale: float = 60.0,
    publish_interval: float = 300.0,
    batch_tenants_per_run: int = 20,
    run_timeout: float = 3600.0,
    on_progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the benchmark and write ``<out>/bench.json`` (key ``fleet``); returns the figures."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    from kobi_cpas.devenv.instance import ensure_pools
    from kobi_cpas.devenv.pipeline import sync_tenant_partitions
    from kobi_cpas.devenv.postgres import LocalPostgres, env_for
    from kobi_cpas.devenv.stack import local_stack
    from kobi_cpas.registry import load_registry
    from meta_sandbox import SandboxAdmin, SandboxServer, World

    out = Path(out).absolute()
    workdir = out / "fleet"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    fleet = plan_fleet(tenants, min_items, max_items, large_items[:tenants])
    registry = write_registry(fleet, workdir)
    for t in fleet:  # the initial cycle rewrites them; the registry check needs the files now
        feed_path(workdir, t.tenant_id).parent.mkdir(parents=True, exist_ok=True)
        feed_path(workdir, t.tenant_id).write_text("id\n")
    saved = dict(os.environ)
    os.environ.update(
        {
            "KOBI_CPAS_TENANTS": str(registry),
            "KOBI_CPAS_DUCKDB_PATH": str(workdir / "kobi_cpas.duckdb"),
            "DAGSTER_HOME": str(workdir / "dagster_home"),
            "KOBI_CPAS_POLL_SECONDS": os.environ.get("KOBI_CPAS_POLL_SECONDS") or "0.5",
            "KOBI_CPAS_PUBLISH_INTERVAL_SECONDS": str(publish_interval),
            "KOBI_CPAS_BATCH_TENANTS_PER_RUN": str(batch_tenants_per_run),
        }
    )
    world = World.from_registry(load_registry(registry).registry, seed=42)
    server = SandboxServer(world, port=0).start()
    os.environ["META_GRAPH_API_URL"] = server.url
    os.environ["META_ACCESS_TOKEN"] = "sandbox-fleet-bench"
    admin = SandboxAdmin(server.url)
    admin.catalog_config(
        upload_processing_seconds=META_UPLOAD_FIXED_S / time_scale,
        upload_seconds_per_item=META_UPLOAD_PER_ITEM_S / time_scale,
        batch_processing_seconds=META_BATCH_S / time_scale,
    )
    dev: subprocess.Popen[bytes] | None = None
    probe: ProcessProbe | None = None
    try:
        with local_stack(with_sandbox=False) as info:
            roots: dict[str, int] = {}
            if (
                info.postgres_local
            ):  # a database of its own: the bench's runs and partitions stay out of make dev's
                pg = LocalPostgres(data_dir=REPO_ROOT / ".local" / "postgres")
                pg.drop_database(BENCH_DB)
                os.environ.update(env_for(pg.create_database(BENCH_DB)))
                roots["postgres"] = pg.postmaster_pid() or 0
            instance = dg.DagsterInstance.get()
            ensure_pools(instance)
            sync_tenant_partitions(instance)
            workspace = workdir / "workspace.yaml"
            workspace.write_text(
                "load_from:\n  - python_module:\n      module_name: kobi_cpas.devenv.fleet_bench_fleet\n"
                f"      attribute: defs\n      location_name: {LOCATION}\n"
                f"      working_directory: {REPO_ROOT}\n"
            )
            port = _free_port()
            with open(workdir / "dagster.log", "wb") as log:
                dev = subprocess.Popen(
                    [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-p", str(port)],
                    cwd=workdir,
                    env=dict(os.environ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            roots["dagster"] = dev.pid
            probe = ProcessProbe(roots, marker=str(workdir / "dagster_home")).start()
            client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
            bench_id = f"{int(time.time())}"
            cycles: dict[str, Any] = {}
            for number, (name, job, method) in enumerate(CYCLES):
                on_progress(f"cycle {name}: writing {len(fleet)} feeds")
                written: dict[str, float] = {}
                for t in fleet:
                    (write_base_feed if number == 0 else write_changed_feed)(workdir, t, number)
                    written[t.tenant_id] = time.time()
                before = {t.tenant_id: meta_diff(admin, workdir, t) for t in fleet}
                seq0 = max((r["seq"] for r in admin.requests(since=0)[-1:]), default=0)
                cpu0, me0 = probe.cpu_by_group(), self_cpu()
                probe.reset_peak()
                t0 = time.time()
                ticks = _schedule_ticks(instance)  # before the runs: every tenant is due, none is busy
                on_progress(f"cycle {name}: submitting {job} runs for {len(fleet)} tenants")
                run_ids = _submit_all(client, job, method, fleet, bench_id, batch_tenants_per_run)
                records = _wait_runs(instance, run_ids, run_timeout)
                runs = [_run_timings(instance, r) for r in records]
                applied: dict[str, tuple[float | None, int]] = {}
                settle_until = time.monotonic() + 30 + 2 * META_BATCH_S / time_scale
                for t in fleet:  # batches and uploads Meta is still processing when the run ends
                    while True:
                        applied[t.tenant_id] = _applied_at(world, t.catalog_id, t0)
                        if applied[t.tenant_id][1] == 0 or applied[t.tenant_id][0] is not None:
                            break
                        if time.monotonic() > settle_until:
                            break
                        time.sleep(0.5)
                t1 = time.time()
                probe.sample()
                cpu1, me1 = probe.cpu_by_group(), self_cpu()
                after = {t.tenant_id: meta_diff(admin, workdir, t) for t in fleet}
                requests = admin.requests(since=seq0)
                workers = probe.run_workers({r["worker_pid"]: r["run_id"] for r in runs if r["worker_pid"]})
                cycles[name] = cadence_figures(
                    method=method,
                    fleet=fleet,
                    runs=runs,
                    workers={
                        rid: (workers[rid].cpu, workers[rid].peak_rss) for rid in run_ids if rid in workers
                    },
                    cpu={g: cpu1.get(g, 0.0) - cpu0.get(g, 0.0) for g in set(cpu0) | set(cpu1)},
                    bench_process_cpu=me1 - me0,
                    peak_rss=probe.peak_total_rss,
                    t0=t0,
                    t1=t1,
                    written=written,
                    applied=applied,
                    before=before,
                    after=after,
                    requests=requests,
                )
                cycles[name]["schedule_tick"] = ticks
                # What else runs at a cadence's rate: the status checks sync_status_sensor launches ~2 minutes after
                # each batch, and the hourly diagnostics poll (measured after the update cycle).
                extra = _EXTRA_RUNS.get(method)
                if extra:
                    key, extra_job, extra_method = extra
                    c0 = probe.cpu_by_group()
                    extra_ids = _submit_all(
                        client, extra_job, extra_method, fleet, bench_id, batch_tenants_per_run
                    )
                    extra_runs = [
                        _run_timings(instance, r) for r in _wait_runs(instance, extra_ids, run_timeout)
                    ]
                    c1 = probe.cpu_by_group()
                    cycles[name][key] = status_figures(
                        extra_runs,
                        {g: c1.get(g, 0.0) - c0.get(g, 0.0) for g in set(c0) | set(c1)},
                        len(fleet),
                    )
                if publish_interval > 0:  # what the publish sensor does once per interval, measured alone
                    c0 = probe.cpu_by_group()
                    (publish_run,) = _wait_runs(instance, [_submit_publish(client, bench_id)], run_timeout)
                    timing = _run_timings(instance, publish_run)
                    worker = probe.run_workers(
                        {timing["worker_pid"]: timing["run_id"]} if timing["worker_pid"] else {}
                    )
                    c1 = probe.cpu_by_group()
                    cycles[name]["analyst_publish"] = publish_figures(
                        timing,
                        worker.get(timing["run_id"]),
                        {g: c1.get(g, 0.0) - c0.get(g, 0.0) for g in set(c0) | set(c1)},
                        workdir / "kobi_cpas.duckdb",
                        publish_interval,
                    )
                c = cycles[name]
                on_progress(
                    f"cycle {name}: makespan {c['makespan_s']:.1f}s, {c['runs_succeeded']}/{c['runs']} runs ok, "
                    f"{c['cpu_per_tenant_s']:.2f} CPU-s per tenant, changes at Meta {c['changes_reached_meta']}"
                )
    finally:
        if probe is not None:
            probe.stop()
        if dev is not None:
            _stop(dev, str(workdir / "dagster_home"))
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
    result = {
        "tenants": tenants,
        "items": {
            "total": sum(t.items for t in fleet),
            "min": min(t.items for t in fleet),
            "max": max(t.items for t in fleet),
            "per_tenant": {t.tenant_id: t.items for t in fleet},
        },
        "cadences": {t.tenant_id: [t.replace_cadence, t.batch_cron] for t in fleet},
        "time_scale": time_scale,
        "meta_latency_model_s": {
            "upload": f"({META_UPLOAD_FIXED_S} + {META_UPLOAD_PER_ITEM_S} x rows) / {time_scale}",
            "batch": f"{META_BATCH_S} / {time_scale}",
        },
        "cores": os.cpu_count() or 1,
        "cycles": cycles,
        "publish_interval_s": publish_interval,
        "batch_tenants_per_run": batch_tenants_per_run,
        "capacity": capacity(cycles, fleet, os.cpu_count() or 1),
        "workdir": str(workdir),
    }
    bench_json = out / "bench.json"
    existing = json.loads(bench_json.read_text()) if bench_json.exists() else {}
    existing["fleet"] = result
    bench_json.write_text(json.dumps(existing, indent=2, default=str) + "\n")
    return result
