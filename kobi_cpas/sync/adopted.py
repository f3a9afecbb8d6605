"""Items adopted from a brand's existing catalog follow the tenant's retention, like items that leave Kobi's feed.

At the confirmed first upload to a catalog that already held items (``existing_catalog.py``), the existing items
the feed does not send are marked out of stock and recorded in ``sync_state.adopted_items``. From their adoption
day they are kept out of stock for ``sync.retention_days``; once that has passed (never on the adoption day
itself, whatever the retention) the daily replace deletes them at Meta with a Batch API ``DELETE`` — Kobi's
replace feed never held them, so its upload cannot. Meta's own Catalog Integration guide: "If deletion is needed
(for instance, after 3 months of the item no longer being sold)", and the Batch API's request
``{"method": "DELETE", "data": {"id": <retailer_id>}}`` (Meta's WooCommerce extension sends exactly that).

- The deletions have their own guard, which never holds back the replace of Kobi's feed: when the due ones, with
  the replace's own deletions and flips, exceed ``sync.max_delete_share`` of the catalog (Kobi's live items and the
  adopted ones still out of stock), none is sent. They are recorded as held (``held_at``; ``adopted_held`` in
  ``catalog_item_state``) with an ``ADOPTED_DELETIONS_HELD`` problem in ``catalog_diagnostics`` naming tenant and
  count, while the replace upload goes on; a run with ``kobi/override_deletion_guard=true`` sends them.
- Idempotent: an item is deleted once (``deleted_at``); a re-run sends nothing.
- An adopted id the feed sends again is *claimed* (``claimed_at``): it is Kobi's own item from then on and leaves
  by Kobi's replace feed, never by an adopted-item DELETE.
- ``sync.adopted_items: keep`` in the registry keeps them forever (nothing is ever due).

Network calls happen with the work database closed; the state is written in short transactions around them.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from kobi_cpas.registry.models import Tenant
from kobi_cpas.sync.context import SyncContext
from kobi_cpas.sync.guards import OVERRIDE_TAG, sync_guard_problems
from kobi_cpas.sync.pending import batch_message
from kobi_cpas.sync.state import shard_sql

KEEP = "keep"


def claim_adopted(con: duckdb.DuckDBPyConnection, tenant_id: str, now: datetime) -> int:
    """Adopted ids the replace view now holds become Kobi's own items (never deleted as adopted). -> claimed."""
    rows = con.execute(
        """UPDATE sync_state.adopted_items SET claimed_at = $now
           WHERE tenant_id = $t AND claimed_at IS NULL AND deleted_at IS NULL
             AND retailer_id IN (SELECT id FROM sync_state.desired_state WHERE tenant_id = $t)
           RETURNING 1""",
        {"t": tenant_id, "now": now},
    ).fetchall()
    return len(rows)


# When an adopted item's retention ends (params $ret, $keep; NULL: kept), never on its adoption day.
_DROP_AFTER = "CASE WHEN NOT $keep THEN adopted_at + to_days(greatest(CAST($ret AS INTEGER), 1)) END"


def _held_sql() -> str:
    """SQL (params $t): the tenant's adopted items still at Meta as Kobi left them (out of stock), with ``due``
    (params $now, $ret, $keep): their retention has passed."""
    return f"""
    SELECT retailer_id AS id, NULL::VARCHAR AS item_group_id, adopted_at,
           coalesce({_DROP_AFTER} <= $now, false) AS due
    FROM sync_state.adopted_items
    WHERE tenant_id = $t AND deleted_at IS NULL AND claimed_at IS NULL
      AND retailer_id NOT IN (SELECT id FROM sync_state.desired_state WHERE tenant_id = $t)"""


def _params(tenant: Tenant, now: datetime) -> dict[str, object]:
    return {
        "t": tenant.tenant_id,
        "now": now,
        "ret": tenant.sync.retention_days,
        "keep": tenant.sync.adopted_items == KEEP,
    }


def adopted_counts(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, now: datetime
) -> dict[int, tuple[int, int]]:
    """Per shard (by id, as Kobi shards ungrouped items): (adopted items due for deletion, adopted items held)."""
    rows = con.execute(
        f"""SELECT {shard_sql(tenant.sync.shards)} AS shard, count(*) FILTER (WHERE due), count(*)
            FROM ({_held_sql()}) GROUP BY ALL""",
        _params(tenant, now),
    ).fetchall()
    return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}


def due_adopted_batches(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, now: datetime, chunk_size: int
) -> list[tuple[list[str], str]]:
    """The adopted items due for deletion in chunks of ``chunk_size``: (ids, the items_batch ``requests``)."""
    rows = con.execute(
        f"""WITH due AS (
              SELECT id, (row_number() OVER (ORDER BY id) - 1) // {int(chunk_size)} AS chunk
              FROM ({_held_sql()}) WHERE due)
            SELECT list(id ORDER BY id),
                   to_json(list({{'method': 'DELETE', 'data': {{'id': id}}}} ORDER BY id))::VARCHAR
            FROM due GROUP BY chunk ORDER BY chunk""",
        _params(tenant, now),
    ).fetchall()
    return [([str(i) for i in ids], str(requests)) for ids, requests in rows]


def record_deleted(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    ids: list[str],
    refused: dict[str, str],
    now: datetime,
    run_id: str,
    handle: str,
) -> None:
    """Meta took the DELETE of ``ids`` except the ``refused`` ones (id -> Meta's message), which stay due."""
    con.execute(
        """UPDATE sync_state.adopted_items a
           SET deleted_at = CASE WHEN x.msg IS NULL THEN $now END, delete_run_id = $run,
               delete_handle = $handle, delete_error = x.msg, held_at = NULL
           FROM (SELECT i.id, r.msg FROM (SELECT unnest($ids::VARCHAR[]) AS id) i
                 LEFT JOIN (SELECT unnest($rids::VARCHAR[]) AS id, unnest($msgs::VARCHAR[]) AS msg) r USING (id)) x
           WHERE a.tenant_id = $t AND a.retailer_id = x.id AND a.deleted_at IS NULL""",
        {
            "t": tenant_id,
            "ids": ids,
            "rids": list(refused),
            "msgs": list(refused.values()),
            "now": now,
            "run": run_id,
            "handle": handle,
        },
    )


def mark_held(con: duckdb.DuckDBPyConnection, tenant: Tenant, now: datetime, hold: bool) -> tuple[int, int]:
    """Record which adopted items the deletion guard holds: with ``hold``, the ones due at ``now`` (keeping the
    day they were first held); without, none. -> (held now, held before)."""
    (before,) = con.execute(  # type: ignore[misc]
        """SELECT count(*) FROM sync_state.adopted_items
           WHERE tenant_id = $t AND held_at IS NOT NULL AND deleted_at IS NULL""",
        {"t": tenant.tenant_id},
    ).fetchone()
    rows = con.execute(
        f"""UPDATE sync_state.adopted_items
            SET held_at = CASE WHEN $hold AND retailer_id IN (SELECT id FROM ({_held_sql()}) WHERE due)
                               THEN coalesce(held_at, $now) END
            WHERE tenant_id = $t AND deleted_at IS NULL AND (held_at IS NOT NULL OR $hold)
            RETURNING held_at""",
        {**_params(tenant, now), "hold": hold},
    ).fetchall()
    return sum(1 for r in rows if r[0] is not None), int(before)


def settle_adopted(
    ctx: SyncContext, planned_at: datetime, due: int, held: list[str], override: bool, chunk_size: int
) -> int:
    """After the replace upload of Kobi's feed: send the ``due`` adopted deletions, or hold them when the
    deletion guard's ``held`` reasons say they would remove too much of the catalog and no override tag says
    go. -> items Meta took."""
    hold = bool(held) and not override
    with ctx.db() as con:
        now_held, was_held = mark_held(con, ctx.tenant, planned_at, hold)
    taken = 0 if hold or not due else delete_due_adopted(ctx, planned_at, chunk_size)
    if now_held or was_held:
        with ctx.db() as con:  # the problem opens, or resolves once nothing is held
            sync_guard_problems(con, ctx.tenant_id, ctx.catalog_id, ctx.now())
    if hold:
        ctx.progress(
            f"ADOPTED DELETIONS HELD: tenant '{ctx.tenant_id}' catalog {ctx.catalog_id}: "
            + "; ".join(held)
            + f". Kobi's feed was uploaded as usual; the {now_held:,} adopted item(s) stay out of stock until a "
            f"person checks them and confirms with the run tag {OVERRIDE_TAG}=true (or sets sync.adopted_items: "
            "keep)."
        )
    return taken


def delete_due_adopted(ctx: SyncContext, planned_at: datetime, chunk_size: int) -> int:
    """Send the Batch API DELETE of the adopted items whose retention had passed at ``planned_at``, when their
    deletion guard let them through (:func:`settle_adopted`). -> items Meta took."""
    with ctx.db() as con:
        batches = due_adopted_batches(con, ctx.tenant, planned_at, chunk_size)
    taken = 0
    for chunk, requests in batches:
        # A DELETE is idempotent at Meta: a retry after a timeout cannot remove anything else.
        resp = ctx.client.post(
            f"{ctx.catalog_id}/items_batch", data={"item_type": "PRODUCT_ITEM", "requests": requests}
        )
        handle = ",".join(str(h) for h in resp.get("handles") or [])
        refused = {
            str(v.get("retailer_id")): batch_message(v)
            for v in resp.get("validation_status") or []
            if v.get("errors")
        }
        with ctx.db() as con:
            record_deleted(con, ctx.tenant_id, chunk, refused, ctx.now(), ctx.run_id, handle)
        taken += len(chunk) - len(refused)
        for rid, msg in list(refused.items())[:5]:
            ctx.progress(f"tenant '{ctx.tenant_id}': Meta refused to delete adopted item {rid}: {msg}")
    if batches:
        ctx.progress(
            f"tenant '{ctx.tenant_id}' catalog {ctx.catalog_id}: deleted {taken:,} item(s) adopted from the "
            f"brand's existing catalog, out of stock for {ctx.tenant.sync.retention_days} days "
            "(sync.retention_days; sync.adopted_items: keep would keep them)"
        )
    return taken


def item_state_rows_sql() -> str:
    """SQL (params $t, $ret, $keep): catalog_item_state rows (named columns) of the
    tenant's adopted items that are not in the sync state (a claimed one is, as Kobi's own item)."""
    return f"""
    SELECT $t AS tenant_id, retailer_id, NULL::INTEGER AS shard, NULL::VARCHAR AS item_group_id,
           CASE WHEN deleted_at IS NOT NULL THEN 'adopted_deleted' WHEN $keep THEN 'adopted_kept'
                WHEN held_at IS NOT NULL THEN 'adopted_held' ELSE 'adopted_retained' END AS desired_status,
           NULL::VARCHAR AS change, false AS in_flight,
           CASE WHEN deleted_at IS NULL THEN 'out of stock' END AS availability, NULL::VARCHAR AS price,
           NULL::VARCHAR AS previous_id, NULL::VARCHAR AS previous_id_source, NULL::VARCHAR AS meta_method,
           NULL::TIMESTAMPTZ AS meta_synced_at, adopted_at AS removed_at,
           {_DROP_AFTER} AS drop_after,
           deleted_at
    FROM sync_state.adopted_items
    WHERE tenant_id = $t AND claimed_at IS NULL
      AND retailer_id NOT IN (SELECT id FROM sync_state.desired_state WHERE tenant_id = $t)
      AND retailer_id NOT IN (SELECT id FROM sync_state.meta_items WHERE tenant_id = $t)"""
