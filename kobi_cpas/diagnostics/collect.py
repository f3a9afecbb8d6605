"""Collect the current problems of a tenant catalog from every source into ``diag_state.staged_problems``.

Sources (``catalog_diagnostics.source``):

- ``kobi_feed_validation``: ``main.feed_item_issues`` (the table holds the latest ingested snapshot per tenant
  and the latest feed-file failure): error -> HIGH, warning -> MEDIUM, info -> LOW; Kobi's CTA is kept.
- ``feed_upload``: ``GET /{upload_id}/errors?error_priority=HIGH|MEDIUM|LOW`` (fatals and warnings) of
  finished uploads in ``main.catalog_syncs``. Rows map back to retailer ids through the error ``samples``
  (``retailer_id``), else ``diag_state.sync_rows`` (written by the sync, see ``record_upload_rows``), else
  ``sync_state.inflight_items`` (only until Meta confirms the upload).
- ``batch_request``: ``check_batch_request_status`` of finished Batch API requests: errors (HIGH, fatal),
  warnings (MEDIUM) and ``ids_of_invalid_requests``; a line without an id maps through ``sync_rows``.
- ``meta_item_check``: Meta's async item errors, ``GET /{catalog_id}/products?fields=id,retailer_id,errors
  &error_priority=P`` for each priority through every page (the summary-view approach), or ``GET /{item_id}
  ?fields=errors`` for a few items (the item view, a partial poll). Items listed without ``retailer_id`` (as
  in Meta's samples) are mapped by ``item_ids`` or kept as ``unmapped_item`` rows naming the product item id.
- ``meta_catalog_diagnostics``: catalog-level entries (``affected_entity = product_catalog``) of ``GET
  /{catalog_id}/diagnostics``, e.g. no pixel connected.

Ingestion errors of a finished upload or batch never change, so they are fetched once into
``diag_state.sync_errors`` (``fatal_errors_for_sync`` right after the sync, or the hourly poll for any sync it
missed). Which of them are *current* is decided in SQL: an item's ingestion problems are those of the latest
sync that covered the item — a later replace upload of the item's shard, or a later upload or batch that sent
the item (``sync_rows``) or reported it — within the lookback window (7 days by default). A file-level problem
stays current until a later upload of the same shard (or, for batches, a later batch or replace).

Every ``stage_*`` function replaces the staged rows of its source and records that the source was polled
(``staged_sources``, with a priority or item scope for partial polls). ``lifecycle.merge_problems`` then
consumes the stage; only polled sources may resolve problems.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from kobi_cpas.diagnostics._sql import run
from kobi_cpas.diagnostics.dictionary import (
    PRIORITIES,
    error_type_from_title_sql,
    priority_sql,
)
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.errors import UNKNOWN_OBJECT_SUBCODE, MetaInvalidRequestError
from kobi_cpas.warehouse.sql import transaction

SOURCES: tuple[str, ...] = (
    "kobi_feed_validation",
    "feed_upload",
    "batch_request",
    "meta_item_check",
    "meta_catalog_diagnostics",
    "kobi_sync_guard",  # the sync's safety guards (diagnostics/guard.py)
)
DEFAULT_LOOKBACK = timedelta(days=7)
DEFAULT_PAGE_LIMIT = 500
# Only fields Meta's SDK defines are requested: rows come through samples (row_number and column_number are on
# the error object in Meta's sample but not in the SDK; they are read when present). error_type is in the SDK
# and in Meta's field list but not in the sample: when absent (the sample's shape) the type comes from the
# summary's title (dictionary.INGESTION_TITLE_TYPES), so the CTA does not depend on it.
UPLOAD_ERROR_FIELDS = "id,summary,description,severity,error_type,total_count,samples{row_number,retailer_id}"
_STAGE_COLUMNS = (
    "tenant_id, catalog_id, retailer_id, product_item_id, level, source, error_type, field, variant, priority, "
    "severity, title, description, reported_cta, message, row_number, column_number, sync_id, sync_method, "
    "upload_session_id, handle, reported_count, reported_at"
)


# -- staging bookkeeping --------------------------------------------------------------------------------------


def clear_stage(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, source: str | None = None
) -> None:
    """Drop staged rows (of one source, or all) of a tenant catalog."""
    for table in ("staged_problems", "staged_sources", "staged_scope"):
        con.execute(
            f"DELETE FROM diag_state.{table} WHERE tenant_id = ? AND catalog_id = ? AND (? IS NULL OR source = ?)",
            [tenant_id, catalog_id, source, source],
        )


def _mark_polled(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    source: str,
    now: datetime,
    priorities: Sequence[str] | None = None,
    retailer_ids: Iterable[str] | None = None,
) -> None:
    prios = None if priorities is None or set(priorities) >= set(PRIORITIES) else list(priorities)
    con.execute(
        "INSERT INTO diag_state.staged_sources VALUES (?, ?, ?, ?, ?, ?)",
        [tenant_id, catalog_id, source, prios, retailer_ids is not None, now],
    )
    if retailer_ids is not None:
        con.execute(
            "INSERT INTO diag_state.staged_scope SELECT ?, ?, ?, unnest(?::VARCHAR[])",
            [tenant_id, catalog_id, source, sorted(set(retailer_ids))],
        )


# -- (a) Kobi's feed validation -------------------------------------------------------------------------------


def stage_feed_validation(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime, *, clear: bool = True
) -> int:
    """Stage ``main.feed_item_issues`` of the tenant (its latest snapshot) as ``kobi_feed_validation``.
    ``clear=False``: the caller has just cleared the whole stage (``clear_stage``)."""
    if clear:
        clear_stage(con, tenant_id, catalog_id, "kobi_feed_validation")
    row = run(
        con,
        f"""INSERT INTO diag_state.staged_problems ({_STAGE_COLUMNS})
        SELECT $t, $c, coalesce(i.retailer_id, ''), NULL,
               CASE WHEN i.retailer_id IS NULL THEN 'file' ELSE 'item' END,
               'kobi_feed_validation', upper(coalesce(i.code, 'feed_issue')), coalesce(i.field, ''),
               -- rows without an id are told apart by their row number
               CASE WHEN i.retailer_id IS NULL THEN coalesce(CAST(i.row_number AS VARCHAR), '') ELSE '' END,
               CASE lower(i.severity) WHEN 'error' THEN 'HIGH' WHEN 'warning' THEN 'MEDIUM' ELSE 'LOW' END,
               lower(coalesce(i.severity, 'error')),
               upper(left(coalesce(i.code, 'feed issue'), 1)) || replace(substr(coalesce(i.code, 'feed issue'), 2), '_', ' ')
                 || coalesce(': ' || i.field, ''),
               i.message, i.call_to_action, i.message, i.row_number, NULL, NULL, NULL, NULL, NULL, NULL, $now
        FROM main.feed_item_issues i WHERE i.tenant_id = $t""",
        {"t": tenant_id, "c": catalog_id, "now": now},
    ).fetchone()
    _mark_polled(con, tenant_id, catalog_id, "kobi_feed_validation", now)
    # The source's staged rows were cleared first: the rows inserted are all of them.
    return int(row[0]) if row else 0


# -- row mapping written by the sync ---------------------------------------------------------------------------


def record_upload_rows(con: duckdb.DuckDBPyConnection, sync_id: str, export_table: str = "_export") -> int:
    """Remember which item each row of an uploaded file is: call it where the sync records the in-flight items
    (``kobi_cpas.sync.methods._record_inflight``), with the export table whose ``_rn`` is the file row number
    and ``id`` the retailer id. Idempotent per sync_id."""
    con.execute("DELETE FROM diag_state.sync_rows WHERE sync_id = ?", [sync_id])
    con.execute(f"INSERT INTO diag_state.sync_rows SELECT ?, _rn, id FROM {export_table}", [sync_id])
    row = con.execute("SELECT count(*) FROM diag_state.sync_rows WHERE sync_id = ?", [sync_id]).fetchone()
    return int(row[0]) if row else 0


def record_batch_lines(con: duckdb.DuckDBPyConnection, sync_id: str, retailer_ids: Sequence[str]) -> int:
    """Remember the item of each line (0-based) of a Batch API request, in request order (``run_batch`` sends
    its ``ids`` in the same order as its ``requests``). Idempotent per sync_id."""
    con.execute("DELETE FROM diag_state.sync_rows WHERE sync_id = ?", [sync_id])
    con.execute(
        "INSERT INTO diag_state.sync_rows SELECT ?, generate_subscripts(ids, 1) - 1, unnest(ids) "
        "FROM (SELECT ?::VARCHAR[] AS ids)",
        [sync_id, list(retailer_ids)],
    )
    return len(retailer_ids)


# -- (b, c) ingestion errors of uploads and batches ------------------------------------------------------------


@dataclass(frozen=True)
class SyncRef:
    """One upload or batch of ``main.catalog_syncs``."""

    sync_id: str
    tenant_id: str
    catalog_id: str
    method: str  # replace | update | batch
    shard: int | None
    started_at: datetime | None
    status: str | None
    upload_session_id: str | None
    handle: str | None
    errors_count: int | None = None
    warnings_count: int | None = None

    @property
    def is_upload(self) -> bool:
        return self.method in ("replace", "update")

    @property
    def source(self) -> str:
        return "feed_upload" if self.is_upload else "batch_request"

    @property
    def handles(self) -> list[str]:
        return [h for h in (self.handle or "").split(",") if h]


_SYNC_COLUMNS = (
    "sync_id, tenant_id, catalog_id, method, shard, started_at, status, upload_session_id, handle, "
    "errors_count, warnings_count"
)


def _ref(row: Sequence[Any]) -> SyncRef:
    return SyncRef(
        sync_id=row[0],
        tenant_id=row[1],
        catalog_id=row[2],
        method=row[3],
        shard=None if row[4] is None else int(row[4]),
        started_at=row[5],
        status=row[6],
        upload_session_id=row[7],
        handle=row[8],
        errors_count=None if row[9] is None else int(row[9]),
        warnings_count=None if row[10] is None else int(row[10]),
    )


def sync_ref(con: duckdb.DuckDBPyConnection, sync_row: str | Mapping[str, Any] | Any) -> SyncRef:
    """A ``SyncRef`` from a sync id, a ``catalog_syncs`` row (mapping) or an object with ``sync_id`` (e.g.
    ``kobi_cpas.sync.methods.SyncRecord``); the stored row is read from ``main.catalog_syncs`` and the given
    values (upload_session_id, handle, status) win over it."""
    if isinstance(sync_row, str):
        given: dict[str, Any] = {"sync_id": sync_row}
    elif isinstance(sync_row, Mapping):
        given = dict(sync_row)
    else:
        given = {
            k: getattr(sync_row, k)
            for k in ("sync_id", "method", "shard", "status", "upload_session_id", "handle")
            if hasattr(sync_row, k)
        }
    sync_id = str(given.get("sync_id") or "")
    if not sync_id:
        raise ValueError("sync_row must name a sync_id of main.catalog_syncs")
    row = con.execute(
        f"SELECT {_SYNC_COLUMNS} FROM main.catalog_syncs WHERE sync_id = ?", [sync_id]
    ).fetchone()
    if row is None:
        raise ValueError(f"sync {sync_id!r} is not in main.catalog_syncs")
    ref = _ref(row)
    overrides = {
        k: given[k] for k in ("status", "upload_session_id", "handle") if given.get(k) not in (None, "")
    }
    return SyncRef(**{**ref.__dict__, **overrides}) if overrides else ref


def syncs_to_fetch(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    now: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> list[SyncRef]:
    """Finished uploads and batches of the lookback window that reported errors or warnings (or whose counts
    are unknown) and whose errors are not fetched yet."""
    rows = con.execute(
        f"""SELECT {", ".join("s." + c.strip() for c in _SYNC_COLUMNS.split(","))}
        FROM main.catalog_syncs s
        WHERE s.tenant_id = ? AND s.catalog_id = ? AND starts_with(s.status, 'finished')
          AND coalesce(s.started_at, s.finished_at) >= ?
          AND (s.upload_session_id IS NOT NULL OR s.handle IS NOT NULL)
          AND (s.errors_count IS NULL OR s.warnings_count IS NULL OR s.errors_count + s.warnings_count > 0)
          AND s.sync_id NOT IN (SELECT sync_id FROM diag_state.sync_errors_fetched)
        ORDER BY s.started_at, s.sync_id""",
        [tenant_id, catalog_id, now - lookback],
    ).fetchall()
    return [_ref(r) for r in rows]


@dataclass
class FetchedSyncErrors:
    """What Meta reported for one sync. ``status``: finished (errors read), pending (Meta still processing:
    nothing is stored, ask again later) or unavailable (Meta no longer knows the session)."""

    ref: SyncRef
    status: str
    upload_errors: list[dict[str, Any]] = field(default_factory=list)
    batch_entries: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None
    requests: int = 0


def fetch_sync_errors(client: MetaGraphClient, ref: SyncRef) -> FetchedSyncErrors:
    """Read the errors and warnings of one finished upload (every priority, every page, with samples) or batch
    (every handle, with ids_of_invalid_requests). Throttling is retried by the client."""
    out = FetchedSyncErrors(ref, "finished")
    try:
        if ref.is_upload:
            if not ref.upload_session_id:
                return FetchedSyncErrors(ref, "unavailable", message="no upload session id")
            session = client.get(ref.upload_session_id, params={"fields": "id,end_time"})
            out.requests += 1
            if not session.get("end_time"):
                return FetchedSyncErrors(ref, "pending", requests=out.requests)
            for priority in PRIORITIES:
                for page in client.pages(
                    f"{ref.upload_session_id}/errors",
                    params={"error_priority": priority, "fields": UPLOAD_ERROR_FIELDS, "limit": 500},
                ):
                    out.requests += 1
                    for err in page.get("data") or []:
                        out.upload_errors.append({**err, "error_priority": priority})
        else:
            if not ref.handles:
                return FetchedSyncErrors(ref, "unavailable", message="no batch handle")
            for handle in ref.handles:
                resp = client.get(
                    f"{ref.catalog_id}/check_batch_request_status",
                    params={"handle": handle, "load_ids_of_invalid_requests": "true"},
                )
                out.requests += 1
                for entry in resp.get("data") or []:
                    if entry.get("status") != "finished":
                        return FetchedSyncErrors(ref, "pending", requests=out.requests)
                    out.batch_entries.append({**entry, "handle": entry.get("handle") or handle})
    except MetaInvalidRequestError as exc:
        # The session (subcode 33) or handle (code 100 naming the handle) is unknown to Meta: nothing to read.
        if exc.error_subcode == UNKNOWN_OBJECT_SUBCODE or (not ref.is_upload and "handle" in exc.message):
            return FetchedSyncErrors(ref, "unavailable", message=str(exc)[:500], requests=out.requests)
        raise
    for n, err in enumerate(out.upload_errors):
        err["_n"] = n
    return out


_UPLOAD_JSON_TYPE = json.dumps(
    [
        {
            "_n": "BIGINT",
            "id": "VARCHAR",
            "summary": "VARCHAR",
            "description": "VARCHAR",
            "severity": "VARCHAR",
            "row_number": "BIGINT",
            "column_number": "BIGINT",
            "error_type": "VARCHAR",
            "error_priority": "VARCHAR",
            "total_count": "BIGINT",
            "samples": {"data": [{"row_number": "BIGINT", "retailer_id": "VARCHAR"}]},
        }
    ]
)
_BATCH_MSG = {"line": "BIGINT", "id": "VARCHAR", "message": "VARCHAR"}
_BATCH_JSON_TYPE = json.dumps(
    [
        {
            "handle": "VARCHAR",
            "errors": [_BATCH_MSG],
            "warnings": [_BATCH_MSG],
            "ids_of_invalid_requests": ["VARCHAR"],
        }
    ]
)


def store_sync_errors(con: duckdb.DuckDBPyConnection, fetched: FetchedSyncErrors, now: datetime) -> int:
    """Store what ``fetch_sync_errors`` read into ``diag_state.sync_errors`` (rows mapped to retailer ids in
    SQL) and mark the sync fetched. A pending sync stores nothing. Idempotent per sync. Returns the rows."""
    ref = fetched.ref
    if fetched.status == "pending":
        return 0
    with transaction(con):
        con.execute("DELETE FROM diag_state.sync_errors WHERE sync_id = ?", [ref.sync_id])
        con.execute("DELETE FROM diag_state.sync_errors_fetched WHERE sync_id = ?", [ref.sync_id])
        params = {
            "sync": ref.sync_id,
            "t": ref.tenant_id,
            "c": ref.catalog_id,
            "method": ref.method,
            "shard": ref.shard,
            "started": ref.started_at,
            "upload": ref.upload_session_id,
            "now": now,
        }
        if fetched.upload_errors:
            field_re = r":\s*([A-Za-z0-9_.\[\]]+?)\.?\s*$"
            run(
                con,
                f"""INSERT INTO diag_state.sync_errors
                WITH raw AS (SELECT unnest(from_json($j::JSON, '{_UPLOAD_JSON_TYPE}')) AS e),
                occ AS (
                  SELECT e._n AS n, o.row_number AS rn, max(o.retailer_id) AS rid
                  FROM raw, unnest(list_concat(
                      CASE WHEN e.row_number IS NULL THEN []
                           ELSE [{{'row_number': e.row_number, 'retailer_id': NULL::VARCHAR}}] END,
                      coalesce(e.samples.data, []))) AS u(o)
                  GROUP BY ALL
                  UNION ALL
                  SELECT e._n, NULL, NULL FROM raw
                  WHERE e.row_number IS NULL AND len(coalesce(e.samples.data, [])) = 0
                ),
                flat AS (SELECT unnest(e) FROM raw),
                err AS (
                  SELECT *, nullif(regexp_extract(coalesce(summary, ''), '{field_re}', 1), '') AS fld,
                         rtrim(trim(coalesce(summary, '')), '.') AS summ
                  FROM flat
                )
                SELECT $sync, $t, $c, $method, $shard, $started, $upload, NULL, 'upload_error', err.id,
                       coalesce(nullif(err.error_type, ''),
                                {error_type_from_title_sql("regexp_replace(err.summ, ':[^:]*$', '')")},
                                'FEED_UPLOAD_ERROR'),
                       {priority_sql("err.error_priority")},
                       lower(coalesce(nullif(err.severity, ''),
                                      CASE WHEN err.error_priority = 'HIGH' THEN 'fatal' ELSE 'warning' END)),
                       CASE WHEN err.fld IS NOT NULL THEN regexp_replace(err.summ, '\\s*:[^:]*$', '')
                            ELSE err.summ END,
                       err.description, err.summary, err.fld, o.rn, err.column_number,
                       coalesce(o.rid, sr.retailer_id, fi.id),
                       CASE WHEN o.rid IS NOT NULL THEN 'sample' WHEN sr.retailer_id IS NOT NULL THEN 'sync_rows'
                            WHEN fi.id IS NOT NULL THEN 'inflight' END,
                       err.total_count, $now
                FROM occ o JOIN err ON err._n = o.n
                LEFT JOIN diag_state.sync_rows sr ON sr.sync_id = $sync AND sr.row_number = o.rn
                LEFT JOIN sync_state.inflight_items fi ON fi.sync_id = $sync AND fi.row_number = o.rn""",
                {**params, "j": json.dumps(fetched.upload_errors)},
            )
        if fetched.batch_entries:
            run(
                con,
                f"""INSERT INTO diag_state.sync_errors
                WITH raw AS (SELECT unnest(from_json($j::JSON, '{_BATCH_JSON_TYPE}')) AS b),
                errs AS (
                  SELECT b.handle, 'batch_error' AS kind, m.line, nullif(m.id, '') AS id, m.message
                  FROM raw, unnest(b.errors) AS u(m)
                ),
                invalid AS (SELECT b.handle, i FROM raw, unnest(b.ids_of_invalid_requests) AS u(i)),
                msgs AS (
                  SELECT * FROM errs
                  UNION ALL
                  SELECT b.handle, 'batch_warning', m.line, nullif(m.id, ''), m.message
                  FROM raw, unnest(b.warnings) AS u(m)
                  UNION ALL
                  -- an invalid request without an error of its own
                  SELECT v.handle, 'batch_invalid', NULL, v.i, NULL FROM invalid v
                  WHERE NOT EXISTS (SELECT 1 FROM errs e WHERE e.handle = v.handle AND e.id = v.i)
                ),
                parts AS (
                  SELECT *, strpos(coalesce(message, ''), ': ') AS p FROM msgs
                ),
                typed AS (
                  SELECT *,
                    CASE WHEN p > 0 THEN left(message, p - 1) END AS ttl,
                    CASE WHEN p > 0 THEN substr(message, p + 2) END AS dsc
                  FROM parts
                )
                SELECT $sync, $t, $c, $method, $shard, $started, NULL, m.handle, m.kind, NULL,
                       CASE WHEN m.kind = 'batch_invalid' THEN 'BATCH_INVALID_REQUEST'
                            WHEN m.message ILIKE '%does not exist%' THEN 'ITEM_NOT_FOUND'
                            ELSE coalesce({error_type_from_title_sql("m.ttl")},
                                          CASE m.kind WHEN 'batch_error' THEN 'BATCH_ERROR' ELSE 'BATCH_WARNING' END)
                       END,
                       CASE WHEN m.kind = 'batch_warning' THEN 'MEDIUM' ELSE 'HIGH' END,
                       CASE WHEN m.kind = 'batch_warning' THEN 'warning' ELSE 'fatal' END,
                       CASE WHEN m.kind = 'batch_invalid' THEN 'Invalid request'
                            WHEN m.message ILIKE '%does not exist%' THEN 'Item not found'
                            ELSE coalesce(m.ttl, m.message) END,
                       CASE WHEN m.kind = 'batch_invalid'
                            THEN 'Meta listed this item among the ids of invalid requests of the batch.'
                            ELSE coalesce(m.dsc, m.message) END,
                       m.message, NULL, m.line, NULL,
                       coalesce(m.id, sr.retailer_id),
                       CASE WHEN m.id IS NOT NULL THEN 'error' WHEN sr.retailer_id IS NOT NULL THEN 'sync_rows' END,
                       NULL, $now
                FROM typed m
                LEFT JOIN diag_state.sync_rows sr ON sr.sync_id = $sync AND sr.row_number = m.line""",
                {**params, "j": json.dumps(fetched.batch_entries)},
            )
        rows = 0
        if fetched.upload_errors or fetched.batch_entries:
            n = con.execute(
                "SELECT count(*) FROM diag_state.sync_errors WHERE sync_id = ?", [ref.sync_id]
            ).fetchone()
            rows = int(n[0]) if n else 0
        con.execute(
            "INSERT INTO diag_state.sync_errors_fetched VALUES (?, ?, ?, ?, ?, ?, ?)",
            [ref.sync_id, ref.tenant_id, ref.catalog_id, fetched.status, rows, now, fetched.message],
        )
    return rows


def stage_sync_problems(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    now: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
    *,
    clear: bool = True,
) -> dict[str, int]:
    """Stage the current ``feed_upload`` and ``batch_request`` problems from the stored sync errors (see the
    module docstring for which are current). A finished sync whose errors are not fetched yet is ignored (it
    neither adds nor supersedes anything) until a poll fetches them. ``clear=False``: the caller has just
    cleared the whole stage (``clear_stage``)."""
    sources = ["feed_upload", "batch_request"]
    for table in ("staged_problems", "staged_sources", "staged_scope") if clear else ():
        con.execute(
            f"DELETE FROM diag_state.{table} WHERE tenant_id = ? AND catalog_id = ? AND list_contains(?, source)",
            [tenant_id, catalog_id, sources],
        )
    # Every staged row comes from a stored sync error of the tenant catalog. Most catalogs have none: a cheap
    # look first spares planning the statement below (~15 ms) on every poll and after every sync.
    has_errors = con.execute(
        "SELECT EXISTS (SELECT 1 FROM diag_state.sync_errors WHERE tenant_id = ? AND catalog_id = ?)",
        [tenant_id, catalog_id],
    ).fetchone()
    if has_errors and has_errors[0]:
        _stage_current_sync_errors(con, tenant_id, catalog_id, now - lookback)
    # Both sources polled in full (as _mark_polled records it), in one statement.
    con.execute(
        "INSERT INTO diag_state.staged_sources SELECT ?, ?, unnest(?::VARCHAR[]), NULL, false, ?",
        [tenant_id, catalog_id, sources, now],
    )
    if not (has_errors and has_errors[0]):
        return dict.fromkeys(sources, 0)  # this source's rows were cleared (here or by the caller)
    staged = dict(
        con.execute(
            "SELECT source, count(*) FROM diag_state.staged_problems WHERE tenant_id = ? AND catalog_id = ? "
            "AND list_contains(?, source) GROUP BY source",
            [tenant_id, catalog_id, sources],
        ).fetchall()
    )
    return {source: int(staged.get(source, 0)) for source in sources}


def _stage_current_sync_errors(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, since: datetime
) -> None:
    run(
        con,
        f"""INSERT INTO diag_state.staged_problems ({_STAGE_COLUMNS})
        WITH syncs AS (
          -- finished syncs whose outcome is known: errors fetched, or none reported
          SELECT s.sync_id, s.method, s.shard, coalesce(s.started_at, s.finished_at) AS t
          FROM main.catalog_syncs s
          WHERE s.tenant_id = $t AND s.catalog_id = $c AND starts_with(s.status, 'finished')
            AND coalesce(s.started_at, s.finished_at) >= $since
            AND (s.sync_id IN (SELECT sync_id FROM diag_state.sync_errors_fetched)
                 OR (coalesce(s.errors_count, 0) = 0 AND coalesce(s.warnings_count, 0) = 0
                     AND s.errors_count IS NOT NULL AND s.warnings_count IS NOT NULL))
        ),
        err AS (
          SELECT e.*, s.t, s.shard AS sync_shard FROM diag_state.sync_errors e JOIN syncs s USING (sync_id)
          WHERE e.tenant_id = $t AND e.catalog_id = $c
        ),
        item_shard AS (
          SELECT id AS retailer_id, any_value(shard) AS shard FROM (
            SELECT id, shard FROM sync_state.desired_state WHERE tenant_id = $t
            UNION ALL SELECT id, shard FROM sync_state.meta_items WHERE tenant_id = $t) GROUP BY 1
        ),
        covered AS (
          -- an item was sent by a sync: its rows, or it is named in the sync's errors
          SELECT r.retailer_id, s.t, s.method FROM diag_state.sync_rows r JOIN syncs s USING (sync_id)
          UNION ALL SELECT retailer_id, t, method FROM err WHERE retailer_id IS NOT NULL
        ),
        current_items AS (
          SELECT err.* FROM err LEFT JOIN item_shard x USING (retailer_id)
          WHERE err.retailer_id IS NOT NULL
            -- a later upload re-sent the whole item; a later batch only re-sent (and so only supersedes) a batch
            AND NOT EXISTS (SELECT 1 FROM covered c WHERE c.retailer_id = err.retailer_id AND c.t > err.t
                              AND (c.method <> 'batch' OR err.method = 'batch'))
            AND NOT EXISTS (
              SELECT 1 FROM syncs r WHERE r.method = 'replace' AND r.t > err.t
                AND (coalesce(x.shard, CASE WHEN err.sync_shard >= 0 THEN err.sync_shard END) IS NULL
                     OR r.shard = coalesce(x.shard, CASE WHEN err.sync_shard >= 0 THEN err.sync_shard END)))
        ),
        current_files AS (
          SELECT err.* FROM err
          WHERE err.retailer_id IS NULL
            AND NOT EXISTS (
              SELECT 1 FROM syncs r WHERE r.t > err.t AND (
                (err.method IN ('replace', 'update') AND r.method IN ('replace', 'update') AND r.shard = err.sync_shard)
                OR (err.method = 'batch' AND r.method IN ('batch', 'replace'))))
        )
        SELECT $t, $c, coalesce(retailer_id, ''), NULL, CASE WHEN retailer_id IS NULL THEN 'file' ELSE 'item' END,
               CASE WHEN method = 'batch' THEN 'batch_request' ELSE 'feed_upload' END,
               error_type, coalesce(field, ''),
               -- the summary / message tells apart errors of one type (e.g. the field of a group mismatch)
               coalesce(message, '') || CASE WHEN retailer_id IS NULL THEN '#' || coalesce(CAST(row_number AS VARCHAR), '') ELSE '' END,
               priority, severity, title, description, NULL, message, row_number, column_number, sync_id, method,
               upload_session_id, handle, total_count, t
        FROM (SELECT * FROM current_items UNION ALL SELECT * FROM current_files)""",
        {"t": tenant_id, "c": catalog_id, "since": since},
    )
