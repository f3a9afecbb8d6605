"""Merge the staged current problems into ``main.catalog_diagnostics`` (set-based) and keep their history.

Key: ``problem_key`` = md5(tenant_id, catalog_id, retailer_id ('' for file / catalog level), source, error_type,
field, variant). For one poll at time ``now``:

- new key -> inserted with first_seen_at = last_seen_at = now, resolved_at NULL, occurrences 1;
- key still present -> last_seen_at = now (occurrences + 1 when now is later than the last sighting), texts,
  priority and sync references refreshed; a resolved one reopens (resolved_at NULL, reopened_count + 1,
  first_seen_at kept);
- open key absent from the stage -> resolved_at = now (the row is kept), but only when its source was polled
  in this run (``diag_state.staged_sources``) and, for a partial poll, the problem is within the poll's scope
  (its priority, its items). A source whose poll failed or was skipped resolves nothing. An item problem of a
  source and error type that an ``unmapped_item`` row of this run also has (Meta named the item only by its
  product item id and the lookup failed) stays open: that item may be this one.

Idempotent: merging the same stage twice at the same ``now`` leaves the same rows; an older ``now`` never moves
last_seen_at back nor resolves a problem seen later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import duckdb

from kobi_cpas.diagnostics._sql import run
from kobi_cpas.diagnostics.collect import clear_stage
from kobi_cpas.diagnostics.dictionary import DEFAULT_LOCALE, resolved_texts_from
from kobi_cpas.warehouse.sql import transaction


@dataclass
class MergeCounts:
    new: int = 0
    seen: int = 0  # already known and still present (including reopened)
    reopened: int = 0
    resolved: int = 0
    held_unmapped: int = 0  # open item problems not resolved because an unmapped item could be theirs
    open_total: int = 0  # open problems of the tenant catalog after the merge

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> int:
    row = run(con, sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def merge_problems(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    now: datetime,
    locale: str = DEFAULT_LOCALE,
) -> MergeCounts:
    """Apply the stage of a tenant catalog to ``catalog_diagnostics`` (one transaction), log the poll per
    source in ``diag_state.poll_log`` and clear the stage. Titles, descriptions and CTAs are resolved here
    (dictionary in ``locale``, then en_US, then the generic CTA of the priority)."""
    with transaction(con):
        counts = merge_staged(con, tenant_id, catalog_id, now, locale)
    return counts


def merge_staged(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    now: datetime,
    locale: str = DEFAULT_LOCALE,
) -> MergeCounts:
    """``merge_problems`` inside the caller's transaction."""
    p = {"t": tenant_id, "c": catalog_id, "now": now}
    counts = MergeCounts()
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE _diag_cur AS
        WITH staged AS (
          SELECT *, rowid AS stage_rowid FROM diag_state.staged_problems WHERE tenant_id = $t AND catalog_id = $c
        ),
        known_ids AS (
          -- only items of this stage: the history of the catalog (resolved problems are kept) grows for ever
          SELECT retailer_id, max(product_item_id) AS product_item_id FROM (
            SELECT retailer_id, product_item_id FROM staged
            WHERE product_item_id IS NOT NULL AND retailer_id <> ''
            UNION ALL
            SELECT retailer_id, product_item_id FROM main.catalog_diagnostics
            WHERE tenant_id = $t AND catalog_id = $c AND product_item_id IS NOT NULL AND retailer_id <> ''
              AND retailer_id IN (SELECT retailer_id FROM staged))
          GROUP BY 1
        ),
        cur AS (
          SELECT md5(concat_ws('|', s.tenant_id, s.catalog_id, s.retailer_id, s.source, s.error_type, s.field,
                               s.variant)) AS problem_key,
                 s.tenant_id, s.catalog_id, s.retailer_id,
                 coalesce(s.product_item_id, k.product_item_id) AS product_item_id, s.level, s.source,
                 s.error_type, s.field, s.text_priority AS priority, s.severity, s.text_title AS title,
                 s.text_description AS description, s.text_call_to_action AS call_to_action,
                 s.text_cta_source AS cta_source, s.message, s.row_number, s.column_number, s.sync_id,
                 s.sync_method, s.upload_session_id, s.handle, s.reported_count, s.reported_at, s.stage_rowid
          FROM {resolved_texts_from("staged", "$locale")} s
          LEFT JOIN known_ids k ON k.retailer_id = s.retailer_id
        )
        -- Of rows with one key (e.g. an id listed twice in a feed or an upload), the latest report wins, then
        -- the first row of the file, then the first staged: explicit, as the order in which the sort meets tied
        -- rows depends on the plan and on whether the stage is committed yet.
        SELECT * EXCLUDE (stage_rowid) FROM cur
        QUALIFY row_number() OVER (PARTITION BY problem_key
                                   ORDER BY reported_at DESC NULLS LAST, sync_id DESC NULLS LAST,
                                            row_number NULLS LAST, stage_rowid) = 1""",
        {"t": tenant_id, "c": catalog_id, "locale": locale},
    )
    existing = "main.catalog_diagnostics d WHERE d.tenant_id = $t AND d.catalog_id = $c"
    row = run(
        con,
        f"""SELECT count(*) FILTER (WHERE c.problem_key NOT IN (SELECT d.problem_key FROM {existing})),
                   count(*) FILTER (WHERE c.problem_key IN (SELECT d.problem_key FROM {existing})),
                   count(*) FILTER (WHERE c.problem_key IN (
                     SELECT d.problem_key FROM {existing} AND d.resolved_at IS NOT NULL AND d.resolved_at <= $now)),
                   count(*) FILTER (WHERE c.level = 'unmapped_item')
            FROM _diag_cur c""",
        p,
    ).fetchone()
    counts.new, counts.seen, counts.reopened, unmapped = (int(v) for v in row) if row else (0, 0, 0, 0)
    # Still present (or back): refresh. Every SET expression reads the row's values before the update. Each
    # statement is skipped when the counts above say it would change no row (the usual hourly poll adds none).
    if counts.seen:
        run(
            con,
            """UPDATE main.catalog_diagnostics d SET
                 product_item_id = coalesce(c.product_item_id, d.product_item_id),
                 level = c.level, priority = c.priority, severity = c.severity, title = c.title,
                 description = c.description, call_to_action = c.call_to_action, cta_source = c.cta_source,
                 message = c.message, row_number = c.row_number, column_number = c.column_number,
                 sync_id = c.sync_id, sync_method = c.sync_method, upload_session_id = c.upload_session_id,
                 handle = c.handle, reported_count = c.reported_count,
                 occurrences = d.occurrences + CASE WHEN $now > d.last_seen_at THEN 1 ELSE 0 END,
                 last_seen_at = greatest(d.last_seen_at, $now),
                 reopened_count = d.reopened_count
                   + CASE WHEN d.resolved_at IS NOT NULL AND d.resolved_at <= $now THEN 1 ELSE 0 END,
                 resolved_at = CASE WHEN d.resolved_at IS NOT NULL AND d.resolved_at <= $now THEN NULL
                                    ELSE d.resolved_at END,
                 is_open = d.resolved_at IS NULL OR d.resolved_at <= $now,
                 updated_at = greatest(d.updated_at, $now)
               FROM _diag_cur c
               WHERE d.tenant_id = $t AND d.catalog_id = $c AND d.problem_key = c.problem_key""",
            p,
        )
    if counts.new:
        run(
            con,
            f"""INSERT INTO main.catalog_diagnostics (tenant_id, catalog_id, problem_key, retailer_id, product_item_id,
                  level, source, error_type, field, priority, severity, title, description, call_to_action,
                  cta_source, message, row_number, column_number, sync_id, sync_method, upload_session_id, handle,
                  reported_count, first_seen_at, last_seen_at, resolved_at, is_open, occurrences, reopened_count,
                  updated_at)
                SELECT tenant_id, catalog_id, problem_key, retailer_id, product_item_id, level, source, error_type,
                       field, priority, severity, title, description, call_to_action, cta_source, message,
                       row_number, column_number, sync_id, sync_method, upload_session_id, handle, reported_count,
                       $now, $now, NULL, true, 1, 0, $now
                FROM _diag_cur c WHERE c.problem_key NOT IN (SELECT d.problem_key FROM {existing})""",
            p,
        )
    # Gone: resolve open problems of the sources polled in this run, within each poll's scope. An item Meta
    # reported without a retailer id (an unmapped_item row) may be any open item of the same source and
    # error type: those stay open until the item is mapped, never resolve silently.
    gone = """d.tenant_id = $t AND d.catalog_id = $c AND d.resolved_at IS NULL AND d.last_seen_at <= $now
             AND d.problem_key NOT IN (SELECT problem_key FROM _diag_cur)
             AND EXISTS (
               SELECT 1 FROM diag_state.staged_sources ss
               WHERE ss.tenant_id = $t AND ss.catalog_id = $c AND ss.source = d.source
                 AND (ss.priorities IS NULL OR list_contains(ss.priorities, d.priority))
                 AND (NOT ss.item_scope OR d.retailer_id IN (
                       SELECT sc.retailer_id FROM diag_state.staged_scope sc
                       WHERE sc.tenant_id = $t AND sc.catalog_id = $c AND sc.source = d.source)))"""
    resolve = f"""UPDATE main.catalog_diagnostics d SET resolved_at = $now, is_open = false,
             updated_at = greatest(d.updated_at, $now)
           WHERE {gone}"""
    if unmapped:
        held = """d.level = 'item' AND EXISTS (
                   SELECT 1 FROM _diag_cur u WHERE u.level = 'unmapped_item' AND u.source = d.source
                     AND u.error_type = d.error_type)"""
        counts.held_unmapped = _count(
            con, f"SELECT count(*) FROM main.catalog_diagnostics d WHERE {gone} AND {held}", p
        )
        resolve += f" AND NOT ({held})"
    # Without an unmapped_item row in the stage nothing is held: the count and the condition are skipped.
    counts.resolved = _count(con, resolve, p)
    run(
        con,
        """INSERT INTO diag_state.poll_log
           SELECT ss.tenant_id, ss.catalog_id, ss.source, $now, 'ok', ss.priorities IS NULL AND NOT ss.item_scope,
                  (SELECT count(*) FROM _diag_cur c WHERE c.source = ss.source), NULL
           FROM diag_state.staged_sources ss WHERE ss.tenant_id = $t AND ss.catalog_id = $c""",
        p,
    )
    clear_stage(con, tenant_id, catalog_id)
    con.execute("DROP TABLE _diag_cur")
    counts.open_total = _count(
        con,
        "SELECT count(*) FROM main.catalog_diagnostics WHERE tenant_id = $t AND catalog_id = $c AND is_open",
        p,
    )
    return counts


def record_poll_failure(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    source: str,
    now: datetime,
    message: str,
) -> None:
    """Log a source whose poll failed (its problems are neither added nor resolved in this run)."""
    con.execute(
        "INSERT INTO diag_state.poll_log VALUES (?, ?, ?, ?, 'failed', false, NULL, ?)",
        [tenant_id, catalog_id, source, now, message[:2000]],
    )


def last_successful_poll(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, source: str = "meta_item_check"
) -> datetime | None:
    """When ``source`` was last polled in full (every priority, every item) without error."""
    row = con.execute(
        "SELECT max(polled_at) FROM diag_state.poll_log WHERE tenant_id = ? AND catalog_id = ? AND source = ? "
        "AND status = 'ok' AND full_scope",
        [tenant_id, catalog_id, source],
    ).fetchone()
    return row[0] if row else None
