"""The three sync methods (replace feed, update feed, Batch API) and the confirmation of what Meta processed.

Ownership: in one cycle an item is sent by exactly one incremental method — new/changed items by the update
feed, volatile-only changes by the Batch API — and the daily (or hourly) replace feed sends the whole replace
view. Every payload is computed from ``sync_state.desired_items`` (the replace view), so values never flap.

Safety: a request is recorded (``catalog_syncs`` + ``sync_state.inflight_items``) before Meta is told, and its
items are confirmed into ``sync_state.meta_items`` only from Meta's answer. A run that dies mid-way leaves
in-flight rows that the next run resolves first, so nothing is lost and nothing is sent twice.

DuckDB connections are short: Meta calls (uploads, polling) happen with the work database closed.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from kobi_cpas.diagnostics.collect import record_batch_lines, record_upload_rows
from kobi_cpas.feeds.fields import COLUMNS, VOLATILE_COLUMNS
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.errors import UNKNOWN_OBJECT_SUBCODE, MetaAPIError, MetaInvalidRequestError
from kobi_cpas.registry.models import Tenant
from kobi_cpas.sync.delta import delta_sql
from kobi_cpas.warehouse import Warehouse, sql_str

log = logging.getLogger(__name__)

META_BATCH_LIMIT = 5000
FEED_NAME = "Kobi primary feed"
NOT_FOUND_MARKERS = ("does not exist", "not found", "no product", "unknown item", "allow_upsert")


class SyncBlocked(Exception):
    """A sync that must not run now (deletion guard, overlap); the message says why and what to do."""


@dataclass
class SyncContext:
    tenant: Tenant
    client: MetaGraphClient
    warehouse: Warehouse
    workdir: Path
    run_id: str = "local"
    progress: Callable[[str], None] = field(default=lambda msg: log.info(msg))
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    poll_interval: float = 2.0
    poll_timeout: float = 600.0
    sleep: Callable[[float], None] = time.sleep

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    @property
    def catalog_id(self) -> str:
        return self.tenant.catalog_id

    @property
    def shards(self) -> int:
        return self.tenant.sync.shards

    @contextlib.contextmanager
    def db(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.warehouse.connect() as con:
            yield con


@dataclass
class SyncRecord:
    sync_id: str
    method: str
    shard: int
    items_sent: int
    status: str
    upload_session_id: str | None = None
    handle: str | None = None
    errors_count: int = 0
    warnings_count: int = 0
    items_deleted: int = 0
    message: str | None = None


def _new_sync_id(method: str) -> str:
    return f"{method}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def _insert_sync(
    con: duckdb.DuckDBPyConnection,
    ctx: SyncContext,
    rec: SyncRecord,
    snapshot_id: str | None,
    feed_id: str | None = None,
) -> None:
    con.execute(
        """INSERT INTO main.catalog_syncs (sync_id, tenant_id, catalog_id, method, shard, snapshot_id, started_at,
             finished_at, items_sent, status, upload_session_id, handle, feed_id, errors_count, warnings_count,
             items_deleted, message, run_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            rec.sync_id,
            ctx.tenant_id,
            ctx.catalog_id,
            rec.method,
            rec.shard,
            snapshot_id,
            ctx.now(),
            rec.items_sent,
            rec.status,
            rec.upload_session_id,
            rec.handle,
            feed_id,
            rec.errors_count,
            rec.warnings_count,
            rec.items_deleted,
            rec.message,
            ctx.run_id,
        ],
    )


def _finish_sync(con: duckdb.DuckDBPyConnection, rec: SyncRecord, finished_at: datetime | None) -> None:
    con.execute(
        """UPDATE main.catalog_syncs SET status = ?, finished_at = ?, errors_count = ?, warnings_count = ?,
             items_deleted = ?, message = coalesce(?, message), upload_session_id = coalesce(?, upload_session_id),
             handle = coalesce(?, handle)
           WHERE sync_id = ?""",
        [
            rec.status,
            finished_at,
            rec.errors_count,
            rec.warnings_count,
            rec.items_deleted,
            rec.message,
            rec.upload_session_id,
            rec.handle,
            rec.sync_id,
        ],
    )


def current_snapshot_id(con: duckdb.DuckDBPyConnection, tenant_id: str) -> str | None:
    row = con.execute(
        "SELECT max(snapshot_id) FROM sync_state.desired_items WHERE tenant_id = ?", [tenant_id]
    ).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------------------------
# Feeds


def ensure_feed(ctx: SyncContext, shard: int) -> str:
    """The Meta product feed Kobi owns for this tenant and shard: cached, else found by name, else created.

    A cached id is checked first (one GET): a feed deleted in Commerce Manager, or a catalog rebuilt,
    would otherwise fail every upload until someone cleared the cache by hand.
    """
    name = FEED_NAME if ctx.shards <= 1 else f"{FEED_NAME} (shard {shard + 1} of {ctx.shards})"
    with ctx.db() as con:
        row = con.execute(
            "SELECT feed_id FROM sync_state.feeds WHERE tenant_id = ? AND shard = ?", [ctx.tenant_id, shard]
        ).fetchone()
    if row:
        try:
            ctx.client.get(str(row[0]), params={"fields": "id"})
            return row[0]
        except MetaInvalidRequestError as exc:
            if exc.error_subcode != UNKNOWN_OBJECT_SUBCODE:
                raise
            ctx.progress(
                f"Meta product feed {row[0]} no longer exists; looking for '{name}' in catalog {ctx.catalog_id}"
            )
            with ctx.db() as con:
                con.execute(
                    "DELETE FROM sync_state.feeds WHERE tenant_id = ? AND shard = ?", [ctx.tenant_id, shard]
                )
    feed_id = None
    for feed in ctx.client.paginate(f"{ctx.catalog_id}/product_feeds", params={"fields": "id,name"}):
        if feed.get("name") == name:
            feed_id = str(feed["id"])
            break
    if feed_id is None:
        feed_id = str(ctx.client.post(f"{ctx.catalog_id}/product_feeds", data={"name": name})["id"])
        ctx.progress(f"created Meta product feed {feed_id} '{name}' in catalog {ctx.catalog_id}")
    with ctx.db() as con:
        con.execute(
            "INSERT INTO sync_state.feeds VALUES (?, ?, ?, ?, ?)",
            [ctx.tenant_id, shard, feed_id, name, ctx.now()],
        )
    return feed_id


def _export_sql(where: str) -> str:
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    # _rn is the item's row number in the uploaded file (Meta's row_number: first data row = 1).
    return (
        f"SELECT row_number() OVER (ORDER BY id) AS _rn, {cols} FROM sync_state.desired_items WHERE {where}"
    )


def _write_feed_file(
    con: duckdb.DuckDBPyConnection, ctx: SyncContext, sync_id: str, select_sql: str, params: dict[str, Any]
) -> tuple[Path, int]:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    path = ctx.workdir / f"{ctx.tenant_id}-{sync_id}.csv"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _export AS {select_sql}", params)
    n = con.execute("SELECT count(*) FROM _export").fetchone()[0]  # type: ignore[index]
    con.execute(
        f"COPY (SELECT * EXCLUDE (_rn) FROM _export ORDER BY _rn) TO {sql_str(str(path))} (HEADER, DELIMITER ',')"
    )
    return path, int(n)


def _record_inflight(con: duckdb.DuckDBPyConnection, ctx: SyncContext, sync_id: str, method: str) -> None:
    """Items of _export (in file order) become in flight for sync_id."""
    con.execute(
        """INSERT INTO sync_state.inflight_items
           SELECT ?, ?, d.id, d.shard, ?, e._rn, d.content_hash, d.volatile_hash
           FROM _export e
           JOIN sync_state.desired_items d ON d.tenant_id = ? AND d.id = e.id""",
        [sync_id, ctx.tenant_id, method, ctx.tenant_id],
    )
    # Row number -> retailer id, so Meta's upload errors map back to items after confirmation.
    record_upload_rows(con, sync_id)


def _upload(ctx: SyncContext, feed_id: str, path: Path, update_only: bool) -> str:
    data = {"update_only": "true"} if update_only else {}
    # Bytes (not a file handle), so a retried POST sends the whole file again.
    body = path.read_bytes()
    resp = ctx.client.post(f"{feed_id}/uploads", data=data, files={"file": (path.name, body, "text/csv")})
    return str(resp["id"])


def _poll_upload(ctx: SyncContext, upload_id: str) -> dict[str, Any] | None:
    """Poll the upload session until end_time is set; None when the poll budget ran out (left to the sensor)."""
    deadline = time.monotonic() + ctx.poll_timeout
    fields = "id,start_time,end_time,num_detected_items,num_persisted_items,num_invalid_items,num_deleted_items,error_count,warning_count"
    while True:
        session = ctx.client.get(upload_id, params={"fields": fields})
        if session.get("end_time"):
            return session
        if time.monotonic() >= deadline:
            return None
        ctx.sleep(ctx.poll_interval)


def _upload_error_rows(ctx: SyncContext, upload_id: str) -> list[int]:
    """Row numbers of items Meta rejected in an upload (fatal errors and their samples)."""
    rows: set[int] = set()
    for err in ctx.client.paginate(
        f"{upload_id}/errors", params={"fields": "id,severity,row_number,samples{row_number,retailer_id}"}
    ):
        if (err.get("severity") or "fatal") != "fatal":
            continue
        if err.get("row_number") is not None:
            rows.add(int(err["row_number"]))
        for s in (err.get("samples") or {}).get("data", []):
            if s.get("row_number") is not None:
                rows.add(int(s["row_number"]))
    return sorted(rows)


def _confirm_upload(ctx: SyncContext, rec: SyncRecord, session: dict[str, Any], method: str) -> None:
    rejected = _upload_error_rows(ctx, rec.upload_session_id or "") if session.get("error_count") else []
    end = session.get("end_time")
    finished_at = datetime.fromisoformat(end.replace("Z", "+00:00")) if isinstance(end, str) else ctx.now()
    rec.errors_count = int(session.get("error_count") or 0)
    rec.warnings_count = int(session.get("warning_count") or 0)
    rec.items_deleted = int(session.get("num_deleted_items") or 0)
    rec.status = "finished"
    with ctx.db() as con:
        con.execute("BEGIN")
        con.execute("CREATE OR REPLACE TEMP TABLE _rejected (row_number BIGINT)")
        if rejected:
            con.executemany("INSERT INTO _rejected VALUES (?)", [[r] for r in rejected])
        if method == "replace":
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
        _finish_sync(con, rec, finished_at)
        con.execute("COMMIT")
    ctx.progress(
        f"{method} upload {rec.upload_session_id} finished: {rec.items_sent} sent, {rec.errors_count} errors, "
        f"{rec.warnings_count} warnings, {rec.items_deleted} deleted by Meta"
    )


# ---------------------------------------------------------------------------------------------------------------
# Replace


@dataclass(frozen=True)
class ReplacePlan:
    shard: int
    items: int
    live: int
    deletions: int
    max_delete_share: float

    @property
    def delete_share(self) -> float:
        return self.deletions / self.live if self.live else 0.0

    @property
    def blocked_reason(self) -> str | None:
        if self.items == 0:
            return (
                f"shard {self.shard}: the replace upload would be EMPTY and Meta would delete all {self.live} live "
                "items; check the feed source"
            )
        if self.live and self.delete_share > self.max_delete_share:
            return (
                f"shard {self.shard}: the replace upload would delete {self.deletions} of {self.live} live items "
                f"({self.delete_share:.1%} > {self.max_delete_share:.1%} allowed)"
            )
        return None


def plan_replace(con: duckdb.DuckDBPyConnection, tenant: Tenant) -> list[ReplacePlan]:
    rows = con.execute(
        """WITH s AS (SELECT range AS shard FROM range(?)),
           d AS (SELECT shard, count(*) AS n FROM sync_state.desired_items WHERE tenant_id = ? GROUP BY shard),
           m AS (SELECT shard, count(*) AS n FROM sync_state.meta_items WHERE tenant_id = ? GROUP BY shard),
           x AS (SELECT m.shard, count(*) AS n FROM sync_state.meta_items m
                 ANTI JOIN sync_state.desired_items d ON d.tenant_id = m.tenant_id AND d.id = m.id
                 WHERE m.tenant_id = ? GROUP BY m.shard)
           SELECT s.shard, coalesce(d.n, 0), coalesce(m.n, 0), coalesce(x.n, 0)
           FROM s LEFT JOIN d USING (shard) LEFT JOIN m USING (shard) LEFT JOIN x USING (shard) ORDER BY s.shard""",
        [tenant.sync.shards, tenant.tenant_id, tenant.tenant_id, tenant.tenant_id],
    ).fetchall()
    return [
        ReplacePlan(int(r[0]), int(r[1]), int(r[2]), int(r[3]), tenant.sync.max_delete_share) for r in rows
    ]


def run_replace(ctx: SyncContext, *, override_guard: bool = False) -> list[SyncRecord]:
    resolve_pending(ctx)
    with ctx.db() as con:
        plans = plan_replace(con, ctx.tenant)
        snapshot_id = current_snapshot_id(con, ctx.tenant_id)
    if snapshot_id is None:
        raise SyncBlocked(f"tenant '{ctx.tenant_id}': no feed snapshot yet; materialize feed_snapshot first")
    blocked = [p.blocked_reason for p in plans if p.blocked_reason]
    if blocked and not override_guard:  # checked for every shard before any upload
        raise SyncBlocked(f"tenant '{ctx.tenant_id}' deletion guard: " + "; ".join(b for b in blocked if b))
    records: list[SyncRecord] = []
    for plan in plans:
        records.append(
            _upload_shard(ctx, "replace", plan.shard, "tenant_id = $t AND shard = $s", snapshot_id, "items")
        )
    return records


def _upload_shard(
    ctx: SyncContext, method: str, shard: int, where: str, snapshot_id: str | None, what: str
) -> SyncRecord:
    """One feed upload of a shard: export the rows (recorded as in flight before anything is sent), upload
    (update_only for the update method), poll until Meta finishes, confirm the items Meta accepted."""
    feed_id = ensure_feed(ctx, shard)
    rec = SyncRecord(_new_sync_id(method), method, shard, 0, "submitted")
    with ctx.db() as con:
        con.execute("BEGIN")
        path, n = _write_feed_file(
            con, ctx, rec.sync_id, _export_sql(where), {"t": ctx.tenant_id, "s": shard}
        )
        rec.items_sent = n
        _record_inflight(con, ctx, rec.sync_id, method)
        _insert_sync(con, ctx, rec, snapshot_id, feed_id)
        con.execute("COMMIT")
    ctx.progress(f"{method} shard {shard}: prepared {n} {what}, uploading to feed {feed_id}")
    try:
        rec.upload_session_id = _upload(ctx, feed_id, path, update_only=method == "update")
    except MetaAPIError as exc:
        _fail(ctx, rec, exc)
        raise
    finally:
        path.unlink(missing_ok=True)
    rec.status = "processing"
    with ctx.db() as con:
        _finish_sync(con, rec, None)
    session = _poll_upload(ctx, rec.upload_session_id)
    if session is not None:
        _confirm_upload(ctx, rec, session, method)
    return rec


def _fail(ctx: SyncContext, rec: SyncRecord, exc: Exception) -> None:
    """The request never reached Meta: drop its in-flight rows so the next run sends them again."""
    rec.status = "failed"
    rec.message = str(exc)[:2000]
    with ctx.db() as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM sync_state.inflight_items WHERE sync_id = ?", [rec.sync_id])
        _finish_sync(con, rec, ctx.now())
        con.execute("COMMIT")


# ---------------------------------------------------------------------------------------------------------------
# Update


def run_update(ctx: SyncContext) -> list[SyncRecord]:
    """New and changed items (full rows) as an update_only upload per shard. Never deletes."""
    resolve_pending(ctx)
    records: list[SyncRecord] = []
    with ctx.db() as con:
        snapshot_id = current_snapshot_id(con, ctx.tenant_id)
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
    for shard in shards:
        records.append(_upload_shard(ctx, "update", shard, where, snapshot_id, "new/changed items"))
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
    resolve_pending(ctx, only_method="batch", wait=False)
    with ctx.db() as con:
        snapshot_id = current_snapshot_id(con, ctx.tenant_id)
        chunks = con.execute(batch_requests_sql(size), {"t": ctx.tenant_id}).fetchall()
    total = sum(int(c[1]) for c in chunks)
    sent = 0
    records: list[SyncRecord] = []
    for chunk, n, requests_json, ids in chunks:
        rec = SyncRecord(_new_sync_id("batch"), "batch", -1, int(n), "submitted")
        with ctx.db() as con:
            con.execute("BEGIN")
            con.execute("CREATE OR REPLACE TEMP TABLE _ids (id VARCHAR)")
            con.execute("INSERT INTO _ids SELECT unnest(?::VARCHAR[])", [ids])
            con.execute(
                """INSERT INTO sync_state.inflight_items
                   SELECT ?, d.tenant_id, d.id, d.shard, 'batch', NULL, d.content_hash, d.volatile_hash
                   FROM sync_state.desired_items d JOIN _ids USING (id) WHERE d.tenant_id = ?""",
                [rec.sync_id, ctx.tenant_id],
            )
            _insert_sync(con, ctx, rec, snapshot_id)
            record_batch_lines(con, rec.sync_id, list(ids))
            con.execute("COMMIT")
        try:
            resp = ctx.client.post(
                f"{ctx.catalog_id}/items_batch",
                data={"item_type": "PRODUCT_ITEM", "allow_upsert": "false", "requests": requests_json},
            )
        except MetaAPIError as exc:
            _fail(ctx, rec, exc)
            raise
        handles = [str(h) for h in resp.get("handles") or []]
        rec.handle = ",".join(handles)
        invalid_now = [v for v in resp.get("validation_status") or [] if v.get("errors")]
        rec.status = "processing"
        rec.errors_count = len(invalid_now)
        with ctx.db() as con:
            con.execute("BEGIN")
            if invalid_now:
                _drop_rejected(
                    con, ctx, rec.sync_id, [(str(v.get("retailer_id")), _msg(v)) for v in invalid_now]
                )
            _finish_sync(con, rec, None)
            con.execute("COMMIT")
        sent += int(n)
        ctx.progress(
            f"batch: sent {sent} of {total} volatile-only items (chunk {int(chunk) + 1}, handle {rec.handle})"
        )
        records.append(rec)
    return records


def _msg(v: dict[str, Any]) -> str:
    return "; ".join(str(e.get("message", "")) for e in v.get("errors") or [])


def _drop_rejected(
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


def check_batch(ctx: SyncContext, rec: SyncRecord) -> bool:
    """Ask Meta about a batch request; confirm its items when every handle finished. True when resolved."""
    statuses = []
    rejected: list[tuple[str, str]] = []
    errors = warnings = 0
    for handle in (rec.handle or "").split(","):
        if not handle:
            continue
        resp = ctx.client.get(
            f"{ctx.catalog_id}/check_batch_request_status",
            params={"handle": handle, "load_ids_of_invalid_requests": "true"},
        )
        for entry in resp.get("data") or []:
            statuses.append(entry.get("status"))
            errors += int(entry.get("errors_total_count") or len(entry.get("errors") or []))
            warnings += int(entry.get("warnings_total_count") or len(entry.get("warnings") or []))
            for e in entry.get("errors") or []:
                if e.get("id"):
                    rejected.append((str(e["id"]), str(e.get("message", ""))))
            for rid in entry.get("ids_of_invalid_requests") or []:
                rejected.append((str(rid), "invalid request"))
    if not statuses or any(s != "finished" for s in statuses):
        return False
    rec.status = "finished"
    rec.errors_count = max(rec.errors_count, errors)
    rec.warnings_count = warnings
    now = ctx.now()
    with ctx.db() as con:
        con.execute("BEGIN")
        _drop_rejected(con, ctx, rec.sync_id, rejected)
        con.execute(
            """UPDATE sync_state.meta_items m SET volatile_hash = f.volatile_hash, method = 'batch',
                 sync_id = f.sync_id, synced_at = ?
               FROM sync_state.inflight_items f
               WHERE f.sync_id = ? AND m.tenant_id = f.tenant_id AND m.id = f.id""",
            [now, rec.sync_id],
        )
        con.execute("DELETE FROM sync_state.inflight_items WHERE sync_id = ?", [rec.sync_id])
        _finish_sync(con, rec, now)
        con.execute("COMMIT")
    ctx.progress(f"batch {rec.sync_id} finished: {rec.items_sent} items, {len(set(rejected))} rejected")
    return True


# ---------------------------------------------------------------------------------------------------------------
# Pending requests


def pending_syncs(
    con: duckdb.DuckDBPyConnection, tenant_id: str, only_method: str | None = None
) -> list[SyncRecord]:
    rows = con.execute(
        """SELECT sync_id, method, shard, items_sent, status, upload_session_id, handle, errors_count
           FROM main.catalog_syncs WHERE tenant_id = ? AND status IN ('submitted', 'processing')
             AND (? IS NULL OR method = ?) ORDER BY started_at""",
        [tenant_id, only_method, only_method],
    ).fetchall()
    return [SyncRecord(r[0], r[1], int(r[2]), int(r[3] or 0), r[4], r[5], r[6], int(r[7] or 0)) for r in rows]


def resolve_pending(ctx: SyncContext, only_method: str | None = None, wait: bool = True) -> list[SyncRecord]:
    """Settle requests an earlier run left unconfirmed, before computing anything new.

    A request still 'submitted' never got an answer from Meta (the run died while sending): its items are
    released and go out again with the next request. Uploads and batches Meta knows are polled."""
    with ctx.db() as con:
        pending = pending_syncs(con, ctx.tenant_id, only_method)
    resolved = []
    for rec in pending:
        if rec.status == "submitted" and not (rec.upload_session_id or rec.handle):
            _fail(
                ctx, rec, RuntimeError("never acknowledged by Meta (run interrupted); items will be re-sent")
            )
            continue
        if rec.method in ("replace", "update"):
            session = (
                _poll_upload(ctx, rec.upload_session_id or "")
                if wait
                else ctx.client.get(
                    rec.upload_session_id or "",
                    params={"fields": "id,end_time,error_count,warning_count,num_deleted_items"},
                )
            )
            if session and session.get("end_time"):
                _confirm_upload(ctx, rec, session, rec.method)
                resolved.append(rec)
            elif wait:
                raise SyncBlocked(
                    f"tenant '{ctx.tenant_id}': {rec.method} upload {rec.upload_session_id} is still processing at "
                    "Meta; a new sync of this catalog would overlap it"
                )
        elif rec.method == "batch":
            # Feeds must not overlap a batch still processing the same items: wait for it (bounded).
            deadline = time.monotonic() + (ctx.poll_timeout if wait else 0)
            while not check_batch(ctx, rec):
                if time.monotonic() >= deadline:
                    if wait:
                        raise SyncBlocked(
                            f"tenant '{ctx.tenant_id}': batch request {rec.handle} is still processing at Meta; "
                            "a feed upload now would overlap it"
                        )
                    break
                ctx.sleep(ctx.poll_interval)
            else:
                resolved.append(rec)
    return resolved
