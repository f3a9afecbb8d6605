"""The analyst table ``catalog_item_state``: per tenant and item, what the next replace feed sends and what Kobi
believes Meta holds, brought to the sync state after every snapshot and sync, with the delta counts of the same
evaluation. Items adopted from a brand's existing catalog that the feed does not send have rows too (their change
is NULL: Kobi's feeds never send them)."""

from __future__ import annotations

import duckdb

from kobi_cpas.registry import Tenant
from kobi_cpas.sync.adopted import KEEP as ADOPTED_KEEP
from kobi_cpas.sync.adopted import item_state_rows_sql
from kobi_cpas.sync.delta import DeltaCounts, change_sql, delta_counts_from
from kobi_cpas.sync.tables import CATALOG_ITEM_STATE


def refresh_item_state(con: duckdb.DuckDBPyConnection, tenant: Tenant) -> int:
    """Bring the analyst table ``catalog_item_state`` of one tenant to the sync state; returns how many items
    the sync state holds."""
    counts = refresh_item_state_and_delta(con, tenant)
    return counts.total + counts.dropped


def _item_state_sql(adopted: bool = False) -> str:
    """SQL (params $t, $ret and, with ``adopted``, $keep): the tenant's rows of ``catalog_item_state`` from the
    sync state and, with ``adopted``, the adopted items."""
    # Most tenants have no adopted items: their query would still build two hash tables of every id.
    adopted_rows = f"UNION ALL BY NAME {item_state_rows_sql()}" if adopted else ""
    return f"""
        WITH d AS (SELECT id, shard, item_group_id, status, availability, price, previous_id, previous_id_source,
                          removed_at, content_hash, volatile_hash
                   FROM sync_state.desired_state WHERE tenant_id = $t),
             m AS (SELECT id, shard, content_hash, volatile_hash, method, synced_at
                   FROM sync_state.meta_items WHERE tenant_id = $t),
             f AS (SELECT DISTINCT id, content_hash, volatile_hash FROM sync_state.inflight_items
                   WHERE tenant_id = $t)
        SELECT $t AS tenant_id, coalesce(d.id, m.id) AS retailer_id, coalesce(d.shard, m.shard) AS shard,
               d.item_group_id, d.status AS desired_status, {change_sql()} AS change, f.id IS NOT NULL AS in_flight,
               d.availability, d.price, d.previous_id, d.previous_id_source, m.method AS meta_method,
               m.synced_at AS meta_synced_at, d.removed_at, d.removed_at + to_days(CAST($ret AS INTEGER)) AS drop_after,
               NULL::TIMESTAMPTZ AS deleted_at
        FROM d FULL JOIN m ON m.id = d.id
        LEFT JOIN f ON f.id = d.id AND f.content_hash = d.content_hash AND f.volatile_hash = d.volatile_hash
        {adopted_rows}"""


def refresh_item_state_and_delta(con: duckdb.DuckDBPyConnection, tenant: Tenant) -> DeltaCounts:
    """Bring ``catalog_item_state`` of one tenant to the sync state, rewriting only the rows that differ, and
    count the delta from the table it leaves (the state query is planned and run once)."""
    cols = ", ".join(CATALOG_ITEM_STATE.column_names)
    (adopted,) = con.execute(
        "SELECT count(*) > 0 FROM sync_state.adopted_items WHERE tenant_id = ? AND claimed_at IS NULL",
        [tenant.tenant_id],
    ).fetchone()  # type: ignore[misc]
    p = {"t": tenant.tenant_id, "ret": tenant.sync.retention_days}
    if adopted:
        p["keep"] = tenant.sync.adopted_items == ADOPTED_KEEP
    # Only the rows that differ are rewritten (after a snapshot or a sync most of a big catalog's rows stay):
    # one pass over the state, matched on id and row hash against the table, keeps only the rows that differ,
    # new ones whole (``retailer_id``) and old ones by id (``old_id``). Not dropped on an error: a statement
    # after a failed one in the caller's transaction would fail too and hide the error; temp tables go with the
    # connection.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kobi_state_old AS
        SELECT retailer_id, hash({cols}) AS row_hash FROM main.catalog_item_state WHERE tenant_id = $t""",
        {"t": tenant.tenant_id},
    )
    (stored,) = con.execute("SELECT count(*) FROM _kobi_state_old").fetchone()  # type: ignore[misc]
    if stored:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _kobi_state_diff AS
            SELECT n.*, o.retailer_id AS old_id
            FROM (SELECT {cols}, hash({cols}) AS row_hash FROM ({_item_state_sql(adopted=adopted)})) n
            FULL JOIN _kobi_state_old o ON o.retailer_id = n.retailer_id AND o.row_hash = n.row_hash
            WHERE n.retailer_id IS NULL OR o.retailer_id IS NULL""",
            p,
        )
        con.execute(
            """DELETE FROM main.catalog_item_state WHERE tenant_id = $t
               AND retailer_id IN (SELECT old_id FROM _kobi_state_diff WHERE old_id IS NOT NULL)""",
            {"t": tenant.tenant_id},
        )
        con.execute(
            f"INSERT INTO main.catalog_item_state ({cols}) SELECT {cols} FROM _kobi_state_diff "
            "WHERE retailer_id IS NOT NULL"
        )
        con.execute("DROP TABLE _kobi_state_diff")
    else:
        # No rows yet (a tenant's first snapshot): every row is new, written without the diff.
        con.execute(
            f"INSERT INTO main.catalog_item_state ({cols}) SELECT {cols} FROM ({_item_state_sql(adopted=adopted)})",
            p,
        )
    # The counts from the table: a retention flip is an item that left the feed whose version at Meta differs.
    rows = con.execute(
        """SELECT change, count(*), count(*) FILTER (WHERE in_flight),
                  count(*) FILTER (WHERE desired_status = 'removed_retained' AND change IN ('changed', 'volatile_only'))
           FROM main.catalog_item_state WHERE tenant_id = $t AND change IS NOT NULL GROUP BY change""",
        {"t": tenant.tenant_id},
    ).fetchall()
    con.execute("DROP TABLE _kobi_state_old")
    return delta_counts_from(rows)
