"""The instance's event log storage (kobi_cpas.instance_storage) stores what dagster-postgres's stores, without
asking Postgres's catalog on every run, and still sees a table that appears later."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from kobi_cpas.devenv.postgres import conninfo_from_env
from kobi_cpas.instance_storage import SchemaCachingPostgresEventLogStorage, SchemaCachingPostgresRunStorage

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
    """Statements sent through SQLAlchemy, counted as catalog (pg_catalog) or other."""
    seen: collections.Counter[str] = collections.Counter()

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen["catalog" if "pg_catalog" in statement else "other"] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _dagster_postgres_home(pg_dagster_home: Path, tmp_path: Path) -> Path:
    """A DAGSTER_HOME like the repository's, with dagster-postgres's own run and event log classes."""
    home = tmp_path / "plain_home"
    home.mkdir()
    text = (pg_dagster_home / "dagster.yaml").read_text()
    for kind, module in (("EventLog", "event_log"), ("Run", "run_storage")):
        ours = f"module: kobi_cpas.instance_storage\n  class: SchemaCachingPostgres{kind}Storage"
        assert ours in text
        text = text.replace(ours, f"module: dagster_postgres.{module}\n  class: Postgres{kind}Storage")
    (home / "dagster.yaml").write_text(text)
    return home


def _materialize_three(instance: dg.DagsterInstance, prefix: str, seen: collections.Counter[str]) -> int:
    """Catalog queries of the second and third runs (the first may meet a cold schema)."""
    keys = [f"{prefix}{i}" for i in range(3)]
    instance.add_dynamic_partitions("probe_tenant", keys)
    catalog = 0
    for i, key in enumerate(keys):
        before = seen["catalog"]
        assert dg.materialize([probe], instance=instance, partition_key=key).success
        if i:
            catalog += seen["catalog"] - before
    return catalog


def test_runs_ask_the_catalog_only_with_dagster_postgres_own_class(
    pg_dagster_home: Path, tmp_path: Path, catalog_queries: collections.Counter[str]
) -> None:
    ours = dg.DagsterInstance.from_config(str(pg_dagster_home))
    plain = dg.DagsterInstance.from_config(str(_dagster_postgres_home(pg_dagster_home, tmp_path)))
    try:
        assert isinstance(ours.event_log_storage, SchemaCachingPostgresEventLogStorage)
        assert isinstance(ours.run_storage, SchemaCachingPostgresRunStorage)
        assert not isinstance(plain.event_log_storage, SchemaCachingPostgresEventLogStorage)
        assert not isinstance(plain.run_storage, SchemaCachingPostgresRunStorage)
        # Without the cache every run asks the catalog dozens of times; with it, no run does.
        assert _materialize_three(plain, "p", catalog_queries) >= 20
        assert _materialize_three(ours, "o", catalog_queries) == 0
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
        assert isinstance(storage, SchemaCachingPostgresEventLogStorage)
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
