"""Meta wants a full replace at least every 24 hours: a replace that could not start at its cron fire (the
catalog was busy) is retried on the following ticks and reaches Meta the same day, never launched twice for one
fire, and gives up after a bounded number of failed runs with a reason that names them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from kobi_cpas.defs.catalog_sync.schedules import (
    MAX_REPLACE_ATTEMPTS,
    REPLACE_FIRE_TAG,
    catalog_replace_schedule,
)
from kobi_cpas_tests.dagster_fixtures import tick_schedule
from kobi_cpas_tests.sync_harness import TENANT, SyncHarness

# The demo tenant's replace_cron "0 3 * * *" in Europe/Istanbul fires at 00:00 UTC.
FIRE = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


@pytest.fixture
def h(kobi_env, pg_instance, tmp_path, monkeypatch) -> SyncHarness:
    return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch)


def _tick(h: SyncHarness, at: datetime):
    return tick_schedule(catalog_replace_schedule, h.instance, scheduled_execution_time=at)


def _add_run(h: SyncHarness, job: str, status: dg.DagsterRunStatus, **tags: str) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=job, run_id=str(uuid.uuid4()), tags=tags, status=status)
    h.instance.add_run(run)
    return run


def test_a_replace_skipped_at_its_tick_is_retried_and_reaches_meta_the_same_day(h):
    h.write_feed(60)
    busy = _add_run(h, "catalog_batch_job", dg.DagsterRunStatus.STARTED, **{"kobi/catalog_shard": TENANT})
    for minutes in (0, 15):  # the batch is still running at the fire and at the next tick
        skipped = _tick(h, FIRE + timedelta(minutes=minutes))
        assert isinstance(skipped, dg.SkipReason), skipped
        assert TENANT in skipped.skip_message and "still in progress" in skipped.skip_message
    h.instance.delete_run(busy.run_id)

    (request,) = _tick(h, FIRE + timedelta(minutes=30))
    assert request.partition_key == TENANT and request.tags[REPLACE_FIRE_TAG] == FIRE.isoformat()
    # the same fire asked again (a re-evaluated tick) is the same run: Dagster never launches a run key twice
    (again,) = _tick(h, FIRE + timedelta(minutes=30))
    assert again.run_key == request.run_key
    assert h.meta_items() == {}
    res = h.defs.resolve_job_def("catalog_replace_job").execute_in_process(
        instance=h.instance, partition_key=TENANT, tags=request.tags, raise_on_error=False
    )
    assert res.success
    assert len(h.meta_items()) == 60  # at Meta 30 minutes after the fire, not tomorrow

    done = _tick(h, FIRE + timedelta(minutes=45))
    assert isinstance(done, dg.SkipReason) and "no tenant's replace is due" in done.skip_message


def test_failed_replaces_are_retried_a_bounded_number_of_times_then_named(h):
    keys = []
    for attempt in range(MAX_REPLACE_ATTEMPTS):
        (request,) = _tick(h, FIRE + timedelta(minutes=15 * attempt))
        keys.append(request.run_key)
        _add_run(
            h,
            "catalog_replace_job",
            dg.DagsterRunStatus.FAILURE,
            **{"dagster/partition": TENANT, **request.tags},
        )
    assert len(set(keys)) == MAX_REPLACE_ATTEMPTS  # each retry is a new run, not a duplicate key
    gave_up = _tick(h, FIRE + timedelta(hours=1))
    assert isinstance(gave_up, dg.SkipReason)
    msg = gave_up.skip_message
    assert f"{TENANT}: {MAX_REPLACE_ATTEMPTS} replace runs" in msg and "failed" in msg
    assert "catalog_diagnostics" in msg
    # update runs or runs of another tenant do not count as this tenant's replace
    _add_run(h, "catalog_update_job", dg.DagsterRunStatus.SUCCESS, **{"dagster/partition": TENANT})
    assert isinstance(_tick(h, FIRE + timedelta(hours=2)), dg.SkipReason)
