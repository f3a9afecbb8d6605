"""Safety guards of the sync methods: what a sync must never do to a catalog unasked, and how long a request
Meta has not resolved may hold the tenant.

- Deletion guard (replace): per shard, items Meta would delete plus live items this sync would flip to
  ``out of stock`` because they left the source (retention) must stay within the tenant's
  ``max_delete_share`` of the live items. Update and Batch API syncs are held by the same share of pending
  flips (the batch sends them; a snapshot flipping that much is suspect for the update too). A person overrides one run with the run tag ``kobi/override_deletion_guard=true``.
- Surplus deletions: after every replace upload, Meta's ``num_deleted_items`` is compared with the deletions
  the plan expected. A surplus means someone else writes to the feed: it is recorded
  (``sync_state.surplus_deletions``, a HIGH ``catalog_diagnostics`` problem) and blocks the tenant's next
  replace until a person confirms with the override tag.
- Adopted items (``sync/adopted.py``): due deletions of items adopted from a brand's existing catalog that would
  exceed the same share of the catalog are held (a MEDIUM ``ADOPTED_DELETIONS_HELD`` problem), never blocking the
  replace of Kobi's feed, until a run carries the override tag.
- Request ages: an upload session or batch handle Meta never resolves becomes terminal (``expired``) after
  ``SyncContext.upload_max_age`` / ``batch_max_age``, its items released for the next sync.
- Export files: ``<tenant>-<sync_id>.csv`` files of requests no longer in flight (a run killed mid-upload)
  are removed by the tenant's next sync.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from kobi_cpas.diagnostics.guard import (
    ADOPTED_DELETIONS_HELD,
    SURPLUS_DELETIONS,
    GuardProblem,
    record_guard_problems,
)
from kobi_cpas.registry.models import Tenant
from kobi_cpas.sync.delta import delta_sql

OVERRIDE_TAG = "kobi/override_deletion_guard"
DEFAULT_BATCH_MAX_AGE = timedelta(hours=2)
DEFAULT_UPLOAD_MAX_AGE = timedelta(hours=6)
SURPLUS_STATUS = "finished_with_surplus_deletions"
PENDING_STATUSES = ("submitted", "processing")

# Meta's statuses of a Batch API request, from the Catalog Batch API guide "Check Batch Request Status"
# (developers.facebook.com/docs/marketing-api/catalog-batch/guides/get-batch-request): scheduled, dispatched and
# started are still working; finished is done (rejected requests listed in errors); canceled (manually) and
# error ("some of the requests might not have finished successfully") are terminal failures. The business
# SDK's CheckBatchRequestStatus declares ``status`` as a free string, so any other value is taken as terminal
# too: a status Kobi cannot read must not hold the tenant forever.
BATCH_PENDING_STATUSES = frozenset({"scheduled", "dispatched", "started"})
BATCH_FINISHED = "finished"


class SyncBlocked(Exception):
    """A sync that must not run now (deletion guard, overlap, unknown feed); the message says why and what to do."""


# Internal DDL (run after the sync_state DDL of sync.state, see kobi_cpas.tables).
DDL = (
    "CREATE SCHEMA IF NOT EXISTS sync_state",
    """CREATE TABLE IF NOT EXISTS sync_state.surplus_deletions (
  tenant_id VARCHAR NOT NULL,
  catalog_id VARCHAR NOT NULL,
  sync_id VARCHAR NOT NULL,            -- the replace upload Meta reported the deletions for
  shard INTEGER NOT NULL,
  feed_id VARCHAR,
  upload_session_id VARCHAR,
  planned BIGINT NOT NULL,             -- deletions Kobi's plan allowed (at most)
  reported BIGINT NOT NULL,            -- Meta's num_deleted_items
  detected_at TIMESTAMPTZ NOT NULL,
  confirmed_at TIMESTAMPTZ,            -- a person confirmed (override run tag); NULL blocks the next replace
  confirmed_run_id VARCHAR
)""",
)


# -- surplus deletions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surplus:
    sync_id: str
    shard: int
    feed_id: str | None
    upload_session_id: str | None
    planned: int
    reported: int
    detected_at: datetime

    @property
    def surplus(self) -> int:
        return self.reported - self.planned

    def describe(self) -> str:
        return (
            f"shard {self.shard}: Meta deleted {self.reported} items with replace upload {self.sync_id} "
            f"(session {self.upload_session_id}, feed {self.feed_id}, {self.detected_at:%Y-%m-%d %H:%M} UTC) "
            f"where Kobi planned at most {self.planned}: {self.surplus} SURPLUS deletions, so someone else writes "
            "to this feed"
        )


def planned_deletions_sql(rejected_table: str) -> str:
    """SQL (params: tenant, shard, sync_id): the most items a replace upload of the shard may delete: items
    Kobi believes Meta holds in the shard that the file leaves out, plus those it sent but Meta rejected (a
    rejected row may drop the item's old version)."""
    return f"""SELECT count(*) FROM sync_state.meta_items m
        WHERE m.tenant_id = $1 AND m.shard = $2 AND m.id NOT IN (
          SELECT f.id FROM sync_state.inflight_items f WHERE f.sync_id = $3
            AND coalesce(f.row_number, -1) NOT IN (SELECT row_number FROM {rejected_table}))"""


def record_surplus(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, s: Surplus, feed_id: str | None
) -> None:
    con.execute(
        "INSERT INTO sync_state.surplus_deletions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        [
            tenant_id,
            catalog_id,
            s.sync_id,
            s.shard,
            feed_id,
            s.upload_session_id,
            s.planned,
            s.reported,
            s.detected_at,
        ],
    )


def unconfirmed_surplus(con: duckdb.DuckDBPyConnection, tenant_id: str) -> list[Surplus]:
    rows = con.execute(
        """SELECT sync_id, shard, feed_id, upload_session_id, planned, reported, detected_at
           FROM sync_state.surplus_deletions WHERE tenant_id = ? AND confirmed_at IS NULL
           ORDER BY detected_at, shard""",
        [tenant_id],
    ).fetchall()
    return [Surplus(r[0], int(r[1]), r[2], r[3], int(r[4]), int(r[5]), r[6]) for r in rows]


def confirm_surplus(con: duckdb.DuckDBPyConnection, tenant_id: str, run_id: str, now: datetime) -> int:
    """A person confirmed (override run): the recorded surpluses stop blocking."""
    row = con.execute(
        """UPDATE sync_state.surplus_deletions SET confirmed_at = ?, confirmed_run_id = ?
           WHERE tenant_id = ? AND confirmed_at IS NULL RETURNING 1""",
        [now, run_id, tenant_id],
    ).fetchall()
    return len(row)


def sync_guard_problems(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, now: datetime
) -> None:
    """Bring the tenant's guard problems in ``catalog_diagnostics`` in line with the unconfirmed surpluses and the
    held deletions of adopted items (``sync/adopted.py``)."""
    problems = [
        GuardProblem(
            error_type=SURPLUS_DELETIONS,
            variant=s.sync_id,
            title="Meta deleted more items than Kobi's replace upload planned",
            description=f"Tenant '{tenant_id}' catalog {catalog_id} {s.describe()}.",
            message=f"num_deleted_items={s.reported}, planned={s.planned}, surplus={s.surplus}",
            sync_id=s.sync_id,
            sync_method="replace",
            upload_session_id=s.upload_session_id,
            reported_count=s.surplus,
            reported_at=s.detected_at,
        )
        for s in unconfirmed_surplus(con, tenant_id)
    ]
    held, since = con.execute(  # type: ignore[misc]
        """SELECT count(*), min(held_at) FROM sync_state.adopted_items
           WHERE tenant_id = ? AND held_at IS NOT NULL AND deleted_at IS NULL AND claimed_at IS NULL""",
        [tenant_id],
    ).fetchone()
    if held:
        problems.append(
            GuardProblem(
                error_type=ADOPTED_DELETIONS_HELD,
                variant="adopted_items",
                title="Kobi holds the deletion of items adopted from the brand's existing catalog",
                description=(
                    f"Tenant '{tenant_id}' catalog {catalog_id}: {held:,} item(s) adopted from the brand's "
                    "existing catalog are past their retention (out of stock since adoption); deleting them would "
                    "exceed the deletion guard (sync.max_delete_share), so they are held, not deleted, while the "
                    f"replace of Kobi's feed goes on. Held since {since:%Y-%m-%d}; confirm with the run tag "
                    f"{OVERRIDE_TAG}=true."
                ),
                message=f"adopted_deletions_held={held}",
                sync_method="replace",
                reported_count=int(held),
                reported_at=since,
                priority="MEDIUM",
            )
        )
    record_guard_problems(con, tenant_id, catalog_id, problems, now)


# -- retention flips ----------------------------------------------------------------------------------------------


def flip_counts_sql(changes: tuple[str, ...], only_idle: bool) -> str:
    """SQL (param $t): per shard, live items this sync would flip to out of stock (retention) and live items."""
    ch = ", ".join(f"'{c}'" for c in changes)
    idle = "AND NOT in_flight" if only_idle else ""
    return f"""
    WITH f AS (SELECT shard, count(*) AS n FROM ({delta_sql()})
               WHERE retention_flip AND change IN ({ch}) {idle} GROUP BY shard),
         m AS (SELECT shard, count(*) AS n FROM sync_state.meta_items WHERE tenant_id = $t GROUP BY shard)
    SELECT coalesce(f.shard, m.shard) AS shard, coalesce(f.n, 0) AS flips, coalesce(m.n, 0) AS live
    FROM f FULL JOIN m ON f.shard = m.shard"""


def check_flips(
    con: duckdb.DuckDBPyConnection,
    tenant: Tenant,
    method: str,
    *,
    override: bool,
    progress: Callable[[str], None],
) -> int:
    """Hold an update or batch sync while the latest snapshot would flip more than ``max_delete_share`` of the
    live items to out of stock (items gone from the source, kept by retention) and those flips are not sent
    yet. The batch sends the flips itself; the update is held too, since a snapshot taking that much of the
    catalog out of stock is suspect (a truncated feed) and nothing computed from it should go out unconfirmed.
    Returns the pending flips."""
    rows = con.execute(
        f"SELECT sum(flips), sum(live) FROM ({flip_counts_sql(('changed', 'volatile_only'), True)})",
        {"t": tenant.tenant_id},
    ).fetchone()
    flips, live = (int(rows[0] or 0), int(rows[1] or 0)) if rows else (0, 0)
    share = flips / live if live else 0.0
    if not live or share <= tenant.sync.max_delete_share:
        return flips
    reason = (
        f"tenant '{tenant.tenant_id}' catalog {tenant.catalog_id} retention guard: the latest feed snapshot "
        f"would flip {flips} of {live} live items to out of stock ({share:.1%} > "
        f"{tenant.sync.max_delete_share:.1%} allowed) because they are no longer in the feed source"
    )
    if override:
        progress(f"OVERRIDDEN by run tag {OVERRIDE_TAG}: {reason}")
        return flips
    raise SyncBlocked(
        f"{reason}; the {method} sync sent nothing. Check the feed source (a truncated or partial file?); if the "
        f"removals are intended, re-run with the run tag {OVERRIDE_TAG}=true."
    )


# -- export files -------------------------------------------------------------------------------------------------


def remove_stale_exports(con: duckdb.DuckDBPyConnection, tenant_id: str, workdir: Path) -> list[Path]:
    """Remove the tenant's upload files (``<tenant>-<sync_id>.csv``) whose request is no longer in flight:
    left behind when a run was killed between writing and uploading them."""
    if not workdir.is_dir():
        return []
    pattern = re.compile(
        rf"^{re.escape(tenant_id)}-((?:replace|update|batch)-\d{{8}}T\d{{6}}-[0-9a-f]{{8}})\.csv$"
    )
    live = {
        r[0]
        for r in con.execute(
            f"SELECT sync_id FROM main.catalog_syncs WHERE tenant_id = ? AND status IN {PENDING_STATUSES}",
            [tenant_id],
        ).fetchall()
    }
    removed = []
    for path in workdir.iterdir():
        m = pattern.match(path.name)
        if m and m.group(1) not in live:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
