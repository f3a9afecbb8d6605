"""The local dev stack never breaks its neighbours, and leftovers are cleaned.

- Two stacks share the local Postgres: leaving one never stops the server another still uses; the last
  stack out stops a server the stacks started; a server started by hand is left running; a stack that died
  without cleaning up is pruned from the users.
- A stack that finds a Meta sandbox already serving its port uses it and leaves it running.
- Orphan cleanup releases only runs whose owning process is really gone.
- A publish killed half-way leaves a `.publishing` file that the next writer removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest
import requests

from kobi_cpas.devenv.instance import ensure_pools, owner_tags, release_orphaned_slots
from kobi_cpas.devenv.postgres import ENV_VARS, LocalPostgres, PgConnInfo, conninfo_from_env
from kobi_cpas.devenv.procs import (
    alive_since,
    process_started_at,
    process_token,
    same_process_alive,
    this_host,
)
from kobi_cpas.devenv.stack import StackInfo, local_stack
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.warehouse_template import seed_work_database

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---- helpers


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private `.local` for the stacks, with no Postgres, sandbox or DAGSTER_HOME in the environment."""
    for var in (*ENV_VARS, "DAGSTER_HOME", "META_GRAPH_API_URL", "META_ACCESS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # Under /tmp, not pytest's 0700 basetemp: as root the server runs as `postgres` and must reach it.
    path = Path(tempfile.mkdtemp(prefix="kobi-stack-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            LocalPostgres(path / "postgres").stop()
        shutil.rmtree(path, ignore_errors=True)


class _Stack:
    """One local_stack entered by hand, so tests can leave stacks in any order (as separate processes do)."""

    def __init__(self, state_dir: Path, **kwargs: object) -> None:
        self._cm = local_stack(REPO_ROOT, state_dir=state_dir, with_sandbox=False, **kwargs)  # type: ignore[arg-type]
        self.info: StackInfo = self._cm.__enter__()
        conninfo = conninfo_from_env(self.info.env)
        assert conninfo is not None
        self.conninfo: PgConnInfo = conninfo
        # The next stack of this test must look like another process that has nothing exported.
        for var in ENV_VARS:
            os.environ.pop(var, None)

    def leave(self) -> None:
        self._cm.__exit__(None, None, None)


def _accepts(info: PgConnInfo) -> bool:
    try:
        with psycopg2.connect(**info.connect_kwargs(), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except psycopg2.OperationalError:
        return False


STACK_PROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kobi_cpas.devenv.stack import local_stack

    with local_stack(state_dir=Path(sys.argv[1]), with_sandbox=False) as info:
        print(info.env["DAGSTER_PG_PORT"], flush=True)
        sys.stdin.read()  # until the test closes our stdin
    print("left", flush=True)
    """
)


def _stack_process(state_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "DAGSTER_HOME"}
    return subprocess.Popen(
        [sys.executable, "-c", STACK_PROCESS, str(state_dir)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


# ---- 1. the shared local Postgres


def test_leaving_the_second_stack_keeps_postgres_for_the_first(state_dir: Path) -> None:
    first = _Stack(state_dir)  # `make dev`
    second = _Stack(state_dir)  # `make run` while make dev is up
    assert second.conninfo == first.conninfo  # one shared instance
    second.leave()
    assert _accepts(first.conninfo), "the second stack stopped the Postgres the first still uses"
    first.leave()
    assert not _accepts(first.conninfo), "the last stack out leaves no server behind"
    assert LocalPostgres(state_dir / "postgres").status() is None


def test_the_starter_leaving_first_keeps_postgres_for_the_other_stack(state_dir: Path) -> None:
    starter = _Stack(state_dir)  # `make run`
    later = _Stack(state_dir)  # a second `make run` three seconds later
    starter.leave()
    assert _accepts(later.conninfo), "the stack that started Postgres stopped it under another stack"
    later.leave()
    assert not _accepts(later.conninfo)


def test_a_postgres_started_by_hand_is_left_running(state_dir: Path) -> None:
    by_hand = LocalPostgres(state_dir / "postgres")
    info = by_hand.start()
    stack = _Stack(state_dir)
    assert stack.conninfo == info
    stack.leave()
    assert _accepts(info), "a stack stopped a server it did not start"


def test_stacks_in_separate_processes_share_postgres_and_dead_ones_are_pruned(state_dir: Path) -> None:
    # Two processes starting at once on a fresh state dir: one initialises and starts, the other reuses.
    procs = [_stack_process(state_dir), _stack_process(state_dir)]
    try:
        ports = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
        assert ports[0] and ports[0] == ports[1], ports
        info = LocalPostgres(state_dir / "postgres").status()
        assert info is not None and str(info.port) == ports[0]

        procs[0].stdin.close()  # type: ignore[union-attr]
        assert procs[0].stdout.readline().strip() == "left"  # type: ignore[union-attr]
        assert procs[0].wait(timeout=120) == 0
        assert _accepts(info), "a stack process stopped the Postgres another process still uses"

        mine = _Stack(state_dir)
        mine.leave()
        assert _accepts(info), "this stack stopped the Postgres a live stack process still uses"

        procs[1].kill()  # dies without unregistering
        procs[1].wait(timeout=60)
        assert _accepts(info)  # nobody stopped it...
        last = _Stack(state_dir)
        last.leave()  # ...until the next stack finds the dead user and is the last one out
        assert not _accepts(info), "a server left by a killed stack was not cleaned up"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)


# ---- the sandbox


@pytest.fixture
def external_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack treats Postgres as someone else's and never connects to it here."""
    for key, value in {
        "DAGSTER_PG_HOST": "db.invalid",
        "DAGSTER_PG_USER": "u",
        "DAGSTER_PG_DB": "d",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("META_GRAPH_API_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def test_a_stack_reuses_a_running_sandbox_and_leaves_it_running(
    external_postgres: None, tmp_path: Path
) -> None:
    from kobi_cpas.registry import load_registry
    from meta_sandbox import SandboxServer, World

    with SandboxServer(World.from_registry(load_registry().registry, seed=42)) as theirs:
        with local_stack(REPO_ROOT, state_dir=tmp_path, sandbox_port=theirs.port) as info:
            assert info.env["META_GRAPH_API_URL"] == theirs.url
            assert "reused" in info.meta
        assert theirs.running
        assert requests.get(f"{theirs.url}/__sandbox/health", timeout=10).json()["ok"] is True


def test_a_port_held_by_something_else_gets_a_sandbox_elsewhere(
    external_postgres: None, tmp_path: Path
) -> None:

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with local_stack(REPO_ROOT, state_dir=tmp_path, sandbox_port=port) as info:
            url = info.env["META_GRAPH_API_URL"]
            assert not url.endswith(f":{port}")
            assert requests.get(f"{url}/__sandbox/health", timeout=10).json()["ok"] is True
        with pytest.raises(requests.ConnectionError):  # its own sandbox stops with it
            requests.get(f"{url}/__sandbox/health", timeout=5)


# ---- 2. orphaned runs


def _started_run_holding_a_slot(
    instance: dg.DagsterInstance, tags: dict[str, str], pool: str = "safety_pool"
) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="catalog_batch_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags
        )
    )
    assert instance.event_log_storage.claim_concurrency_slot(pool, run_id, "step").is_claimed
    return run_id


def _holders(instance: dg.DagsterInstance, pool: str = "safety_pool") -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(pool).claimed_slots}


def test_only_runs_whose_owning_process_is_gone_are_released(pg_instance: dg.DagsterInstance) -> None:
    ensure_pools(pg_instance, {"safety_pool": 8})
    live = _started_run_holding_a_slot(pg_instance, owner_tags())  # this test process
    dead = _started_run_holding_a_slot(pg_instance, {**owner_tags(), "kobi/owner_pid": str(_dead_pid())})
    reused = _started_run_holding_a_slot(pg_instance, {**owner_tags(), "kobi/owner_process": "other-boot:1"})
    elsewhere = _started_run_holding_a_slot(
        pg_instance,
        {**owner_tags(), "kobi/owner_host": "another-machine", "kobi/owner_pid": str(_dead_pid())},
    )
    unknown = _started_run_holding_a_slot(pg_instance, {})  # no owner recorded, instance maybe shared

    released = release_orphaned_slots(pg_instance)

    assert sorted(released) == sorted([dead, reused])
    assert _holders(pg_instance) == {live, elsewhere, unknown}
    for run_id in (dead, reused):
        assert pg_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
    for run_id in (live, elsewhere, unknown):
        assert pg_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]


def _record_run_start(instance: dg.DagsterInstance, run_id: str, pid: int) -> None:
    """RUN_START as the process that runs the run writes it (the run worker, or execute_in_process)."""
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value, job_name="catalog_batch_job", pid=pid
        ),
        run_id,
    )


def test_on_a_local_instance_the_run_start_pid_identifies_the_owner(pg_instance: dg.DagsterInstance) -> None:
    """Runs launched by the UI or the daemon carry no owner tags; Dagster records the run worker's pid."""
    ensure_pools(pg_instance, {"safety_pool": 8})
    live = _started_run_holding_a_slot(pg_instance, {})
    _record_run_start(pg_instance, live, os.getpid())
    dead = _started_run_holding_a_slot(pg_instance, {})
    _record_run_start(pg_instance, dead, _dead_pid())

    # A re-execution from the UI copies the owner tags of a `make run` long gone; its run worker is alive.
    reexecuted = _started_run_holding_a_slot(
        pg_instance, {**owner_tags(), "kobi/owner_pid": str(_dead_pid()), "kobi/owner_process": "x:1"}
    )
    _record_run_start(pg_instance, reexecuted, os.getpid())

    # On a shared instance a pid alone says nothing: the process may run on another machine.
    assert release_orphaned_slots(pg_instance) == []
    assert release_orphaned_slots(pg_instance, same_host=True) == [dead]
    assert _holders(pg_instance) == {live, reexecuted}
    assert pg_instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]


def test_owner_tags_name_this_process() -> None:
    tags = owner_tags()
    assert tags["kobi/owner_host"] == this_host()
    assert tags["kobi/owner_pid"] == str(os.getpid())
    assert tags["kobi/owner_process"] == process_token(os.getpid())


def test_a_reused_pid_is_not_its_previous_owner() -> None:
    me = os.getpid()
    started = process_started_at(me)
    assert started is not None and started <= time.time()
    assert alive_since(me, time.time())
    assert not alive_since(me, started - 3600)  # the run started an hour before this process existed
    assert not alive_since(me, 0)  # before the machine booted
    assert same_process_alive(me, process_token(me))
    assert not same_process_alive(me, "another-boot:1")
    assert not same_process_alive(_dead_pid(), None)


# ---- 3. publish leftovers


def _publishing_files(wh: Warehouse) -> list[Path]:
    return sorted(wh.analyst_path.parent.glob(f".{wh.analyst_path.name}.*.publishing*"))


def _plant_stale_publish(wh: Warehouse, size: int = 64 * 1024 * 1024) -> list[Path]:
    """What a writer killed during publish leaves: a full-size new file beside the analyst file (+ WAL)."""
    stale = wh.analyst_path.with_name(f".{wh.analyst_path.name}.{uuid.uuid4().hex}.publishing")
    with stale.open("wb") as handle:
        chunk = os.urandom(1024 * 1024)
        for _ in range(size // len(chunk)):
            handle.write(chunk)
    wal = stale.with_name(stale.name + ".wal")
    wal.write_bytes(b"x" * 4096)
    return [stale, wal]


def test_next_publish_removes_a_publishing_file_left_by_a_killed_writer(tmp_path: Path) -> None:
    wh = Warehouse(seed_work_database(tmp_path / "data" / "a.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        con.execute(
            "INSERT INTO tenant_registry (tenant_id, business_id, catalog_id, registry_hash) "
            "SELECT 't' || i, '1', '2', 'h' FROM range(3) r(i)"
        )
    wh.publish()
    stale = _plant_stale_publish(wh)
    assert _publishing_files(wh) == sorted(stale)

    # Straight to publish, with a connection of our own (connect() cleans up as well, see below).
    con = duckdb.connect(str(wh.work_path))
    try:
        result = wh.publish(con)
    finally:
        con.close()

    assert _publishing_files(wh) == []
    assert result.row_counts["tenant_registry"] == 3
    assert wh.analyst_row_counts()["tenant_registry"] == 3


def test_next_connection_removes_it_but_never_the_file_of_a_writer_at_work(tmp_path: Path) -> None:
    wh = Warehouse(seed_work_database(tmp_path / "data" / "a.duckdb"), schema=SCHEMA)
    wh.publish()
    stale = _plant_stale_publish(wh, size=8 * 1024 * 1024)
    # Another writer is publishing right now: it holds the publish lock, and its file is not stale.
    with open(wh.publish_lock_path, "a+") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        with wh.connect() as con:
            con.execute("SELECT 1")
        assert _publishing_files(wh) == sorted(stale)
        fcntl.flock(other_writer, fcntl.LOCK_UN)
    with wh.connect() as con:
        con.execute("SELECT 1")
    assert _publishing_files(wh) == []


def test_publish_waits_for_the_writer_lock_then_fails_clearly(tmp_path: Path) -> None:
    wh = Warehouse(seed_work_database(tmp_path / "data" / "a.duckdb"), lock_timeout=1.0, schema=SCHEMA)
    wh.publish()
    with open(wh.publish_lock_path, "a+") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match=str(wh.analyst_path)):
            wh.publish()
    assert wh.publish().row_counts  # and publishes once the lock is free


def test_make_dev_refuses_a_busy_ui_port_and_a_second_daemon_on_one_instance(tmp_path: Path) -> None:
    from kobi_cpas.devenv.stack import DevSessionError, dev_session

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        busy_port = pytest.raises(DevSessionError, match=f"UI port {port} is in use.*UI_PORT=")
        with busy_port, dev_session(tmp_path, port):
            pytest.fail("started on a busy port")
    free = port  # released with the socket
    # a second make dev on the same instance names the first one instead of starting another daemon
    second = pytest.raises(
        DevSessionError, match=f"already running .*pid {os.getpid()}, UI http://localhost:{free}"
    )
    with dev_session(tmp_path, free), second, dev_session(tmp_path, free + 1):
        pytest.fail("a second daemon started")
    with dev_session(tmp_path, free):  # the first one gone, the next one starts
        pass


def test_make_dev_takes_its_ports_from_make_variables() -> None:
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        ["make", "-n", "-W", ".venv/.kobi-installed", "dev", "UI_PORT=3011", "SANDBOX_PORT=8777"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "cli dev --port 3011 --sandbox-port 8777" in out


def test_make_remakes_a_venv_of_a_python_that_is_missing_or_too_old(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'Python 3.9.2' >&2\nexec python3 -c 'print(False)'\n")  # an old Python
    fake.chmod(0o755)
    out = subprocess.run(
        ["make", "-n", "install"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "made by a Python that is missing or older than 3.11" in out
    assert "-m venv .venv" in out and not fake.exists()
    # a good venv is left alone
    good = subprocess.run(["make", "-n", "install"], cwd=repo, capture_output=True, text=True, check=True)
    assert "making it again" not in good.stdout and "-m venv" not in good.stdout


def test_the_local_stack_uses_the_repos_analyst_file_from_any_directory(tmp_path, monkeypatch) -> None:
    from kobi_cpas.devenv.stack import REPO_ROOT, analyst_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KOBI_CPAS_DUCKDB_PATH", raising=False)
    assert analyst_path() == REPO_ROOT / "data" / "kobi_cpas.duckdb"
    monkeypatch.setenv("KOBI_CPAS_DUCKDB_PATH", "elsewhere/a.duckdb")
    assert analyst_path() == REPO_ROOT / "elsewhere" / "a.duckdb"
    monkeypatch.setenv("KOBI_CPAS_DUCKDB_PATH", str(tmp_path / "b.duckdb"))
    assert analyst_path() == tmp_path / "b.duckdb"
