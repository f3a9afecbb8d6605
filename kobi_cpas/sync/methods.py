"""The three sync methods (replace feed, update feed, Batch API) and the confirmation of what Meta processed.

Ownership: in one cycle an item is sent by exactly one incremental method — new/changed items by the update
feed, volatile-only changes by the Batch API — and the daily (or hourly) replace feed sends the whole replace
view. Every payload is computed from ``sync_state.desired_items`` (the replace view), so values never flap.

Safety: a request is recorded (``catalog_syncs`` + ``sync_state.inflight_items``) before Meta is told, and its
items are confirmed into ``sync_state.meta_items`` only from Meta's answer. A run that dies mid-way leaves
in-flight rows that the next run resolves first, so nothing is lost and nothing is sent twice. A request Meta
refuses to resolve (unknown handle or session, a terminal status other than finished, or older than the
context's max age) ends as ``failed`` / ``expired`` with its items released, so it never holds the tenant.
The guards (``guards.py``) stop syncs that would delete or flip too much of the catalog, and Meta deleting
more than a replace planned.

DuckDB connections are short: Meta calls (uploads, polling) happen with the work database closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from kobi_cpas.diagnostics.collect import record_batch_lines
from kobi_cpas.feeds.fields import VOLATILE_COLUMNS
from kobi_cpas.meta.errors import MetaAPIError
from kobi_cpas.registry.models import Tenant
from kobi_cpas.sync.adopted import adopted_counts, claim_adopted, settle_adopted
from kobi_cpas.sync.context import (
    SyncContext,
    SyncRecord,
    current_snapshot_id,
    finish_sync,
    insert_sync,
    new_sync_id,
    release,
)
from kobi_cpas.sync.delta import delta_sql
from kobi_cpas.sync.existing_catalog import (
    existing_catalog_block,
    kobi_feed_ids,
    left_existing_batches,
    link_variants_to_existing,
    read_existing_ids,
    record_adopted,
)
from kobi_cpas.sync.feeds import (
    FEED_NAME,
    ensure_feed,
    export_sql,
    poll_upload,
    record_inflight,
    recorded_feeds,
    upload_error_rows,
    upload_file,
    write_feed_file,
)
from kobi_cpas.sync.guards import (
    OVERRIDE_TAG,
    Surplus,
    SyncBlocked,
    check_flips,
    confirm_surplus,
    flip_counts_sql,
    remove_stale_exports,
    sync_guard_problems,
    unconfirmed_surplus,
)
from kobi_cpas.sync.pending import (
    batch_message,
    check_batch,
    confirm_upload,
    drop_rejected,
    pending_syncs,
    resolve_pending,
    settled_db,
)
from kobi_cpas.sync.pending import where as _where

__all__ = [
    "FEED_NAME",
    "SyncBlocked",
    "SyncContext",
    "SyncRecord",
    "check_batch",
    "ensure_feed",
    "pending_syncs",
    "plan_replace",
    "resolve_pending",
    "run_batch",
    "run_replace",
    "run_update",
    "settled_db",
]

META_BATCH_LIMIT = 5000

# Kept under their former names (tests drive single uploads through them).
_upload = upload_file
_poll_upload = poll_upload
_upload_error_rows = upload_error_rows


def _report_removed(ctx: SyncContext, removed: list[Path]) -> None:
    if removed:
        ctx.progress(
            f"removed {len(removed)} stale upload file(s) of runs that ended before uploading them: "
            + ", ".join(p.name for p in removed[:5])
        )


@contextlib.contextmanager
def _planning_db(
    ctx: SyncContext, only_method: str | None = None, *, wait: bool = True
) -> Iterator[duckdb.DuckDBPyConnection]:
    """What every method starts with: pending requests settled, stale upload files removed, then the
    connection the method plans in (one connection for all three when nothing is pending)."""
    with settled_db(ctx, only_method, wait=wait) as (con, _):
        removed = remove_stale_exports(con, ctx.tenant_id, ctx.workdir)
        yield con
    _report_removed(ctx, removed)


# ---------------------------------------------------------------------------------------------------------------
# Replace


@dataclass(frozen=True)
class ReplacePlan:
    shard: int
    items: int
    live: int
    deletions: int
    max_delete_share: float
    flips: int = 0  # live items this replace takes out of stock (gone from the source, kept by retention)
    surplus: tuple[Surplus, ...] = ()  # unconfirmed surplus deletions Meta reported for this shard
    # Items adopted from the brand's existing catalog: past their retention (deleted through the Batch API after
    # the upload, unless their own guard holds them) and still held out of stock (live at Meta).
    adopted_deletions: int = 0
    adopted_held: int = 0

    @property
    def delete_share(self) -> float:
        return (self.deletions + self.flips) / self.live if self.live else 0.0

    @property
    def adopted_share(self) -> float:
        """What this replace would remove of the catalog (Kobi's live items and the adopted ones still held) if
        it also deleted the due adopted items."""
        base = self.live + self.adopted_held
        return (self.deletions + self.flips + self.adopted_deletions) / base if base else 0.0

    @property
    def blocked_reason(self) -> str | None:
        """Why the replace of Kobi's own feed must not run (adopted deletions never block it)."""
        reasons: list[str] = []
        if self.items == 0:
            reasons.append(
                f"shard {self.shard}: the replace upload would be EMPTY and Meta would delete all {self.live} "
                "live items; check the feed source"
            )
        elif self.live and self.delete_share > self.max_delete_share:
            flips = (
                f" and flip {self.flips} to out of stock (gone from the feed source, kept by retention)"
                if self.flips
                else ""
            )
            reasons.append(
                f"shard {self.shard}: the replace upload would delete {self.deletions} of {self.live} live items"
                f"{flips} ({self.delete_share:.1%} > {self.max_delete_share:.1%} allowed)"
            )
        reasons += [
            f"{s.describe()}; check the catalog, then confirm with the run tag {OVERRIDE_TAG}=true"
            for s in self.surplus
        ]
        return "; ".join(reasons) or None

    @property
    def adopted_hold_reason(self) -> str | None:
        """Why the due adopted deletions are held (not sent) while the replace itself goes on."""
        if not self.adopted_deletions or self.adopted_share <= self.max_delete_share:
            return None
        return (
            f"shard {self.shard}: deleting {self.adopted_deletions} of the {self.adopted_held} items adopted from "
            "the brand's existing catalog (out of stock since adoption, past their retention) would remove "
            f"{self.adopted_share:.1%} of the catalog with the replace's own deletions "
            f"(> {self.max_delete_share:.1%} allowed)"
        )


def plan_replace(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, now: datetime | None = None
) -> list[ReplacePlan]:
    adopted = adopted_counts(con, tenant, now or datetime.now(UTC))
    rows = con.execute(
        f"""WITH s AS (SELECT range AS shard FROM range($n)),
           d AS (SELECT shard, count(*) AS n FROM sync_state.desired_state WHERE tenant_id = $t GROUP BY shard),
           m AS (SELECT shard, count(*) AS n FROM sync_state.meta_items WHERE tenant_id = $t GROUP BY shard),
           x AS (SELECT m.shard, count(*) AS n FROM sync_state.meta_items m
                 ANTI JOIN sync_state.desired_state d ON d.tenant_id = m.tenant_id AND d.id = m.id
                 WHERE m.tenant_id = $t GROUP BY m.shard),
           f AS ({flip_counts_sql(("changed", "volatile_only"), False)})
           SELECT s.shard, coalesce(d.n, 0), coalesce(m.n, 0), coalesce(x.n, 0), coalesce(f.flips, 0)
           FROM s LEFT JOIN d USING (shard) LEFT JOIN m USING (shard) LEFT JOIN x USING (shard)
           LEFT JOIN f USING (shard) ORDER BY s.shard""",
        {"n": tenant.sync.shards, "t": tenant.tenant_id},
    ).fetchall()
    surplus = unconfirmed_surplus(con, tenant.tenant_id)
    last = len(rows) - 1
    return [
        ReplacePlan(
            int(r[0]),
            int(r[1]),
            int(r[2]),
            int(r[3]),
            tenant.sync.max_delete_share,
            flips=int(r[4]),
            # a surplus of a shard that no longer exists (shard count changed) blocks the last shard
            surplus=tuple(s for s in surplus if min(s.shard, last) == int(r[0])),
            adopted_deletions=adopted.get(int(r[0]), (0, 0))[0],
            adopted_held=adopted.get(int(r[0]), (0, 0))[1],
        )
        for r in rows
    ]


def run_replace(ctx: SyncContext, *, override_guard: bool = False) -> list[SyncRecord]:
    override = override_guard or ctx.override_guard
    with _planning_db(ctx) as con:
        planned_at = ctx.now()
        claim_adopted(con, ctx.tenant_id, planned_at)
        plans = plan_replace(con, ctx.tenant, planned_at)
        snapshot_id = current_snapshot_id(con, ctx.tenant_id)
        feeds = recorded_feeds(con, ctx.tenant_id)
    if snapshot_id is None:
        raise SyncBlocked(f"tenant '{ctx.tenant_id}': no feed snapshot yet; materialize feed_snapshot first")
    _first_upload_guard(ctx, feeds)
    blocked = [p.blocked_reason for p in plans if p.blocked_reason]
    if blocked and not override:  # checked for every shard before any upload
        raise SyncBlocked(
            f"{_where(ctx)} deletion guard: "
            + "; ".join(b for b in blocked if b)
            + f". If this is intended, re-run with the run tag {OVERRIDE_TAG}=true."
        )
    if any(p.surplus for p in plans):
        # The override run is the person's confirmation: the surplus stops blocking, its problem resolves.
        with ctx.db() as con:
            n = confirm_surplus(con, ctx.tenant_id, ctx.run_id, ctx.now())
            sync_guard_problems(con, ctx.tenant_id, ctx.catalog_id, ctx.now())
        ctx.progress(f"{_where(ctx)}: {n} surplus deletion record(s) confirmed by run tag {OVERRIDE_TAG}")
    records: list[SyncRecord] = []
    for plan in plans:
        records.append(
            _upload_shard(
                ctx, "replace", plan.shard, "tenant_id = $t AND shard = $s", snapshot_id, "items", feeds
            )
        )
    # Only now, after Kobi's feed went out: held adopted deletions never hold back the replace itself.
    settle_adopted(
        ctx,
        planned_at,
        sum(p.adopted_deletions for p in plans),
        [r for p in plans if (r := p.adopted_hold_reason)],
        override,
        META_BATCH_LIMIT,
    )
    return records


def _upload_shard(
    ctx: SyncContext,
    method: str,
    shard: int,
    where: str,
    snapshot_id: str | None,
    what: str,
    feeds: dict[int, str] | None = None,
) -> SyncRecord:
    """One feed upload of a shard: export the rows (recorded as in flight before anything is sent), upload
    (update_only for the update method), poll until Meta finishes, confirm the items Meta accepted."""
    feed_id = ensure_feed(ctx, shard, feeds)
    rec = SyncRecord(new_sync_id(method), method, shard, 0, "submitted")
    with ctx.db() as con:
        con.execute("BEGIN")
        path, n = write_feed_file(con, ctx, rec.sync_id, export_sql(where), {"t": ctx.tenant_id, "s": shard})
        rec.items_sent = n
        record_inflight(con, ctx, rec.sync_id, method)
        insert_sync(con, ctx, rec, snapshot_id, feed_id)
        con.execute("COMMIT")
    ctx.progress(f"{method} shard {shard}: prepared {n} {what}, uploading to feed {feed_id}")
    try:
        rec.upload_session_id = upload_file(ctx, feed_id, path, update_only=method == "update")
    except MetaAPIError as exc:
        release(ctx, rec, "failed", str(exc))
        raise
    finally:
        path.unlink(missing_ok=True)
    rec.status = "processing"
    with ctx.db() as con:
        finish_sync(con, rec, None)
    session = poll_upload(ctx, rec.upload_session_id)
    if session is not None:
        confirm_upload(ctx, rec, session, method)
    return rec


# ---------------------------------------------------------------------------------------------------------------
# Update


def _first_upload_guard(ctx: SyncContext, feeds: dict[int, str]) -> None:
    """Before the tenant's first upload: a catalog that already holds items waits for a person's yes; with it,
    the feed's variants of existing items are linked to them by ``previous_id``."""
    if feeds:  # feeds recorded: not the tenant's first upload
        return
    if ctx.confirm_existing:
        _adopt_existing_catalog(ctx)
        return
    with ctx.db() as con:
        known = kobi_feed_ids(con)
    # a feed the person adopts by run tag is Kobi's own (e.g. after a lost work database)
    known.update(dict.fromkeys(ctx.adopt_feed_ids, ctx.tenant_id))
    why = existing_catalog_block(ctx.client, ctx.tenant_id, ctx.catalog_id, known)
    if why is not None:
        raise SyncBlocked(why)


def _adopt_existing_catalog(ctx: SyncContext) -> None:
    """The confirmed first upload to a catalog that holds items: the feed's variants of existing items get their
    previous_id, and the existing items the feed does not send are marked out of stock (Batch API, availability
    only) and recorded; none is deleted now (later replaces delete them once their retention has passed)."""
    existing = read_existing_ids(ctx.client, ctx.catalog_id)  # paged, before the database is opened
    if not existing:
        return
    with ctx.db() as con:
        linked = link_variants_to_existing(con, ctx.tenant_id, existing)
        batches = left_existing_batches(con, ctx.tenant_id, existing, META_BATCH_LIMIT)
    for chunk, requests in batches:
        # An UPDATE of one field is idempotent: a retry after a timeout cannot apply anything twice.
        resp = ctx.client.post(
            f"{ctx.catalog_id}/items_batch",
            data={"item_type": "PRODUCT_ITEM", "allow_upsert": "false", "requests": requests},
        )
        handle = ",".join(str(h) for h in resp.get("handles") or [])
        refused = [v for v in resp.get("validation_status") or [] if v.get("errors")]
        for v in refused[:5]:
            ctx.progress(
                f"{_where(ctx)}: Meta refused to mark {v.get('retailer_id')} out of stock: {batch_message(v)}"
            )
        with ctx.db() as con:
            record_adopted(con, ctx.tenant_id, chunk, ctx.now(), ctx.run_id, handle)
    ctx.progress(
        f"{_where(ctx)}: first upload to a catalog holding {len(existing):,} items, confirmed by run tag; "
        f"{linked:,} variant(s) sent with previous_id of the existing item they replace; "
        f"{sum(len(ids) for ids, _ in batches):,} existing "
        "item(s) the feed does not send marked out of stock (kept for the retention, never deleted today)"
    )


def run_update(ctx: SyncContext) -> list[SyncRecord]:
    """New and changed items (full rows) as an update_only upload per shard. Never deletes."""
    records: list[SyncRecord] = []
    with _planning_db(ctx) as con:
        check_flips(con, ctx.tenant, "update", override=ctx.override_guard, progress=ctx.progress)
        snapshot_id = current_snapshot_id(con, ctx.tenant_id)
        feeds = recorded_feeds(con, ctx.tenant_id)
        shards = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT shard FROM ({delta_sql()}) WHERE change IN ('new', 'changed') AND NOT in_flight ORDER BY 1",
                {"t": ctx.tenant_id},
            ).fetchall()
        ]
    where = (
        f"tenant_id = $t AND shard = $s AND id IN (SELECT id FROM ({delta_sql()}) "
        "WHERE change IN ('new', 'changed') AND NOT in_flight)"
    )
    if shards:
        _first_upload_guard(ctx, feeds)
    for shard in shards:
        records.append(_upload_shard(ctx, "update", shard, where, snapshot_id, "new/changed items", feeds))
    return records


# ---------------------------------------------------------------------------------------------------------------
# Batch API


def batch_requests_sql(chunk_size: int) -> str:
    """One row per chunk: the JSON ``requests`` string of UPDATE requests with only the volatile fields."""
    fields = ", ".join(
        f"'{c}': coalesce(d.\"{c}\", '')"
        if c in ("sale_price", "sale_price_effective_date")
        else f"'{c}': d.\"{c}\""
        for c in VOLATILE_COLUMNS
    )
    return f"""
    WITH todo AS (
      SELECT d.*, (row_number() OVER (ORDER BY d.id) - 1) // {int(chunk_size)} AS chunk
      FROM sync_state.desired_items d
      JOIN ({delta_sql()}) x ON x.id = d.id
      WHERE d.tenant_id = $t AND x.change = 'volatile_only' AND NOT x.in_flight
    )
    SELECT chunk, count(*) AS n, to_json(list({{'method': 'UPDATE', 'data': {{'id': d.id, {fields}}}}} ORDER BY d.id))::VARCHAR AS requests,
           list(d.id ORDER BY d.id) AS ids
    FROM todo d GROUP BY chunk ORDER BY chunk
    """


def run_batch(ctx: SyncContext, chunk_size: int | None = None) -> list[SyncRecord]:
    """Volatile-only changes as items_batch UPDATE requests (allow_upsert=false), at most 5,000 per call."""
    size = min(chunk_size or ctx.tenant.sync.batch_chunk_size, META_BATCH_LIMIT)
    with _planning_db(ctx, "batch", wait=False) as con:
        check_flips(con, ctx.tenant, "batch", override=ctx.override_guard, progress=ctx.progress)
        snapshot_id = current_snapshot_id(con, ctx.tenant_id)
        chunks = con.execute(batch_requests_sql(size), {"t": ctx.tenant_id}).fetchall()
    total = sum(int(c[1]) for c in chunks)
    sent = 0
    records: list[SyncRecord] = []
    for chunk, n, requests_json, ids in chunks:
        rec = SyncRecord(new_sync_id("batch"), "batch", -1, int(n), "submitted")
        with ctx.db() as con:
            con.execute("BEGIN")
            con.execute("CREATE OR REPLACE TEMP TABLE _ids (id VARCHAR)")
            con.execute("INSERT INTO _ids SELECT unnest(?::VARCHAR[])", [ids])
            con.execute(
                """INSERT INTO sync_state.inflight_items
                   SELECT ?, d.tenant_id, d.id, d.shard, 'batch', NULL, d.content_hash, d.volatile_hash
                   FROM sync_state.desired_state d JOIN _ids USING (id) WHERE d.tenant_id = ?""",
                [rec.sync_id, ctx.tenant_id],
            )
            insert_sync(con, ctx, rec, snapshot_id)
            record_batch_lines(con, rec.sync_id, list(ids))
            con.execute("COMMIT")
        try:
            resp = ctx.client.post(
                f"{ctx.catalog_id}/items_batch",
                data={"item_type": "PRODUCT_ITEM", "allow_upsert": "false", "requests": requests_json},
            )
        except MetaAPIError as exc:
            release(ctx, rec, "failed", str(exc))
            raise
        handles = [str(h) for h in resp.get("handles") or []]
        rec.handle = ",".join(handles)
        invalid_now = [v for v in resp.get("validation_status") or [] if v.get("errors")]
        rec.status = "processing"
        rec.errors_count = len(invalid_now)
        with ctx.db() as con:
            con.execute("BEGIN")
            if invalid_now:
                drop_rejected(
                    con,
                    ctx,
                    rec.sync_id,
                    [(str(v.get("retailer_id")), batch_message(v)) for v in invalid_now],
                )
            finish_sync(con, rec, None)
            con.execute("COMMIT")
        sent += int(n)
        ctx.progress(
            f"batch: sent {sent} of {total} volatile-only items (chunk {int(chunk) + 1}, handle {rec.handle})"
        )
        records.append(rec)
    return records
