"""What every sync method works with: the context of one tenant's sync run and the ``catalog_syncs`` record
of each request sent to Meta."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.registry.models import Tenant
from kobi_cpas.sync.existing_catalog import CONFIRM_EXISTING_TAG
from kobi_cpas.sync.feeds import ADOPT_FEED_TAG, parse_adopt_tag
from kobi_cpas.sync.guards import DEFAULT_BATCH_MAX_AGE, DEFAULT_UPLOAD_MAX_AGE, OVERRIDE_TAG
from kobi_cpas.warehouse import Warehouse

log = logging.getLogger(__name__)


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
    # A batch handle / upload session Meta has not resolved after this long is given up ('expired') and its
    # items are sent again by the next sync.
    batch_max_age: timedelta = DEFAULT_BATCH_MAX_AGE
    upload_max_age: timedelta = DEFAULT_UPLOAD_MAX_AGE
    # Set from the run tags (apply_run_tags): feeds a person adopted, and the deletion guard override.
    adopt_feed_ids: frozenset[str] = frozenset()
    override_guard: bool = False
    confirm_existing: bool = False  # a person confirmed the first upload to a catalog holding items

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    @property
    def catalog_id(self) -> str:
        return self.tenant.catalog_id

    @property
    def shards(self) -> int:
        return self.tenant.sync.shards

    def apply_run_tags(self, tags: Mapping[str, str]) -> SyncContext:
        """Read the person's decisions from the run tags: ``kobi/adopt_feed=<feed_id>[,<feed_id>]``,
        ``kobi/override_deletion_guard=true`` and ``kobi/confirm_existing_catalog=true``."""
        self.adopt_feed_ids = parse_adopt_tag(tags.get(ADOPT_FEED_TAG))
        self.override_guard = str(tags.get(OVERRIDE_TAG, "")).lower() == "true"
        self.confirm_existing = str(tags.get(CONFIRM_EXISTING_TAG, "")).lower() == "true"
        return self

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
    started_at: datetime | None = None


def new_sync_id(method: str) -> str:
    return f"{method}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def insert_sync(
    con: duckdb.DuckDBPyConnection,
    ctx: SyncContext,
    rec: SyncRecord,
    snapshot_id: str | None,
    feed_id: str | None = None,
) -> None:
    rec.started_at = ctx.now()
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
            rec.started_at,
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


def finish_sync(con: duckdb.DuckDBPyConnection, rec: SyncRecord, finished_at: datetime | None) -> None:
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


def release(ctx: SyncContext, rec: SyncRecord, status: str, message: str) -> None:
    """End a request without confirming anything (``failed`` or ``expired``): its in-flight rows are dropped,
    so the next sync sends those items again, and nothing of it holds the tenant any more."""
    rec.status = status
    rec.message = message[:2000]
    with ctx.db() as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM sync_state.inflight_items WHERE sync_id = ?", [rec.sync_id])
        finish_sync(con, rec, ctx.now())
        con.execute("COMMIT")
    ctx.progress(f"{rec.method} {rec.sync_id} {status}: {rec.message}")


def current_snapshot_id(con: duckdb.DuckDBPyConnection, tenant_id: str) -> str | None:
    """The snapshot the tenant's replace view was last brought to (its rows keep the snapshot their values
    arrived in, so the newest of those is not it)."""
    row = con.execute(
        "SELECT snapshot_id FROM sync_state.source_state WHERE tenant_id = ?", [tenant_id]
    ).fetchone()
    return row[0] if row else None
