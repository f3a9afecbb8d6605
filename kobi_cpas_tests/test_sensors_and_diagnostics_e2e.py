"""Sensors of the catalog sync (feed change, sync status) and the diagnostics asset through Dagster."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from kobi_cpas.devenv.pipeline import materialize_all
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.dagster_fixtures import requested_tenants, tick_sensor


def _one_tenant_registry(tmp_path: Path) -> tuple[Path, Path]:
    """A registry of the demo's first tenant with its feed copied to ``tmp_path``: (feed, registry)."""
    demo = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    tenant = demo["tenants"][0]
    feed = tmp_path / "feed.csv"
    feed.write_bytes((Path(DEFAULT_REGISTRY).parent / tenant["feed"]["source"]).read_bytes())
    tenant["feed"]["source"] = str(feed)
    reg = tmp_path / "tenants.yaml"
    reg.write_text(yaml.safe_dump({"tenants": [tenant]}))
    return feed, reg


def test_feed_source_sensor_starts_a_sync_only_when_the_feed_changes(kobi_env, pg_instance, tmp_path):
    from kobi_cpas.defs.catalog_sync.sensors import feed_source_sensor

    feed, reg = _one_tenant_registry(tmp_path)
    resources = kobi_env.resources(reg)  # the environment still names the demo registry: unused here
    pg_instance.add_dynamic_partitions("tenant", ["anatolia_home"])
    first = tick_sensor(feed_source_sensor, pg_instance, resources)
    assert [r.partition_key for r in first.run_requests] == ["anatolia_home"]
    assert first.run_requests[0].tags["kobi/catalog_shard"] == "anatolia_home"
    same = tick_sensor(feed_source_sensor, pg_instance, resources, cursor=first.cursor)
    assert not same.run_requests and "no feed source changed" in same.skip_reason.skip_message
    time.sleep(0.01)
    feed.write_text(feed.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    os.utime(feed, None)
    changed = tick_sensor(feed_source_sensor, pg_instance, resources, cursor=first.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["anatolia_home"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key

    # A sensor without a cursor (its first tick after `make dev` starts) compares with the last snapshot: a
    # feed unchanged since then launches nothing, a feed changed after it does.
    wh = Warehouse(kobi_env.analyst_path, schema=SCHEMA)
    with wh.connect() as con:
        con.execute(
            "INSERT INTO feed_snapshots (tenant_id, snapshot_id, taken_at, source) "
            "VALUES ('anatolia_home', 's-after', now(), 'x')"
        )
        wh.publish(con)
    quiet = tick_sensor(feed_source_sensor, pg_instance, resources)
    assert not quiet.run_requests and "no feed source changed" in quiet.skip_reason.skip_message
    time.sleep(0.01)
    feed.write_text(feed.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    again = tick_sensor(feed_source_sensor, pg_instance, resources, cursor=quiet.cursor)
    assert [r.partition_key for r in again.run_requests] == ["anatolia_home"]


def _write_sync_rows(analyst: Path, rows: list[tuple]) -> None:
    wh = Warehouse(analyst, schema=SCHEMA)
    with wh.connect() as con:
        con.executemany(
            "INSERT INTO catalog_syncs (sync_id, tenant_id, catalog_id, method, shard, started_at, items_sent, status) "
            "VALUES (?, ?, '2000000000000001', ?, 0, ?, 10, ?)",
            rows,
        )
        wh.publish(con)


def test_sync_status_sensor_waits_two_minutes_for_batches(kobi_env, pg_instance):
    from kobi_cpas.defs.catalog_sync.sensors import sync_status_sensor

    resources = kobi_env.resources()
    idle = tick_sensor(sync_status_sensor, pg_instance, resources)
    assert isinstance(idle, dg.SkipReason) and "no upload or batch request is processing" in idle.skip_message
    now = datetime.now(UTC)
    _write_sync_rows(
        kobi_env.analyst_path, [("b1", "anatolia_home", "batch", now - timedelta(seconds=30), "processing")]
    )
    waiting = tick_sensor(sync_status_sensor, pg_instance, resources)
    assert isinstance(waiting, dg.SkipReason) and "first check at" in waiting.skip_message
    _write_sync_rows(
        kobi_env.analyst_path,
        [("b2", "bosphorus_outdoor", "batch", now - timedelta(minutes=3), "processing")],
    )
    due = tick_sensor(sync_status_sensor, pg_instance, resources)
    assert requested_tenants(due) == ["bosphorus_outdoor"]
    assert due[0].run_config["ops"]["sync_tenants"]["config"]["method"] == "status"
    # the interval of the run key comes from the catalog_sync resource: one status run per group per interval
    bucket = int(due[0].run_key.split(":")[1])
    assert bucket == int(now.timestamp() // 120) or bucket == int(now.timestamp() // 120) + 1
    yearly = tick_sensor(sync_status_sensor, pg_instance, kobi_env.resources(status_check_seconds=10**9))
    assert [r.run_key.rsplit(":", 1)[0] for r in yearly] == ["status:1"]
    assert requested_tenants(yearly) == ["bosphorus_outdoor"]


def test_catalog_diagnostics_asset_tables_and_checks(kobi_env, pg_instance):
    defs = kobi_env.defs()
    report = materialize_all(
        defs,
        pg_instance,
        on_progress=lambda m: None,
        stages=[
            ["tenant_registry"],
            ["meta_catalogs", "feed_snapshot", "replace_feed_plan", "replace_feed_upload", "catalog_syncs"],
            ["catalog_diagnostics"],
        ],
    )
    assert report.ok, report.runs
    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        by_source = dict(
            con.execute(
                "SELECT source, count(*) FROM catalog_diagnostics WHERE is_open GROUP BY 1"
            ).fetchall()
        )
        empty_cta = con.execute(
            "SELECT count(*) FROM catalog_diagnostics WHERE coalesce(call_to_action, '') = ''"
        ).fetchone()[0]
        health = con.execute(
            "SELECT tenant_id, has_pixel_or_app, last_successful_replace_at IS NOT NULL FROM catalog_health "
            "ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert by_source.get("kobi_feed_validation", 0) > 0  # the demo feeds carry deliberate errors
    assert empty_cta == 0
    assert health == [
        ("anatolia_home", True, True),
        ("bosphorus_outdoor", True, True),
        ("cappadocia_ceramics", False, True),
    ]
    runs = pg_instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "cappadocia_ceramics"}))
    evaluations = []
    for r in runs:
        for e in pg_instance.all_logs(
            r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluations.append(e.dagster_event.event_specific_data)
    pixel = [
        e
        for e in evaluations
        if e.check_name == "pixel_or_app_connected" and e.asset_key.to_user_string() == "catalog_diagnostics"
    ]
    assert pixel and pixel[-1].passed is False
