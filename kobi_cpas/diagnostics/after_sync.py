"""Right after an upload or a batch: read its fatal ingestion errors and warnings into ``catalog_diagnostics``
(Meta's Catalog Integration step 6, "Address fatal ingestion errors"), using the collection of ``collect``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from kobi_cpas.diagnostics.collect import (
    DEFAULT_LOOKBACK,
    fetch_sync_errors,
    stage_sync_problems,
    store_sync_errors,
    sync_ref,
)
from kobi_cpas.diagnostics.dictionary import DEFAULT_LOCALE
from kobi_cpas.diagnostics.lifecycle import merge_problems
from kobi_cpas.diagnostics.summary import build_health, build_summary
from kobi_cpas.meta.client import MetaGraphClient


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
    rows. Calling it again for the same sync is harmless. Meta calls happen with ``con`` open (a few calls).

    The errors reach ``catalog_diagnostics`` once the sync is ``finished`` in ``catalog_syncs`` (call it after
    the sync code confirmed the upload / batch; if called earlier they are stored and show at the next call or
    poll). ``status == "pending"`` means Meta is still processing: nothing was stored, ask again later."""
    now = now or datetime.now(UTC)
    ref = sync_ref(con, sync_row)
    if ref.tenant_id != tenant_id or ref.catalog_id != catalog_id:
        raise ValueError(
            f"sync {ref.sync_id} belongs to tenant '{ref.tenant_id}' catalog {ref.catalog_id}, not to tenant "
            f"'{tenant_id}' catalog {catalog_id}"
        )
    fetched = fetch_sync_errors(client, ref)
    report = SyncErrorsReport(ref.sync_id, ref.method, fetched.status)
    if fetched.status == "pending":
        return report
    store_sync_errors(con, fetched, now)
    cur = con.execute(
        """SELECT kind, error_type, priority, severity, title, description, retailer_id, row_number, total_count,
                  upload_session_id, handle
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
        stage_sync_problems(con, tenant_id, catalog_id, now, lookback)
        report.merge = merge_problems(con, tenant_id, catalog_id, now, locale or DEFAULT_LOCALE)
        build_summary(con, tenant_id, catalog_id, now)
        build_health(con, tenant_id, catalog_id, now)
    return report
