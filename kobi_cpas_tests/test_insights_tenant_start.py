"""A tenant's shared-item metrics start at its own ``insights.start_date`` (registry): the date partitions are
shared by every tenant, so the daily schedule, the asset (backfills) and `make run` pull no day before it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml

from kobi_cpas.defs.insights.partitions import (
    START_DATE_ENV,
    insights_partitions,
    insights_start_date,
    range_tags,
)
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.dagster_fixtures import KobiEnv, tick_schedule

ISTANBUL_7AM = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)  # 07:00 in Istanbul: yesterday is 2026-11-21
TENANTS = ("anatolia_home", "bosphorus_outdoor", "cappadocia_ceramics")


def registry_with_starts(tmp_path: Path, starts: dict[str, str]) -> Path:
    """The demo registry with ``insights.start_date`` set for the given tenants (feeds left where they are)."""
    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text(encoding="utf-8"))
    for tenant in doc["tenants"]:
        tenant["feed"]["source"] = str(DEFAULT_REGISTRY.parent / tenant["feed"]["source"])
        tenant["feed"]["feeds_root"] = str(DEFAULT_REGISTRY.parent)
        if tenant["tenant_id"] in starts:
            tenant["insights"] = {"start_date": starts[tenant["tenant_id"]]}
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_the_registry_reads_a_start_date_and_names_a_bad_one(tmp_path: Path) -> None:
    good = load_registry(registry_with_starts(tmp_path, {"bosphorus_outdoor": "2026-11-12"}))
    assert good.registry.tenant("bosphorus_outdoor").insights.start_date == date(2026, 11, 12)
    assert good.registry.tenant("anatolia_home").insights.start_date is None
    bad = load_registry(registry_with_starts(tmp_path, {"bosphorus_outdoor": "2026-13-01"}))
    assert "bosphorus_outdoor" not in bad.registry.tenant_ids
    assert any("insights.start_date" in str(p) for p in bad.problems), bad.problems


def test_the_shared_date_partitions_reach_back_to_the_earliest_tenant(monkeypatch) -> None:
    monkeypatch.delenv(START_DATE_ENV, raising=False)
    today = date(2026, 12, 4)
    assert insights_start_date(today, tenant_starts=[date(2025, 3, 10)]) == "2025-03-10"
    assert insights_start_date(today, tenant_starts=[date(2026, 11, 1)]) == "2026-09-01"  # later: default
    monkeypatch.setenv(START_DATE_ENV, "2026-10-01")  # set explicitly: it is the first partition
    assert insights_start_date(today, tenant_starts=[date(2025, 3, 10)]) == "2026-10-01"


def _tick(kobi_env: KobiEnv, instance: dg.DagsterInstance, registry: Path) -> Any:
    from kobi_cpas.defs.insights.schedules import shared_item_metrics_schedule

    return tick_schedule(
        shared_item_metrics_schedule,
        instance,
        kobi_env.resources(registry_path=registry),
        scheduled_execution_time=ISTANBUL_7AM,
    )


def test_the_daily_pull_starts_at_the_tenants_start_and_skips_a_tenant_not_started(
    kobi_env: KobiEnv, pg_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    pg_instance.add_dynamic_partitions("tenant", list(TENANTS))
    registry = registry_with_starts(
        tmp_path, {"bosphorus_outdoor": "2026-11-12", "cappadocia_ceramics": "2026-11-22"}
    )
    runs = {r.tags["kobi/tenant"]: r for r in _tick(kobi_env, pg_instance, registry)}
    assert set(runs) == {"anatolia_home", "bosphorus_outdoor"}  # cappadocia starts today: nothing yet
    starts = {t: r.tags["dagster/asset_partition_range_start"] for t, r in runs.items()}
    assert starts == {
        "anatolia_home": "2026-10-25|anatolia_home",  # no start date: the whole 28-day window
        "bosphorus_outdoor": "2026-11-12|bosphorus_outdoor",
    }

    only_late = registry_with_starts(tmp_path, {t: "2026-11-22" for t in TENANTS})
    skipped = _tick(kobi_env, pg_instance, only_late)
    assert isinstance(skipped, dg.SkipReason)
    assert (
        "cappadocia_ceramics: nothing to pull before its insights.start_date 2026-11-22"
        in skipped.skip_message
    )


def test_make_run_pulls_each_tenant_from_its_start(
    kobi_env: KobiEnv, pg_instance: dg.DagsterInstance, tmp_path: Path, monkeypatch
) -> None:
    from kobi_cpas.devenv.pipeline import _partition_runs

    pg_instance.add_dynamic_partitions("tenant", list(TENANTS))
    with dg.partition_loading_context(dynamic_partitions_store=pg_instance):
        last = insights_partitions.partitions_defs[0].partitions_def.get_last_partition_key()
    monkeypatch.setenv(
        "KOBI_CPAS_TENANTS",
        str(registry_with_starts(tmp_path, {"bosphorus_outdoor": last, "cappadocia_ceramics": "2099-01-01"})),
    )
    ranges = {
        tags["dagster/asset_partition_range_start"].split("|")[1]: tags
        for _, tags in _partition_runs(insights_partitions, pg_instance)
    }
    assert set(ranges) == {"anatolia_home", "bosphorus_outdoor"}
    assert ranges["bosphorus_outdoor"] == range_tags("bosphorus_outdoor", last, last)


def _pull(
    kobi_env: KobiEnv, instance: dg.DagsterInstance, since: str, until: str
) -> dg.ExecuteInProcessResult:
    job = dg.define_asset_job(
        "t", selection=dg.AssetSelection.assets("shared_item_metrics").required_multi_asset_neighbors()
    )
    defs = dg.Definitions.merge(kobi_env.defs(), dg.Definitions(jobs=[job])).resolve_job_def("t")
    return defs.execute_in_process(
        instance=instance, tags=range_tags("anatolia_home", since, until), raise_on_error=False
    )


def test_a_backfill_pulls_no_day_before_the_start_and_refuses_a_range_before_it(
    kobi_env: KobiEnv, pg_instance: dg.DagsterInstance, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv(
        "KOBI_CPAS_TENANTS", str(registry_with_starts(tmp_path, {"anatolia_home": "2026-11-12"}))
    )
    kobi_env.sandbox.admin.freeze_clock(True)
    pg_instance.add_dynamic_partitions("tenant", list(TENANTS))

    refused = _pull(kobi_env, pg_instance, "2026-11-08", "2026-11-11")
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert (
        "before the tenant's insights.start_date 2026-11-12"
        in failure.step_failure_data.user_failure_data.description
    )

    res = _pull(kobi_env, pg_instance, "2026-11-10", "2026-11-14")
    assert res.success
    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        days = con.execute("SELECT DISTINCT date FROM shared_item_metrics ORDER BY 1").fetchall()
    finally:
        con.close()
    assert [d for (d,) in days] == [date(2026, 11, 12), date(2026, 11, 13), date(2026, 11, 14)]
    metadata = res.get_asset_materialization_events()[0].materialization.metadata
    assert "2026-11-10..2026-11-11 not pulled" in metadata["days_before_tenant_start"].value


pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
