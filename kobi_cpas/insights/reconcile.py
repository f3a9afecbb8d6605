"""Reconciliation and freshness checks over the shared-item tables, as SQL.

Each ``check_*`` returns the offending rows as dicts (empty = pass), so a Dagster asset check can WARN with the
gaps; the SQL is also exposed (``*_SQL``) for views and ad-hoc use.

- ``check_rollups``: additive metrics, summed over ad-level rows, equal the ad set, campaign and account rows of
  the same day within a tolerance (only days where both levels are stored).
- ``check_roas``: Meta's ROAS equals catalog_segment_value / spend of the same row within a tolerance.
- ``check_product_presence``: where catalog_segment_actions shows purchases (omni_purchase, per window), the
  product table has converted_product_quantity for that object, day and window.
- ``record_repull_totals`` + ``check_repull``: account totals re-pulled from the API for a day against the stored
  ones (platform vs API tolerance; the spec gives no number, default 2 %).
- ``check_freshness``: yesterday (in the account's time zone) is present once the local clock passes the cutoff.

Tolerances: a gap fails when ``abs(gap) > abs_tol + rel_tol * abs(reference)``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kobi_cpas.insights.metrics import ADDITIVE_METRICS, ROAS_METRICS
from kobi_cpas.insights.parse import parsed_rows_sql
from kobi_cpas.insights.requests import DEFAULT_WINDOWS, build_request, normalize_account_id
from kobi_cpas.insights.schema import ensure_schema
from kobi_cpas.insights.stage import opener
from kobi_cpas.meta import MetaGraphClient

SEGMENT_TOTAL_METRICS = ("spend", "impressions", "clicks", "catalog_segment_value", "catalog_segment_actions")


def _where(ad_account_id: str | None, days: Iterable[date] | None, alias: str = "") -> tuple[str, list[Any]]:
    q = f"{alias}." if alias else ""
    clauses, params = ["TRUE"], []
    if ad_account_id:
        clauses.append(f"{q}ad_account_id = ?")
        params.append(normalize_account_id(ad_account_id))
    if days is not None:
        clauses.append(f"list_contains(?::DATE[], {q}date)")
        params.append(sorted(set(days)))
    return " AND ".join(clauses), params


def _dicts(con: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


ROLLUP_GAPS_SQL = f"""
WITH m AS (
    SELECT * FROM shared_item_metrics
    WHERE list_contains({_sql_list(ADDITIVE_METRICS)}, metric) AND {{where}}
),
both_levels AS (  -- compare only (account, day, parent level) where ad level and the parent level are stored
    SELECT DISTINCT p.ad_account_id, p.date, p.level
    FROM m p JOIN (SELECT DISTINCT ad_account_id, date FROM m WHERE level = 'ad') a USING (ad_account_id, date)
    WHERE p.level <> 'ad'
),
child AS (
    SELECT 'adset' AS parent_level, date, ad_account_id, adset_id AS parent_id, metric, action_type,
           attribution_window, sum(value) AS ad_level_sum
    FROM m WHERE level = 'ad' GROUP BY ALL
    UNION ALL
    SELECT 'campaign', date, ad_account_id, campaign_id, metric, action_type, attribution_window, sum(value)
    FROM m WHERE level = 'ad' GROUP BY ALL
    UNION ALL
    SELECT 'account', date, ad_account_id, ad_account_id, metric, action_type, attribution_window, sum(value)
    FROM m WHERE level = 'ad' GROUP BY ALL
),
parent AS (
    SELECT level AS parent_level, date, ad_account_id, object_id AS parent_id, metric, action_type,
           attribution_window, value AS parent_value
    FROM m WHERE level <> 'ad'
),
joined AS (
    SELECT parent_level, date, ad_account_id, parent_id, metric, action_type, attribution_window,
           coalesce(c.ad_level_sum, 0) AS ad_level_sum, coalesce(p.parent_value, 0) AS parent_value
    FROM child c FULL OUTER JOIN parent p
      USING (parent_level, date, ad_account_id, parent_id, metric, action_type, attribution_window)
)
SELECT date, ad_account_id, parent_level, parent_id, metric, action_type, attribution_window,
       CAST(ad_level_sum AS DOUBLE) AS ad_level_sum, CAST(parent_value AS DOUBLE) AS parent_value,
       CAST(parent_value - ad_level_sum AS DOUBLE) AS gap,
       CAST((parent_value - ad_level_sum) / nullif(abs(parent_value), 0) AS DOUBLE) AS rel_gap
FROM joined j
WHERE EXISTS (
        SELECT 1 FROM both_levels b
        WHERE b.ad_account_id = j.ad_account_id AND b.date = j.date AND b.level = j.parent_level
      )
  AND abs(parent_value - ad_level_sum) > ? + ? * greatest(abs(parent_value), abs(ad_level_sum))
ORDER BY date, ad_account_id, parent_level, parent_id, metric, action_type, attribution_window
"""


def check_rollups(
    con: Any,
    *,
    ad_account_id: str | None = None,
    days: Iterable[date] | None = None,
    abs_tol: float = 0.011,
    rel_tol: float = 0.001,
) -> list[dict[str, Any]]:
    """Rows where a parent's additive metric differs from the sum of its ads (gap = parent - ad sum)."""
    where, params = _where(ad_account_id, days)
    return _dicts(con, ROLLUP_GAPS_SQL.replace("{where}", where), [*params, abs_tol, rel_tol])


ROAS_GAPS_SQL = f"""
WITH m AS (SELECT * FROM shared_item_metrics WHERE {{where}}),
roas AS (SELECT * FROM m WHERE list_contains({_sql_list(ROAS_METRICS)}, metric)),
val AS (
    SELECT date, ad_account_id, level, object_id, action_type, attribution_window, value AS segment_value
    FROM m WHERE metric = 'catalog_segment_value'
),
sp AS (SELECT date, ad_account_id, level, object_id, value AS spend FROM m WHERE metric = 'spend'),
j AS (
    SELECT r.date, r.ad_account_id, r.level, r.object_id, r.metric, r.action_type, r.attribution_window,
           CAST(r.value AS DOUBLE) AS meta_roas, CAST(v.segment_value AS DOUBLE) AS segment_value,
           CAST(s.spend AS DOUBLE) AS spend,
           CAST(v.segment_value AS DOUBLE) / nullif(CAST(s.spend AS DOUBLE), 0) AS recomputed_roas
    FROM roas r
    LEFT JOIN val v USING (date, ad_account_id, level, object_id, action_type, attribution_window)
    LEFT JOIN sp s USING (date, ad_account_id, level, object_id)
)
SELECT *, meta_roas - recomputed_roas AS gap,
       CASE WHEN recomputed_roas IS NULL THEN 'no segment value or spend' ELSE 'gap' END AS problem
FROM j
WHERE recomputed_roas IS NULL OR abs(meta_roas - recomputed_roas) > ? + ? * abs(recomputed_roas)
ORDER BY date, ad_account_id, level, object_id, metric, action_type, attribution_window
"""


def check_roas(
    con: Any,
    *,
    ad_account_id: str | None = None,
    days: Iterable[date] | None = None,
    abs_tol: float = 1e-5,
    rel_tol: float = 1e-4,
) -> list[dict[str, Any]]:
    """ROAS rows that do not equal catalog_segment_value (same action_type and window) / spend of the row."""
    where, params = _where(ad_account_id, days)
    return _dicts(con, ROAS_GAPS_SQL.replace("{where}", where), [*params, abs_tol, rel_tol])


def recompute_roas(
    con: Any,
    *,
    level: str = "campaign",
    from_level: str = "ad",
    ad_account_id: str | None = None,
    days: Iterable[date] | None = None,
    action_type: str = "omni_purchase",
) -> list[dict[str, Any]]:
    """ROAS of ``level`` objects recomputed from ``from_level`` rows (sum of value / sum of spend per window),
    next to Meta's own ROAS for that object when stored."""
    group_col = {"account": "ad_account_id", "campaign": "campaign_id", "adset": "adset_id", "ad": "ad_id"}[
        level
    ]
    roas_metric = {
        "omni_purchase": "catalog_segment_value_omni_purchase_roas",
        "offsite_conversion.fb_pixel_purchase": "catalog_segment_value_website_purchase_roas",
        "app_custom_event.fb_mobile_purchase": "catalog_segment_value_mobile_purchase_roas",
    }[action_type]
    where, params = _where(ad_account_id, days)
    sql = f"""
    WITH m AS (SELECT * FROM shared_item_metrics WHERE {where}),
    spend AS (
        SELECT date, ad_account_id, {group_col} AS object_id, sum(value) AS spend
        FROM m WHERE level = ? AND metric = 'spend' GROUP BY ALL
    ),
    val AS (
        SELECT date, ad_account_id, {group_col} AS object_id, attribution_window, sum(value) AS value
        FROM m WHERE level = ? AND metric = 'catalog_segment_value' AND action_type = ? GROUP BY ALL
    ),
    meta AS (
        SELECT date, ad_account_id, object_id, attribution_window, value AS meta_roas
        FROM m WHERE level = ? AND metric = ? AND action_type = ?
    )
    SELECT v.date, v.ad_account_id, v.object_id, v.attribution_window,
           CAST(v.value AS DOUBLE) AS value, CAST(s.spend AS DOUBLE) AS spend,
           CAST(v.value AS DOUBLE) / nullif(CAST(s.spend AS DOUBLE), 0) AS recomputed_roas,
           CAST(meta.meta_roas AS DOUBLE) AS meta_roas
    FROM val v JOIN spend s USING (date, ad_account_id, object_id)
    LEFT JOIN meta USING (date, ad_account_id, object_id, attribution_window)
    ORDER BY 1, 2, 3, 4
    """
    return _dicts(con, sql, [*params, from_level, from_level, action_type, level, roas_metric, action_type])


PRODUCT_PRESENCE_SQL = """
WITH purchases AS (
    SELECT date, ad_account_id, level, object_id, attribution_window, value AS purchases
    FROM shared_item_metrics
    WHERE metric = 'catalog_segment_actions' AND action_type = 'omni_purchase' AND value > 0
      AND level IN ('campaign', 'adset', 'ad') AND attribution_window <> 'default' AND {where}
),
pulled AS (  -- product slices that were replaced (so an absence is Meta's, not a missing pull)
    SELECT DISTINCT ad_account_id, level, date FROM raw.insights_slices
    WHERE family = 'product' AND status = 'replaced'
),
products AS (
    SELECT date, ad_account_id, level, object_id, attribution_window, sum(value) AS quantity
    FROM shared_item_product_metrics WHERE metric = 'converted_product_quantity' GROUP BY ALL
)
SELECT p.date, p.ad_account_id, p.level, p.object_id, p.attribution_window,
       CAST(p.purchases AS DOUBLE) AS purchases, CAST(coalesce(q.quantity, 0) AS DOUBLE) AS quantity
FROM purchases p
SEMI JOIN pulled USING (ad_account_id, level, date)
LEFT JOIN products q USING (date, ad_account_id, level, object_id, attribution_window)
WHERE coalesce(q.quantity, 0) <= 0
ORDER BY 1, 2, 3, 4, 5
"""


def check_product_presence(
    con: Any, *, ad_account_id: str | None = None, days: Iterable[date] | None = None
) -> list[dict[str, Any]]:
    """Objects and windows with segment purchases but no converted_product_quantity (the product pull for that
    day was replaced, so Meta sent none)."""
    ensure_schema(con)
    where, params = _where(ad_account_id, days)
    return _dicts(con, PRODUCT_PRESENCE_SQL.replace("{where}", where), params)


def record_repull_totals(
    client: MetaGraphClient,
    con: Any,
    *,
    tenant_id: str,
    retailer: str,
    ad_account_id: str,
    days: Iterable[date],
    windows: Sequence[str] = DEFAULT_WINDOWS,
) -> str:
    """Re-pull the account-level totals of ``days`` synchronously (same parameters as the pull, additive metrics
    only) and store them in ``raw.insights_repull_totals``; returns the repull id. ``con``: a connection or a
    callable opening one (opened once Meta answered)."""
    act = normalize_account_id(ad_account_id)
    day_list = sorted(set(days))
    repull_id = f"repull-{uuid.uuid4().hex}"
    pulled_at = datetime.now(UTC)
    base = build_request(act, "account", "segment", day_list[0], day_list[-1], windows=windows)
    req = base.with_metric_fields(SEGMENT_TOTAL_METRICS)
    params = {**req.params(), "limit": 500}
    rows = [
        r
        for r in client.paginate(req.path, params)
        if r.get("date_start") in {d.isoformat() for d in day_list}
    ]
    # Parse with the same SQL as the facts: stage the answer as one raw page of a pseudo pull.
    with opener(con)() as db:
        ensure_schema(db)
        _store_repull(db, repull_id, tenant_id, retailer, act, day_list, rows, pulled_at)
    return repull_id


def _store_repull(
    con: Any,
    repull_id: str,
    tenant_id: str,
    retailer: str,
    act: str,
    day_list: list[date],
    rows: list[dict[str, Any]],
    pulled_at: datetime,
) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "INSERT INTO raw.insights_pages VALUES (?, 'repull', ?, ?, ?, 'account', 'segment', ?, ?, 0, ?, ?, ?)",
            [
                repull_id,
                tenant_id,
                retailer,
                act,
                day_list[0],
                day_list[-1],
                len(rows),
                json.dumps({"data": rows}),
                pulled_at,
            ],
        )
        sql = parsed_rows_sql(
            pull_id=repull_id,
            tenant_id=tenant_id,
            retailer=retailer,
            ad_account_id=act,
            level="account",
            family="segment",
            days=day_list,
            pulled_at=pulled_at,
            require_complete_pieces=False,
        )
        con.execute(
            f"""INSERT INTO raw.insights_repull_totals
            SELECT '{repull_id}', tenant_id, retailer, ad_account_id, date, metric, action_type, attribution_window,
                   value, pulled_at
            FROM ({sql}) WHERE list_contains({_sql_list(SEGMENT_TOTAL_METRICS)}, metric)"""
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


REPULL_GAPS_SQL = """
WITH latest AS (
    SELECT * FROM raw.insights_repull_totals
    WHERE {where}
    QUALIFY pulled_at = max(pulled_at) OVER (PARTITION BY ad_account_id, date)
),
stored AS (
    SELECT date, ad_account_id, metric, action_type, attribution_window, value
    FROM shared_item_metrics WHERE level = 'account' AND {where}
)
SELECT date, ad_account_id, metric, action_type, attribution_window,
       CAST(coalesce(s.value, 0) AS DOUBLE) AS stored_value, CAST(coalesce(l.value, 0) AS DOUBLE) AS repulled_value,
       CAST(coalesce(l.value, 0) - coalesce(s.value, 0) AS DOUBLE) AS gap,
       CAST((coalesce(l.value, 0) - coalesce(s.value, 0)) / nullif(abs(s.value), 0) AS DOUBLE) AS rel_gap
FROM latest l LEFT JOIN stored s USING (date, ad_account_id, metric, action_type, attribution_window)
WHERE abs(coalesce(l.value, 0) - coalesce(s.value, 0)) > ? + ? * abs(coalesce(s.value, 0))
ORDER BY 1, 2, 3, 4, 5
"""


def check_repull(
    con: Any,
    *,
    ad_account_id: str | None = None,
    days: Iterable[date] | None = None,
    abs_tol: float = 0.011,
    rel_tol: float = 0.02,
) -> list[dict[str, Any]]:
    """Account totals where the latest re-pull differs from the stored rows beyond the tolerance."""
    ensure_schema(con)
    where, params = _where(ad_account_id, days)
    return _dicts(con, REPULL_GAPS_SQL.replace("{where}", where), [*params, *params, abs_tol, rel_tol])


def check_freshness(
    con: Any,
    *,
    ad_account_id: str,
    timezone_name: str,
    now: datetime | None = None,
    cutoff_hour: int = 10,
    level: str = "account",
) -> dict[str, Any]:
    """Is yesterday (account time zone) present? Only due from ``cutoff_hour`` local time (mid-morning)."""
    act = normalize_account_id(ad_account_id)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    local = now.astimezone(ZoneInfo(timezone_name))
    yesterday = local.date() - timedelta(days=1)
    latest, has_yesterday = con.execute(
        "SELECT max(date), count(*) FILTER (WHERE date = ?) > 0 FROM shared_item_metrics "
        "WHERE ad_account_id = ? AND level = ?",
        [yesterday, act, level],
    ).fetchone()
    due = local.hour >= cutoff_hour
    return {
        "ad_account_id": act,
        "timezone_name": timezone_name,
        "local_now": local.isoformat(),
        "yesterday": yesterday,
        "due": due,
        "latest_date": latest,
        "has_yesterday": bool(has_yesterday),
        "ok": bool(has_yesterday) or not due,
    }
