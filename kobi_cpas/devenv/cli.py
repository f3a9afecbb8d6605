"""`kobi-cpas` command line, the project's only one: run the whole pipeline, start the dev UI, run the sandbox
alone, manage the local Postgres, print tables, run benchmarks, rebuild the demo feeds.

Errors meant for people (bad registry, bad feed, Meta errors) are printed as one clear message, never as a
bare traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import psycopg2

from kobi_cpas.devenv.demo_day import day2_before_stage, speed_up_sandbox, use_demo_registry
from kobi_cpas.devenv.postgres import DEFAULT_PORT, LocalPostgres, LocalPostgresError, PgConnInfo, env_for
from kobi_cpas.devenv.stack import (
    REPO_ROOT,
    DevSessionError,
    StackInfo,
    analyst_path,
    dev_session,
    local_stack,
)


def _interruptible() -> None:
    """Ctrl-C and SIGTERM both end a long-running command cleanly (a shell may start background jobs with
    SIGINT ignored, so restore the handler explicitly)."""

    def _raise(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise)


def _descendants(pid: int) -> list[int]:
    """Every descendant of pid (Linux /proc; dagster puts code servers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _fail(msg: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + msg, err=True)
    sys.exit(1)


def _friendly(fn):
    """Turn the project's own error types into a message and exit code 1."""

    def wrapper(*args, **kwargs):
        from kobi_cpas.registry import RegistryError

        try:
            return fn(*args, **kwargs)
        except RegistryError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted")

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Kobi CPAS data backbone: local stack and pipeline commands."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def duckdb_cli() -> str:
    """The DuckDB command line installed beside this Python (by `make`), relative to the working directory when
    it is inside it, so the printed command works as printed; else the one on PATH."""
    cli = Path(sys.executable).parent / "duckdb"
    return shown_path(cli) if cli.exists() else "duckdb"


def shown_path(path: Path) -> str:
    """A path relative to the working directory when it is inside it (as the README writes it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def print_tables(analyst_path: Path) -> None:
    from kobi_cpas.tables import SCHEMA
    from kobi_cpas.warehouse import Warehouse

    counts = Warehouse(analyst_path, schema=SCHEMA).analyst_row_counts()
    click.echo(f"\nAnalyst DuckDB file: {analyst_path.resolve()}")
    click.echo(f"  open it with:  {duckdb_cli()} -readonly {analyst_path.resolve()}")
    width = max((len(n) for n in counts), default=10)
    for name, n in counts.items():
        click.echo(f"  {name.ljust(width)}  {n:>10,} rows")


def print_dry_run_writes(analyst_path: Path, run_ids: list[str], scratch: str | None) -> None:
    """What a dry run did not send, grouped by tenant, step, method and path."""
    from kobi_cpas.warehouse import Warehouse, read_analyst
    from kobi_cpas.warehouse.scratch import SCRATCH_DIR, scratch_key

    rows = read_analyst(
        analyst_path,
        "SELECT coalesce(tenant_id, '-'), coalesce(step, '-'), method, path, count(*), sum(item_count) "
        "FROM meta_dry_run_writes WHERE list_contains(?::VARCHAR[], run_id) GROUP BY ALL ORDER BY ALL",
        [run_ids],
    )
    total = sum(int(r[4]) for r in rows)
    click.echo(f"\nDRY RUN: {total} Meta write(s) NOT sent (all recorded in meta_dry_run_writes):")
    for tenant, step, method, path, n, items in rows:
        extra = f", {int(items):,} items" if items else ""
        click.echo(f"  {tenant:<20} {step:<28} {method:<6} {path}  x{n}{extra}")
    if scratch:
        where = Warehouse(analyst_path).work_dir / SCRATCH_DIR / scratch_key(scratch)
        click.echo(f"the state these runs would have left: {where} (a scratch copy; removed after 24 h)")


@main.command()
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants (default: all in the registry).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read everything from Meta, write nothing there: every POST/DELETE is recorded in the analyst table "
    "meta_dry_run_writes instead of sent, and Kobi's own state (sync state, every other table) is left as it "
    "was (run tag kobi/dry_run=true on every run).",
)
@_friendly
def run(tenants: tuple[str, ...], dry_run: bool) -> None:
    """Materialize the whole asset graph for the registry's tenants (against the sandbox unless
    META_GRAPH_API_URL is set), then print the analyst tables."""
    import dagster as dg

    from kobi_cpas.devenv.instance import ensure_pools, release_orphaned_slots
    from kobi_cpas.devenv.pipeline import materialize_all
    from kobi_cpas.registry import load_registry

    _interruptible()
    started = time.monotonic()
    demo = use_demo_registry(analyst_path(), restage=True)
    reg = load_registry()  # fail early, with the clear message, on a bad registry
    with local_stack() as info:
        click.echo(f"registry:  {reg.path} ({len(reg.tenants)} tenants)")
        click.echo(f"postgres:  {info.postgres}")
        click.echo(f"meta:      {info.meta}")
        click.echo(f"dagster:   DAGSTER_HOME={info.dagster_home}")
        if dry_run:
            click.echo("DRY RUN:   reads from Meta; writes recorded in meta_dry_run_writes, not sent")
        if info.sandbox_url:  # with port 0 the stack always starts a sandbox of its own
            speed_up_sandbox(info.sandbox_url)
        from kobi_cpas.definitions import defs as build_defs

        defs = build_defs()
        instance = dg.DagsterInstance.get()
        try:
            ensure_pools(instance)
            for run_id in release_orphaned_slots(instance, same_host=info.postgres_local):
                click.echo(f"released pool slots of orphaned run {run_id}")
            report = materialize_all(
                defs,
                instance,
                tenants=list(tenants) or None,
                dry_run=dry_run,
                before_stage=day2_before_stage(demo, click.echo) if demo else None,
            )
        finally:
            instance.dispose()
    print_tables(analyst_path())
    if dry_run:
        print_dry_run_writes(analyst_path(), report.run_ids, report.dry_run_scratch)
    failed = [r for r in report.runs if not r[2]]
    click.echo(f"\n{len(report.runs)} runs, {len(failed)} failed, {time.monotonic() - started:.1f}s")
    for label, pkey, why in report.failures:
        click.echo(f"  failed: [{label}] {pkey or ''}: {why}", err=True)
    print_next_steps(analyst_path())
    if failed:
        sys.exit(1)


# Three of the README's example queries, which return rows on the demo data.
NEXT_QUERIES = (
    "SELECT tenant_id, code, field, count(*) AS items FROM feed_item_issues GROUP BY ALL ORDER BY items DESC LIMIT 5;",
    "SELECT tenant_id, method, status, items_sent, started_at FROM catalog_syncs ORDER BY started_at DESC LIMIT 5;",
    "SELECT tenant_id, retailer, step, status, next_action FROM cpas_onboarding_steps WHERE status <> 'done';",
)


def print_next_steps(analyst_path: Path) -> None:
    from kobi_cpas.defs.operations.assets import REPORT_FILE

    click.echo("\nNext:")
    click.echo("  the Dagster UI, schedules and sensors live:  make dev   (http://localhost:3000)")
    click.echo(f"  the analyst file:  {duckdb_cli()} -readonly {shown_path(analyst_path)}")
    report = analyst_path.with_name(REPORT_FILE)
    if report.exists():
        click.echo(f"  the report (charts per tenant), in a browser:  {shown_path(report)}")
    click.echo("  e.g.")
    for q in NEXT_QUERIES:
        click.echo(f"    {q}")
    click.echo("  more queries and every table: README.md, 'The analyst DuckDB file'")


@main.command()
@click.option("--port", default=3000, show_default=True, envvar="KOBI_CPAS_UI_PORT", help="Dagster UI port.")
@click.option(
    "--sandbox-port",
    default=8765,
    show_default=True,
    envvar="KOBI_CPAS_SANDBOX_PORT",
    help="Meta sandbox port (a running sandbox there is reused; another program there: a free port is used).",
)
@_friendly
def dev(port: int, sandbox_port: int) -> None:
    """Dagster UI + daemon on localhost against the sandbox; schedules and sensors live. Ctrl-C stops all."""
    _interruptible()
    use_demo_registry(analyst_path(), restage=False)  # the feeds the last `make run` synced
    try:
        with dev_session(REPO_ROOT / ".local", port), local_stack(sandbox_port=sandbox_port) as info:
            _dev(port, info)
    except DevSessionError as exc:
        _fail(str(exc))


def _dev(port: int, info: StackInfo) -> None:
    """The Dagster UI and daemon in their own process group until Ctrl-C."""
    click.echo(f"postgres: {info.postgres}\nmeta:     {info.meta}\nUI:       http://localhost:{port}")
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-p",
        str(port),
    ]
    # Own process group, so an interrupt reaches the webserver, daemon and code servers like a Ctrl-C would.
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=dict(os.environ), start_new_session=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        click.echo("stopping Dagster...")
        family = _descendants(proc.pid)
        # dagster dev shuts its webserver, daemon and code servers down on SIGINT; escalate if it hangs.
        for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        for pid in family:  # code servers in their own sessions
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8765, show_default=True, help="Port (0 picks a free one).")
@click.option(
    "--registry",
    type=click.Path(path_type=Path),
    default=None,
    help="Tenant registry YAML (default: $KOBI_CPAS_TENANTS or the demo registry).",
)
@click.option(
    "--seed",
    default=lambda: int(os.environ.get("KOBI_CPAS_SANDBOX_SEED") or 42),
    show_default="$KOBI_CPAS_SANDBOX_SEED or 42",
    type=int,
    help="World seed.",
)
@click.option("--app-secret", envvar="META_APP_SECRET", default=None, help="Verify appsecret_proof.")
@click.option("--quiet", is_flag=True, help="Do not log one line per request.")
@_friendly
def sandbox(
    host: str, port: int, registry: Path | None, seed: int, app_secret: str | None, quiet: bool
) -> None:
    """Run the Meta sandbox alone (Ctrl-C or SIGTERM stops it)."""
    _interruptible()
    from kobi_cpas.registry import load_registry
    from meta_sandbox import SandboxServer, World

    loaded = load_registry(registry)
    sandbox_logger = logging.getLogger("meta_sandbox")
    if not quiet and sandbox_logger.getEffectiveLevel() > logging.INFO:  # the request log is INFO
        sandbox_logger.setLevel(logging.INFO)
    server = SandboxServer(
        World.from_registry(loaded, seed=seed),
        host=host,
        port=port,
        app_secret=app_secret,
        log_requests=not quiet,
    )
    try:
        server.start()  # bound before announcing, so the URL carries the real port when --port 0
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc}")
    # On stderr, like the request log, so a reader of the pipe sees the URL first.
    click.echo(
        f"Meta sandbox on {server.url} (registry {loaded.path}, {len(loaded.tenants)} tenants, seed {seed}); "
        f"export META_GRAPH_API_URL={server.url}",
        err=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _pg_options(fn: Callable[..., None]) -> Callable[..., None]:
    """--dir and --port, shared by start, stop and status."""
    fn = click.option(
        "--port", type=int, default=None, help=f"TCP port (default {DEFAULT_PORT} or a free one)."
    )(fn)
    return click.option(
        "--dir",
        "data_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Data dir (default <repo>/.local/postgres).",
    )(fn)


@main.group()
def postgres() -> None:
    """Local PostgreSQL for the Dagster instance. `start` and `status` print the DAGSTER_PG_* variables to
    export: eval "$(kobi-cpas postgres start)"."""
    # Progress (initdb, start, stop) on stderr; stdout carries only the exports.
    pg_logger = logging.getLogger("kobi_cpas.devenv.postgres")
    if pg_logger.getEffectiveLevel() > logging.INFO:
        pg_logger.setLevel(logging.INFO)


def _print_exports(info: PgConnInfo) -> None:
    for key, value in env_for(info).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@contextlib.contextmanager
def _pg_errors() -> Iterator[None]:
    """Postgres failures as one `error:` line and exit code 1."""
    try:
        yield
    except (LocalPostgresError, OSError, psycopg2.Error) as exc:
        _fail(str(exc))


@postgres.command("start")
@_pg_options
def postgres_start(data_dir: Path | None, port: int | None) -> None:
    """Start it (idempotent) and print the exports."""
    with _pg_errors():
        _print_exports(LocalPostgres(data_dir, port=port).start())


@postgres.command("stop")
@_pg_options
def postgres_stop(data_dir: Path | None, port: int | None) -> None:
    """Stop it."""
    with _pg_errors():
        pg = LocalPostgres(data_dir, port=port)
        click.echo("stopped" if pg.stop() else f"not running ({pg.data_dir})", err=True)


@postgres.command("status")
@_pg_options
def postgres_status(data_dir: Path | None, port: int | None) -> None:
    """Print the exports if it is running; exit code 3 if not (as `pg_ctl status`)."""
    with _pg_errors():
        pg = LocalPostgres(data_dir, port=port)
        info = pg.status()
        if info is None:
            click.echo(f"not running ({pg.data_dir})", err=True)
            sys.exit(3)
        click.echo(f"running (pid {pg.postmaster_pid()}) in {pg.data_dir}", err=True)
        _print_exports(info)


@main.command()
def tables() -> None:
    """Print the analyst DuckDB file and its tables with row counts."""

    print_tables(analyst_path())


@main.group(invoke_without_command=True)
@click.option("--scale", default=1_000_000, show_default=True, help="Feed items for the catalog benchmarks.")
@click.option("--out", default=".bench", show_default=True, type=click.Path(path_type=Path))
@click.pass_context
def bench(ctx: click.Context, scale: int, out: Path) -> None:
    """Run the benchmarks (speed and memory, as side-by-side ratios); a subcommand runs just one, as JSON."""
    if ctx.invoked_subcommand is not None:
        return
    from kobi_cpas.devenv.bench import run_benchmarks

    run_benchmarks(scale=scale, out=out)


@bench.command("feeds")
@click.option("--items", default=1_000_000, show_default=True)
@click.option("--workdir", default=".bench/feeds", show_default=True, type=click.Path(path_type=Path))
@click.option("--repeat", default=3, show_default=True)
def bench_feeds(items: int, workdir: Path, repeat: int) -> None:
    """Full ingest_feed against a bare read_csv of the same generated feed."""
    from kobi_cpas.feeds.bench import run_ingest_benchmark

    click.echo(json.dumps(run_ingest_benchmark(items, str(workdir), repeat=repeat), indent=2))


@bench.command("insights")
@click.option("--ads", default=400, show_default=True, help="Extra ads seeded in the demo account.")
@click.option("--days", default=28, show_default=True)
@click.option("--page-limit", default=500, show_default=True)
@click.option("--too-much-data-max-days", type=int, default=None)
def bench_insights(ads: int, days: int, page_limit: int, too_much_data_max_days: int | None) -> None:
    """Shared-item metrics pull: API requests issued against the minimum, rows loaded per second."""
    from kobi_cpas.devenv.insights_bench import run_insights_benchmark

    result = run_insights_benchmark(
        n_ads=ads, days=days, page_limit=page_limit, too_much_data_max_days=too_much_data_max_days
    )
    click.echo(json.dumps(result, indent=2, default=str))


@main.command("demo-feeds")
def demo_feeds() -> None:
    """Rebuild the committed demo feeds (kobi_cpas/data/demo/feeds/)."""
    from kobi_cpas.devenv.demo_feeds import FEEDS_DIR, build

    build(FEEDS_DIR)
    for p in sorted(FEEDS_DIR.iterdir()):
        click.echo(f"{p} {p.stat().st_size}")


@bench.command("fleet")
@click.option("--tenants", default=20, show_default=True, help="Generated tenants (N).")
@click.option("--min-items", default=2_000, show_default=True)
@click.option("--max-items", default=20_000, show_default=True)
@click.option(
    "--large", default="100000", show_default=True, help="Comma-separated sizes of the first (large) tenants."
)
@click.option("--time-scale", default=60.0, show_default=True, help="Meta's latencies are divided by this.")
@click.option(
    "--publish-interval",
    default=300.0,
    show_default=True,
    help="KOBI_CPAS_PUBLISH_INTERVAL_SECONDS of the runs (0: every run publishes the analyst file at its end).",
)
@click.option(
    "--batch-tenants-per-run",
    default=20,
    show_default=True,
    help="KOBI_CPAS_BATCH_TENANTS_PER_RUN: tenants per fleet run of the batch cadence (1: a run per tenant).",
)
@click.option("--out", default=".bench", show_default=True, type=click.Path(path_type=Path))
def bench_fleet(
    tenants: int,
    min_items: int,
    max_items: int,
    large: str,
    time_scale: float,
    publish_interval: float,
    batch_tenants_per_run: int,
    out: Path,
) -> None:
    """N generated tenants through the real run queue (daemon, QueuedRunCoordinator, dagster.yaml): per cadence
    makespan, change-to-Meta latency, DuckDB writer hold, Dagster overhead, memory, requests, capacity."""
    from kobi_cpas.devenv.fleet_bench import run_fleet_bench

    _interruptible()
    sizes = tuple(int(s) for s in large.split(",") if s.strip())
    result = run_fleet_bench(
        tenants=tenants,
        min_items=min_items,
        max_items=max_items,
        large_items=sizes,
        out=out,
        time_scale=time_scale,
        publish_interval=publish_interval,
        batch_tenants_per_run=batch_tenants_per_run,
        on_progress=lambda msg: click.echo(msg, err=True),
    )
    click.echo(json.dumps({k: result[k] for k in ("tenants", "cycles", "capacity")}, indent=2, default=str))


if __name__ == "__main__":
    main()
