"""One bad registry entry never stops or touches another tenant: the real schedules, sensors and the
tenant_registry asset evaluated through Dagster's public API on a Postgres-backed instance."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from kobi_cpas.devenv.pipeline import materialize_all
from kobi_cpas.registry.filters import MAX_RULE_DEPTH, FilterError, validate_rule
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.dagster_fixtures import KobiEnv, requested_tenants, tick_schedule, tick_sensor

GOOD, BAD = "anatolia_home", "bosphorus_outdoor"
# 00:00 UTC is 03:00 in Istanbul: the good tenant's default replace_cron "0 3 * * *" fires at this tick.
TICK = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def _registry(tmp_path: Path, bad_sync: dict | None = None, drop: str | None = None) -> Path:
    """The demo's first two tenants (feeds copied next to it); the second gets ``bad_sync`` merged in. Sensors
    and schedules get it as their registry resource (``KobiEnv.resources``)."""
    data = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    tenants = [t for t in data["tenants"] if t["tenant_id"] in (GOOD, BAD) and t["tenant_id"] != drop]
    for t in tenants:
        feed = tmp_path / t["feed"]["source"]
        feed.parent.mkdir(exist_ok=True)
        feed.write_bytes((DEFAULT_REGISTRY.parent / t["feed"]["source"]).read_bytes())
        if t["tenant_id"] == BAD and bad_sync:
            t.setdefault("sync", {}).update(bad_sync)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "tenants": tenants}))
    return path


def _add_partitions(instance: dg.DagsterInstance, *tenant_ids: str) -> None:
    instance.add_dynamic_partitions("tenant", list(tenant_ids))


def _tick(
    schedule: dg.ScheduleDefinition,
    instance: dg.DagsterInstance,
    when: datetime,
    env: KobiEnv,
    registry: Path,
):
    """Evaluate a schedule at ``when`` with the registry resource on ``registry``."""
    return tick_schedule(schedule, instance, env.resources(registry), scheduled_execution_time=when)


def _sense(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    env: KobiEnv,
    registry: Path,
    cursor: str | None = None,
):
    return tick_sensor(sensor, instance, env.resources(registry), cursor=cursor)


def _tick_logs(capfd: pytest.CaptureFixture[str]) -> str:
    """What the tick logged: Dagster's instigation logger writes to a console handler (stderr)."""
    out, err = capfd.readouterr()
    return out + err


@pytest.mark.parametrize(
    ("bad_sync", "field"),
    [
        ({"replace_cron": "0 25 * * *"}, "sync.replace_cron"),
        ({"timezone": "Europe/Istambul"}, "sync.timezone"),
    ],
)
def test_replace_schedule_launches_the_good_tenant_and_names_the_bad_one(
    kobi_env, pg_instance, tmp_path, capfd, bad_sync, field
):
    from kobi_cpas.defs.catalog_sync.schedules import catalog_replace_schedule

    path = _registry(tmp_path, bad_sync)
    _add_partitions(pg_instance, GOOD, BAD)
    requests = _tick(catalog_replace_schedule, pg_instance, TICK, kobi_env, path)
    assert isinstance(requests, list), requests
    assert [(r.partition_key, r.tags["kobi/sync_method"]) for r in requests] == [(GOOD, "replace")]
    logs = _tick_logs(capfd)
    assert str(path) in logs and f"tenant '{BAD}', field '{field}'" in logs

    # nothing was launched: an hour later the same replace is still due, under the same run key
    again = _tick(catalog_replace_schedule, pg_instance, TICK.replace(hour=1), kobi_env, path)
    assert [r.run_key for r in again] == [r.run_key for r in requests]
    # once a replace since the fire succeeded nothing is due: the skip reason still names the bad tenant
    pg_instance.add_run(
        dg.DagsterRun(
            job_name="catalog_replace_job",
            run_id=str(uuid.uuid4()),
            tags={"dagster/partition": GOOD},
            status=dg.DagsterRunStatus.SUCCESS,
        )
    )
    skipped = _tick(catalog_replace_schedule, pg_instance, TICK.replace(hour=1), kobi_env, path)
    assert isinstance(skipped, dg.SkipReason)
    assert str(path) in skipped.skip_message and f"field '{field}'" in skipped.skip_message
    assert f"tenant '{BAD}'" in skipped.skip_message


def test_update_and_batch_schedules_skip_only_the_bad_tenant(kobi_env, pg_instance, tmp_path):
    from kobi_cpas.defs.catalog_sync.schedules import catalog_batch_schedule, catalog_update_schedule

    path = _registry(tmp_path, {"batch_cron": "*/15 * * * 8", "update_cron": "5 * * * *"})
    _add_partitions(pg_instance, GOOD, BAD)
    batch = _tick(catalog_batch_schedule, pg_instance, TICK, kobi_env, path)
    assert requested_tenants(batch) == [GOOD]
    update_tick = TICK.replace(minute=15)  # "5 * * * *" fired at 00:05
    update = _tick(catalog_update_schedule, pg_instance, update_tick, kobi_env, path)
    assert [r.partition_key for r in update] == [GOOD]


def test_one_tenants_exception_does_not_stop_the_others(kobi_env, pg_instance, tmp_path, monkeypatch):
    import kobi_cpas.defs.catalog_sync.schedules as schedules
    from kobi_cpas.defs.catalog_sync.schedules import catalog_batch_schedule

    path = _registry(tmp_path)
    _add_partitions(pg_instance, GOOD, BAD)
    real = schedules.overlap_reason

    def flaky(instance: dg.DagsterInstance, tenant_id: str, *active: object) -> str | None:
        if tenant_id == GOOD:
            raise ConnectionError("run storage hiccup for https://u:s3cr3tpw@db.example/x")
        return real(instance, tenant_id, *active)

    monkeypatch.setattr(schedules, "overlap_reason", flaky)
    assert requested_tenants(_tick(catalog_batch_schedule, pg_instance, TICK, kobi_env, path)) == [BAD]

    monkeypatch.setattr(schedules, "overlap_reason", lambda instance, tenant_id, *_: flaky(instance, GOOD))
    skipped = _tick(catalog_batch_schedule, pg_instance, TICK, kobi_env, path)
    assert isinstance(skipped, dg.SkipReason)
    for tenant_id in (GOOD, BAD):
        assert (
            f"{tenant_id}: batch schedule failed for this tenant only (ConnectionError"
            in skipped.skip_message
        )
    assert "s3cr3tpw" not in skipped.skip_message


def test_partitions_sensor_keeps_a_broken_tenants_partition(kobi_env, pg_instance, tmp_path):
    from kobi_cpas.defs.tenants.sensors import tenant_partitions_sensor

    path = _registry(tmp_path, {"timezone": "Mars/Olympus"})
    _add_partitions(pg_instance, BAD, "removed_tenant")
    result = _sense(tenant_partitions_sensor, pg_instance, kobi_env, path)
    assert isinstance(result, dg.SensorResult)
    changes = {type(r).__name__: list(r.partition_keys) for r in result.dynamic_partitions_requests}
    # the good tenant is added, the removed one dropped, the broken one kept (and never dropped)
    assert changes == {
        "AddDynamicPartitionsRequest": [GOOD],
        "DeleteDynamicPartitionsRequest": ["removed_tenant"],
    }
    # tenant_registry reloads and reports the problem; the good tenant that joined gets its preflight, the broken
    # one none (it is not in the registry's valid tenants)
    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("tenant_onboarding_job", GOOD),
        ("tenant_registry_job", None),
    ]
    for req in result.dynamic_partitions_requests:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            pg_instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        else:
            pg_instance.delete_dynamic_partition(req.partitions_def_name, req.partition_keys[0])
    assert sorted(pg_instance.get_dynamic_partitions("tenant")) == [GOOD, BAD]
    again = _sense(tenant_partitions_sensor, pg_instance, kobi_env, path, result.cursor)
    assert isinstance(again, dg.SkipReason)
    assert "registry unchanged" in again.skip_message
    assert str(path) in again.skip_message and "field 'sync.timezone'" in again.skip_message


def test_partitions_sensor_removes_nothing_while_an_entry_has_no_readable_id(kobi_env, pg_instance, tmp_path):
    from kobi_cpas.defs.tenants.sensors import tenant_partitions_sensor

    path = _registry(tmp_path)
    text = path.read_text().replace(f"tenant_id: {BAD}", "tenant_id: Bosphorus Outdoor!")
    path.write_text(text)
    _add_partitions(pg_instance, GOOD, BAD)
    result = _sense(tenant_partitions_sensor, pg_instance, kobi_env, path)
    assert isinstance(result, dg.SensorResult)
    assert result.dynamic_partitions_requests == []


def test_every_tenant_schedules_skip_only_the_broken_tenant(kobi_env, pg_instance, tmp_path):
    from kobi_cpas.defs.cpas.schedules import cpas_daily_schedule
    from kobi_cpas.defs.diagnostics.schedules import catalog_diagnostics_schedule

    path = _registry(tmp_path, {"update_cron": "5 * *"})
    _add_partitions(pg_instance, GOOD, BAD)
    for schedule in (catalog_diagnostics_schedule, cpas_daily_schedule):
        assert requested_tenants(_tick(schedule, pg_instance, TICK, kobi_env, path)) == [GOOD]
    pg_instance.delete_dynamic_partition("tenant", GOOD)
    skipped = _tick(catalog_diagnostics_schedule, pg_instance, TICK, kobi_env, path)
    assert isinstance(skipped, dg.SkipReason)
    assert str(path) in skipped.skip_message and "field 'sync.update_cron'" in skipped.skip_message


def test_feed_sensor_starts_the_good_tenant_and_names_the_bad_one(kobi_env, pg_instance, tmp_path, capfd):
    from kobi_cpas.defs.catalog_sync.sensors import feed_source_sensor

    path = _registry(tmp_path, {"replace_cron": "0 3 * *"})
    _add_partitions(pg_instance, GOOD, BAD)
    result = _sense(feed_source_sensor, pg_instance, kobi_env, path)
    assert [r.partition_key for r in result.run_requests] == [GOOD], result.skip_reason
    logs = _tick_logs(capfd)
    assert str(path) in logs and f"tenant '{BAD}', field 'sync.replace_cron'" in logs


def test_tenant_registry_asset_writes_valid_tenants_and_reports_problems(
    kobi_env, pg_instance, tmp_path, monkeypatch
):
    import duckdb

    path = _registry(tmp_path, {"timezone": "Europe/Istambul"})
    monkeypatch.setenv("KOBI_CPAS_TENANTS", str(path))  # the code location's own registry resource
    report = materialize_all(
        kobi_env.defs(), pg_instance, stages=[["tenant_registry"]], on_progress=lambda m: None
    )
    assert report.ok
    event = pg_instance.get_latest_materialization_event(dg.AssetKey("tenant_registry"))
    meta = event.asset_materialization.metadata
    assert meta["tenants"].value == 1 and meta["broken_tenants"].value == 1
    assert f"tenant '{BAD}', field 'sync.timezone'" in meta["problems"].value
    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        rows = con.execute("SELECT DISTINCT tenant_id, registry_path FROM tenant_registry").fetchall()
    finally:
        con.close()
    assert rows == [(GOOD, str(path))]


def test_registry_resource_fails_a_broken_tenants_run_with_its_problem(tmp_path):
    from kobi_cpas.resources import TenantRegistryResource

    path = _registry(tmp_path, {"timezone": "Europe/Istambul"})
    resource = TenantRegistryResource(path=str(path))
    assert resource.tenant(GOOD)[1].tenant_id == GOOD
    with pytest.raises(dg.Failure) as ei:
        resource.tenant(BAD)
    assert str(path) in ei.value.description and "sync.timezone" in ei.value.description


def _nested_json(levels: int) -> str:
    return '{"and": [' * levels + '{"brand": {"eq": "x"}}' + "]}" * levels


def test_rule_depth_limit():
    validate_rule(_nested_json(MAX_RULE_DEPTH))
    for levels in (MAX_RULE_DEPTH + 1, 250, 100_000):
        with pytest.raises(FilterError, match=r"levels deep|groups deep") as ei:
            validate_rule(_nested_json(levels))
        assert len(str(ei.value)) < 200


@pytest.mark.parametrize("levels", [250, 100_000])
def test_segment_job_rejects_deep_json_config_with_a_clear_failure(levels):
    from kobi_cpas.defs.cpas.jobs import parse_segment_filter

    with pytest.raises(dg.Failure) as ei:
        parse_segment_filter(_nested_json(levels), GOOD)
    text = ei.value.description
    assert f"tenant '{GOOD}'" in text and "segment_filter" in text and "deep" in text
    assert parse_segment_filter('{"brand": {"eq": "x"}}', GOOD) == {"brand": {"eq": "x"}}


def test_insights_schedule_names_the_bad_tenant(kobi_env, pg_instance, tmp_path, capfd):
    from kobi_cpas.defs.insights.schedules import shared_item_metrics_schedule

    path = _registry(tmp_path, {"timezone": "Europe/Istambul"})
    _add_partitions(pg_instance, GOOD, BAD)
    result = _tick(shared_item_metrics_schedule, pg_instance, TICK, kobi_env, path)
    if isinstance(result, dg.SkipReason):
        told = result.skip_message
    else:  # the good tenant's account is at 07:00: the bad one is named in the tick log
        assert {r.tags["kobi/tenant"] for r in result} == {GOOD}
        told = _tick_logs(capfd)
    assert str(path) in told and f"tenant '{BAD}', field 'sync.timezone'" in told


def test_sensors_and_schedules_read_settings_only_through_resources(kobi_env):
    """Every sensor and schedule takes the code location's resources as parameters (the instances the assets
    get); none reads the registry file, the environment or Meta itself."""
    import kobi_cpas.defs

    defs = kobi_env.defs()
    sync = {"registry", "warehouse", "catalog_sync"}
    expected = {
        "tenant_partitions_sensor": {"registry"},
        "feed_source_sensor": {"registry", "warehouse"},
        "sync_status_sensor": {"warehouse", "catalog_sync"},
        "catalog_replace_schedule": sync,
        "catalog_update_schedule": sync,
        "catalog_batch_schedule": sync,
        "cpas_daily_schedule": {"registry"},
        "catalog_diagnostics_schedule": {"registry", "catalog_sync"},
        "shared_item_metrics_schedule": {"registry", "warehouse"},
    }
    taken = {d.name: d.required_resource_keys for d in [*defs.sensors, *defs.schedules]}
    assert {name: taken.get(name) for name in expected} == expected
    assert all(keys <= set(defs.resources) - {"meta"} for keys in taken.values()), taken
    root = Path(kobi_cpas.defs.__file__).parent
    modules = [*root.glob("*/sensors.py"), *root.glob("*/schedules.py"), root / "tenants" / "evaluation.py"]
    assert len(modules) >= 7
    direct = ("load_registry", "registry_path", "analyst_path_from_env", "os.environ", "MetaClientConfig")
    for path in modules:
        source = path.read_text()
        assert not [d for d in direct if d in source], path
