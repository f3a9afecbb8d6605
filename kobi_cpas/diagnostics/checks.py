"""Asset-check logic of the diagnostics (pure: each returns ``CheckOutcome(passed, severity, message,
metadata)``; the Dagster layer turns it into an ``AssetCheckResult``). Severity is ``"ERROR"`` or ``"WARN"``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import duckdb

from kobi_cpas.diagnostics.lifecycle import last_successful_poll
from kobi_cpas.diagnostics.summary import current_health
from kobi_cpas.registry.models import Tenant

FATAL_INGESTION_CHECK = "no_fatal_ingestion_errors"
HIGH_SHARE_CHECK = "high_problem_share_below_threshold"
PIXEL_CHECK = "pixel_or_app_connected"
FRESHNESS_CHECK = "diagnostics_fresh"
DEFAULT_HIGH_SHARE_THRESHOLD = 0.05
MAX_DIAGNOSTICS_AGE = timedelta(hours=2)


class CheckOutcome(NamedTuple):
    passed: bool
    severity: str  # "ERROR" | "WARN"
    message: str
    metadata: dict[str, Any]


def check_fatal_ingestion_errors(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str
) -> CheckOutcome:
    """ERROR when Meta rejected items or files at ingestion (open fatal feed upload / Batch API errors)."""
    rows = con.execute(
        """SELECT source, error_type, count(*) AS n, count(DISTINCT nullif(retailer_id, '')) AS items,
                  any_value(call_to_action) AS cta
           FROM main.catalog_diagnostics
           WHERE tenant_id = ? AND catalog_id = ? AND is_open AND source IN ('feed_upload', 'batch_request')
             AND severity = 'fatal'
           GROUP BY 1, 2 ORDER BY n DESC, 1, 2""",
        [tenant_id, catalog_id],
    ).fetchall()
    total = sum(int(r[2]) for r in rows)
    meta: dict[str, Any] = {
        "fatal_errors": total,
        "items_rejected": sum(int(r[3]) for r in rows),
        "by_type": {f"{r[0]}:{r[1]}": int(r[2]) for r in rows[:10]},
    }
    if not rows:
        return CheckOutcome(True, "ERROR", f"catalog {catalog_id}: no open fatal ingestion errors", meta)
    top = rows[0]
    return CheckOutcome(
        False,
        "ERROR",
        f"catalog {catalog_id} ({tenant_id}): {total} open fatal ingestion errors "
        f"(most: {top[1]} from {top[0]}, {top[2]}x). {top[4]}",
        meta,
    )


def check_high_problem_share(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    threshold: float = DEFAULT_HIGH_SHARE_THRESHOLD,
    now: datetime | None = None,
) -> CheckOutcome:
    """WARN when the share of the catalog's items with an open HIGH problem exceeds ``threshold``
    (``Tenant.high_problem_share_threshold``)."""
    h = current_health(con, tenant_id, catalog_id, now or datetime.now(UTC))
    share = h["high_share"]
    meta = {
        "items": h["items"] or 0,
        "items_with_high": h["items_with_high"],
        "high_share": round(share, 4) if share is not None else None,
        "threshold": threshold,
    }
    if share is None:
        passed = h["items_with_high"] == 0
        msg = (
            f"catalog {catalog_id}: item count unknown; {h['items_with_high']} items with HIGH problems"
            if not passed
            else f"catalog {catalog_id}: no items with HIGH problems"
        )
        return CheckOutcome(passed, "WARN", msg, meta)
    if share > threshold:
        top = con.execute(
            """SELECT title, call_to_action, affected_items FROM main.catalog_diagnostics_summary
               WHERE tenant_id = ? AND catalog_id = ? AND priority = 'HIGH' AND NOT is_catalog_level
               ORDER BY rank LIMIT 1""",
            [tenant_id, catalog_id],
        ).fetchone()
        hint = f" Top problem: {top[0]} ({top[2]} items): {top[1]}" if top else ""
        return CheckOutcome(
            False,
            "WARN",
            f"catalog {catalog_id} ({tenant_id}): {share:.1%} of {h['items']} items have HIGH problems reported by Meta "
            f"(threshold {threshold:.1%}).{hint}",
            meta,
        )
    return CheckOutcome(
        True,
        "WARN",
        f"catalog {catalog_id}: {share:.1%} of items have HIGH problems (<= {threshold:.1%})",
        meta,
    )


def check_pixel_connected(con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str) -> CheckOutcome:
    """WARN when no pixel or app is connected to the catalog (``meta_catalogs``); also when it is unknown."""
    row = con.execute(
        "SELECT has_event_source, pixel_count, app_count, call_to_action FROM main.meta_catalogs "
        "WHERE tenant_id = ? AND catalog_id = ? ORDER BY observed_at DESC LIMIT 1",
        [tenant_id, catalog_id],
    ).fetchone()
    if row is None:
        return CheckOutcome(
            False,
            "WARN",
            f"catalog {catalog_id} ({tenant_id}): unknown whether a pixel is connected; materialize meta_catalogs",
            {"pixels": None, "apps": None},
        )
    meta = {"pixels": int(row[1] or 0), "apps": int(row[2] or 0)}
    if row[0]:
        return CheckOutcome(True, "WARN", f"catalog {catalog_id}: a pixel or app is connected", meta)
    return CheckOutcome(
        False,
        "WARN",
        row[3]
        or f"catalog {catalog_id} ({tenant_id}): no pixel or app connected; connect the brand's Meta Pixel",
        meta,
    )


def check_freshness(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    now: datetime | None = None,
    max_age: timedelta = MAX_DIAGNOSTICS_AGE,
) -> CheckOutcome:
    """WARN when Meta's item errors were not fully polled without error within ``max_age`` (2 hours)."""
    now = now or datetime.now(UTC)
    last = last_successful_poll(con, tenant_id, catalog_id)
    if last is None:
        return CheckOutcome(
            False,
            "WARN",
            f"catalog {catalog_id} ({tenant_id}): Meta's item errors were never polled successfully",
            {"last_successful_poll": None, "age_minutes": None},
        )
    age = now - last
    meta = {
        "last_successful_poll": last.astimezone(UTC).isoformat(),
        "age_minutes": round(age.total_seconds() / 60, 1),
    }
    if age > max_age:
        return CheckOutcome(
            False,
            "WARN",
            f"catalog {catalog_id} ({tenant_id}): diagnostics are stale, last successful poll "
            f"{age.total_seconds() / 3600:.1f} h ago (> {max_age.total_seconds() / 3600:.0f} h); check the hourly "
            "diagnostics schedule and its runs",
            meta,
        )
    return CheckOutcome(
        True, "WARN", f"catalog {catalog_id}: diagnostics polled {meta['age_minutes']} min ago", meta
    )


def run_checks(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, now: datetime | None = None
) -> dict[str, CheckOutcome]:
    """Every check for the tenant's catalog, by check name."""
    now = now or datetime.now(UTC)
    t, c = tenant.tenant_id, tenant.catalog_id
    return {
        FATAL_INGESTION_CHECK: check_fatal_ingestion_errors(con, t, c),
        HIGH_SHARE_CHECK: check_high_problem_share(con, t, c, tenant.high_problem_share_threshold, now),
        PIXEL_CHECK: check_pixel_connected(con, t, c),
        FRESHNESS_CHECK: check_freshness(con, t, c, now),
    }
