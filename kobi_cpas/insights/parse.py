"""Raw insights pages -> long-format rows, set-based in DuckDB, and the slice replace.

Raw pages are stored append-only in ``raw.insights_pages`` (``{"data": [...]}`` only: Meta's paging links carry
the access token and are never stored). Parsing is one SQL statement per (pull, level, request family): unnest
the rows, keep those whose day is asked for, then unnest scalar metrics and the entries of list metrics with one
row per key (``value`` -> attribution_window 'default', ``1d_click`` -> '1d_click', ...). ``is_estimated`` comes
from the metric catalog. Duplicate keys (a page Meta repeated) keep the first occurrence.

Replace semantics: a slice is (tenant, ad account, level, request family, day). ``replace_slices`` deletes the
slice's rows and inserts the freshly parsed ones in ONE transaction, and only for days whose every piece of the
pull succeeded (``complete_days``): a restated day whose products changed leaves no stale rows, and a half-finished
pull never replaces a complete day. ``reparse_days`` rebuilds days from the raw pages of the pull that last
replaced them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from kobi_cpas.insights.metrics import (
    METRICS,
    catalog_values_sql,
    metrics_for_request_family,
)
from kobi_cpas.insights.schema import (
    NA,
    PRODUCT_PARSED_COLUMNS,
    SHARED_ITEM_METRICS,
    SHARED_ITEM_PRODUCT_METRICS,
    VALUE_TYPE,
    ensure_schema,
)
from kobi_cpas.warehouse.sql import sql_str

TARGET_TABLES = {"segment": SHARED_ITEM_METRICS.name, "product": SHARED_ITEM_PRODUCT_METRICS.name}


@dataclass(frozen=True)
class SliceKey:
    """One replaceable unit: every row of one account, level and request family on one day."""

    tenant_id: str
    retailer: str
    ad_account_id: str
    level: str
    family: str  # "segment" (shared_item_metrics) | "product" (shared_item_product_metrics)
    date: date


def parsed_rows_sql(
    *,
    pull_id: str,
    tenant_id: str,
    retailer: str,
    ad_account_id: str,
    level: str,
    family: str,
    days: Sequence[date],
    pulled_at: datetime,
    require_complete_pieces: bool = True,
) -> str:
    """A SELECT of the parsed rows of one pull's (level, family) pages for ``days``, with exactly the target
    table's columns. Values are inlined (no parameters) so it can be embedded in INSERT ... SELECT.

    Each Meta row is parsed once into a struct of its ids; its metric keys are walked once with json_each
    (scalars -> one row, lists -> one row per entry and key). A (day, object) row that appears twice with the
    same keys (a page Meta repeated) counts once.
    """
    metrics = metrics_for_request_family(family)
    names = "[" + ", ".join(sql_str(m.metric) for m in metrics) + "]"
    day_list = "[" + ", ".join(f"DATE '{d.isoformat()}'" for d in sorted(set(days))) + "]"
    piece_join = (
        "JOIN raw.insights_pieces c ON c.pull_id = p.pull_id AND c.piece_id = p.piece_id AND c.status = 'complete'"
        if require_complete_pieces
        else ""
    )
    na = sql_str(NA)
    ids = {
        "campaign_id": f"coalesce(a.campaign_id, {na})" if level in ("campaign", "adset", "ad") else na,
        "adset_id": f"coalesce(a.adset_id, {na})" if level in ("adset", "ad") else na,
        "ad_id": f"coalesce(a.ad_id, {na})" if level == "ad" else na,
    }
    ids["object_id"] = {
        "account": sql_str(ad_account_id),
        "campaign": ids["campaign_id"],
        "adset": ids["adset_id"],
        "ad": ids["ad_id"],
    }[level]
    struct = (
        '{"date_start":"VARCHAR","date_stop":"VARCHAR","campaign_id":"VARCHAR","adset_id":"VARCHAR",'
        '"ad_id":"VARCHAR","account_currency":"VARCHAR"}'
    )
    product = family == "product"
    table = SHARED_ITEM_PRODUCT_METRICS if product else SHARED_ITEM_METRICS
    select_map = {
        "date": "d",
        "tenant_id": sql_str(tenant_id),
        "retailer": sql_str(retailer),
        "ad_account_id": sql_str(ad_account_id),
        "level": sql_str(level),
        "object_id": "object_id",
        "campaign_id": "campaign_id",
        "adset_id": "adset_id",
        "ad_id": "ad_id",
        "action_converted_product_id": "product_id",
        "metric": "u.metric",
        "action_type": "action_type",
        "attribution_window": "attribution_window",
        "value": "value",
        "is_estimated": "mc.is_estimated",
        "account_currency": "account_currency",
        "pull_id": sql_str(pull_id),
        "pulled_at": f"TIMESTAMPTZ '{pulled_at.astimezone(UTC).isoformat()}'",
    }
    parsed = PRODUCT_PARSED_COLUMNS if product else table.column_names
    select_cols = ",\n       ".join(f"{select_map[c]} AS {c}" for c in parsed)
    product_filter = f" AND product_id <> {na}" if product else ""
    return f"""
WITH pages AS (
    SELECT p.piece_id, p.page_no, p.payload
    FROM raw.insights_pages p
    {piece_join}
    WHERE p.pull_id = {sql_str(pull_id)} AND p.ad_account_id = {sql_str(ad_account_id)}
      AND p.level = {sql_str(level)} AND p.family = {sql_str(family)}
),
raw_rows AS (
    SELECT piece_id, page_no, unnest(from_json(payload -> '$.data', '["JSON"]')) AS r FROM pages
),
parsed AS (
    SELECT piece_id, page_no, r, from_json(r, '{struct}') AS a FROM raw_rows
),
rows AS (
    SELECT piece_id, page_no, r,
           CAST(a.date_start AS DATE) AS d,
           {ids["object_id"]} AS object_id,
           {ids["campaign_id"]} AS campaign_id,
           {ids["adset_id"]} AS adset_id,
           {ids["ad_id"]} AS ad_id,
           a.account_currency AS account_currency
    FROM parsed
    WHERE a.date_start = a.date_stop AND list_contains({day_list}, CAST(a.date_start AS DATE))
    QUALIFY row_number() OVER (
        PARTITION BY d, object_id, list_sort(json_keys(r)) ORDER BY piece_id, page_no
    ) = 1
),
kv AS (
    SELECT rows.* EXCLUDE (r), lm.key AS metric, lm.type AS t, lm.value AS v
    FROM rows, json_each(rows.r) AS lm
    WHERE list_contains({names}, lm.key)
),
u AS (
    SELECT d, object_id, campaign_id, adset_id, ad_id, account_currency, metric,
           {na} AS action_type, {na} AS product_id, 'default' AS attribution_window,
           TRY_CAST(v ->> '$' AS {VALUE_TYPE}) AS value
    FROM kv WHERE t <> 'ARRAY'
    UNION ALL
    SELECT d, object_id, campaign_id, adset_id, ad_id, account_currency, metric,
           coalesce(e ->> 'action_type', {na}),
           coalesce(e ->> 'action_converted_product_id', {na}),
           CASE WHEN ek.key = 'value' THEN 'default' ELSE ek.key END,
           TRY_CAST(ek.value ->> '$' AS {VALUE_TYPE})
    FROM (
        SELECT kv.* EXCLUDE (v, t), unnest(from_json(v, '["JSON"]')) AS e FROM kv WHERE t = 'ARRAY'
    ) x, json_each(x.e) AS ek
    WHERE NOT starts_with(ek.key, 'action_')
)
SELECT {select_cols}
FROM u JOIN {catalog_values_sql()} ON mc.metric = u.metric
WHERE value IS NOT NULL AND object_id <> {na}{product_filter}"""


def complete_days(
    con: Any, *, pull_id: str, ad_account_id: str, level: str, family: str, days: Iterable[date]
) -> list[date]:
    """Days of ``days`` for which the pull holds at least one complete piece and no pending or failed piece
    (split parents excluded) of this (account, level, family)."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    rows = con.execute(
        """
        WITH d AS (SELECT unnest(?::DATE[]) AS day),
        p AS (
            SELECT since, until, status FROM raw.insights_pieces
            WHERE pull_id = ? AND ad_account_id = ? AND level = ? AND family = ? AND status <> 'split'
        )
        SELECT day FROM d
        WHERE EXISTS (SELECT 1 FROM p WHERE p.status = 'complete' AND d.day BETWEEN p.since AND p.until)
          AND NOT EXISTS (SELECT 1 FROM p WHERE p.status <> 'complete' AND d.day BETWEEN p.since AND p.until)
        ORDER BY day
        """,
        [wanted, pull_id, ad_account_id, level, family],
    ).fetchall()
    return [r[0] for r in rows]


def replace_slices(
    con: Any,
    *,
    pull_id: str,
    tenant_id: str,
    retailer: str,
    ad_account_id: str,
    level: str,
    family: str,
    days: Iterable[date],
    pulled_at: datetime | None = None,
    record: bool = True,
) -> dict[date, int]:
    """Replace the (account, level, family) slices of ``days`` with the rows parsed from the pull's raw pages,
    in one transaction. Days that are not complete in this pull (``complete_days``) are left untouched and
    recorded as 'incomplete'. Returns rows written per replaced day."""
    ensure_schema(con)
    wanted = sorted(set(days))
    if not wanted:
        return {}
    ok_days = complete_days(
        con, pull_id=pull_id, ad_account_id=ad_account_id, level=level, family=family, days=wanted
    )
    skipped = [d for d in wanted if d not in set(ok_days)]
    now = datetime.now(UTC)
    pulled_at = pulled_at or _pull_started_at(con, pull_id) or now
    table = TARGET_TABLES[family]
    family_metrics = [m.metric for m in metrics_for_request_family(family)]
    counts: dict[date, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        if ok_days:
            con.execute(
                f"DELETE FROM {table} WHERE tenant_id = ? AND ad_account_id = ? AND level = ? "
                "AND list_contains(?::DATE[], date) AND list_contains(?::VARCHAR[], metric)",
                [tenant_id, ad_account_id, level, ok_days, family_metrics],
            )
            sql = parsed_rows_sql(
                pull_id=pull_id,
                tenant_id=tenant_id,
                retailer=retailer,
                ad_account_id=ad_account_id,
                level=level,
                family=family,
                days=ok_days,
                pulled_at=pulled_at,
            )
            cols = ", ".join(
                PRODUCT_PARSED_COLUMNS if family == "product" else SHARED_ITEM_METRICS.column_names
            )
            con.execute(f"INSERT INTO {table} ({cols}) {sql}")
            counted = con.execute(
                f"SELECT date, count(*) FROM {table} WHERE tenant_id = ? AND ad_account_id = ? AND level = ? "
                "AND list_contains(?::DATE[], date) AND pull_id = ? GROUP BY date",
                [tenant_id, ad_account_id, level, ok_days, pull_id],
            ).fetchall()
            counts = {d: 0 for d in ok_days} | {d: int(n) for d, n in counted}
        if record:
            rows = [
                [pull_id, tenant_id, retailer, ad_account_id, level, family, d, "replaced", counts[d], now]
                for d in ok_days
            ] + [
                [pull_id, tenant_id, retailer, ad_account_id, level, family, d, "incomplete", 0, now]
                for d in skipped
            ]
            if rows:
                con.executemany("INSERT INTO raw.insights_slices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return counts


def replace_slice(con: Any, key: SliceKey, *, pull_id: str, pulled_at: datetime | None = None) -> int | None:
    """Replace one slice from the pull's raw pages; None when the pull did not complete it (nothing changed)."""
    counts = replace_slices(
        con,
        pull_id=pull_id,
        tenant_id=key.tenant_id,
        retailer=key.retailer,
        ad_account_id=key.ad_account_id,
        level=key.level,
        family=key.family,
        days=[key.date],
        pulled_at=pulled_at,
    )
    return counts.get(key.date)


def _pull_started_at(con: Any, pull_id: str) -> datetime | None:
    row = con.execute("SELECT started_at FROM raw.insights_pulls WHERE pull_id = ?", [pull_id]).fetchone()
    return row[0] if row else None


def reparse_days(
    con: Any,
    *,
    tenant_id: str,
    ad_account_id: str,
    level: str,
    family: str,
    days: Iterable[date],
) -> dict[date, int]:
    """Rebuild slices from raw: for each day, the pages of the pull that last replaced it. Days never replaced
    are skipped. Returns rows written per day."""
    ensure_schema(con)
    wanted = sorted(set(days))
    latest = con.execute(
        """
        SELECT date, arg_max(pull_id, recorded_at) AS pull_id, arg_max(retailer, recorded_at) AS retailer
        FROM raw.insights_slices
        WHERE tenant_id = ? AND ad_account_id = ? AND level = ? AND family = ? AND status = 'replaced'
          AND list_contains(?::DATE[], date)
        GROUP BY date
        """,
        [tenant_id, ad_account_id, level, family, wanted],
    ).fetchall()
    by_pull: dict[tuple[str, str], list[date]] = {}
    for d, pull_id, retailer in latest:
        by_pull.setdefault((pull_id, retailer), []).append(d)
    out: dict[date, int] = {}
    for (pull_id, retailer), pull_days in by_pull.items():
        out.update(
            replace_slices(
                con,
                pull_id=pull_id,
                tenant_id=tenant_id,
                retailer=retailer,
                ad_account_id=ad_account_id,
                level=level,
                family=family,
                days=pull_days,
                record=False,
            )
        )
    return out


def store_page(
    con: Any,
    *,
    pull_id: str,
    piece_id: str,
    tenant_id: str,
    retailer: str,
    ad_account_id: str,
    level: str,
    family: str,
    since: date,
    until: date,
    page_no: int,
    payload_json: str,
    row_count: int,
    pulled_at: datetime,
) -> None:
    """Append one raw page (``payload_json`` = ``{"data": [...]}``)."""
    con.execute(
        "INSERT INTO raw.insights_pages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            pull_id,
            piece_id,
            tenant_id,
            retailer,
            ad_account_id,
            level,
            family,
            since,
            until,
            page_no,
            row_count,
            payload_json,
            pulled_at,
        ],
    )


__all__ = [
    "METRICS",
    "TARGET_TABLES",
    "SliceKey",
    "complete_days",
    "parsed_rows_sql",
    "reparse_days",
    "replace_slice",
    "replace_slices",
    "store_page",
]
