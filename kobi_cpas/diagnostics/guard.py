"""Problems the sync's own safety guards raise (source ``kobi_sync_guard``), e.g. Meta deleting more items
than a replace upload planned, or deletions of adopted items held by the deletion guard. They are catalog-level
problems with Kobi's CTA (``KOBI_GUARD_CTA``),
open until a person confirms them (the sync then stops reporting them and the merge resolves them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from kobi_cpas.diagnostics.collect import _STAGE_COLUMNS, _mark_polled, clear_stage
from kobi_cpas.diagnostics.dictionary import DEFAULT_LOCALE, GUARD_SOURCE
from kobi_cpas.diagnostics.lifecycle import merge_problems
from kobi_cpas.diagnostics.summary import build_health, build_summary

SURPLUS_DELETIONS = "SURPLUS_DELETIONS"
ADOPTED_DELETIONS_HELD = "ADOPTED_DELETIONS_HELD"
__all__ = [
    "ADOPTED_DELETIONS_HELD",
    "GUARD_SOURCE",
    "SURPLUS_DELETIONS",
    "GuardProblem",
    "record_guard_problems",
]


@dataclass(frozen=True)
class GuardProblem:
    error_type: str
    variant: str  # tells apart problems of one type, e.g. the sync id
    title: str
    description: str
    message: str
    sync_id: str | None = None
    sync_method: str | None = None
    upload_session_id: str | None = None
    reported_count: int | None = None
    reported_at: datetime | None = None
    priority: str = "HIGH"


def record_guard_problems(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    problems: Sequence[GuardProblem],
    now: datetime,
) -> None:
    """Make ``problems`` the open guard problems of the tenant catalog: new ones open, absent ones resolve.
    Merged right away (with the summary and health rows), so the problem shows without waiting for a poll."""
    clear_stage(con, tenant_id, catalog_id, GUARD_SOURCE)
    if problems:
        con.executemany(
            f"""INSERT INTO diag_state.staged_problems ({_STAGE_COLUMNS})
            VALUES (?, ?, '', NULL, 'catalog', ?, ?, '', ?, ?, 'error', ?, ?, NULL, ?, NULL, NULL, ?, ?, ?, NULL,
                    ?, ?)""",
            [
                [
                    tenant_id,
                    catalog_id,
                    GUARD_SOURCE,
                    p.error_type,
                    p.variant,
                    p.priority,
                    p.title,
                    p.description,
                    p.message,
                    p.sync_id,
                    p.sync_method,
                    p.upload_session_id,
                    p.reported_count,
                    p.reported_at or now,
                ]
                for p in problems
            ],
        )
    _mark_polled(con, tenant_id, catalog_id, GUARD_SOURCE, now)
    merge_problems(con, tenant_id, catalog_id, now, DEFAULT_LOCALE)
    build_summary(con, tenant_id, catalog_id, now)
    build_health(con, tenant_id, catalog_id, now)
