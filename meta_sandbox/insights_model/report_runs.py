"""Async insights jobs (report runs): scripted status steps, results readable once completed."""

from __future__ import annotations

from typing import Any

from meta_sandbox import errors as gerr
from meta_sandbox.errors import GraphError
from meta_sandbox.insights_model.constants import (
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_NOT_STARTED,
    JOB_RUNNING,
    JOB_SKIPPED,
    JOB_STARTED,
    LOAD_WINDOW_CALLS,
    REPORT_RUN_TTL,
)
from meta_sandbox.insights_model.knobs import (
    state,
)
from meta_sandbox.insights_model.rows import (
    run_query,
)
from meta_sandbox.state import ReportRun, World


def _job_script(spec: dict[str, Any], default_polls: int) -> list[tuple[str, int]]:
    outcome = spec.get("outcome", "completed")
    # polls: until completion (completed: the configured default), before failing / skipping, at 100 %
    # (running_at_100), of slow progress (slow: 5), before starting (not_started).
    fallback = {"completed": default_polls, "slow": 5}.get(outcome, 1)
    polls = max(1, int(spec.get("polls", fallback)))

    def completing(n: int) -> list[tuple[str, int]]:
        steps = [(JOB_STARTED if i == 0 else JOB_RUNNING, int(100 * (i + 1) / (n + 1))) for i in range(n - 1)]
        return [*steps, (JOB_COMPLETED, 100)]

    if outcome == "completed":
        return completing(polls)
    if outcome == "failed":
        return [*[(JOB_RUNNING, 20 * (i + 1) % 100) for i in range(polls - 1)], (JOB_FAILED, 0)]
    if outcome == "skipped":
        return [*[(JOB_NOT_STARTED, 0)] * (polls - 1), (JOB_SKIPPED, 0)]
    if outcome == "running_at_100":
        return [*[(JOB_RUNNING, 100)] * polls, (JOB_COMPLETED, 100)]
    if outcome == "slow":
        return [
            *[(JOB_RUNNING, max(1, int(50 * (i + 1) / polls))) for i in range(polls)],
            (JOB_COMPLETED, 100),
        ]
    # not_started
    return [*[(JOB_NOT_STARTED, 0)] * polls, *completing(default_polls)]


def create_report_run(world: World, kind: str, node: Any, params: dict[str, Any]) -> ReportRun:
    query, rows = run_query(world, kind, node, params)
    account = node if kind == "ad_account" else world.ad_accounts[node.account_id]
    st = state(world)
    queue = st["job_scripts"].get(account.id) or []
    spec = queue.pop(0) if queue else {"outcome": "completed"}
    run = ReportRun(
        id=world.new_id(),
        account_id=account.id,
        object_id=node.id,
        params=dict(params),
        date_start=query.since.isoformat(),
        date_stop=query.until.isoformat(),
        created_time=world.now(),
        business_id=account.business_id,
        script=_job_script(spec, int(st["config"]["polls_to_complete"])),
        rows=rows,
    )
    world.report_runs[run.id] = run
    _touch(world, run)
    return run


def _touch(world: World, run: ReportRun) -> None:
    st = state(world)
    st.setdefault("touched", {})[run.id] = st["log_seq"]


_RUNNING = (JOB_NOT_STARTED, JOB_STARTED, JOB_RUNNING)


def insights_load(world: World, account_id: str) -> dict[str, int]:
    """The x-fb-ads-insights-throttle load (capped at 100): ``acc_id_util_pct`` is ``throttle_pct_per_job`` per
    report job of the account still running; ``app_id_util_pct`` a tenth of that per job of every account (an
    app has more room than one account, so many tenants pulling at once do not saturate it). A job nobody
    polled for ``LOAD_WINDOW_CALLS`` insights calls no longer counts (a client gave up on it)."""
    st = state(world)
    per_job = int(st["config"]["throttle_pct_per_job"])
    touched, now = st.setdefault("touched", {}), st["log_seq"]
    acc = app = 0
    for run in world.report_runs.values():
        if run.async_status not in _RUNNING or now - touched.get(run.id, 0) > LOAD_WINDOW_CALLS:
            continue
        app += 1
        acc += run.account_id == account_id
    return {"app_id_util_pct": min(100, per_job * app // 10), "acc_id_util_pct": min(100, per_job * acc)}


def poll_report_run(world: World, run: ReportRun) -> None:
    """One status read moves the job one step along its script."""
    if run.async_status in (JOB_COMPLETED, JOB_FAILED, JOB_SKIPPED) and run.polls >= len(run.script):
        return
    run.polls += 1
    _touch(world, run)
    status, pct = run.script[min(run.polls, len(run.script)) - 1]
    run.async_status, run.async_percent_completion = status, pct
    if status == JOB_COMPLETED and run.time_completed is None:
        run.time_completed = world.now()


def report_run_fields(run: ReportRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "report_run_id": run.id,
        "account_id": run.account_id.removeprefix("act_"),
        "async_status": run.async_status,
        "async_percent_completion": run.async_percent_completion,
        "date_start": run.date_start,
        "date_stop": run.date_stop,
        "time_ref": int(run.created_time.timestamp()),
        "time_completed": int(run.time_completed.timestamp()) if run.time_completed else 0,
        "is_running": run.async_status in (JOB_NOT_STARTED, JOB_STARTED, JOB_RUNNING),
        "emails": [],
        "friendly_name": "",
        "is_bookmarked": False,
        "schedule_id": "",
    }


def check_readable(world: World, run: ReportRun) -> None:
    """Reading results is only allowed once the job reported "Job Completed" at 100 %."""
    if run.async_status == JOB_COMPLETED and run.async_percent_completion == 100:
        return
    if run.async_status in (JOB_FAILED, JOB_SKIPPED):
        raise gerr.invalid_parameter(f"Report run {run.id} has async_status {run.async_status}: no results")
    run.early_reads += 1
    raise GraphError(
        2601,
        "(#2601) Error accessing adreport job: the report is not ready yet "
        f"(async_status {run.async_status}, {run.async_percent_completion} %)",
        subcode=1815107,
        is_transient=True,
    )


def expired(world: World, run: ReportRun) -> bool:
    return world.now() - run.created_time > REPORT_RUN_TTL
