"""Alerts that reach a person: a failed run, or a breach of Meta's sync cadence, POSTed to the webhook and
recorded in pipeline_alerts.

Breaches are read by a sensor from the published sync_compliance (read-only, like every sensor here: a sensor
never opens the work database a writer may hold), so the alert matches what analysts see, the compliance asset
stays free of side effects, and one place owns delivery, retries and episodes. The sensors POST; the rows reach
the table through a pipeline_alerts run (a writer like any other) carrying them in its run config. A failed
POST is recorded and retried by pipeline_alerts_sensor on its next evaluation; nothing raises out of a sensor.
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb

from kobi_cpas.defs.operations.assets import alerts_run_config
from kobi_cpas.defs.operations.common import tenant_of_run
from kobi_cpas.operations.alerts import (
    COLUMNS,
    SENSOR_SQL,
    breach_alert,
    run_failure_alert,
    sensor_changes,
    with_delivery,
)
from kobi_cpas.resources import AlertWebhookResource, WarehouseResource

pipeline_alerts_job = dg.define_asset_job(
    "pipeline_alerts_job",
    selection=dg.AssetSelection.assets("pipeline_alerts"),
    description="Merge alert rows (from the run config) into pipeline_alerts.",
)

# A change requested but not yet seen in the published table is not re-sent; after this long (its run failed
# or never started) it is evaluated again.
INFLIGHT_EXPIRY_SECONDS = 30 * 60


def _deliver(webhook: AlertWebhookResource, row: dict[str, Any], now: datetime) -> dict[str, Any]:
    if not webhook.configured:
        return row
    outcome = webhook.deliver(row["message"])
    return with_delivery(row, outcome.ok, outcome.error, now)


def _failure_detail(context: dg.RunFailureSensorContext) -> str:
    steps = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        error = data.error.message.strip().splitlines()[0] if data and data.error else "failed"
        steps.append(f"{event.step_key}: {error}")
    return "; ".join(steps) or (context.failure_event.message or "run failed")


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    request_job=pipeline_alerts_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts a person when a run of this code location fails: POSTs it to the webhook and records "
    "it in pipeline_alerts (one row per failed run).",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource):
    run = context.dagster_run
    now = datetime.now(UTC)
    try:
        detail = _failure_detail(context)
    except Exception as exc:  # the alert matters more than its detail
        detail = f"run failed (details unavailable: {type(exc).__name__})"
    row = run_failure_alert(
        run_id=run.run_id,
        job_name=run.job_name,
        tenant_id=tenant_of_run(run.tags),
        detail=detail,
        created_at=now,
        secrets=alert_webhook.secrets(),
    )
    row = _deliver(alert_webhook, row, now)
    if row["delivery_status"] == "failed":
        context.log.warning(f"alert {row['alert_id']} not delivered ({row['delivery_error']}); retried later")
    if run.job_name == pipeline_alerts_job.name:
        # Recording it would need the job that just failed: posted (when configured) and logged only.
        context.log.error(row["message"])
        return dg.SkipReason(
            f"{pipeline_alerts_job.name} failed: alert {row['delivery_status']}, not recorded"
        )
    return dg.RunRequest(run_key=f"alert:{row['alert_id']}", run_config=alerts_run_config([row]))


def _still_recording(inflight: dict[str, list], seen: list[dict[str, Any]], now: datetime) -> dict[str, list]:
    """The changes requested (alert_id -> [attempts, resolved, requested at]) that the published table does not
    show yet and that have not expired."""
    shown = {r["alert_id"]: (int(r["delivery_attempts"]), r["resolved_at"] is not None) for r in seen}
    keep: dict[str, list] = {}
    for alert, (attempts, resolved, at) in inflight.items():
        table = shown.get(alert)
        if table is not None and table[0] >= attempts and (table[1] or not resolved):
            continue
        if now.timestamp() - at < INFLIGHT_EXPIRY_SECONDS:
            keep[alert] = [attempts, resolved, at]
    return keep


@dg.sensor(
    name="pipeline_alerts_sensor",
    job=pipeline_alerts_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the published sync_compliance: alerts once per breach episode (POST + pipeline_alerts "
    "row), records recoveries, and retries alerts whose delivery failed.",
)
def pipeline_alerts_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, alert_webhook: AlertWebhookResource
) -> dg.SensorResult | dg.SkipReason:
    now = datetime.now(UTC)
    try:
        requested: dict[str, list] = json.loads(context.cursor).get("inflight", {}) if context.cursor else {}
    except (ValueError, AttributeError):  # an unreadable cursor only forgets what is being recorded
        requested = {}
    try:
        found = sensor_changes(
            warehouse.read_published(SENSOR_SQL, [alert_webhook.configured, sorted(requested)])
        )
    except (duckdb.Error, OSError) as exc:  # e.g. an analyst file published before these tables existed
        return dg.SkipReason(f"published sync_compliance / pipeline_alerts not readable yet: {exc}")
    inflight = _still_recording(requested, found["seen"], now)
    changes: list[dict[str, Any]] = []
    for row in found["new_breach"]:
        if row["alert_id"] not in inflight:
            changes.append(_deliver(alert_webhook, breach_alert(row, now), now))
    for row in found["recovered"]:
        if row["alert_id"] not in inflight:
            changes.append({**row, "resolved_at": now})
    changed = {c["alert_id"] for c in changes}
    for row in found["retry"]:
        if row["alert_id"] not in inflight and row["alert_id"] not in changed:
            changes.append(_deliver(alert_webhook, row, now))
    changes = [{c: row.get(c) for c in COLUMNS} for row in changes]
    failed = [c for c in changes if c["delivery_status"] == "failed"]
    if failed:
        context.log.warning(
            f"{len(failed)} alert(s) not delivered ({failed[0]['delivery_error']}); retried later"
        )
    for c in changes:
        inflight[c["alert_id"]] = [
            int(c["delivery_attempts"]),
            c.get("resolved_at") is not None,
            now.timestamp(),
        ]
    cursor = json.dumps({"inflight": inflight}, sort_keys=True)
    if not changes:
        return dg.SensorResult(
            skip_reason=f"no new breach, recovery or retry ({len(inflight)} change(s) still being recorded)",
            cursor=cursor,
        )
    key = hashlib.md5(
        json.dumps(
            sorted((c["alert_id"], c["delivery_attempts"], c.get("resolved_at") is not None) for c in changes)
        ).encode()
    ).hexdigest()
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"alerts:{key}", run_config=alerts_run_config(changes))],
        cursor=cursor,
    )
