"""Inside a run the warehouse resource publishes the analyst file once, when the run's resources are torn down,
instead of once per writing asset: the file then holds everything the run committed, also after a failed step;
a publish that fails at teardown is logged as an ERROR naming the file, and the next run's publish repairs it.
Outside a run (scripts, devenv, tests using the resource directly) ``publish`` stays immediate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kobi_cpas.meta.dry_run import DRY_RUN_TAG
from kobi_cpas.resources import WarehouseResource
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse, read_analyst
from kobi_cpas.warehouse.publish import AnalystPublisher
from kobi_cpas_tests.sync_harness import SyncHarness, synced_world_fixtures

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

world, synced = synced_world_fixtures(60)  # 60 items replaced once per module

# Volatile-only changes (batch) plus one content change (replace/update): every catalog job has work to do.
FEED_EDIT = (
    "UPDATE f SET price = '1.00 TRY', sale_price = NULL, sale_price_effective_date = NULL "
    "WHERE id IN (SELECT id FROM f ORDER BY id DESC LIMIT 12);"
    "UPDATE f SET title = title || ' (2026 edition)' WHERE id = (SELECT min(id) FROM f);"
)


@pytest.fixture
def publishes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The analyst file of every publish that builds (or confirms) the file, in order."""
    calls: list[Path] = []
    original = AnalystPublisher.publish_locked

    def counting(self: AnalystPublisher, con: duckdb.DuckDBPyConnection, schema) -> object:
        calls.append(self.analyst_path)
        return original(self, con, schema)

    monkeypatch.setattr(AnalystPublisher, "publish_locked", counting)
    return calls


def _rows(con: duckdb.DuckDBPyConnection, names: list[str]) -> dict[str, list[tuple]]:
    return {n: sorted(con.execute(f'SELECT * FROM main."{n}"').fetchall(), key=repr) for n in names}


def work_tables(wh: Warehouse) -> dict[str, list[tuple]]:
    with wh.connect() as con:
        return _rows(con, list(SCHEMA.tables))


def analyst_tables(wh: Warehouse) -> dict[str, list[tuple]]:
    con = duckdb.connect()
    try:
        # ATTACH, not connect(path): a cached instance could still point at an earlier published file.
        con.execute(f"ATTACH '{wh.analyst_path}' AS analyst (READ_ONLY)")
        con.execute("USE analyst")
        return _rows(con, list(SCHEMA.tables))
    finally:
        con.close()


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None
    }


def _snapshots(h: SyncHarness) -> int:
    return int(read_analyst(h.wh.analyst_path, "SELECT count(*) FROM feed_snapshots")[0][0])


@pytest.mark.parametrize(
    ("job", "writers"),
    [
        ("catalog_batch_job", {"feed_snapshot", "price_stock_batch", "catalog_syncs"}),
        ("catalog_replace_job", {"feed_snapshot", "replace_feed_upload", "catalog_syncs"}),
    ],
)
def test_a_catalog_sync_run_publishes_once_with_every_table_it_wrote(
    synced, publishes: list[Path], job: str, writers: set[str]
) -> None:
    h = synced(batch_chunk_size=10)
    h.write_feed(60, FEED_EDIT)
    snapshots_before = _snapshots(h)
    result = h.run(job)
    assert result.success
    assert writers <= materialized(result)  # several assets that write (each used to publish)
    assert publishes == [h.wh.analyst_path]
    assert _snapshots(h) == snapshots_before + 1  # the run's writes are in the file, not the previous one
    assert analyst_tables(h.wh) == work_tables(h.wh)


def test_a_failing_step_leaves_the_file_published_with_what_was_committed(
    synced, publishes: list[Path]
) -> None:
    h = synced(batch_chunk_size=5)
    h.write_feed(60, FEED_EDIT)
    snapshots_before = _snapshots(h)
    # the 2nd batch call fails hard (non-retryable) after one chunk went out
    h.admin.script_faults(
        [{"kind": "pass"}, {"kind": "bad_request", "message": "simulated outage"}],
        route="catalog.items_batch",
    )
    failed = h.run("catalog_batch_job")
    assert not failed.success
    assert "feed_snapshot" in materialized(failed) and "catalog_syncs" not in materialized(failed)
    assert publishes == [h.wh.analyst_path]
    assert _snapshots(h) == snapshots_before + 1
    analyst = analyst_tables(h.wh)
    assert analyst == work_tables(h.wh)
    # the chunk sent before the failure is recorded as in flight, and published
    assert any(r for r in analyst["catalog_syncs"] if "batch" in r)


def test_a_dry_run_publishes_only_its_record_of_writes_once(synced, publishes: list[Path]) -> None:
    h = synced(batch_chunk_size=5)
    h.write_feed(60, FEED_EDIT)
    before = analyst_tables(h.wh)
    dry = h.run("catalog_batch_job", tags={DRY_RUN_TAG: "true"})
    assert dry.success
    assert publishes == [h.wh.analyst_path]  # the real file, once; never the scratch copy
    after = analyst_tables(h.wh)
    written = [r for r in after.pop("meta_dry_run_writes") if dry.run_id in r]
    assert len(written) == 3 and all("POST" in r for r in written)  # 12 volatile changes in chunks of 5
    before.pop("meta_dry_run_writes")
    assert after == before  # nothing else of the dry run reached the analyst file


def _error_logs(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    records = instance.all_logs(result.run_id)
    return [r.user_message for r in records if r.level >= 40]  # logging.ERROR


def test_a_publish_failing_at_teardown_is_an_error_and_the_next_run_repairs_it(
    synced, publishes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = synced(batch_chunk_size=10)
    h.write_feed(60, FEED_EDIT)
    before = analyst_tables(h.wh)
    original = AnalystPublisher.publish_locked

    def broken(self: AnalystPublisher, con: duckdb.DuckDBPyConnection, schema) -> object:
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(AnalystPublisher, "publish_locked", broken)
    result = h.run("catalog_batch_job")
    # What Dagster does with an exception raised in teardown_after_execution: the steps all succeeded, so the
    # run succeeds; the error becomes an engine event "Teardown of resources [...] failed." with the error.
    assert result.success
    teardown = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ENGINE_EVENT and "Teardown of resources" in (e.message or "")
    ]
    assert len(teardown) == 1 and "warehouse" in (teardown[0].message or "")
    assert "No space left on device" in str(teardown[0].engine_event_data.error)
    # ...so the resource also logs an ERROR naming the analyst file and the error.
    errors = _error_logs(result, h.instance)
    assert any(str(h.wh.analyst_path) in m and "No space left on device" in m for m in errors), errors
    assert analyst_tables(h.wh) == before  # the previous publish, complete
    assert analyst_tables(h.wh) != work_tables(h.wh)

    monkeypatch.setattr(AnalystPublisher, "publish_locked", original)
    # A publish is full-state: the next run's publish brings every table up to date, even with nothing to sync.
    assert h.run("catalog_batch_job").success
    assert analyst_tables(h.wh) == work_tables(h.wh)


@pytest.fixture
def resource(tmp_path: Path) -> Iterator[WarehouseResource]:
    yield WarehouseResource(duckdb_path=str(tmp_path / "data" / "kobi_cpas.duckdb"))


def test_outside_a_run_publish_is_immediate(resource: WarehouseResource, publishes: list[Path]) -> None:
    wh = resource.get_warehouse()
    assert not wh.analyst_path.exists()
    with resource.connection() as con:
        resource.publish(con)
        assert publishes == [wh.analyst_path]
        assert wh.analyst_path.exists()
    # also when the resource is initialized by Dagster without a run (what sensors and schedules get)
    with dg.build_resources({"warehouse": resource}) as built:
        with built.warehouse.connection() as con:
            built.warehouse.publish(con)
        assert len(publishes) == 2


def test_a_run_without_a_publish_request_does_not_publish(
    resource: WarehouseResource, publishes: list[Path]
) -> None:
    @dg.asset
    def reads_only(warehouse: WarehouseResource) -> None:
        with warehouse.connection() as con:
            con.execute("SELECT 1").fetchall()

    @dg.asset
    def writes_twice(warehouse: WarehouseResource) -> None:
        for _ in range(2):
            with warehouse.connection() as con:
                warehouse.publish(con)
                assert publishes == []  # deferred: nothing built while the run goes on

    assert dg.materialize([reads_only], resources={"warehouse": resource}).success
    assert publishes == []
    assert dg.materialize([reads_only, writes_twice], resources={"warehouse": resource}).success
    assert publishes == [resource.get_warehouse().analyst_path]


# ---- a publish interval: runs mark the file due, the sensor publishes at most once per interval


@dg.asset
def writes_a_catalog(warehouse: WarehouseResource) -> None:
    with warehouse.connection() as con:
        con.execute(
            "INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES ('t', "
            "(SELECT count(*) + 1 FROM meta_catalogs)::VARCHAR, now())"
        )
        warehouse.publish(con)


def _analyst_catalogs(resource: WarehouseResource) -> int:
    rows = read_analyst(resource.get_warehouse().analyst_path, "SELECT count(*) FROM meta_catalogs")
    return int(rows[0][0]) if rows else -1


def _sensor(resource: WarehouseResource, instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    from kobi_cpas.defs.warehouse.publish import analyst_publish_sensor

    with dg.build_sensor_context(instance=instance, resources={"warehouse": resource}) as context:
        return analyst_publish_sensor(context)


def _publish_run(resource: WarehouseResource, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from kobi_cpas.defs.warehouse.publish import analyst_publish_job

    return analyst_publish_job.execute_in_process(
        instance=instance, resources={"warehouse": resource}, raise_on_error=False
    )


def test_with_a_publish_interval_runs_mark_the_file_due_and_the_sensor_publishes_once_per_interval(
    tmp_path: Path, publishes: list[Path]
) -> None:
    resource = WarehouseResource(
        duckdb_path=str(tmp_path / "data" / "kobi_cpas.duckdb"), publish_interval_seconds=1.0
    )
    analyst = resource.get_warehouse().analyst_path
    with dg.DagsterInstance.ephemeral() as instance:
        nothing = _sensor(resource, instance)
        assert isinstance(nothing, dg.SkipReason) and "no run wrote" in str(nothing.skip_message)

        assert dg.materialize([writes_a_catalog], resources={"warehouse": resource}).success
        assert publishes == [] and not analyst.exists()  # the run only marked the file due
        assert isinstance(_sensor(resource, instance), dg.RunRequest)
        published = _publish_run(resource, instance)
        assert published.success and publishes == [analyst]
        assert _analyst_catalogs(resource) == 1

        done = _sensor(resource, instance)
        assert isinstance(done, dg.SkipReason) and "no run wrote the warehouse since the last publish" in str(
            done.skip_message
        )
        # two more runs inside the interval: one publish covers both, once the interval has passed
        for _ in range(2):
            assert dg.materialize([writes_a_catalog], resources={"warehouse": resource}).success
        # the same files seen with a longer interval: the writes wait for it
        patient = WarehouseResource(duckdb_path=resource.duckdb_path, publish_interval_seconds=600.0)
        waiting = _sensor(patient, instance)
        assert isinstance(waiting, dg.SkipReason) and "wait for the next publish" in str(waiting.skip_message)
        time.sleep(1.1)
        assert isinstance(_sensor(resource, instance), dg.RunRequest)
        assert _publish_run(resource, instance).success
        assert publishes == [analyst, analyst] and _analyst_catalogs(resource) == 3


def test_a_failed_publish_run_is_retried_once_per_interval_not_on_every_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource = WarehouseResource(
        duckdb_path=str(tmp_path / "data" / "kobi_cpas.duckdb"), publish_interval_seconds=600.0
    )
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([writes_a_catalog], resources={"warehouse": resource}).success

        def broken(self: AnalystPublisher, con: duckdb.DuckDBPyConnection, schema) -> object:
            raise OSError(28, "No space left on device (simulated)")

        with monkeypatch.context() as m:
            m.setattr(AnalystPublisher, "publish_locked", broken)
            assert not _publish_run(resource, instance).success
        retry = _sensor(resource, instance)
        assert isinstance(retry, dg.SkipReason) and "failed; the next attempt comes 600 s after it" in str(
            retry.skip_message
        )


def test_without_a_publish_interval_the_sensor_says_runs_publish(tmp_path: Path) -> None:
    resource = WarehouseResource(duckdb_path=str(tmp_path / "data" / "kobi_cpas.duckdb"))
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([writes_a_catalog], resources={"warehouse": resource}).success
        assert _analyst_catalogs(resource) == 1  # published by the run itself
        skip = _sensor(resource, instance)
        assert isinstance(skip, dg.SkipReason) and "every run publishes" in str(skip.skip_message)


def test_publish_due_reasons(tmp_path: Path) -> None:
    from kobi_cpas.warehouse.publish_due import PublishDue

    due = PublishDue(tmp_path / "work")
    assert "no publish recorded" in str(due.wait_reason(300, now=1000.0))
    due.mark(at=900.0)
    assert due.wait_reason(300, now=1000.0) is None  # written, never published
    due.record_published(950.0)  # a publish that started reading after that write
    assert "since the last publish at" in str(due.wait_reason(300, now=1000.0))
    due.mark(at=960.0)  # a write committed after that publish read the database
    assert "wait for the next publish at 1970-01-01 00:20:50 UTC" in str(due.wait_reason(300, now=1000.0))
    assert due.wait_reason(300, now=1250.0) is None
