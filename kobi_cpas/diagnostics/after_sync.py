"""Right after an upload or a batch: read its fatal ingestion errors and warnings into ``catalog_diagnostics``
(Meta's Catalog Integration step 6, "Address fatal ingestion errors"), using the collection of ``collect``.

Two phases, so the work database is never held across a network wait: ``fetch_after_sync`` asks Meta with no
connection open, then ``apply_sync_errors`` stores and merges with short set-based writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from kobi_cpas.diagnostics._sql import run
from kobi_cpas.diagnostics.collect import (
    DEFAULT_LOOKBACK,
    FetchedSyncErrors,
    SyncRef,
    fetch_sync_errors,
    stage_sync_problems,
    store_sync_errors,
    sync_ref,
)
from kobi_cpas.diagnostics.dictionary import DEFAULT_LOCALE
from kobi_cpas.diagnostics.lifecycle import MergeCounts, merge_problems
from kobi_cpas.diagnostics.summary import build_health, build_summary, write_health, write_summary
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.warehouse.sql import transaction

SYNC_SOURCES = ("feed_upload", "batch_request")


@dataclass
class SyncErrorsReport:
    """What ``fatal_errors_for_sync`` found for one upload or batch."""

    sync_id: str
    method: str
    status: str  # finished | pending (Meta still processing: call again later) | unavailable
    fatal_errors: int = 0  # error rows of severity fatal (one per affected row / item / file)
    warnings: int = 0
    items_rejected: int = 0  # distinct items with a fatal error
    problems: list[dict[str, Any]] = field(default_factory=list)  # the stored rows, fatal first
    merge: Any = None  # lifecycle.MergeCounts when the problems were merged into catalog_diagnostics

    def as_metadata(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "status": self.status,
            "fatal_errors": self.fatal_errors,
            "warnings": self.warnings,
            "items_rejected": self.items_rejected,
        }


def _needs_stored_row(rec: Any) -> bool:
    """A record that does not itself name what Meta must be asked about (its session or handle)."""
    if getattr(rec, "method", None) in ("replace", "update"):
        return not getattr(rec, "upload_session_id", None)
    return getattr(rec, "method", None) != "batch" or not getattr(rec, "handle", None)


def refs_for_records(
    tenant_id: str,
    catalog_id: str,
    records: Sequence[Any],
    db: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
) -> list[SyncRef]:
    """The ``SyncRef`` of each sync record (``kobi_cpas.sync.context.SyncRecord``) as ``sync_ref`` would read
    it. A record naming its session or handle needs no database read; the others are read through ``db`` in
    one short connection, closed before anything is asked of Meta."""
    stored: dict[str, SyncRef] = {}
    missing = [r for r in records if _needs_stored_row(r)]
    if missing:
        with db() as con:
            stored = {r.sync_id: sync_ref(con, r) for r in missing}
    return [
        stored.get(r.sync_id)
        or SyncRef(
            sync_id=r.sync_id,
            tenant_id=tenant_id,
            catalog_id=catalog_id,
            method=r.method,
            shard=r.shard,
            started_at=getattr(r, "started_at", None),
            status=r.status,
            upload_session_id=r.upload_session_id,
            handle=r.handle,
        )
        for r in records
    ]


def fetch_after_sync(client: MetaGraphClient, refs: Sequence[SyncRef]) -> list[FetchedSyncErrors]:
    """Meta's errors and warnings of each sync (no database connection may be open: network waits)."""
    return [fetch_sync_errors(client, ref) for ref in refs]


def fatal_errors_for_sync(
    client: MetaGraphClient,
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    sync_row: str | Mapping[str, Any] | Any,
    *,
    now: datetime | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
    locale: str | None = None,
    merge: bool = True,
) -> SyncErrorsReport:
    """Read the fatal ingestion errors (and warnings) of one upload or batch right after it, as the sync
    sensors hand it over: ``sync_row`` is a ``catalog_syncs.sync_id``, a row mapping or a ``SyncRecord``.

    Fetches ``/{upload_id}/errors`` (every priority, with samples) or ``check_batch_request_status`` (every
    handle), stores them in ``diag_state.sync_errors`` with rows mapped to retailer ids, and (``merge``) brings
    the feed_upload / batch_request problems of ``catalog_diagnostics`` up to date, with the summary and health
    rows. Calling it again for the same sync is harmless. The Meta calls happen while the caller holds ``con``:
    the Dagster steps use ``refs_for_records`` / ``fetch_after_sync`` / ``apply_sync_errors`` instead.

    The errors reach ``catalog_diagnostics`` once the sync is ``finished`` in ``catalog_syncs`` (call it after
    the sync code confirmed the upload / batch; if called earlier they are stored and show at the next call or
    poll). ``status == "pending"`` means Meta is still processing: nothing was stored, ask again later."""
    ref = _checked_ref(con, tenant_id, catalog_id, sync_row)
    return _apply(con, fetch_sync_errors(client, ref), now, lookback, locale, merge)


def _checked_ref(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, sync_row: str | Mapping[str, Any] | Any
) -> SyncRef:
    ref = sync_ref(con, sync_row)
    if ref.tenant_id != tenant_id or ref.catalog_id != catalog_id:
        raise ValueError(
            f"sync {ref.sync_id} belongs to tenant '{ref.tenant_id}' catalog {ref.catalog_id}, not to tenant "
            f"'{tenant_id}' catalog {catalog_id}"
        )
    return ref


def apply_sync_errors(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    fetched: FetchedSyncErrors,
    *,
    now: datetime | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
    locale: str | None = None,
    merge: bool = True,
) -> SyncErrorsReport:
    """Store what ``fetch_after_sync`` read for one sync and (``merge``) bring ``catalog_diagnostics``, the
    summary and the health row up to date, as ``fatal_errors_for_sync`` does; no Meta call."""
    given = fetched.ref
    ref = _checked_ref(
        con,
        tenant_id,
        catalog_id,
        {
            "sync_id": given.sync_id,
            "status": given.status,
            "upload_session_id": given.upload_session_id,
            "handle": given.handle,
        },
    )
    if _asked(ref) != _asked(given):
        raise ValueError(f"sync {ref.sync_id} is not the request whose errors were fetched")
    return _apply(con, replace(fetched, ref=ref), now, lookback, locale, merge)


def _asked(ref: SyncRef) -> tuple[str, str | None]:
    """What Meta was asked about for a sync."""
    return ref.method, ref.upload_session_id if ref.is_upload else ref.handle


def _apply(
    con: duckdb.DuckDBPyConnection,
    fetched: FetchedSyncErrors,
    now: datetime | None,
    lookback: timedelta,
    locale: str | None,
    merge: bool,
) -> SyncErrorsReport:
    now = now or datetime.now(UTC)
    ref = fetched.ref
    report = SyncErrorsReport(ref.sync_id, ref.method, fetched.status)
    if fetched.status == "pending":
        return report
    if store_sync_errors(con, fetched, now):
        cur = con.execute(
            """SELECT kind, error_type, priority, severity, title, description, retailer_id, row_number,
                      total_count, upload_session_id, handle
               FROM diag_state.sync_errors WHERE sync_id = ?
               ORDER BY severity = 'fatal' DESC, error_type, row_number NULLS FIRST, retailer_id""",
            [ref.sync_id],
        )
        cols = [d[0] for d in cur.description]
        report.problems = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    report.fatal_errors = sum(p["severity"] == "fatal" for p in report.problems)
    report.warnings = len(report.problems) - report.fatal_errors
    report.items_rejected = len(
        {p["retailer_id"] for p in report.problems if p["severity"] == "fatal" and p["retailer_id"]}
    )
    if merge:
        t, c = ref.tenant_id, ref.catalog_id
        report.merge = _quiet_merge(con, t, c, now, lookback)
        if report.merge is None:
            stage_sync_problems(con, t, c, now, lookback)
            report.merge = merge_problems(con, t, c, now, locale or DEFAULT_LOCALE)
            build_summary(con, t, c, now)
            build_health(con, t, c, now)
    return report


def _quiet_merge(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime, lookback: timedelta
) -> MergeCounts | None:
    """The stage + merge + summary + health of ``apply_sync_errors`` when the merge cannot change a problem,
    written directly in one transaction; None (nothing written) when it could.

    The merge changes nothing when the stage is empty (no stored sync error of the lookback window) and no
    feed_upload / batch_request problem is open (nothing to resolve) and no earlier stage is left over (it
    would be merged). It then only logs the poll of both sources; the summary is rebuilt only when the tenant
    catalog has open problems or summary rows (its observed_at and share_of_items move), the health row always
    (the sync moved last_successful_*_at)."""
    p = {"t": tenant_id, "c": catalog_id, "since": now - lookback, "now": now}
    row = run(
        con,
        """SELECT
             EXISTS (SELECT 1 FROM diag_state.sync_errors e JOIN main.catalog_syncs s USING (sync_id)
                     WHERE e.tenant_id = $t AND e.catalog_id = $c
                       AND coalesce(s.started_at, s.finished_at) >= $since)
             OR EXISTS (SELECT 1 FROM main.catalog_diagnostics WHERE tenant_id = $t AND catalog_id = $c
                        AND resolved_at IS NULL AND source IN ('feed_upload', 'batch_request'))
             OR EXISTS (SELECT 1 FROM diag_state.staged_problems WHERE tenant_id = $t AND catalog_id = $c)
             OR EXISTS (SELECT 1 FROM diag_state.staged_sources WHERE tenant_id = $t AND catalog_id = $c)
             OR EXISTS (SELECT 1 FROM diag_state.staged_scope WHERE tenant_id = $t AND catalog_id = $c),
           (SELECT count(*) FROM main.catalog_diagnostics WHERE tenant_id = $t AND catalog_id = $c AND is_open),
           EXISTS (SELECT 1 FROM main.catalog_diagnostics_summary WHERE tenant_id = $t AND catalog_id = $c)""",
        p,
    ).fetchone()
    assert row is not None
    could_change, open_total, has_summary = bool(row[0]), int(row[1]), bool(row[2])
    if could_change:
        return None
    with transaction(con):
        # What merge_problems logs for a full poll of each source that found nothing.
        con.execute(
            "INSERT INTO diag_state.poll_log SELECT ?, ?, unnest(?::VARCHAR[]), ?, 'ok', true, 0, NULL",
            [tenant_id, catalog_id, list(SYNC_SOURCES), now],
        )
        if open_total or has_summary:
            write_summary(con, tenant_id, catalog_id, now)
        write_health(con, tenant_id, catalog_id, now)
    return MergeCounts(open_total=open_total)
