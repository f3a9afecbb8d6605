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
from kobi_cpas.sync.state import FEED_ITEMS_FIELDS, STATE_FIELDS, shard_sql
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


def variant_prefixes_sql(ids_sql: str) -> str:
    """SQL: ``(id, prefix)`` for each ``id`` of the SELECT ``ids_sql`` and each id that it is a variant of by
    Kobi's id rule (the old id, then ``_`` or ``-``: ``10024_1_000`` is a variant of ``10024`` and of
    ``10024_1``). The one definition of the rule, for the replace view and for a catalog that already held
    items: join ``prefix`` to the old ids. An equi-join, where testing every new id against every old one costs
    their product (20,000 of each: 14 s; a brand renaming a million SKUs would never finish)."""
    return (
        "SELECT id, unnest(list_transform("
        "list_filter(range(1, length(id) + 1), lambda i: substr(id, i, 1) IN ('_', '-')), "
        f"lambda i: left(id, i - 1))) AS prefix FROM ({ids_sql})"
    )


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
    last_seen: datetime | None = None,
) -> DesiredResult:
    """Bring the tenant's rows of ``sync_state.desired_state`` (under the replace view) to the snapshot in
    ``items_table`` (canonical columns, hashes, ``is_valid``, ``row_number``), writing only the rows that change:
    at a million items a snapshot with 1 % changes rewrites about 1 % of the rows. An active item's values are
    not stored: the caller writes them to feed_items next (and must, before it commits). Appends previous_id
    info issues to ``issues_table``. ``last_seen``: when the last applied snapshot was taken, the last time an
    item that has left the feed since was in it."""
    # Views, not copies: at a million items every copy costs a full pass. The tenant id is a validated
    # registry id ([a-z0-9_-]), safe to inline in a view definition.
    t_lit = sql_str(tenant_id)
    # The stored state of every item; their values (the replace view) are read only for the few items kept in
    # their last version.
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _old AS SELECT * FROM sync_state.desired_state WHERE tenant_id = {t_lit}"
    )
    # Only the first copy of a duplicated id can be valid (the validator flags the others as errors), so the
    # valid rows are unique by id.
    con.execute(f"CREATE OR REPLACE TEMP VIEW _cur AS SELECT * FROM {items_table} WHERE id IS NOT NULL")
    # One full join of the snapshot's valid items with the old rows, narrow, decides what becomes of every item
    # (the ids the snapshot holds only as invalid rows are few). ``in_cur``: the id is in the snapshot at all.
    con.execute("CREATE OR REPLACE TEMP TABLE _bad AS SELECT DISTINCT id FROM _cur WHERE NOT is_valid")
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _pair AS
        SELECT coalesce(c.id, o.id) AS id, c.id IS NOT NULL AS valid, o.id IS NOT NULL AS in_old,
               c.id IS NOT NULL OR b.id IS NOT NULL AS in_cur,
               c.previous_id AS feed_previous_id, c.content_hash AS feed_hash, c.volatile_hash,
               o.status AS old_status, o.content_hash AS old_hash, o.volatile_hash AS old_volatile,
               o.previous_id AS old_previous_id, o.previous_id_source AS old_source, o.first_seen_at, o.removed_at
        FROM (SELECT id, previous_id, content_hash, volatile_hash FROM _cur WHERE is_valid) c
        FULL JOIN (SELECT id, status, content_hash, volatile_hash, previous_id, previous_id_source, first_seen_at,
                          removed_at FROM _old) o ON o.id = c.id
        LEFT JOIN _bad b ON b.id = coalesce(c.id, o.id)"""
    )
    # Links from vanished items to the variants that replace them.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _links AS
        SELECT feed_previous_id AS old_id, id AS new_id, 'feed' AS how FROM _pair
        WHERE valid AND feed_previous_id IS NOT NULL
        UNION ALL
        SELECT v.id, f.id, 'inferred'
        FROM ({variant_prefixes_sql("SELECT id FROM _pair WHERE valid AND NOT in_old AND feed_previous_id IS NULL")}) f
        JOIN (SELECT id FROM _pair WHERE in_old AND NOT in_cur) v ON v.id = f.prefix"""
    )
    # An inferred id must be unambiguous: take the longest matching vanished id.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _inferred AS
        SELECT new_id, arg_max(old_id, length(old_id)) AS old_id FROM _links WHERE how = 'inferred' GROUP BY new_id"""
    )
    # Items whose inferred link points at an original that is back in the snapshot (the link goes).
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _back AS
        SELECT a.id FROM _pair a JOIN _pair b ON b.id = a.old_previous_id AND b.in_cur WHERE a.old_source = 'inferred'"""
    )
    shard = shard_sql(n_shards)
    # A row that stays keeps its stored shard, unless the tenant's shard count changed: then every row is
    # rewritten. A sample tells (a changed count moves about half the items, so a few thousand rows never all
    # keep their shard; a smaller tenant is checked whole).
    (reshard,) = con.execute(
        f"SELECT count(*) > 0 FROM (SELECT id, item_group_id, shard FROM _old LIMIT 4096) WHERE shard <> {shard}"
    ).fetchone()  # type: ignore[misc]
    # What becomes of every item, narrow: its kind in the new replace view and whether its stored row must be
    # rewritten (``write``); rows that neither change nor leave are not touched.
    # An inferred link stays while the variant does and the original stays away: the next snapshot infers
    # nothing (the original left earlier), and dropping the link would change the item and send it again.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _plan AS
        WITH active AS (
          SELECT p.id, p.feed_previous_id, p.feed_hash, p.volatile_hash,
                 coalesce(p.feed_previous_id, i.old_id,
                          CASE WHEN p.old_source = 'inferred' AND bk.id IS NULL THEN p.old_previous_id END)
                   AS previous_id,
                 p.old_status, p.old_hash, p.old_volatile, p.old_source, p.first_seen_at
          FROM _pair p LEFT JOIN _inferred i ON i.new_id = p.id LEFT JOIN _back bk ON bk.id = p.id
          WHERE p.valid
        ),
        old_only AS (
          SELECT p.id, p.old_status,
                 CASE WHEN p.in_cur THEN 'invalid_kept'
                      WHEN l.old_id IS NOT NULL THEN 'replaced'
                      WHEN coalesce(p.removed_at, $now) + to_days(CAST($ret AS INTEGER)) <= $now THEN 'expired'
                      ELSE 'removed_retained' END AS kind
          FROM _pair p LEFT JOIN (SELECT DISTINCT old_id FROM _links) l ON l.old_id = p.id
          WHERE p.in_old AND NOT p.valid
        )
        SELECT id, 'active' AS kind, previous_id,
               CASE WHEN feed_previous_id IS NOT NULL THEN 'feed'
                    WHEN previous_id IS NOT NULL THEN 'inferred' END AS previous_id_source,
               -- The feed's hash covers previous_id as the feed sent it; an inferred link is hashed below.
               CASE WHEN previous_id IS NOT DISTINCT FROM feed_previous_id THEN feed_hash END AS content_hash,
               volatile_hash, old_status, old_hash, old_volatile, old_source, first_seen_at
        FROM active
        UNION ALL BY NAME
        SELECT id, kind, old_status FROM old_only""",
        {"now": now, "ret": retention_days},
    )
    # Only items whose link is not the feed's need their hash again; the join reads every field of the snapshot,
    # so it runs only when there are some (a snapshot without inferred links has none).
    (relinked,) = con.execute(  # type: ignore[misc]
        "SELECT count(*) FROM _plan WHERE kind = 'active' AND content_hash IS NULL"
    ).fetchone()
    if relinked:
        new_hash = content_hash_sql("c", overrides={"previous_id": "p.previous_id"})
        con.execute(
            f"""UPDATE _plan SET content_hash = h.content_hash FROM (
                  SELECT c.id, {new_hash} AS content_hash FROM _cur c JOIN _plan p ON p.id = c.id
                  WHERE c.is_valid AND p.kind = 'active' AND p.content_hash IS NULL) h
                WHERE _plan.id = h.id"""
        )
    con.execute(
        """ALTER TABLE _plan ADD COLUMN write BOOLEAN;
        UPDATE _plan SET write = CASE
          WHEN kind IN ('replaced', 'expired') THEN false
          WHEN $reshard OR old_status IS DISTINCT FROM kind THEN true
          WHEN kind = 'active' THEN content_hash <> old_hash OR volatile_hash <> old_volatile
                                    OR previous_id_source IS DISTINCT FROM old_source
          ELSE false END""",
        {"reshard": bool(reshard)},
    )
    # Whole old rows only for the items kept in their last version that change status (turned invalid, or
    # left the feed), copied before their rows are deleted.
    # Read before the caller rewrites feed_items, where the values of a previously active item are.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _old_w AS
        SELECT o.*, p.kind FROM sync_state.desired_items o JOIN _plan p ON p.id = o.id AND p.write AND p.kind <> 'active'
        WHERE o.tenant_id = {t_lit}"""
    )
    (dropped, replaced, inferred, links) = con.execute(
        """SELECT count(*) FILTER (WHERE kind = 'expired'), count(*) FILTER (WHERE kind = 'replaced'),
                  (SELECT count(*) FROM _inferred), (SELECT count(*) FROM _links)
           FROM _plan"""
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
            WHERE l.how = 'feed' AND l.old_id IN (SELECT id FROM _pair WHERE in_old AND NOT in_cur)""",
            {"t": tenant_id, "s": snapshot_id},
        )
    for table in ("desired_state", "kept_values"):
        con.execute(
            f"""DELETE FROM sync_state.{table} WHERE tenant_id = $t
               AND id IN (SELECT id FROM _plan WHERE write OR kind IN ('replaced', 'expired'))""",
            {"t": tenant_id},
        )
    state_fields = ", ".join(_q(c) for c in STATE_FIELDS)
    # New and changed items, from the feed: their values are those the caller writes to feed_items, so only
    # the state's own fields are stored. last_seen_at stays NULL while an item is in the feed.
    own = [c for c in STATE_FIELDS if c != "previous_id"]  # the link is the plan's, not the feed's
    con.execute(
        f"""INSERT INTO sync_state.desired_state (tenant_id, shard, {", ".join(_q(c) for c in own)}, previous_id,
            content_hash, volatile_hash, status, snapshot_id, first_seen_at, last_seen_at, removed_at,
            previous_id_source, in_feed_items)
        SELECT $t, {shard_sql(n_shards, "c")}, {", ".join(f"c.{_q(c)}" for c in own)},
               p.previous_id, p.content_hash, c.volatile_hash, 'active', $s, coalesce(p.first_seen_at, $now), NULL,
               NULL, p.previous_id_source, true
        FROM _cur c JOIN _plan p ON p.id = c.id AND p.kind = 'active' AND p.write
        WHERE c.is_valid""",
        {"t": tenant_id, "s": snapshot_id, "now": now},
    )
    # Items kept in their last version: turned invalid (as they were), or left the feed (out of stock). Their
    # values go to kept_values, the rest to desired_state.
    kept_fields = ", ".join(
        f"CASE WHEN kind = 'removed_retained' THEN '{OUT_OF_STOCK}' ELSE availability END AS availability"
        if c == "availability"
        else "CASE WHEN kind = 'removed_retained' THEN '0' ELSE quantity_to_sell_on_facebook END "
        "AS quantity_to_sell_on_facebook"
        if c == "quantity_to_sell_on_facebook"
        else _q(c)
        for c in _FIELDS
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kept AS
        SELECT {shard} AS shard, *, {content_hash_sql()} AS content_hash, {volatile_hash_sql()} AS volatile_hash
        FROM (
          SELECT {kept_fields}, previous_id, kind, snapshot_id, first_seen_at, previous_id_source,
                 CASE WHEN kind = 'invalid_kept' THEN NULL
                      WHEN status = 'removed_retained' THEN last_seen_at
                      ELSE coalesce($seen, last_seen_at, $now) END AS last_seen_at,
                 CASE WHEN kind = 'removed_retained' THEN coalesce(removed_at, $now) END AS removed_at
          FROM _old_w)""",
        {"now": now, "seen": last_seen},
    )
    con.execute(
        f"""INSERT INTO sync_state.desired_state (tenant_id, shard, {state_fields}, content_hash, volatile_hash,
            status, snapshot_id, first_seen_at, last_seen_at, removed_at, previous_id_source, in_feed_items)
        SELECT $t, shard, {state_fields}, content_hash, volatile_hash, kind, snapshot_id, first_seen_at,
               last_seen_at, removed_at, previous_id_source, false
        FROM _kept""",
        {"t": tenant_id},
    )
    values = ", ".join(_q(c) for c in FEED_ITEMS_FIELDS)
    con.execute(
        f"INSERT INTO sync_state.kept_values (tenant_id, id, {values}) SELECT $t, id, {values} FROM _kept",
        {"t": tenant_id},
    )
    active, invalid_kept, retained = con.execute(
        """SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'invalid_kept'),
                  count(*) FILTER (WHERE status = 'removed_retained')
           FROM sync_state.desired_state WHERE tenant_id = $t""",
        {"t": tenant_id},
    ).fetchone()  # type: ignore[misc]
    for t in ("_bad", "_pair", "_links", "_inferred", "_back", "_plan", "_old_w", "_kept"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    for v in ("_old", "_cur"):
        con.execute(f"DROP VIEW IF EXISTS {v}")
    return DesiredResult(
        *(int(x or 0) for x in (active, invalid_kept, retained, dropped, replaced, inferred))
    )
