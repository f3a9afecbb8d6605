"""Fixtures that run the real code location: env vars pointing at the sandbox and a temp warehouse, a Postgres
backed Dagster instance, and a helper to build the definitions under that environment."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.sandbox_fixtures import SANDBOX_API_VERSION, SANDBOX_TOKEN, SandboxHandle
from kobi_cpas_tests.warehouse_template import seed_work_database

# What kobi_cpas.defs reads from the environment when the definitions are built (kobi_cpas/defs/resources.py).
_LOCATION_ENV_PREFIXES = ("KOBI_CPAS_", "META_")
_DEFS_BUILT: dict[tuple[object, ...], dg.Definitions] = {}  # relative paths resolve against the cwd


@functools.cache
def location_definitions() -> dg.Definitions:
    """``kobi_cpas.definitions.defs()``, loaded once per process."""
    from kobi_cpas.definitions import defs

    return defs()


def with_location_resources(loaded: dg.Definitions) -> dg.Definitions:
    """``loaded`` with the resources ``kobi_cpas.defs.resources`` builds from the environment now, in place of
    those it had: what loading the code location again would give."""
    from kobi_cpas.defs.resources import location_resources

    return dg.Definitions(
        assets=loaded.assets,
        asset_checks=loaded.asset_checks,
        jobs=loaded.jobs,
        schedules=loaded.schedules,
        sensors=loaded.sensors,
        resources=location_resources(),
        executor=loaded.executor,
        loggers=loaded.loggers,
        metadata=loaded.metadata,
    )


@dataclass
class KobiEnv:
    analyst_path: Path
    registry_path: Path
    token: str
    sandbox: SandboxHandle

    def defs(self) -> dg.Definitions:
        """The code location's definitions under the current environment: its assets, checks, jobs, schedules
        and sensors as ``kobi_cpas.definitions`` loads them (once per process: only the resources take settings
        from the environment, and loading the folder costs ~0.1 s of CPU), with the resources the location
        builds from the variables set now (kept per distinct setting of those variables and working directory)."""
        key = (
            os.getcwd(),
            *sorted((k, v) for k, v in os.environ.items() if k.startswith(_LOCATION_ENV_PREFIXES)),
        )
        built = _DEFS_BUILT.pop(key, None)
        if built is None:
            built = with_location_resources(location_definitions())
        _DEFS_BUILT[key] = built  # most recently used last
        while len(_DEFS_BUILT) > 8:
            _DEFS_BUILT.pop(next(iter(_DEFS_BUILT)))
        return built

    def resources(self, registry_path: Path | None = None, **catalog_sync: float) -> dict[str, object]:
        """The resources sensors and schedules take, pointed at this test's warehouse and ``registry_path``
        (default: the demo registry), given explicitly instead of through environment variables."""
        from kobi_cpas.resources import CatalogSyncResource, TenantRegistryResource, WarehouseResource

        return {
            "registry": TenantRegistryResource(path=str(registry_path or self.registry_path)),
            "warehouse": WarehouseResource(duckdb_path=str(self.analyst_path)),
            "catalog_sync": CatalogSyncResource(
                workdir=str(self.analyst_path.parent / ".kobi_work" / "feeds"), **catalog_sync
            ),
        }


def kobi_env_vars(analyst: Path, sandbox_url: str) -> dict[str, str]:
    """The environment the code location runs under in tests: the warehouse at ``analyst``, the demo registry,
    the sandbox at ``sandbox_url`` and fast polling and back-off (META_APP_SECRET is unset besides)."""
    return {
        "KOBI_CPAS_DUCKDB_PATH": str(analyst),
        "KOBI_CPAS_TENANTS": str(DEFAULT_REGISTRY),
        "META_GRAPH_API_URL": sandbox_url,
        "META_API_VERSION": SANDBOX_API_VERSION,
        "META_ACCESS_TOKEN": SANDBOX_TOKEN,
        "KOBI_CPAS_POLL_SECONDS": "0.05",
        "KOBI_CPAS_META_BACKOFF_SCALE": "0.001",
    }


def apply_kobi_env(
    mp: pytest.MonkeyPatch, analyst: Path, sandbox: SandboxHandle, extra: Mapping[str, str] | None = None
) -> KobiEnv:
    """Set ``kobi_env_vars`` (and ``extra``) through ``mp``, unset META_APP_SECRET, and return the KobiEnv."""
    for key, value in {**kobi_env_vars(analyst, sandbox.url), **(extra or {})}.items():
        mp.setenv(key, value)
    mp.delenv("META_APP_SECRET", raising=False)
    return KobiEnv(analyst, DEFAULT_REGISTRY, SANDBOX_TOKEN, sandbox)


def open_instance(dagster_home: Path) -> dg.DagsterInstance:
    """The Dagster instance of ``dagster_home`` (its storages pool their connections, as in every process)
    with the project's pool limits (dispose it after use)."""
    from kobi_cpas.devenv.instance import ensure_pools

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    ensure_pools(instance)
    return instance


@pytest.fixture
def kobi_env(tmp_path: Path, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> KobiEnv:
    # A new warehouse whose work database is already migrated (see warehouse_template).
    return apply_kobi_env(monkeypatch, seed_work_database(tmp_path / "data" / "kobi_cpas.duckdb"), sandbox)


@pytest.fixture
def pg_instance(pg_dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    instance = open_instance(pg_dagster_home)
    try:
        yield instance
    finally:
        instance.dispose()


def _required(
    definition: dg.SensorDefinition | dg.ScheduleDefinition, resources: Mapping[str, object] | None
) -> dict[str, object]:
    """The resources `definition` takes, from `resources` or else the code location's own (built from the
    environment, as the daemon gets them)."""
    if resources is None:
        from kobi_cpas.defs.resources import location_resources

        resources = location_resources()
    return {key: resources[key] for key in definition.required_resource_keys}


def tick_sensor(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    resources: Mapping[str, object] | None = None,
    **context: object,
) -> object:
    """One evaluation of `sensor`, as the daemon does it, with `resources` (see `_required`). The context is
    closed afterwards: an unclosed one keeps the instance it opened as the current one, and a later test would
    load definitions against it."""
    with dg.build_sensor_context(
        instance=instance,
        resources=_required(sensor, resources),
        **context,  # type: ignore[arg-type]
    ) as ctx:
        return sensor(ctx)


def tick_schedule(
    schedule: dg.ScheduleDefinition,
    instance: dg.DagsterInstance,
    resources: Mapping[str, object] | None = None,
    **context: object,
) -> object:
    """One evaluation of `schedule` with `resources`, closing its context (see `tick_sensor`)."""
    with dg.build_schedule_context(
        instance=instance,
        resources=_required(schedule, resources),
        **context,  # type: ignore[arg-type]
    ) as ctx:
        return schedule(ctx)


def requested_tenants(requests: object) -> list[str]:
    """The tenants a tick's run requests sync: their partitions, or the tenants of the batch cadence's fleet
    runs (in their run config)."""
    from kobi_cpas.defs.catalog_sync.fleet import FLEET_OP

    assert isinstance(requests, list), requests
    out: list[str] = []
    for r in requests:
        fleet = (r.run_config or {}).get("ops", {}).get(FLEET_OP)
        out.extend(fleet["config"]["tenants"] if fleet else [r.partition_key])
    return out


# ---- Sensor state as the daemon stores it: the one place the tests use Dagster internals.
# Dagster has no public API that persists a sensor tick's cursor or reads the stored instigator state back:
# only the sensor daemon, the UI and GraphQL do it (build_sensor_context evaluates a sensor without storing
# anything). The Postgres round trip must prove that this state survives, so it goes through the same
# internal calls the daemon makes; every private import stays inside this helper.


@dataclass(frozen=True)
class StoredSensor:
    origin_id: str
    selector_id: str
    running: bool
    cursor: str | None


class DaemonSensorState:
    """Start a sensor, tick it and store its cursor the way the sensor daemon does, and read that back."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def tick(
        self, python_file: str, attribute: str, sensor_name: str, working_directory: Path
    ) -> StoredSensor:
        """Load the code location `attribute` of `python_file`, start the sensor (stored RUNNING, as `dagster
        sensor start` does), evaluate one tick from the stored cursor and store the new one."""
        from dagster._core.definitions.repository_definition.valid_definitions import (
            SINGLETON_REPOSITORY_NAME,
        )
        from dagster._core.scheduler.instigation import SensorInstigatorData
        from dagster._core.test_utils import in_process_test_workspace
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        origin = LoadableTargetOrigin(
            executable_path=sys.executable,
            python_file=python_file,
            attribute=attribute,
            working_directory=str(working_directory),
        )
        instance = self.instance
        with in_process_test_workspace(instance, origin) as workspace:
            location = workspace.code_locations[0]
            repo = location.get_repository(SINGLETON_REPOSITORY_NAME)
            sensor = repo.get_sensor(sensor_name)
            state = instance.start_sensor(sensor)
            data = state.instigator_data
            assert isinstance(data, SensorInstigatorData)
            result = location.get_sensor_execution_data(
                instance,
                repo.handle,
                sensor.name,
                data.last_tick_timestamp,
                data.last_run_key,
                data.cursor,
                None,
                data.last_sensor_start_timestamp,
            )
            instance.update_instigator_state(
                state.with_data(
                    SensorInstigatorData(
                        last_tick_timestamp=data.last_tick_timestamp,
                        last_run_key=data.last_run_key,
                        min_interval=sensor.min_interval_seconds,
                        cursor=result.cursor,
                        last_sensor_start_timestamp=data.last_sensor_start_timestamp,
                        sensor_type=sensor.sensor_type,
                    )
                )
            )
            origin_id, selector_id = sensor.get_remote_origin_id(), sensor.selector_id
        stored = self.read(origin_id, selector_id)
        assert stored is not None
        return stored

    def read(self, origin_id: str, selector_id: str) -> StoredSensor | None:
        """The stored state of a sensor, or None when none is stored (it must be a sensor's)."""
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import InstigatorStatus, SensorInstigatorData

        state = self.instance.get_instigator_state(origin_id, selector_id)
        if state is None:
            return None
        assert state.instigator_type == InstigatorType.SENSOR
        assert isinstance(state.instigator_data, SensorInstigatorData)
        return StoredSensor(
            origin_id=origin_id,
            selector_id=selector_id,
            running=state.status == InstigatorStatus.RUNNING,
            cursor=state.instigator_data.cursor,
        )
