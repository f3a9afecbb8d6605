"""Alerts for a person: failed runs and breaches of Meta's sync cadence, one row each in ``pipeline_alerts``.

A breach alert's id is derived from the tenant, the requirement and the last success before the breach, so a
breach episode is one alert however often it is evaluated; the episode ends (``resolved_at``) when the
requirement is met again. Every text is scrubbed of tokens and credentials before it is stored or sent."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from kobi_cpas.feeds.redact import redact_text
from kobi_cpas.meta.redact import redact
from kobi_cpas.operations.tables import PIPELINE_ALERTS
from kobi_cpas.warehouse.sql import transaction

MAX_ATTEMPTS = 20
MAX_MESSAGE_CHARS = 1000
COLUMNS = PIPELINE_ALERTS.column_names
PREFIX = "[kobi_cpas]"


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without known secrets, token-shaped values (Meta's redaction) or URL credentials (the feeds'
    redaction), cut to a length a chat message can hold."""
    out = redact_text(redact(str(text), secrets))
    return out if len(out) <= MAX_MESSAGE_CHARS else out[: MAX_MESSAGE_CHARS - 3] + "..."


def alert_id(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode()).hexdigest()


def run_failure_alert(
    *,
    run_id: str,
    job_name: str,
    tenant_id: str | None,
    detail: str,
    created_at: datetime,
    secrets: Iterable[str | None] = (),
) -> dict[str, Any]:
    """The alert of one failed run (not yet delivered)."""
    who = f" for tenant {tenant_id}" if tenant_id else ""
    message = scrub(f"{PREFIX} run {run_id} of {job_name} failed{who}: {detail}", secrets)
    return new_alert(
        alert_id=alert_id("run_failure", run_id),
        kind="run_failure",
        tenant_id=tenant_id,
        job_name=job_name,
        run_id=run_id,
        message=message,
        created_at=created_at,
    )


def new_alert(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(delivery_status="not_configured", delivery_attempts=0)
    row.update(fields)
    return row


# The id of a breach episode, computed where the breach is read (the published sync_compliance).
BREACH_ID_SQL = (
    "md5(concat_ws('|', 'compliance_breach', c.tenant_id, c.requirement, "
    "coalesce(CAST(epoch_us(c.last_success_at) AS VARCHAR), 'never')))"
)
_ALERT_COLS = ", ".join(f"a.{c}" for c in COLUMNS)
_NULL_ALERT = ", ".join(
    f"c.{c}" if c in ("tenant_id", "requirement") else (f"{BREACH_ID_SQL}" if c == "alert_id" else "NULL")
    for c in COLUMNS
)
_NO_BREACH = "NULL, NULL, NULL, NULL, NULL"
_BREACH = "c.status, c.last_success_at, c.age_seconds, c.required_every_seconds, c.pending"
BREACH_FIELDS = ("status", "last_success_at", "age_seconds", "required_every_seconds", "pending")
# Everything one evaluation of the alert sensor needs from the published tables, in one read (each read opens
# the analyst file afresh). Rows: (change, *COLUMNS, *BREACH_FIELDS), change being
#   new_breach  a breached (or never met) requirement whose episode has no alert yet;
#   recovered   an open episode the latest evaluation no longer shows (met again, or replaced by a new one);
#   retry       an alert whose delivery failed, while retries are wanted (parameter 1) and attempts remain;
#   seen        an alert named in parameter 2 (those being recorded), with what the table shows of it.
SENSOR_SQL = f"""
SELECT 'new_breach', {_NULL_ALERT}, {_BREACH}
FROM sync_compliance c
WHERE c.status <> 'ok' AND NOT EXISTS (SELECT 1 FROM pipeline_alerts a WHERE a.alert_id = {BREACH_ID_SQL})
UNION ALL
SELECT 'recovered', {_ALERT_COLS}, {_NO_BREACH}
FROM pipeline_alerts a JOIN sync_compliance c ON c.tenant_id = a.tenant_id AND c.requirement = a.requirement
WHERE a.kind = 'compliance_breach' AND a.resolved_at IS NULL
  AND NOT (c.status <> 'ok' AND {BREACH_ID_SQL} = a.alert_id)
UNION ALL
(SELECT 'retry', {_ALERT_COLS}, {_NO_BREACH} FROM pipeline_alerts a
 WHERE ?::BOOLEAN AND a.delivery_status = 'failed' AND a.delivery_attempts < {MAX_ATTEMPTS}
 ORDER BY a.created_at, a.alert_id LIMIT 100)
UNION ALL
SELECT 'seen', {_ALERT_COLS}, {_NO_BREACH} FROM pipeline_alerts a WHERE list_contains(?::VARCHAR[], a.alert_id)
"""


def sensor_changes(rows: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """SENSOR_SQL's rows grouped by change, each a dict of COLUMNS and BREACH_FIELDS."""
    out: dict[str, list[dict[str, Any]]] = {"new_breach": [], "recovered": [], "retry": [], "seen": []}
    names = (*COLUMNS, *BREACH_FIELDS)
    for change, *values in rows:
        out[change].append(dict(zip(names, values, strict=True)))
    return out


def _when(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "never"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def breach_alert(row: Mapping[str, Any], created_at: datetime) -> dict[str, Any]:
    """The alert of one breach episode, from a new_breach row of SENSOR_SQL."""
    every = _duration(float(row["required_every_seconds"]))
    if row["status"] == "never":
        what = f"never met (no success recorded; Meta requires one every {every})"
    else:
        what = (
            f"breached: last success {_when(row['last_success_at'])}, {_duration(float(row['age_seconds']))} "
            f"ago; Meta requires one every {every}"
        )
    pending = f" ({row['pending']})" if row.get("pending") else ""
    return new_alert(
        alert_id=row["alert_id"],
        kind="compliance_breach",
        tenant_id=row["tenant_id"],
        requirement=row["requirement"],
        message=scrub(f"{PREFIX} {row['tenant_id']}: {row['requirement']} {what}{pending}"),
        created_at=created_at,
    )


def with_delivery(row: Mapping[str, Any], ok: bool, error: str | None, at: datetime) -> dict[str, Any]:
    """``row`` after one more POST attempt."""
    out = dict(row)
    out["delivery_attempts"] = int(row.get("delivery_attempts") or 0) + 1
    out["last_attempt_at"] = at
    out["delivery_status"] = "delivered" if ok else "failed"
    out["delivered_at"] = at if ok else None
    out["delivery_error"] = None if ok else error
    return out


def upsert_alerts(con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Merge alert rows into ``main.pipeline_alerts`` by alert_id, in one transaction: a new id is inserted; a
    known one only moves forward (more delivery attempts, a delivery is never undone, resolved_at is set once),
    so a late or repeated write never duplicates or regresses a row."""
    if not rows:
        return
    cols = ", ".join(COLUMNS)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE staged_alerts AS SELECT {cols} FROM main.pipeline_alerts LIMIT 0"
    )
    con.executemany(
        f"INSERT INTO staged_alerts ({cols}) VALUES ({', '.join('?' for _ in COLUMNS)})",
        [[r.get(c) for c in COLUMNS] for r in rows],
    )
    latest = (
        "SELECT * FROM staged_alerts QUALIFY row_number() OVER "
        "(PARTITION BY alert_id ORDER BY delivery_attempts DESC, resolved_at NULLS LAST) = 1"
    )
    try:
        with transaction(con):
            con.execute(
                f"""UPDATE main.pipeline_alerts a SET delivery_status = s.delivery_status,
                    delivery_attempts = s.delivery_attempts, last_attempt_at = s.last_attempt_at,
                    delivered_at = s.delivered_at, delivery_error = s.delivery_error
                FROM ({latest}) s
                WHERE a.alert_id = s.alert_id AND s.delivery_attempts > a.delivery_attempts
                  AND a.delivery_status <> 'delivered'"""
            )
            con.execute(
                f"""UPDATE main.pipeline_alerts a SET resolved_at = s.resolved_at FROM ({latest}) s
                WHERE a.alert_id = s.alert_id AND a.resolved_at IS NULL AND s.resolved_at IS NOT NULL"""
            )
            con.execute(
                f"""INSERT INTO main.pipeline_alerts ({cols}) SELECT {cols} FROM ({latest}) s
                WHERE NOT EXISTS (SELECT 1 FROM main.pipeline_alerts a WHERE a.alert_id = s.alert_id)"""
            )
    finally:
        con.execute("DROP TABLE IF EXISTS staged_alerts")
