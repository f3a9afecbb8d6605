"""The summary view (``catalog_diagnostics_summary``), the daily ``catalog_health`` row and the Markdown report
for Dagster metadata. All set-based SQL over ``catalog_diagnostics`` and the sync / catalog tables."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import duckdb

from kobi_cpas.diagnostics._sql import run
from kobi_cpas.warehouse.sql import transaction

EXAMPLES_PER_PROBLEM = 5
_PRIORITY_ORDER = "CASE priority WHEN 'HIGH' THEN 1 WHEN 'MEDIUM' THEN 2 ELSE 3 END"
# Sources that say what Meta does with an item (eligibility); Kobi's feed validation is counted apart.
_META_SIDE = "'meta_item_check', 'feed_upload', 'batch_request'"


def catalog_items(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str
) -> tuple[int | None, str | None]:
    """Items in the catalog and where the number comes from: the product_count read during the last poll,
    else ``meta_catalogs.product_count``, else the tenant's ``feed_items``."""
    row = con.execute(
        "SELECT product_count FROM diag_state.catalog_observations WHERE tenant_id = ? AND catalog_id = ? "
        "AND product_count IS NOT NULL ORDER BY observed_at DESC LIMIT 1",
        [tenant_id, catalog_id],
    ).fetchone()
    if row:
        return int(row[0]), "meta_product_count"
    row = con.execute(
        "SELECT product_count FROM main.meta_catalogs WHERE tenant_id = ? AND catalog_id = ? "
        "AND product_count IS NOT NULL ORDER BY observed_at DESC LIMIT 1",
        [tenant_id, catalog_id],
    ).fetchone()
    if row:
        return int(row[0]), "meta_catalogs"
    row = con.execute("SELECT count(*) FROM main.feed_items WHERE tenant_id = ?", [tenant_id]).fetchone()
    if row and row[0]:
        return int(row[0]), "feed_items"
    return None, None


def build_summary(con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime) -> int:
    """Rebuild the tenant catalog's rows of ``catalog_diagnostics_summary`` from its open problems."""
    with transaction(con):
        n = write_summary(con, tenant_id, catalog_id, now)
    return n


def write_summary(con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime) -> int:
    """``build_summary`` inside the caller's transaction."""
    items, _ = catalog_items(con, tenant_id, catalog_id)
    con.execute(
        "DELETE FROM main.catalog_diagnostics_summary WHERE tenant_id = ? AND catalog_id = ?",
        [tenant_id, catalog_id],
    )
    inserted = run(
        con,
        f"""INSERT INTO main.catalog_diagnostics_summary (tenant_id, catalog_id, rank, source, error_type,
              priority, severity, title, description, call_to_action, affected_items, open_problems,
              share_of_items, example_retailer_ids, is_catalog_level, first_seen_at, last_seen_at, observed_at)
        WITH d AS (
          SELECT * FROM main.catalog_diagnostics WHERE tenant_id = $t AND catalog_id = $c AND is_open
        ),
        per_item AS (
          SELECT source, error_type, priority, retailer_id, min(first_seen_at) AS f
          FROM d WHERE retailer_id <> '' GROUP BY ALL
        ),
        examples AS (
          SELECT source, error_type, priority,
                 list(retailer_id ORDER BY f, retailer_id)[1:{EXAMPLES_PER_PROBLEM}] AS ex
          FROM per_item GROUP BY ALL
        ),
        g AS (
          SELECT source, error_type, priority, mode(severity) AS severity, mode(title) AS title,
                 mode(description) AS description, mode(call_to_action) AS call_to_action,
                 count(DISTINCT retailer_id) FILTER (WHERE retailer_id <> '') AS affected_items,
                 count(*) AS open_problems, bool_and(retailer_id = '') AS is_catalog_level,
                 min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
          FROM d GROUP BY source, error_type, priority
        )
        SELECT $t, $c,
               row_number() OVER (ORDER BY {_PRIORITY_ORDER}, affected_items DESC, open_problems DESC,
                                  source, error_type),
               source, error_type, priority, severity, title, description, call_to_action, affected_items,
               open_problems,
               CASE WHEN $items > 0 THEN least(affected_items / $items::DOUBLE, 1.0) END,
               coalesce(e.ex, []), is_catalog_level, first_seen_at, last_seen_at, $now
        FROM g LEFT JOIN examples e USING (source, error_type, priority)""",
        {"t": tenant_id, "c": catalog_id, "now": now, "items": items},
    ).fetchone()
    # The tenant catalog's rows were deleted first: the rows inserted are all of them.
    return int(inserted[0]) if inserted else 0


_HEALTH_COLUMNS = (
    "tenant_id, catalog_id, day, items, items_source, items_with_problems, items_with_high, items_with_medium, "
    "items_with_low, items_with_feed_errors, high_share, eligible_items, eligible_share, open_problems, open_high_problems, "
    "fatal_ingestion_errors, has_pixel_or_app, pixel_count, app_count, last_successful_replace_at, "
    "last_successful_update_at, last_successful_batch_at, diagnostic_groups, must_fix_groups, opportunity_groups, "
    "last_item_poll_at, observed_at"
)


def current_health(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime
) -> dict[str, Any]:
    """The ``catalog_health`` values of a tenant catalog as of now (not stored; see ``build_health``).

    Eligibility is Meta's view: items_with_high / _medium / _low count items by their worst open problem
    reported by Meta (async item errors and ingestion errors). Kobi's own feed errors are counted apart
    (items_with_feed_errors): such an item keeps its last valid version at Meta, or was never sent."""
    items, items_source = catalog_items(con, tenant_id, catalog_id)
    row = run(
        con,
        f"""WITH d AS (SELECT * FROM main.catalog_diagnostics WHERE tenant_id = $t AND catalog_id = $c AND is_open),
        worst AS (SELECT retailer_id, min({_PRIORITY_ORDER}) AS w FROM d
                  WHERE retailer_id <> '' AND source IN ({_META_SIDE}) GROUP BY 1),
        syncs AS (SELECT method, max(coalesce(finished_at, started_at)) AS ts FROM main.catalog_syncs
                  WHERE tenant_id = $t AND catalog_id = $c AND starts_with(status, 'finished') GROUP BY 1),
        cat AS (SELECT has_event_source, pixel_count, app_count FROM main.meta_catalogs
                WHERE tenant_id = $t AND catalog_id = $c ORDER BY observed_at DESC LIMIT 1)
        SELECT (SELECT count(DISTINCT retailer_id) FROM d WHERE retailer_id <> ''),
               (SELECT count(*) FROM worst WHERE w = 1),
               (SELECT count(*) FROM worst WHERE w = 2),
               (SELECT count(*) FROM worst WHERE w = 3),
               (SELECT count(*) FROM d),
               (SELECT count(*) FROM d WHERE priority = 'HIGH'),
               (SELECT count(*) FROM d WHERE source IN ('feed_upload', 'batch_request') AND severity = 'fatal'),
               (SELECT has_event_source FROM cat), (SELECT pixel_count FROM cat), (SELECT app_count FROM cat),
               (SELECT ts FROM syncs WHERE method = 'replace'), (SELECT ts FROM syncs WHERE method = 'update'),
               (SELECT ts FROM syncs WHERE method = 'batch'),
               (SELECT count(DISTINCT retailer_id) FROM d
                WHERE retailer_id <> '' AND source = 'kobi_feed_validation' AND priority = 'HIGH'),
               -- lifecycle.last_successful_poll of meta_item_check, and the latest diagnostic groups
               (SELECT max(polled_at) FROM diag_state.poll_log WHERE tenant_id = $t AND catalog_id = $c
                  AND source = 'meta_item_check' AND status = 'ok' AND full_scope),
               (SELECT groups_json FROM diag_state.catalog_observations WHERE tenant_id = $t AND catalog_id = $c
                ORDER BY observed_at DESC LIMIT 1)""",
        {"t": tenant_id, "c": catalog_id},
    ).fetchone()
    assert row is not None
    last_poll = row[14]
    groups = json.loads(row[15]) if row[15] else None
    with_high = int(row[1])
    eligible = max(items - with_high, 0) if items is not None else None
    return {
        "tenant_id": tenant_id,
        "catalog_id": catalog_id,
        "day": now.astimezone(UTC).date(),
        "items": items,
        "items_source": items_source,
        "items_with_problems": int(row[0]),
        "items_with_high": with_high,
        "items_with_medium": int(row[2]),
        "items_with_low": int(row[3]),
        "items_with_feed_errors": int(row[13]),
        "high_share": min(with_high / items, 1.0) if items else None,
        "eligible_items": eligible,
        "eligible_share": eligible / items if items and eligible is not None else None,
        "open_problems": int(row[4]),
        "open_high_problems": int(row[5]),
        "fatal_ingestion_errors": int(row[6]),
        "has_pixel_or_app": row[7],
        "pixel_count": row[8],
        "app_count": row[9],
        "last_successful_replace_at": row[10],
        "last_successful_update_at": row[11],
        "last_successful_batch_at": row[12],
        "diagnostic_groups": json.dumps(groups) if groups is not None else None,
        "must_fix_groups": sum(g.get("severity") == "MUST_FIX" for g in groups)
        if groups is not None
        else None,
        "opportunity_groups": (
            sum(g.get("severity") == "OPPORTUNITY" for g in groups) if groups is not None else None
        ),
        "last_item_poll_at": last_poll,
        "observed_at": now,
    }


def build_health(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime
) -> dict[str, Any]:
    """Write (replace) the tenant catalog's ``catalog_health`` row for the UTC day of ``now``; returns it."""
    with transaction(con):
        h = write_health(con, tenant_id, catalog_id, now)
    return h


def write_health(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime
) -> dict[str, Any]:
    """``build_health`` inside the caller's transaction."""
    h = current_health(con, tenant_id, catalog_id, now)
    cols = [c.strip() for c in _HEALTH_COLUMNS.split(",")]
    con.execute(
        "DELETE FROM main.catalog_health WHERE tenant_id = ? AND catalog_id = ? AND day = ?",
        [tenant_id, catalog_id, h["day"]],
    )
    con.execute(
        f"INSERT INTO main.catalog_health ({_HEALTH_COLUMNS}) VALUES ({', '.join('?' for _ in cols)})",
        [h[c] for c in cols],
    )
    return h


def health_metadata(con: duckdb.DuckDBPyConnection, tenant_id: str) -> dict[str, float | int]:
    """Numeric values of the tenant's latest ``catalog_health`` rows (summed over its catalogs), for Dagster
    metadata that plots over time."""
    row = con.execute(
        """SELECT sum(items), sum(items_with_high), sum(eligible_items), sum(open_problems),
                  sum(open_high_problems), sum(fatal_ingestion_errors)
           FROM main.catalog_health h WHERE tenant_id = ?
             AND observed_at = (SELECT max(observed_at) FROM main.catalog_health x
                                WHERE x.tenant_id = h.tenant_id AND x.catalog_id = h.catalog_id)""",
        [tenant_id],
    ).fetchone()
    items, high, eligible, open_, open_high, fatal = (int(v or 0) for v in (row or (0,) * 6))
    return {
        "items": items,
        "items_with_high": high,
        "eligible_share": round(eligible / items, 4) if items else 0.0,
        "open_problems": open_,
        "open_high_problems": open_high,
        "fatal_ingestion_errors": fatal,
    }


def _md(text: Any) -> str:
    """One table cell: no pipes or line breaks, HTML links reduced to their text."""
    s = re.sub(r"<[^>]+>", "", str(text if text is not None else ""))
    return " ".join(s.replace("|", "/").split())


def markdown_summary(con: duckdb.DuckDBPyConnection, tenant_id: str, top: int = 10) -> str:
    """A short Markdown report of the tenant's catalogs: health line, then the top open problems with their
    counts and call to action (for the Dagster UI)."""
    out: list[str] = []
    catalogs = con.execute(
        """SELECT DISTINCT catalog_id FROM (
             SELECT catalog_id FROM main.catalog_health WHERE tenant_id = ?
             UNION SELECT catalog_id FROM main.catalog_diagnostics_summary WHERE tenant_id = ?) ORDER BY 1""",
        [tenant_id, tenant_id],
    ).fetchall()
    if not catalogs:
        return f"**{tenant_id}**: no catalog diagnostics yet."
    for (catalog_id,) in catalogs:
        h = con.execute(
            """SELECT items, items_with_high, eligible_share, has_pixel_or_app, last_item_poll_at, open_problems,
                      items_with_feed_errors, fatal_ingestion_errors
               FROM main.catalog_health WHERE tenant_id = ? AND catalog_id = ? ORDER BY observed_at DESC LIMIT 1""",
            [tenant_id, catalog_id],
        ).fetchone()
        out.append(f"### Catalog {catalog_id} ({tenant_id})")
        if h:
            polled = f"{h[4].astimezone(UTC):%Y-%m-%d %H:%M} UTC" if h[4] else "never"
            facts = [
                f"items: {h[0] if h[0] is not None else 'n/a'}",
                f"blocked by Meta (HIGH): {h[1]}",
                f"eligible for ads: {f'{h[2]:.1%}' if h[2] is not None else 'n/a'}",
                f"fatal ingestion errors: {h[7]}",
                f"items with Kobi feed errors: {h[6]}",
                f"pixel/app connected: {dict([(True, 'yes'), (False, '**no**')]).get(h[3], 'unknown')}",
                f"open problems: {h[5]}",
                f"item errors polled: {polled}",
            ]
            out.append(" · ".join(facts))
        rows = con.execute(
            """SELECT rank, priority, source, error_type, title, affected_items, open_problems, is_catalog_level,
                      example_retailer_ids, call_to_action
               FROM main.catalog_diagnostics_summary WHERE tenant_id = ? AND catalog_id = ?
               ORDER BY rank LIMIT ?""",
            [tenant_id, catalog_id, top],
        ).fetchall()
        if not rows:
            out.append("")
            out.append("No open problems.")
            out.append("")
            continue
        out.append("")
        out.append("| # | priority | problem | items | source | examples | call to action |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rows:
            items = "catalog" if r[7] else str(r[5])
            examples = ", ".join((r[8] or [])[:3])
            out.append(
                f"| {r[0]} | {r[1]} | {_md(r[4])} (`{r[3]}`) | {items} | {r[2]} | {_md(examples)} | {_md(r[9])} |"
            )
        total = con.execute(
            "SELECT count(*) FROM main.catalog_diagnostics_summary WHERE tenant_id = ? AND catalog_id = ?",
            [tenant_id, catalog_id],
        ).fetchone()
        if total and total[0] > top:
            out.append(f"\n…and {total[0] - top} more problem types (see catalog_diagnostics_summary).")
        out.append("")
    return "\n".join(out).strip() + "\n"
