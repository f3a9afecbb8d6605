"""pipeline_alerts: a failed run and a compliance breach reach a local webhook receiver with no secret in them; a
failing receiver is recorded and retried on the next evaluation; re-evaluation never duplicates; a breach is
alerted once per episode and its recovery recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from kobi_cpas.defs.operations.assets import pipeline_alerts
from kobi_cpas.defs.operations.sensors import pipeline_alerts_sensor, run_failure_alert_sensor
from kobi_cpas.operations.alerts import alert_id, upsert_alerts
from kobi_cpas.operations.compliance import REQUIREMENTS, LastSuccess, build_compliance
from kobi_cpas.operations.tables import PIPELINE_ALERTS, SYNC_COMPLIANCE
from kobi_cpas.operations.webhook import post_text
from kobi_cpas.resources import AlertWebhookResource, WarehouseResource
from kobi_cpas.sync.tables import CATALOG_SYNCS
from kobi_cpas_tests.warehouse_template import seed_work_database

TOKEN = "EAAcanaryToken1234567890"
FEED_KEY = "feedKeyCanary987"
FEED_PASSWORD = "pw-canary-555"
SECRETS = (TOKEN, FEED_KEY, FEED_PASSWORD, "hooksecret")


class Receiver:
    """A webhook on 127.0.0.1 recording every POSTed body; answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # The path carries a secret, as a Slack webhook URL does.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/hooksecret"

    def texts(self) -> list[str]:
        return [json.loads(b)["text"] for b in self.bodies]


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def _alert_rows(wh: WarehouseResource) -> list[tuple]:
    return wh.read_published(
        "SELECT kind, tenant_id, requirement, delivery_status, delivery_attempts, resolved_at IS NOT NULL, "
        "message, delivery_error FROM pipeline_alerts ORDER BY created_at, alert_id"
    )


def test_a_failed_run_reaches_the_webhook_without_secrets_and_is_recorded_once(tmp_path, receiver, instance):
    @dg.asset(name="price_stock_batch")
    def failing() -> None:
        raise dg.Failure(
            description=f"Meta said: Malformed access_token={TOKEN}; feed "
            f"https://kobi:{FEED_PASSWORD}@feeds.example/f.csv?key={FEED_KEY} unreadable"
        )

    wh = WarehouseResource(duckdb_path=str(seed_work_database(tmp_path / "k.duckdb")))
    webhook = AlertWebhookResource(url=receiver.url)
    failed = dg.materialize(
        [failing], instance=instance, raise_on_error=False, tags={"kobi/catalog_shard": "anatolia_home"}
    )
    assert not failed.success
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources={"alert_webhook": webhook},
    ).for_run_failure()
    request = run_failure_alert_sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    (text,) = receiver.texts()
    assert failed.run_id in text and "anatolia_home" in text and "Malformed access_token=" in text
    _no_secret(text)
    _no_secret(json.dumps(request.run_config))

    # One run per failed run: the run key is the alert's deterministic id, so Dagster never launches it twice.
    assert request.run_key == f"alert:{alert_id('run_failure', failed.run_id)}"
    assert dg.materialize(
        [pipeline_alerts], instance=instance, run_config=request.run_config, resources={"warehouse": wh}
    ).success
    rows = _alert_rows(wh)
    assert [r[:6] for r in rows] == [("run_failure", "anatolia_home", None, "delivered", 1, False)]
    _no_secret(str(rows))


def _analyst(tmp_path: Path) -> WarehouseResource:
    """A published analyst file holding only the tables the alert sensor reads (the full warehouse's
    migration and publish are exercised through the assets in the other tests)."""
    path = tmp_path / "analyst.duckdb"
    con = duckdb.connect(str(path))
    try:
        for spec in (SYNC_COMPLIANCE, PIPELINE_ALERTS, CATALOG_SYNCS):
            con.execute(spec.ddl(f"main.{spec.name}"))
    finally:
        con.close()
    return WarehouseResource(duckdb_path=str(path))


@contextmanager
def _write(wh: WarehouseResource) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(wh.duckdb_path)
    try:
        yield con
    finally:
        con.close()


def _publish_compliance(wh: WarehouseResource, successes: list[LastSuccess], now: datetime) -> None:
    with _write(wh) as con:
        build_compliance(con, ["t1"], successes, [], now)


def _tick(
    instance: dg.DagsterInstance, wh: WarehouseResource, webhook: AlertWebhookResource, cursor: str | None
) -> dg.SensorResult:
    resources = {"warehouse": wh, "alert_webhook": webhook}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        result = pipeline_alerts_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def _record(wh: WarehouseResource, result: dg.SensorResult) -> None:
    """What the requested pipeline_alerts run does (its asset is exercised in the test above)."""
    (request,) = result.run_requests or []
    rows = []
    for alert in request.run_config["ops"]["pipeline_alerts"]["config"]["alerts"]:
        row = dict(alert)
        for c in ("created_at", "last_attempt_at", "delivered_at", "resolved_at"):
            if row.get(c):
                row[c] = datetime.fromisoformat(row[c])
        rows.append(row)
    with _write(wh) as con:
        upsert_alerts(con, rows)


def test_a_breach_alerts_once_per_episode_and_a_failed_delivery_is_retried(tmp_path, receiver, instance):
    wh = _analyst(tmp_path)
    webhook = AlertWebhookResource(url=receiver.url)
    now = datetime.now(UTC)
    stopped = now - timedelta(hours=2)
    successes = [LastSuccess("t1", r.name, now - timedelta(minutes=5)) for r in REQUIREMENTS]
    successes = [
        s if s.requirement != "volatile_batch" else LastSuccess("t1", s.requirement, stopped)
        for s in successes
    ]
    _publish_compliance(wh, successes, now)

    receiver.status = 500
    first = _tick(instance, wh, webhook, None)
    assert len(receiver.bodies) == 1 and "t1: volatile_batch breached" in receiver.texts()[0]
    _no_secret(receiver.texts()[0])
    # Not recorded yet (its run is still queued): the next tick neither re-sends nor re-requests it.
    again = _tick(instance, wh, webhook, first.cursor)
    assert not again.run_requests and len(receiver.bodies) == 1
    _record(wh, first)
    (row,) = _alert_rows(wh)
    assert row[:6] == ("compliance_breach", "t1", "volatile_batch", "failed", 1, False)
    assert row[7] == "HTTP 500"

    # The receiver is back: the next evaluation retries and records the delivery.
    receiver.status = 200
    retried = _tick(instance, wh, webhook, again.cursor)
    assert len(receiver.bodies) == 2
    _record(wh, retried)
    _record(wh, retried)  # a repeated write changes nothing
    (row,) = _alert_rows(wh)
    assert row[3:6] == ("delivered", 2, False)

    # Still breached, same episode: nothing more is sent or requested.
    quiet = _tick(instance, wh, webhook, retried.cursor)
    assert not quiet.run_requests and len(receiver.bodies) == 2

    # The batch runs again: the episode is resolved (recorded, not sent).
    recovered = [LastSuccess("t1", r.name, now) for r in REQUIREMENTS]
    _publish_compliance(wh, recovered, now + timedelta(minutes=1))
    resolved = _tick(instance, wh, webhook, quiet.cursor)
    _record(wh, resolved)
    assert [r[5] for r in _alert_rows(wh)] == [True] and len(receiver.bodies) == 2

    # It stops again later: a new episode, a new alert.
    _publish_compliance(wh, recovered, now + timedelta(hours=1))
    second = _tick(instance, wh, webhook, resolved.cursor)
    _record(wh, second)
    assert len(receiver.bodies) == 3
    assert [(r[2], r[3], r[5]) for r in _alert_rows(wh)] == [
        ("volatile_batch", "delivered", True),
        ("volatile_batch", "delivered", False),
    ]


def test_without_a_webhook_alerts_are_recorded_not_sent_and_an_unreachable_one_never_raises(
    tmp_path, instance
):
    wh = _analyst(tmp_path)
    now = datetime.now(UTC)
    _publish_compliance(wh, [], now)
    result = _tick(instance, wh, AlertWebhookResource(), None)
    _record(wh, result)
    rows = _alert_rows(wh)
    assert {(r[0], r[3], r[4]) for r in rows} == {("compliance_breach", "not_configured", 0)}
    assert len(rows) == len(REQUIREMENTS) and all("never met" in r[6] for r in rows)

    outcome = post_text("http://127.0.0.1:9/services/hooksecret?token=abc123secret", "x", timeout_seconds=1)
    assert not outcome.ok and outcome.error
    assert "hooksecret" not in outcome.error and "abc123secret" not in outcome.error
