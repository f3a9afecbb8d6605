"""Confirming what Meta processed: upload sessions and batch handles are read back, their items confirmed into
``sync_state.meta_items`` (or released), and requests an earlier run left unconfirmed are settled before any
new sync computes its payload.

A request Meta refuses to resolve never holds the tenant: an unknown handle or session (error 100), a batch
status other than finished that ends it (canceled, error, anything unknown), or a request still unresolved
after ``SyncContext.batch_max_age`` (2 h) / ``upload_max_age`` (6 h) ends as ``failed`` / ``expired`` in
``catalog_syncs``, with its in-flight items released so the next sync sends them again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import duckdb

from kobi_cpas.meta.errors import MetaAPIError, MetaInvalidRequestError
from kobi_cpas.sync.context import SyncContext, SyncRecord, finish_sync, release
from kobi_cpas.sync.feeds import poll_upload, upload_error_rows
from kobi_cpas.sync.guards import (
    BATCH_FINISHED,
    BATCH_PENDING_STATUSES,
    OVERRIDE_TAG,
    SURPLUS_STATUS,
    Surplus,
    SyncBlocked,
    planned_deletions_sql,
    record_surplus,
    sync_guard_problems,
)
from kobi_cpas.warehouse import sql_str

NOT_FOUND_MARKERS = ("does not exist", "not found", "no product", "unknown item", "allow_upsert")


def where(ctx: SyncContext) -> str:
    return f"tenant '{ctx.tenant_id}' catalog {ctx.catalog_id}"


def confirm_upload(ctx: SyncContext, rec: SyncRecord, session: dict[str, Any], method: str) -> None:
    rejected = upload_error_rows(ctx, rec.upload_session_id or "") if session.get("error_count") else []
    end = session.get("end_time")
    finished_at = datetime.fromisoformat(end.replace("Z", "+00:00")) if isinstance(end, str) else ctx.now()
    rec.errors_count = int(session.get("error_count") or 0)
    rec.warnings_count = int(session.get("warning_count") or 0)
    rec.items_deleted = int(session.get("num_deleted_items") or 0)
    rec.status = "finished"
    surplus: Surplus | None = None
    with ctx.db() as con:
        con.execute("BEGIN")
        con.execute("CREATE OR REPLACE TEMP TABLE _rejected (row_number BIGINT)")
        if rejected:
            con.executemany("INSERT INTO _rejected VALUES (?)", [[r] for r in rejected])
        if method == "replace":
            # Meta's own count of deletions against the plan: more means someone else writes to the feed.
            planned = int(
                con.execute(  # type: ignore[index]
                    planned_deletions_sql("_rejected"), [ctx.tenant_id, rec.shard, rec.sync_id]
                ).fetchone()[0]
            )
            if rec.items_deleted > planned:
                feed = con.execute(
                    "SELECT feed_id FROM main.catalog_syncs WHERE sync_id = ?", [rec.sync_id]
                ).fetchone()
                surplus = Surplus(
                    rec.sync_id,
                    rec.shard,
                    feed[0] if feed else None,
                    rec.upload_session_id,
                    planned,
                    rec.items_deleted,
                    finished_at,
                )
                record_surplus(con, ctx.tenant_id, ctx.catalog_id, surplus, surplus.feed_id)
                rec.status = SURPLUS_STATUS
                rec.message = (
                    f"{where(ctx)} {surplus.describe()}. Replace uploads of this tenant are blocked until a "
                    f"person checks the catalog and confirms with the run tag {OVERRIDE_TAG}=true."
                )
            # A replace upload defines the shard: Meta deleted everything it did not contain.
            con.execute(
                "DELETE FROM sync_state.meta_items WHERE tenant_id = ? AND shard = ?",
                [ctx.tenant_id, rec.shard],
            )
        else:
            con.execute(
                "DELETE FROM sync_state.meta_items WHERE tenant_id = ? AND id IN "
                "(SELECT id FROM sync_state.inflight_items WHERE sync_id = ?)",
                [ctx.tenant_id, rec.sync_id],
            )
        con.execute(
            """INSERT INTO sync_state.meta_items
               SELECT tenant_id, id, shard, content_hash, volatile_hash, ?, sync_id, ?
               FROM sync_state.inflight_items WHERE sync_id = ?
                 AND coalesce(row_number, -1) NOT IN (SELECT row_number FROM _rejected)""",
            [method, finished_at, rec.sync_id],
        )
        con.execute("DELETE FROM sync_state.inflight_items WHERE sync_id = ?", [rec.sync_id])
        finish_sync(con, rec, finished_at)
        con.execute("COMMIT")
        if surplus is not None:
            sync_guard_problems(con, ctx.tenant_id, ctx.catalog_id, ctx.now())
    ctx.progress(
        f"{method} upload {rec.upload_session_id} finished: {rec.items_sent} sent, {rec.errors_count} errors, "
        f"{rec.warnings_count} warnings, {rec.items_deleted} deleted by Meta"
    )
    if rec.message and surplus is not None:
        ctx.progress(f"SURPLUS DELETIONS: {rec.message}")


def batch_message(v: dict[str, Any]) -> str:
    return "; ".join(str(e.get("message", "")) for e in v.get("errors") or [])


def drop_rejected(
    con: duckdb.DuckDBPyConnection, ctx: SyncContext, sync_id: str, rejected: list[tuple[str, str]]
) -> None:
    """Rejected items are not confirmed. An item Meta does not know (allow_upsert=false) is forgotten from
    meta_items, so the next update feed sends it as new."""
    if not rejected:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE _rej (id VARCHAR, message VARCHAR)")
    con.executemany("INSERT INTO _rej VALUES (?, ?)", [list(r) for r in rejected])
    con.execute(
        "DELETE FROM sync_state.inflight_items WHERE sync_id = ? AND id IN (SELECT id FROM _rej)", [sync_id]
    )
    markers = " OR ".join(f"lower(message) LIKE {sql_str('%' + m + '%')}" for m in NOT_FOUND_MARKERS)
    con.execute(
        f"DELETE FROM sync_state.meta_items WHERE tenant_id = ? AND id IN (SELECT id FROM _rej WHERE {markers})",
        [ctx.tenant_id],
    )


def _age_left(ctx: SyncContext, rec: SyncRecord, max_age: timedelta) -> float:
    """Seconds until Kobi gives up on the request (<= 0: expired). Unknown start: never expires here."""
    if rec.started_at is None:
        return float("inf")
    return (rec.started_at + max_age - ctx.now()).total_seconds()


def _expire(ctx: SyncContext, rec: SyncRecord, max_age: timedelta, what: str) -> None:
    release(
        ctx,
        rec,
        "expired",
        f"{where(ctx)}: {what} was still unresolved at Meta {max_age} after it was sent "
        f"({rec.started_at:%Y-%m-%d %H:%M} UTC); Kobi gave up on it and sends its {rec.items_sent} items again "
        "with the next sync",
    )


def _terminal_after(
    ctx: SyncContext, rec: SyncRecord, exc: MetaAPIError, max_age: timedelta, what: str, resent_with: str
) -> bool:
    """After Meta refused a status query: True when the request is now terminal (released), False to re-raise.

    Error 100 (invalid parameter / unknown object) means Meta does not know the handle or session (any more), so
    there is nothing left to wait for; any other error makes it terminal only once it outlived ``max_age``."""
    if isinstance(exc, MetaInvalidRequestError):
        release(
            ctx,
            rec,
            "failed",
            f"{where(ctx)}: Meta refused the status of {what}: {exc}; its {rec.items_sent} items are sent again "
            f"with {resent_with}",
        )
        return True
    if _age_left(ctx, rec, max_age) <= 0:
        _expire(ctx, rec, max_age, what)
        return True
    return False


def check_batch(ctx: SyncContext, rec: SyncRecord) -> bool:
    """Ask Meta about a batch request; True when it is resolved: every handle finished (items confirmed), or
    terminal without finishing (Meta does not know the handle, ended it as canceled / error, or it outlived
    ``ctx.batch_max_age``), in which case its items are released and sent again by the next batch."""
    statuses: list[str] = []
    rejected: list[tuple[str, str]] = []
    errors = warnings = 0
    what = f"batch request {rec.sync_id} (handle {rec.handle})"
    for handle in (rec.handle or "").split(","):
        if not handle:
            continue
        try:
            resp = ctx.client.get(
                f"{ctx.catalog_id}/check_batch_request_status",
                params={"handle": handle, "load_ids_of_invalid_requests": "true"},
            )
        except MetaAPIError as exc:
            if _terminal_after(ctx, rec, exc, ctx.batch_max_age, what, "the next batch"):
                return True
            raise
        for entry in resp.get("data") or []:
            statuses.append(str(entry.get("status") or "").strip().lower())
            errors += int(entry.get("errors_total_count") or len(entry.get("errors") or []))
            warnings += int(entry.get("warnings_total_count") or len(entry.get("warnings") or []))
            for e in entry.get("errors") or []:
                if e.get("id"):
                    rejected.append((str(e["id"]), str(e.get("message", ""))))
            for rid in entry.get("ids_of_invalid_requests") or []:
                rejected.append((str(rid), "invalid request"))
    ended = sorted({s for s in statuses if s != BATCH_FINISHED and s not in BATCH_PENDING_STATUSES})
    if ended:
        release(
            ctx,
            rec,
            "failed",
            f"{where(ctx)}: Meta ended {what} with status {', '.join(ended)} (not finished; some requests may "
            f"not have been applied); its {rec.items_sent} items are sent again with the next batch",
        )
        return True
    if not statuses or any(s != BATCH_FINISHED for s in statuses):
        if _age_left(ctx, rec, ctx.batch_max_age) <= 0:
            _expire(ctx, rec, ctx.batch_max_age, what)
            return True
        return False
    rec.status = "finished"
    rec.errors_count = max(rec.errors_count, errors)
    rec.warnings_count = warnings
    now = ctx.now()
    with ctx.db() as con:
        con.execute("BEGIN")
        drop_rejected(con, ctx, rec.sync_id, rejected)
        con.execute(
            """UPDATE sync_state.meta_items m SET volatile_hash = f.volatile_hash, method = 'batch',
                 sync_id = f.sync_id, synced_at = ?
               FROM sync_state.inflight_items f
               WHERE f.sync_id = ? AND m.tenant_id = f.tenant_id AND m.id = f.id""",
            [now, rec.sync_id],
        )
        con.execute("DELETE FROM sync_state.inflight_items WHERE sync_id = ?", [rec.sync_id])
        finish_sync(con, rec, now)
        con.execute("COMMIT")
    ctx.progress(f"batch {rec.sync_id} finished: {rec.items_sent} items, {len(set(rejected))} rejected")
    return True


def _resolve_upload(ctx: SyncContext, rec: SyncRecord, wait: bool) -> bool:
    """Settle an upload session an earlier run left processing; True when resolved (confirmed or terminal)."""
    what = f"{rec.method} upload {rec.sync_id} (session {rec.upload_session_id})"
    left = _age_left(ctx, rec, ctx.upload_max_age)
    try:
        session = poll_upload(
            ctx, rec.upload_session_id or "", max(0.0, min(ctx.poll_timeout, left)) if wait else 0
        )
    except MetaAPIError as exc:
        if _terminal_after(ctx, rec, exc, ctx.upload_max_age, what, "the next sync"):
            return True
        raise
    if session is not None:
        confirm_upload(ctx, rec, session, rec.method)
        return True
    if _age_left(ctx, rec, ctx.upload_max_age) <= 0:
        _expire(ctx, rec, ctx.upload_max_age, what)
        return True
    if wait:
        raise SyncBlocked(
            f"{where(ctx)}: {what} is still processing at Meta; a new sync of this catalog would overlap it. "
            f"Kobi waits for it at most {ctx.upload_max_age} after it was sent, then sends its items again."
        )
    return False


# ---------------------------------------------------------------------------------------------------------------
# Pending requests


def pending_syncs(
    con: duckdb.DuckDBPyConnection, tenant_id: str, only_method: str | None = None
) -> list[SyncRecord]:
    rows = con.execute(
        """SELECT sync_id, method, shard, items_sent, status, upload_session_id, handle, errors_count, started_at
           FROM main.catalog_syncs WHERE tenant_id = ? AND status IN ('submitted', 'processing')
             AND (? IS NULL OR method = ?) ORDER BY started_at""",
        [tenant_id, only_method, only_method],
    ).fetchall()
    return [
        SyncRecord(r[0], r[1], int(r[2]), int(r[3] or 0), r[4], r[5], r[6], int(r[7] or 0), started_at=r[8])
        for r in rows
    ]


def resolve_pending(
    ctx: SyncContext,
    only_method: str | None = None,
    wait: bool = True,
    pending: list[SyncRecord] | None = None,
) -> list[SyncRecord]:
    """Settle requests an earlier run left unconfirmed, before computing anything new.

    A request still 'submitted' never got an answer from Meta (the run died while sending): its items are
    released and go out again with the next request. Uploads and batches Meta knows are polled (``wait``:
    until the poll budget runs out, then the sync is blocked so it does not overlap them); one Meta refuses or
    that outlived its max age becomes terminal and no longer holds the tenant. ``pending``: the requests as
    :func:`pending_syncs` just read them (read here when None)."""
    if pending is None:
        with ctx.db() as con:
            pending = pending_syncs(con, ctx.tenant_id, only_method)
    resolved = []
    for rec in pending:
        if rec.status == "submitted" and not (rec.upload_session_id or rec.handle):
            release(ctx, rec, "failed", "never acknowledged by Meta (run interrupted); items will be re-sent")
            continue
        if rec.method in ("replace", "update"):
            if _resolve_upload(ctx, rec, wait):
                resolved.append(rec)
        elif rec.method == "batch":
            # Feeds must not overlap a batch still processing the same items: wait for it (bounded).
            budget = min(ctx.poll_timeout, _age_left(ctx, rec, ctx.batch_max_age)) if wait else 0
            deadline = time.monotonic() + max(0.0, budget)
            while not check_batch(ctx, rec):
                if time.monotonic() >= deadline:
                    if wait:
                        raise SyncBlocked(
                            f"{where(ctx)}: batch request {rec.sync_id} (handle {rec.handle}) is still "
                            "processing at Meta; a feed upload now would overlap it. Kobi waits for it at most "
                            f"{ctx.batch_max_age} after it was sent, then sends its items again."
                        )
                    break
                ctx.sleep(ctx.poll_interval)
            else:
                resolved.append(rec)
    return resolved


@contextlib.contextmanager
def settled_db(
    ctx: SyncContext,
    only_method: str | None = None,
    *,
    wait: bool = True,
    after_settling: Callable[[list[SyncRecord]], object] | None = None,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, list[SyncRecord]]]:
    """A work connection opened once the tenant's pending requests are settled (:func:`resolve_pending`),
    with the requests resolved now.

    Usually nothing is pending: the connection that found that is the one yielded, one attach of the work
    database instead of two. Otherwise it is closed while the requests are settled and ``after_settling``
    runs with them (both wait on Meta: no connection is held meanwhile), then a new one is opened."""
    with contextlib.ExitStack() as stack:
        con = stack.enter_context(ctx.db())
        pending = pending_syncs(con, ctx.tenant_id, only_method)
        resolved: list[SyncRecord] = []
        if pending:
            stack.close()
            resolved = resolve_pending(ctx, only_method, wait=wait, pending=pending)
            if after_settling is not None:
                after_settling(resolved)
            con = stack.enter_context(ctx.db())
        yield con, resolved
