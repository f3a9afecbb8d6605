"""One tenant waiting on Meta never blocks another tenant's writes: the steps that send items to Meta hold the
work database (and its writers' lock) only between their waits. Two tenants' replace runs on the real jobs, each
in its own process, on a Postgres-backed instance interleave, as their event timestamps show."""

from __future__ import annotations

import subprocess
import sys
import time

import dagster as dg

from kobi_cpas_tests.pg_fixtures import REPO_ROOT

WAITING, OTHER = "anatolia_home", "bosphorus_outdoor"
WAITING_CATALOG = "2000000000000001"


def _step_time(instance: dg.DagsterInstance, run_id: str, step: str, kind: dg.DagsterEventType) -> float:
    (entry,) = [e for e in instance.all_logs(run_id, of_type=kind) if e.step_key == step]
    return entry.timestamp


def _run_end(instance: dg.DagsterInstance, run_id: str) -> float:
    (entry,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    return entry.timestamp


# The waiting tenant's run is its own process, as every run is in production (two runs in one process would race
# on Python's logging configuration, which Dagster re-applies when a run starts).
WAITING_RUN = """
import sys
import dagster as dg
from kobi_cpas.definitions import defs
with dg.DagsterInstance.get() as instance:
    res = defs().resolve_job_def("catalog_replace_job").execute_in_process(
        instance=instance, partition_key=sys.argv[1], raise_on_error=False
    )
sys.exit(0 if res.success else 1)
"""


def _runs(instance: dg.DagsterInstance, tenant: str) -> list[dg.DagsterRun]:
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": tenant}))
    return [r.dagster_run for r in records]


def test_a_tenant_waiting_on_meta_never_blocks_another_tenants_writes(kobi_env, pg_instance):
    admin = kobi_env.sandbox.admin
    job = kobi_env.defs().resolve_job_def("catalog_replace_job")
    pg_instance.add_dynamic_partitions("tenant", [WAITING, OTHER])
    admin.freeze_clock(True)
    admin.catalog_config(problem_rate_scale=0, upload_processing_seconds=600)  # done by the world clock only
    waiting = subprocess.Popen([sys.executable, "-c", WAITING_RUN, WAITING], cwd=REPO_ROOT)
    try:
        # no time bound here: pytest-timeout ends a hung test; the run ending before it uploads is a failure
        while not admin.count_requests(route="product_feed.uploads.create"):  # only the first tenant runs yet
            assert waiting.poll() is None, "the first tenant's run ended before it uploaded"
            time.sleep(0.2)
        # the first tenant's upload is now processing at Meta (for 10 world minutes); the other's finish by polls
        admin.catalog_config(upload_processing_seconds=0)
        other = job.execute_in_process(instance=pg_instance, partition_key=OTHER, raise_on_error=False)
        still_waiting = waiting.poll() is None
        admin.advance_clock(601)  # Meta finishes the first upload
        assert waiting.wait() == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert other.success and still_waiting, (
        "the second tenant's run waited for the first tenant's Meta upload"
    )

    (w,) = _runs(pg_instance, WAITING)
    upload_start = _step_time(pg_instance, w.run_id, "replace_feed_upload", dg.DagsterEventType.STEP_START)
    upload_end = _step_time(pg_instance, w.run_id, "replace_feed_upload", dg.DagsterEventType.STEP_SUCCESS)
    other_writes = _step_time(pg_instance, other.run_id, "feed_snapshot", dg.DagsterEventType.STEP_START)
    assert upload_start < other_writes < _run_end(pg_instance, other.run_id) < upload_end
    assert len(admin.catalog_items(WAITING_CATALOG)) > 0
