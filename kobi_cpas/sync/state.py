"""Internal sync state kept in the work database (schema ``sync_state``; never published).

- ``desired_items``: the *replace view* per tenant — exactly what the next replace feed sends. Every update
  feed and Batch API request is computed from it, so values never flap between methods. A view over
  ``desired_state`` (status, hashes, links, dates and the few fields the item state reads, per item),
  ``main.feed_items`` and ``kept_values``: an active item's values are its feed_items row (``in_feed_items``),
  stored once, not copied; an item kept in its last version (turned invalid, or left the feed) has its own in
  ``kept_values``. Writers write both tables; readers of values read the view.
- ``meta_items``: what Kobi believes Meta holds per item (hashes last confirmed by Meta, method, time).
- ``inflight_items``: items of syncs that Meta has not confirmed yet (upload sessions, batch handles), so a
  re-run never sends them twice and a failed sync loses nothing.
- ``feeds``: the Meta product feed id Kobi owns per tenant and shard.
- ``source_state``: the last fetched feed source (ETag, Last-Modified, sha256) per tenant.
- ``hash_scheme``: the item-hash definition the hashes above were computed with (see feeds/hashing.py);
  :func:`rehash_state` migrates them when it changes.
"""

from __future__ import annotations

import hashlib

import duckdb

from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.feeds.hashing import HASH_TYPE, content_hash_sql, hash_scheme, volatile_hash_sql
from kobi_cpas.warehouse.schema import DataMigration

ITEM_COLUMNS: tuple[str, ...] = COLUMNS  # canonical Meta fields, "id" is the retailer id
# Fields every desired_state row stores, also when feed_items holds its values: the link is the desired one
# (it may be inferred), and the item state reads the others for every item after each sync, where a join with
# the wide feed_items would cost a pass over it.
STATE_FIELDS: tuple[str, ...] = ("id", "previous_id", "item_group_id", "availability", "price")
# The fields an active item takes from its feed_items row, and a kept item from its kept_values row.
FEED_ITEMS_FIELDS: tuple[str, ...] = tuple(c for c in ITEM_COLUMNS if c not in STATE_FIELDS)
# desired_state columns besides the fields, in table order.
_STATE_TAIL = (
    "content_hash",
    "volatile_hash",
    "status",
    "snapshot_id",
    "first_seen_at",
    "last_seen_at",
    "removed_at",
    "previous_id_source",
)
DESIRED_STATE_COLUMNS: tuple[str, ...] = ("tenant_id", "shard", *STATE_FIELDS, *_STATE_TAIL, "in_feed_items")


def _desired_state_ddl(name: str) -> str:
    # No column for the other fields: a million active rows with 26 NULL columns cost a third of their insert.
    fields = ",\n  ".join(f'"{c}" VARCHAR' for c in STATE_FIELDS)
    return f"""CREATE TABLE IF NOT EXISTS {name} (
  tenant_id VARCHAR NOT NULL,
  shard INTEGER NOT NULL,
  {fields},
  content_hash UBIGINT NOT NULL,
  volatile_hash UBIGINT NOT NULL,
  status VARCHAR NOT NULL,             -- active | invalid_kept | removed_retained
  snapshot_id VARCHAR,                 -- snapshot the values came in (an unchanged item keeps its row)
  first_seen_at TIMESTAMPTZ,
  last_seen_at TIMESTAMPTZ,            -- last time the item was in the source; NULL while it is
  removed_at TIMESTAMPTZ,              -- first time it was missing from the source
  previous_id_source VARCHAR,          -- feed | inferred | NULL
  in_feed_items BOOLEAN NOT NULL DEFAULT false  -- the values are the item's feed_items row (else kept_values)
)"""


DDL = (
    "CREATE SCHEMA IF NOT EXISTS sync_state",
    _desired_state_ddl("sync_state.desired_state"),
    # The values of the items not in feed_items (kept in their last version), one row per such desired_state row.
    "CREATE TABLE IF NOT EXISTS sync_state.kept_values (tenant_id VARCHAR NOT NULL, id VARCHAR NOT NULL, "
    + ", ".join(f'"{c}" VARCHAR' for c in FEED_ITEMS_FIELDS)
    + ")",
    # A field added to the canonical list reaches a work database made before it (NULL until the feed sends it).
    *(
        f'ALTER TABLE sync_state.kept_values ADD COLUMN IF NOT EXISTS "{c}" VARCHAR'
        for c in FEED_ITEMS_FIELDS
    ),
    """CREATE TABLE IF NOT EXISTS sync_state.meta_items (
  tenant_id VARCHAR NOT NULL,
  id VARCHAR NOT NULL,
  shard INTEGER NOT NULL,
  content_hash UBIGINT NOT NULL,
  volatile_hash UBIGINT NOT NULL,
  method VARCHAR NOT NULL,
  sync_id VARCHAR NOT NULL,
  synced_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS sync_state.inflight_items (
  sync_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  id VARCHAR NOT NULL,
  shard INTEGER NOT NULL,
  method VARCHAR NOT NULL,
  row_number BIGINT,
  content_hash UBIGINT NOT NULL,
  volatile_hash UBIGINT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS sync_state.feeds (
  tenant_id VARCHAR NOT NULL,
  shard INTEGER NOT NULL,
  feed_id VARCHAR NOT NULL,
  feed_name VARCHAR,
  created_at TIMESTAMPTZ
)""",
    """CREATE TABLE IF NOT EXISTS sync_state.source_state (
  tenant_id VARCHAR NOT NULL,
  etag VARCHAR,
  last_modified VARCHAR,
  sha256 VARCHAR,
  fetched_at TIMESTAMPTZ,
  snapshot_id VARCHAR
)""",
    "CREATE TABLE IF NOT EXISTS sync_state.hash_scheme (scheme VARCHAR NOT NULL)",
    # Items a brand's catalog held before Kobi's first upload that the feed does not send: marked out of stock
    # (Batch API) at the confirmed first upload, kept for the tenant's retention, then deleted by a Batch API
    # DELETE (sync/adopted.py) unless the registry says keep.
    """CREATE TABLE IF NOT EXISTS sync_state.adopted_items (
  tenant_id VARCHAR NOT NULL,
  retailer_id VARCHAR NOT NULL,
  adopted_at TIMESTAMPTZ NOT NULL,
  run_id VARCHAR,
  handle VARCHAR,                      -- the items_batch handle that marked it out of stock
  claimed_at TIMESTAMPTZ,              -- the feed sent the id again: Kobi's own item since, never deleted as adopted
  deleted_at TIMESTAMPTZ,              -- Meta took Kobi's Batch API DELETE of it (retention passed)
  delete_run_id VARCHAR,
  delete_handle VARCHAR,
  delete_error VARCHAR,                -- why Meta refused the DELETE (sent again by the next replace)
  held_at TIMESTAMPTZ                  -- due, but the deletion guard holds the DELETE until a person confirms
)""",
    # Work databases made before adopted items followed the retention.
    *(
        f"ALTER TABLE sync_state.adopted_items ADD COLUMN IF NOT EXISTS {c} {t}"
        for c, t in (
            ("claimed_at", "TIMESTAMPTZ"),
            ("deleted_at", "TIMESTAMPTZ"),
            ("delete_run_id", "VARCHAR"),
            ("delete_handle", "VARCHAR"),
            ("delete_error", "VARCHAR"),
            ("held_at", "TIMESTAMPTZ"),
        )
    ),
)


def _desired_view_sql() -> str:
    fields = ", ".join(
        f'd."{c}"'
        if c in STATE_FIELDS
        else f'CASE WHEN d.in_feed_items THEN f."{c}" ELSE k."{c}" END AS "{c}"'
        for c in ITEM_COLUMNS
    )
    tail = ", ".join(f"d.{c}" for c in _STATE_TAIL)
    return f"""CREATE OR REPLACE VIEW sync_state.desired_items AS
    SELECT d.tenant_id, d.shard, {fields}, {tail}
    FROM sync_state.desired_state d
    LEFT JOIN main.feed_items f ON d.in_feed_items AND f.tenant_id = d.tenant_id AND f.retailer_id = d.id
    LEFT JOIN sync_state.kept_values k ON NOT d.in_feed_items AND k.tenant_id = d.tenant_id AND k.id = d.id"""


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'sync_state' AND table_name = ?",
            [table],
        ).fetchall()
    }


def _store(con: duckdb.DuckDBPyConnection, rows_sql: str, have: set[str]) -> None:
    """Write rows of an older layout (``rows_sql``: its columns ``have`` among the fields and the tail, and
    ``own``: whether the row keeps its own values) to ``desired_state`` and ``kept_values``."""
    state = ", ".join(f'"{c}"' if c in have else f'NULL AS "{c}"' for c in DESIRED_STATE_COLUMNS[:-1])
    con.execute(
        f"INSERT INTO sync_state.desired_state ({', '.join(DESIRED_STATE_COLUMNS)}) "
        f"SELECT {state}, NOT own FROM ({rows_sql})"
    )
    values = ", ".join(f'"{c}"' for c in FEED_ITEMS_FIELDS if c in have)
    if values:
        con.execute(
            f"INSERT INTO sync_state.kept_values (tenant_id, id, {values}) "
            f"SELECT tenant_id, id, {values} FROM ({rows_sql}) WHERE own"
        )


def desired_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Create the replace view over ``desired_state``, ``feed_items`` and ``kept_values``, moving the rows of an
    older layout first: ``desired_items`` a table (every value copied: an active row whose values equal its
    feed_items row keeps them there only), or ``desired_state`` with a column per field."""
    (kind,) = con.execute(
        "SELECT max(table_type) FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = 'sync_state' AND table_name = 'desired_items'"
    ).fetchone()  # type: ignore[misc]
    if kind == "BASE TABLE":
        # One pass (an UPDATE of every column of a million rows took 24 s): an active row whose values equal
        # its feed_items row gives them up, any other keeps its own.
        have = _columns(con, "desired_items")
        same = (
            " AND ".join(f'o."{c}" IS NOT DISTINCT FROM f."{c}"' for c in FEED_ITEMS_FIELDS if c in have)
            or "true"
        )
        _store(
            con,
            f"""SELECT o.*, NOT coalesce(o.status = 'active' AND f.retailer_id IS NOT NULL AND {same}, false) AS own
            FROM sync_state.desired_items o
            LEFT JOIN main.feed_items f ON f.tenant_id = o.tenant_id AND f.retailer_id = o.id""",
            have,
        )
        con.execute("DROP TABLE sync_state.desired_items")
    have = _columns(con, "desired_state")
    if have - set(DESIRED_STATE_COLUMNS):
        # A column per field: the values of the rows not in feed_items move to kept_values, and the table is
        # made again without those columns (in the DDL's order, which the re-hash relies on).
        con.execute("DROP VIEW IF EXISTS sync_state.desired_items")
        con.execute("ALTER TABLE sync_state.desired_state RENAME TO desired_state_wide")
        con.execute(_desired_state_ddl("sync_state.desired_state"))
        _store(con, "SELECT *, NOT in_feed_items AS own FROM sync_state.desired_state_wide", have)
        con.execute("DROP TABLE sync_state.desired_state_wide")
    con.execute(_desired_view_sql())


# The layout's version: its view's definition (a changed definition is created again).
LAYOUT_MIGRATION = DataMigration(
    "sync_state_desired_layout",
    lambda con: hashlib.sha256(_desired_view_sql().encode()).hexdigest()[:12],
    desired_layout,
)

_HASHED_TABLES = ("desired_state", "meta_items", "inflight_items")


def rehash_state(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the stored item hashes to the current :func:`hash_scheme` (after a DuckDB upgrade changed
    ``hash()``, a field was added, or from the older md5 hex hashes).

    The replace view keeps every value, so the desired hashes are recomputed. Meta's side is known only by hash:
    an item whose stored hash equalled its desired hash (in sync) gets the new desired hash, so nothing is
    re-sent because of the migration; any other item gets a value that differs from it (still pending).
    In-flight items are mapped the same way, so their confirmation still lands.
    """
    scheme = hash_scheme(con)
    row = con.execute("SELECT max(scheme) FROM sync_state.hash_scheme").fetchone()
    if row and row[0] == scheme:
        return
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kobi_rehash AS
        SELECT tenant_id, id, content_hash AS old_c, volatile_hash AS old_v,
               {content_hash_sql()} AS new_c, {volatile_hash_sql()} AS new_v
        FROM sync_state.desired_items
        QUALIFY row_number() OVER (PARTITION BY tenant_id, id) = 1"""
    )

    def mapped(col: str, old: str, new: str) -> str:
        # xor 1: differs from the new desired hash, so the delta keeps the item pending.
        return (
            f"CASE WHEN r.id IS NULL THEN 0::{HASH_TYPE} WHEN x.{col} = r.{old} THEN r.{new} "
            f"ELSE xor(r.{new}, 1::{HASH_TYPE}) END"
        )

    for table in _HASHED_TABLES:
        if table == "desired_state":
            c, v = "r.new_c", "r.new_v"
        else:
            c, v = mapped("content_hash", "old_c", "new_c"), mapped("volatile_hash", "old_v", "new_v")
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _kobi_rehashed AS
            SELECT x.* REPLACE ({c} AS content_hash, {v} AS volatile_hash)
            FROM sync_state.{table} x LEFT JOIN _kobi_rehash r ON r.tenant_id = x.tenant_id AND r.id = x.id"""
        )
        # Recreate from the DDL: the stored hashes may also have an older column type.
        con.execute(f"DROP TABLE sync_state.{table}")
        con.execute(next(d for d in DDL if f"sync_state.{table} (" in d))
        con.execute(f"INSERT INTO sync_state.{table} SELECT * FROM _kobi_rehashed")
    con.execute("DROP TABLE _kobi_rehashed")
    con.execute("DROP TABLE _kobi_rehash")
    con.execute(_desired_view_sql())  # a view keeps the column types of its tables when it was created
    # The analyst copy of the latest snapshot holds the same normalised values: recompute its hashes too
    # (the warehouse migration has already converted their column type; otherwise they would stay NULL
    # until the feed changes).
    has_feed_items = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'feed_items'"
    ).fetchone()
    if has_feed_items and has_feed_items[0]:
        con.execute(
            f"""UPDATE main.feed_items f SET content_hash = x.c, volatile_hash = x.v
            FROM (SELECT r, {content_hash_sql()} AS c, {volatile_hash_sql()} AS v
                  FROM (SELECT rowid AS r, *, retailer_id AS id FROM main.feed_items)) x
            WHERE f.rowid = x.r"""
        )
    con.execute("DELETE FROM sync_state.hash_scheme")
    con.execute("INSERT INTO sync_state.hash_scheme VALUES (?)", [scheme])


DATA_MIGRATION = DataMigration("sync_state_item_hashes", hash_scheme, rehash_state)


def shard_sql(n_shards: int, qualifier: str = "") -> str:
    """Stable shard of an item: md5 of item_group_id (or id when ungrouped), so variants stay together."""
    q = f"{qualifier}." if qualifier else ""
    if n_shards <= 1:
        return "0"
    return f"(('0x' || substr(md5(coalesce({q}item_group_id, {q}id)), 1, 8))::UBIGINT % {int(n_shards)})::INTEGER"
