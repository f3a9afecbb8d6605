"""Cadence compliance with Meta's catalog quality bar, computed set-based in DuckDB.

The caller stages a small input (per tenant and requirement: the last success and the last failed run, both read
from Dagster) and :func:`build_compliance` rebuilds ``main.sync_compliance`` from it, joined with the requests
still processing at Meta (``main.catalog_syncs``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from kobi_cpas.operations.tables import SLACK_SECONDS, SYNC_COMPLIANCE
from kobi_cpas.warehouse.sql import sql_str, transaction

HOUR = 3600
DAY = 24 * HOUR
# shared_item_metrics is partitioned by date x tenant; a pull re-materializes the trailing 28 days, so its latest
# success is among the tenant's most recent date partitions. Looked at: this many days back.
INSIGHTS_LOOKBACK_DAYS = 35


@dataclass(frozen=True)
class Requirement:
    name: str
    asset_key: str  # the asset whose materialization for the tenant counts as a success
    every_seconds: int
    sync_method: str | None = None  # catalog_syncs.method of its requests, when it sends any


# Meta, Catalog Integration: "full catalog sync at minimum every 24 hours and delta sync every 1 hour",
# "inventory and pricing ... at least every 15 mins", "polling our diagnostics API hourly"; Kobi's shared-item
# insights are pulled daily.
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("full_replace", "replace_feed_upload", DAY, "replace"),
    Requirement("delta_update", "update_feed_upload", HOUR, "update"),
    Requirement("volatile_batch", "price_stock_batch", 15 * 60, "batch"),
    Requirement("diagnostics", "catalog_diagnostics", HOUR),
    Requirement("insights", "shared_item_metrics", DAY),
)
REQUIREMENTS_BY_ASSET = {r.asset_key: r for r in REQUIREMENTS}


@dataclass(frozen=True)
class LastSuccess:
    tenant_id: str
    requirement: str
    at: datetime


@dataclass(frozen=True)
class FailedRun:
    tenant_id: str
    requirement: str
    run_id: str
    failed_at: datetime


def _requirements_sql() -> str:
    rows = ", ".join(
        f"({sql_str(r.name)}, {sql_str(r.asset_key)}, {r.every_seconds}, "
        f"{sql_str(r.sync_method) if r.sync_method else 'NULL'}, {i})"
        for i, r in enumerate(REQUIREMENTS)
    )
    return f"SELECT * FROM (VALUES {rows}) AS r(requirement, asset_key, every_seconds, sync_method, ord)"


def _utc(expr: str) -> str:
    return f"strftime(timezone('UTC', {expr}), '%Y-%m-%d %H:%M UTC')"


def build_compliance(
    con: duckdb.DuckDBPyConnection,
    tenant_ids: Sequence[str],
    successes: Sequence[LastSuccess],
    failures: Sequence[FailedRun],
    now: datetime,
) -> int:
    """Replace ``main.sync_compliance`` with one row per tenant and requirement; returns the row count.

    ``successes``: the latest success per tenant and requirement (absent: never). ``failures``: failed runs
    (any number per tenant and requirement; the latest one after the last success is named in ``pending``)."""
    cols = ", ".join(SYNC_COMPLIANCE.column_names)
    sql = f"""
    WITH req AS ({_requirements_sql()}),
    tenants AS (SELECT DISTINCT unnest(?::VARCHAR[]) AS tenant_id),
    succ AS (
        SELECT unnest(?::VARCHAR[]) AS tenant_id, unnest(?::VARCHAR[]) AS requirement,
               unnest(?::TIMESTAMPTZ[]) AS success_at
    ),
    last_succ AS (SELECT tenant_id, requirement, max(success_at) AS success_at FROM succ GROUP BY ALL),
    fail AS (
        SELECT unnest(?::VARCHAR[]) AS tenant_id, unnest(?::VARCHAR[]) AS requirement,
               unnest(?::VARCHAR[]) AS run_id, unnest(?::TIMESTAMPTZ[]) AS failed_at
    ),
    last_fail AS (
        SELECT tenant_id, requirement, arg_max(run_id, failed_at) AS run_id, max(failed_at) AS failed_at
        FROM fail GROUP BY ALL
    ),
    inflight AS (
        SELECT tenant_id, method, count(*) AS n, min(started_at) AS since
        FROM main.catalog_syncs WHERE status IN ('submitted', 'processing') GROUP BY ALL
    ),
    base AS (
        SELECT t.tenant_id, r.requirement, r.asset_key, r.every_seconds AS required_every_seconds, r.ord,
               s.success_at AS last_success_at,
               CASE WHEN s.success_at IS NOT NULL THEN epoch(?::TIMESTAMPTZ) - epoch(s.success_at) END AS age_seconds,
               s.success_at + to_seconds(r.every_seconds + {SLACK_SECONDS}) AS due_at,
               i.n AS inflight_n, i.since AS inflight_since,
               CASE WHEN f.failed_at > coalesce(s.success_at, '-infinity'::TIMESTAMPTZ) THEN f.run_id END AS failed_run,
               f.failed_at
        FROM tenants t CROSS JOIN req r
        LEFT JOIN last_succ s ON s.tenant_id = t.tenant_id AND s.requirement = r.requirement
        LEFT JOIN last_fail f ON f.tenant_id = t.tenant_id AND f.requirement = r.requirement
        LEFT JOIN inflight i ON i.tenant_id = t.tenant_id AND i.method = r.sync_method
    )
    SELECT tenant_id, requirement, asset_key, required_every_seconds, last_success_at, age_seconds, due_at,
           coalesce(age_seconds <= required_every_seconds + {SLACK_SECONDS}, false) AS within_requirement,
           CASE WHEN last_success_at IS NULL THEN 'never'
                WHEN age_seconds <= required_every_seconds + {SLACK_SECONDS} THEN 'ok'
                ELSE 'breached' END AS status,
           nullif(concat_ws('; ',
               CASE WHEN inflight_n > 0 THEN inflight_n || ' request(s) still processing at Meta since '
                    || {_utc("inflight_since")} END,
               CASE WHEN failed_run IS NOT NULL THEN 'last run ' || failed_run || ' failed at '
                    || {_utc("failed_at")} END
           ), '') AS pending,
           ?::TIMESTAMPTZ AS evaluated_at
    FROM base ORDER BY tenant_id, ord
    """
    params = [
        list(tenant_ids),
        [s.tenant_id for s in successes],
        [s.requirement for s in successes],
        [s.at for s in successes],
        [f.tenant_id for f in failures],
        [f.requirement for f in failures],
        [f.run_id for f in failures],
        [f.failed_at for f in failures],
        now,
        now,
    ]
    with transaction(con):
        con.execute("DELETE FROM main.sync_compliance")
        con.execute(f"INSERT INTO main.sync_compliance ({cols}) SELECT {cols} FROM ({sql})", params)
    row = con.execute("SELECT count(*) FROM main.sync_compliance").fetchone()
    return int(row[0]) if row else 0
