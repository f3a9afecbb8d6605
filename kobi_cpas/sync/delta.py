"""Classify every item of a tenant against what Kobi believes Meta holds, set-based.

new            in the replace view, not held by Meta           -> update feed (new items enter only via feeds)
changed        non-volatile content differs                     -> update feed
volatile_only  only price / sale price / availability / qty     -> Batch API (UPDATE, allow_upsert=false)
unchanged      identical                                        -> nothing
removed        held by Meta, not in the replace view            -> dropped by the next replace feed
               (counted as ``dropped``: ``DeltaCounts.removed`` counts the items that left the feed, most
               of which stay in the replace view as out of stock for the retention period)

A *retention flip* is an item that left the source (desired status ``removed_retained``, sent as out of stock)
whose out-of-stock version Meta does not hold yet: the sync that sends it takes a live item out of stock, so
the guards count it like a deletion.

Items already sent with the same hashes in a request Meta has not confirmed yet are *in flight* and are
never sent again until that request resolves.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

CHANGES = ("new", "changed", "volatile_only", "unchanged", "removed")


@dataclass(frozen=True)
class DeltaCounts:
    new: int = 0
    changed: int = 0
    volatile_only: int = 0
    unchanged: int = 0
    removed: int = 0  # items of the last snapshot that left the feed (retained out of stock or dropped)
    dropped: int = 0  # held by Meta and out of the replace view: the next replace feed deletes them
    in_flight: int = 0
    retention_flips: int = 0

    @property
    def total(self) -> int:
        return self.new + self.changed + self.volatile_only + self.unchanged


def change_sql(d: str = "d", m: str = "m") -> str:
    """SQL: the change class of an item of the replace view ``d`` against Meta's ``m`` (rows of a full join)."""
    return f"""CASE WHEN {d}.id IS NULL THEN 'removed'
                WHEN {m}.id IS NULL THEN 'new'
                WHEN {d}.content_hash <> {m}.content_hash THEN 'changed'
                WHEN {d}.volatile_hash <> {m}.volatile_hash THEN 'volatile_only'
                ELSE 'unchanged' END"""


def retention_flip_sql(d: str = "d", m: str = "m") -> str:
    """SQL: the item left the source and Meta holds a version of it that is not out of stock yet."""
    return f"""coalesce({d}.status = 'removed_retained' AND {m}.id IS NOT NULL
             AND ({d}.content_hash <> {m}.content_hash OR {d}.volatile_hash <> {m}.volatile_hash), false)"""


def delta_sql(tenant_param: str = "$t") -> str:
    """One row per item: id, shard, change, in_flight, retention_flip."""
    return f"""
    WITH d AS (SELECT id, shard, content_hash, volatile_hash, status FROM sync_state.desired_state WHERE tenant_id = {tenant_param}),
         m AS (SELECT id, shard, content_hash, volatile_hash FROM sync_state.meta_items WHERE tenant_id = {tenant_param}),
         f AS (SELECT DISTINCT id, content_hash, volatile_hash FROM sync_state.inflight_items WHERE tenant_id = {tenant_param})
    SELECT coalesce(d.id, m.id) AS id, coalesce(d.shard, m.shard) AS shard, {change_sql()} AS change,
           f.id IS NOT NULL AS in_flight, {retention_flip_sql()} AS retention_flip
    FROM d FULL JOIN m ON m.id = d.id
    LEFT JOIN f ON f.id = d.id AND f.content_hash = d.content_hash AND f.volatile_hash = d.volatile_hash
    """


def delta_counts(con: duckdb.DuckDBPyConnection, tenant_id: str) -> DeltaCounts:
    rows = con.execute(
        f"""SELECT change, count(*), count(*) FILTER (WHERE in_flight), count(*) FILTER (WHERE retention_flip)
            FROM ({delta_sql()}) GROUP BY change""",
        {"t": tenant_id},
    ).fetchall()
    return delta_counts_from(rows)


def delta_counts_from(rows: list[tuple]) -> DeltaCounts:
    """Counts from rows of (change, items, in flight, retention flips); ``removed`` is the snapshot's to set,
    from the items that left its feed."""
    counts = {("dropped" if r[0] == "removed" else r[0]): int(r[1]) for r in rows}
    return DeltaCounts(
        **counts, in_flight=sum(int(r[2]) for r in rows), retention_flips=sum(int(r[3]) for r in rows)
    )
