"""The instance's storages (kobi_cpas.instance_storage) store what dagster-postgres's store, over one pooled
connection instead of a new one per query, without asking Postgres's catalog on every run, and still see a
table that appears later; a forked child never shares its parent's connection."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine

from kobi_cpas import instance_storage
from kobi_cpas.devenv.postgres import conninfo_from_env
from kobi_cpas.instance_storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    PooledPostgresScheduleStorage,
)

pytest_plugins = ["kobi_cpas_tests.pg_fixtures"]

tenants = dg.DynamicPartitionsDefinition(name="probe_tenant")


@dg.asset(partitions_def=tenants, check_specs=[dg.AssetCheckSpec("positive", asset="probe")])
def probe(context) -> dg.MaterializeResult:  # type: ignore[no-untyped-def]
    """One row count per partition, and a check on it."""
    n = len(context.partition_key)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": n}, check_results=[dg.AssetCheckResult(passed=n > 0)]
    )


@pytest.fixture
def catalog_queries() -> Iterator[collections.Counter[str]]:
    """Statements sent through SQLAlchemy, counted as catalog (pg_catalog) or other, and the connections
    opened to Postgres ("connections")."""
    seen: collections.Counter[str] = collections.Counter()

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen["catalog" if "pg_catalog" in statement else "other"] += 1

    def connected(dbapi_connection, connection_record) -> None:  # type: ignore[no-untyped-def]
        seen["connections"] += 1

    event.listen(Engine, "before_cursor_execute", count)
    event.listen(Engine, "connect", connected)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)
        event.remove(Engine, "connect", connected)


def _dagster_postgres_home(pg_dagster_home: Path, tmp_path: Path) -> Path:
    """A DAGSTER_HOME like the repository's, with dagster-postgres's own storage classes."""
    home = tmp_path / "plain_home"
    home.mkdir()
    text = (pg_dagster_home / "dagster.yaml").read_text()
    for kind, module in (("EventLog", "event_log"), ("Run", "run_storage"), ("Schedule", "schedule_storage")):
        ours = f"module: kobi_cpas.instance_storage\n  class: PooledPostgres{kind}Storage"
        assert ours in text
        text = text.replace(ours, f"module: dagster_postgres.{module}\n  class: Postgres{kind}Storage")
    (home / "dagster.yaml").write_text(text)
    return home


def _materialize_three(
    instance: dg.DagsterInstance, prefix: str, seen: collections.Counter[str]
) -> tuple[int, int]:
    """Catalog queries and connections opened by the second and third runs (the first may meet a cold schema
    and an empty pool)."""
    keys = [f"{prefix}{i}" for i in range(3)]
    instance.add_dynamic_partitions("probe_tenant", keys)
    catalog = connections = 0
    for i, key in enumerate(keys):
        before = seen.copy()
        assert dg.materialize([probe], instance=instance, partition_key=key).success
        if i:
            catalog += seen["catalog"] - before["catalog"]
            connections += seen["connections"] - before["connections"]
    return catalog, connections


def test_runs_reconnect_and_ask_the_catalog_only_with_dagster_postgres_own_classes(
    pg_dagster_home: Path, tmp_path: Path, catalog_queries: collections.Counter[str]
) -> None:
    ours = dg.DagsterInstance.from_config(str(pg_dagster_home))
    plain = dg.DagsterInstance.from_config(str(_dagster_postgres_home(pg_dagster_home, tmp_path)))
    try:
        assert isinstance(ours.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(ours.run_storage, PooledPostgresRunStorage)
        assert isinstance(ours.schedule_storage, PooledPostgresScheduleStorage)
        assert not isinstance(plain.event_log_storage, PooledPostgresEventLogStorage)
        assert not isinstance(plain.run_storage, PooledPostgresRunStorage)
        assert not isinstance(plain.schedule_storage, PooledPostgresScheduleStorage)
        # Without the cache every run asks the catalog dozens of times; with it, no run does. Without the pool
        # every storage call opens a connection (a Postgres backend); with it, warm runs open none.
        plain_catalog, plain_connections = _materialize_three(plain, "p", catalog_queries)
        ours_catalog, ours_connections = _materialize_three(ours, "o", catalog_queries)
        assert plain_catalog >= 20 and ours_catalog == 0
        assert plain_connections >= 50 and ours_connections == 0, (plain_connections, ours_connections)
        # Both stored the same facts: a materialization with its row count and a check result per partition.
        for instance, prefix in ((ours, "o"), (plain, "p")):
            for i in range(3):
                key = f"{prefix}{i}"
                found = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("probe"), asset_partitions=[key]), limit=5
                ).records
                assert len(found) == 1 and found[0].asset_materialization is not None
                assert found[0].asset_materialization.metadata["dagster/row_count"].value == len(key)
            records = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("probe"), "positive"), limit=10
            )
            assert len(records) == 6  # three runs of each instance, one shared database
    finally:
        ours.dispose()
        plain.dispose()


def test_a_table_created_later_is_seen(pg_dagster_home: Path) -> None:
    instance = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledPostgresEventLogStorage)
        assert storage.has_table("event_logs") and storage.has_table("event_logs")
        assert not storage.has_table("kobi_probe_table")
        info = conninfo_from_env()
        assert info is not None
        with psycopg2.connect(**info.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kobi_probe_table (x int)")
        assert storage.has_table("kobi_probe_table")  # a negative answer is never kept
        assert storage.has_asset_key_col("last_materialization_timestamp")
        assert not storage.has_asset_key_col("kobi_probe_column")
        with psycopg2.connect(**info.connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE asset_keys ADD COLUMN kobi_probe_column int")
        assert storage.has_asset_key_col("kobi_probe_column")
        assert instance.run_storage.has_run_stats_index_cols()
    finally:
        instance.dispose()


def _backend_pid(storage: PooledPostgresEventLogStorage) -> int:
    with storage.index_connection() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


# Run in a process of its own: forking this test process (threads, gRPC, DuckDB of earlier tests) is unsafe
# for reasons unrelated to the pool.
_FORK_SCRIPT = r"""
import json, os, sys
import dagster as dg

def backend(storage):
    with storage.index_connection() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

instance = dg.DagsterInstance.from_config(sys.argv[1])
storage = instance.event_log_storage
parent = backend(storage)
again = backend(storage)
read, write = os.pipe()
child = os.fork()
if child == 0:
    code = 1
    try:
        os.close(read)
        os.write(write, str(backend(storage)).encode())
        code = 0
    finally:
        os._exit(code)
os.close(write)
with os.fdopen(read) as pipe:
    child_backend = int(pipe.read() or 0)
_, status = os.waitpid(child, 0)
after = backend(storage)
runs = len(instance.get_runs(limit=1))
instance.dispose()
print(json.dumps({"class": type(storage).__name__, "parent": parent, "again": again, "child": child_backend,
                  "child_exit": os.waitstatus_to_exitcode(status), "after": after, "runs": runs}))
"""


def test_a_forked_child_opens_its_own_connection_and_leaves_its_parents_alone(pg_dagster_home: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(pg_dagster_home)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["class"] == "PooledPostgresEventLogStorage"
    assert seen["again"] == seen["parent"]  # pooled: the same backend answers again
    assert seen["child_exit"] == 0
    assert seen["child"] not in (0, seen["parent"])  # its own connection, not the parent's socket
    # The parent's connection survived the child's exit (the child never closed the parent's session).
    assert seen["after"] == seen["parent"]
    assert seen["runs"] == 0


@pytest.fixture
def pool_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock the pools judge idleness by, moved by hand: ``pool_clock[0] += s``."""
    now = [1000.0]
    monkeypatch.setattr(instance_storage, "_clock", lambda: now[0])
    return now


def _terminate(backend: int) -> None:
    conn = psycopg2.connect(**conninfo_from_env().connect_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", [backend])
    finally:
        conn.close()


def test_a_restarted_postgres_costs_a_reconnect_not_an_error(
    pg_dagster_home: Path, local_postgres_server, pool_clock: list[float]
) -> None:  # type: ignore[no-untyped-def]
    instance = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledPostgresEventLogStorage)
        before = _backend_pid(storage)
        local_postgres_server.stop()
        local_postgres_server.start()
        pool_clock[0] += instance_storage.PING_AFTER_IDLE_SECONDS + 0.1  # what a restart takes, at least
        # The pooled connection died with the server; the ping before use replaces it.
        assert _backend_pid(storage) != before
        assert instance.get_runs(limit=1) == []
    finally:
        instance.dispose()


def test_a_connection_used_within_the_idle_window_is_not_pinged(
    pg_dagster_home: Path, pool_clock: list[float]
) -> None:
    instance = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledPostgresEventLogStorage)
        backend = _backend_pid(storage)
        assert _backend_pid(storage) == backend  # the pooled connection again, without a ping
        # Its backend ends while it is pooled: used again within the window, it is trusted unpinged, so the call
        # meets the closed connection and fails; the pool drops it and the next call gets a new one.
        _terminate(backend)
        pool_clock[0] += instance_storage.PING_AFTER_IDLE_SECONDS / 2
        with pytest.raises(sqlalchemy.exc.OperationalError):
            _backend_pid(storage)
        assert _backend_pid(storage) not in (0, backend)
        # Past the window, a dead connection is found by the ping and replaced before use: no call fails.
        again = _backend_pid(storage)
        _terminate(again)
        pool_clock[0] += instance_storage.PING_AFTER_IDLE_SECONDS + 0.1
        assert _backend_pid(storage) not in (0, again)
    finally:
        instance.dispose()


def test_a_dagster_yaml_naming_the_earlier_classes_still_loads_the_pooled_ones(
    pg_dagster_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "earlier_home"
    home.mkdir()
    text = (pg_dagster_home / "dagster.yaml").read_text()
    for kind in ("EventLog", "Run"):
        assert f"class: PooledPostgres{kind}Storage" in text
        text = text.replace(
            f"class: PooledPostgres{kind}Storage", f"class: SchemaCachingPostgres{kind}Storage"
        )
    (home / "dagster.yaml").write_text(text)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert instance.get_runs(limit=1) == []
    finally:
        instance.dispose()
