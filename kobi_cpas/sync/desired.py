"""Build the replace view (``sync_state.desired_items``) of a tenant from its newest snapshot, set-based.

Rules (Meta's advice in the Catalog Integration guide):
- a valid item in the source is sent as it is (``active``);
- an item that turned invalid keeps its last valid version and is flagged (``invalid_kept``);
- an item that left the source stays in the replace feed as ``out of stock`` (quantity 0) for the tenant's
  retention period, then is dropped (``removed_retained``) — item learnings matter for ads;
- variants (scenario 3): an item replaced by variants is dropped only when at least one variant links to it
  through ``previous_id``. The link comes from the feed, or is *inferred*: a new id that starts with a vanished
  id followed by ``_`` or ``-`` (``10024`` -> ``10024_1_000``). Both are reported as info issues.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.feeds.hashing import content_hash_sql, volatile_hash_sql
from kobi_cpas.sync.state import shard_sql
from kobi_cpas.warehouse.sql import sql_str

_FIELDS = [c for c in COLUMNS if c not in ("previous_id",)]
OUT_OF_STOCK = "out of stock"


@dataclass(frozen=True)
class DesiredResult:
    active: int
    invalid_kept: int
    removed_retained: int
    dropped_after_retention: int
    replaced_by_variants: int
    previous_id_inferred: int


def variant_of_sql(new_id: str, old_id: str) -> str:
    """SQL: ``new_id`` is a variant of ``old_id`` by Kobi's id rule (the old id, then ``_`` or ``-``:
    ``10024`` -> ``10024_1_000``). The one definition of the rule, for the replace view and for a catalog that
    already held items."""
    return f"(starts_with({new_id}, {old_id} || '_') OR starts_with({new_id}, {old_id} || '-'))"


def _q(c: str) -> str:
    return f'"{c}"'


def build_desired(
    con: duckdb.DuckDBPyConnection,
    *,
    tenant_id: str,
    snapshot_id: str,
    items_table: str,
    now: datetime,
    retention_days: int,
    n_shards: int,
    issues_table: str | None = None,
) -> DesiredResult:
    """Replace the tenant's rows of ``sync_state.desired_items`` from ``items_table`` (the snapshot's items:
    canonical columns, ``is_valid``, ``row_number``). Appends previous_id info issues to ``issues_table``."""
    p = {"t": tenant_id, "s": snapshot_id, "now": now, "ret": retention_days}
    # Views, not copies: at a million items every copy costs a full pass. The tenant id is a validated
    # registry id ([a-z0-9_-]), safe to inline in a view definition.
    t_lit = sql_str(tenant_id)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _old AS SELECT * FROM sync_state.desired_items WHERE tenant_id = {t_lit}"
    )
    # Only the first copy of a duplicated id can be valid (the validator flags the others as errors), so the
    # valid rows are unique by id.
    con.execute(f"CREATE OR REPLACE TEMP VIEW _cur AS SELECT * FROM {items_table} WHERE id IS NOT NULL")
    con.execute("CREATE OR REPLACE TEMP TABLE _cur_ids AS SELECT DISTINCT id FROM _cur")
    # Links from vanished items to the variants that replace them.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _links AS
        WITH vanished AS (SELECT o.id FROM _old o ANTI JOIN _cur_ids c USING (id)),
             fresh AS (SELECT c.id, c.previous_id FROM _cur c ANTI JOIN _old o USING (id) WHERE c.is_valid)
        SELECT previous_id AS old_id, id AS new_id, 'feed' AS how FROM _cur WHERE is_valid AND previous_id IS NOT NULL
        UNION ALL
        SELECT v.id, f.id, 'inferred'
        FROM fresh f JOIN vanished v
          ON f.id <> v.id AND {variant_of_sql("f.id", "v.id")}
        WHERE f.previous_id IS NULL"""
    )
    # An inferred id must be unambiguous: take the longest matching vanished id.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _inferred AS
        SELECT new_id, arg_max(old_id, length(old_id)) AS old_id FROM _links WHERE how = 'inferred' GROUP BY new_id"""
    )
    # What the new rows need from the old ones, copied before they are deleted (the replace view's rows are
    # inserted straight from the query below, without a temporary copy of a million wide rows): for every old
    # item the few columns an active item keeps, and whole rows only for the items kept in their last version
    # (turned invalid, or left the feed).
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _old_k AS SELECT id, first_seen_at, previous_id, previous_id_source FROM _old"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _old_x AS SELECT * FROM _old o ANTI JOIN _cur c ON c.id = o.id AND c.is_valid"
    )
    shard = shard_sql(n_shards)
    field_list = ", ".join(_q(c) for c in _FIELDS)
    cur_fields = ", ".join(f"c.{_q(c)}" for c in _FIELDS)
    old_fields = ", ".join(f"o.{_q(c)}" for c in _FIELDS)
    removed_fields = ", ".join(
        f"'{OUT_OF_STOCK}' AS availability"
        if c == "availability"
        else "'0' AS quantity_to_sell_on_facebook"
        if c == "quantity_to_sell_on_facebook"
        else f"o.{_q(c)}"
        for c in _FIELDS
    )
    new_rows = f"""
        WITH active AS (
          SELECT {cur_fields}, coalesce(c.previous_id, i.old_id, o_inferred) AS previous_id,
                 CASE WHEN c.previous_id IS NOT NULL THEN 'feed'
                      WHEN i.old_id IS NOT NULL OR o_inferred IS NOT NULL THEN 'inferred' END AS previous_id_source,
                 'active' AS status, $s AS snapshot_id, coalesce(o.first_seen_at, $now) AS first_seen_at,
                 $now AS last_seen_at, NULL::TIMESTAMPTZ AS removed_at
          -- An inferred link stays while the variant does and the original stays away: the next snapshot infers
          -- nothing (the original left earlier), and dropping the link would change the item and send it again.
          FROM _cur c LEFT JOIN _inferred i ON i.new_id = c.id LEFT JOIN _old_k o ON o.id = c.id,
               LATERAL (
                 SELECT CASE WHEN o.previous_id_source = 'inferred' AND o.previous_id NOT IN (SELECT id FROM _cur_ids)
                             THEN o.previous_id END AS o_inferred
               )
          WHERE c.is_valid
        ),
        invalid_kept AS (
          SELECT {old_fields}, o.previous_id, o.previous_id_source, 'invalid_kept' AS status, o.snapshot_id,
                 o.first_seen_at, $now AS last_seen_at, NULL::TIMESTAMPTZ AS removed_at
          FROM _old_x o
          WHERE o.id IN (SELECT id FROM _cur_ids)
        ),
        retained AS (
          SELECT {removed_fields}, o.previous_id, o.previous_id_source, 'removed_retained' AS status, o.snapshot_id,
                 o.first_seen_at, o.last_seen_at, coalesce(o.removed_at, $now) AS removed_at
          FROM _old_x o
          WHERE o.id NOT IN (SELECT id FROM _cur_ids)
            AND o.id NOT IN (SELECT old_id FROM _links WHERE old_id IS NOT NULL)
            AND coalesce(o.removed_at, $now) + to_days(CAST($ret AS INTEGER)) > $now
        ),
        u AS (SELECT * FROM active UNION ALL BY NAME SELECT * FROM invalid_kept UNION ALL BY NAME SELECT * FROM retained)
        SELECT $t AS tenant_id, {shard} AS shard, {field_list}, previous_id,
               {content_hash_sql()} AS content_hash, {volatile_hash_sql()} AS volatile_hash,
               status, snapshot_id, first_seen_at, last_seen_at, removed_at, previous_id_source
        FROM u"""
    # The items that leave the replace view: gone from the feed past their retention, or replaced by variants.
    dropped, replaced, inferred, links = con.execute(
        """SELECT
          (SELECT count(*) FROM _old_x o WHERE o.id NOT IN (SELECT id FROM _cur_ids)
              AND o.id NOT IN (SELECT old_id FROM _links WHERE old_id IS NOT NULL)
              AND coalesce(o.removed_at, $now) + to_days(CAST($ret AS INTEGER)) <= $now),
          (SELECT count(DISTINCT o.id) FROM _old_x o JOIN _links l ON l.old_id = o.id
              WHERE o.id NOT IN (SELECT id FROM _cur_ids)),
          (SELECT count(*) FROM _inferred),
          (SELECT count(*) FROM _links)""",
        {"now": now, "ret": retention_days},
    ).fetchone()  # type: ignore[misc]
    # Both kinds of issue come from _links (_inferred is made from it): without links there is nothing to report.
    if issues_table and links:
        con.execute(
            f"""INSERT INTO {issues_table} (tenant_id, snapshot_id, retailer_id, row_number, field, severity, code, message, call_to_action)
            SELECT $t, $s, i.new_id, c.row_number, 'previous_id', 'info', 'previous_id_inferred',
                   'previous_id inferred as ' || i.old_id || ': ' || i.old_id || ' left the feed and ' || i.new_id
                   || ' starts with it, so Meta is told the variant replaces it (ad learnings carry over)',
                   'Check the link; to set it yourself, add a previous_id column with ' || i.old_id || ' on this variant'
            FROM _inferred i JOIN _cur c ON c.id = i.new_id AND c.is_valid
            UNION ALL
            SELECT $t, $s, l.new_id, c.row_number, 'previous_id', 'info', 'previous_id_from_feed',
                   l.new_id || ' replaces ' || l.old_id || ' (previous_id from the feed); ' || l.old_id
                   || ' leaves the catalog with its learnings carried over', NULL
            FROM _links l JOIN _cur c ON c.id = l.new_id AND c.is_valid
            WHERE l.how = 'feed' AND l.old_id IN (SELECT id FROM _old_k) AND l.old_id NOT IN (SELECT id FROM _cur_ids)""",
            {"t": tenant_id, "s": snapshot_id},
        )
    con.execute("DELETE FROM sync_state.desired_items WHERE tenant_id = $t", {"t": tenant_id})
    cols = ", ".join(
        [
            "tenant_id",
            "shard",
            *(_q(c) for c in COLUMNS),
            "content_hash",
            "volatile_hash",
            "status",
            "snapshot_id",
            "first_seen_at",
            "last_seen_at",
            "removed_at",
            "previous_id_source",
        ]
    )
    con.execute(f"INSERT INTO sync_state.desired_items ({cols}) SELECT {cols} FROM ({new_rows})", p)
    active, invalid_kept, retained = con.execute(
        """SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'invalid_kept'),
                  count(*) FILTER (WHERE status = 'removed_retained')
           FROM sync_state.desired_items WHERE tenant_id = $t""",
        {"t": tenant_id},
    ).fetchone()  # type: ignore[misc]
    for t in ("_cur_ids", "_links", "_inferred", "_old_k", "_old_x"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    for v in ("_old", "_cur"):
        con.execute(f"DROP VIEW IF EXISTS {v}")
    return DesiredResult(
        *(int(x or 0) for x in (active, invalid_kept, retained, dropped, replaced, inferred))
    )
