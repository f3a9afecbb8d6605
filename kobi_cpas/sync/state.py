"""Internal sync state kept in the work database (schema ``sync_state``; never published).

- ``desired_items``: the *replace view* per tenant — exactly what the next replace feed sends. Every update
  feed and Batch API request is computed from it, so values never flap between methods.
- ``meta_items``: what Kobi believes Meta holds per item (hashes last confirmed by Meta, method, time).
- ``inflight_items``: items of syncs that Meta has not confirmed yet (upload sessions, batch handles), so a
  re-run never sends them twice and a failed sync loses nothing.
- ``feeds``: the Meta product feed id Kobi owns per tenant and shard.
- ``source_state``: the last fetched feed source (ETag, Last-Modified, sha256) per tenant.
"""

from __future__ import annotations

from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.warehouse.tables import register_internal_ddl

ITEM_COLUMNS: tuple[str, ...] = COLUMNS  # canonical Meta fields, "id" is the retailer id
_item_cols_ddl = ",\n  ".join(f'"{c}" VARCHAR' for c in ITEM_COLUMNS)

DDL = (
    "CREATE SCHEMA IF NOT EXISTS sync_state",
    f"""CREATE TABLE IF NOT EXISTS sync_state.desired_items (
  tenant_id VARCHAR NOT NULL,
  shard INTEGER NOT NULL,
  {_item_cols_ddl},
  content_hash VARCHAR NOT NULL,
  volatile_hash VARCHAR NOT NULL,
  status VARCHAR NOT NULL,             -- active | invalid_kept | removed_retained
  snapshot_id VARCHAR,                 -- snapshot the values come from
  first_seen_at TIMESTAMPTZ,
  last_seen_at TIMESTAMPTZ,            -- last time the item was in the source
  removed_at TIMESTAMPTZ,              -- first time it was missing from the source
  previous_id_source VARCHAR           -- feed | inferred | NULL
)""",
    """CREATE TABLE IF NOT EXISTS sync_state.meta_items (
  tenant_id VARCHAR NOT NULL,
  id VARCHAR NOT NULL,
  shard INTEGER NOT NULL,
  content_hash VARCHAR NOT NULL,
  volatile_hash VARCHAR NOT NULL,
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
  content_hash VARCHAR NOT NULL,
  volatile_hash VARCHAR NOT NULL
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
)

register_internal_ddl(*DDL)


def shard_sql(n_shards: int, qualifier: str = "") -> str:
    """Stable shard of an item: md5 of item_group_id (or id when ungrouped), so variants stay together."""
    q = f"{qualifier}." if qualifier else ""
    if n_shards <= 1:
        return "0"
    return f"(('0x' || substr(md5(coalesce({q}item_group_id, {q}id)), 1, 8))::UBIGINT % {int(n_shards)})::INTEGER"
