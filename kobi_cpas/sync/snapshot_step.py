"""Take a tenant's feed snapshot: fetch (conditional), ingest into DuckDB, publish the feed tables and rebuild the
replace view. Pure orchestration (no Dagster) so it is testable alone and reused by the benchmark."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from kobi_cpas.feeds.errors import FeedFileError
from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.feeds.reader import fetch_feed
from kobi_cpas.feeds.snapshot import SnapshotResult, ingest_feed, stage_exists, stage_table_names
from kobi_cpas.registry import LoadedRegistry, Tenant
from kobi_cpas.sync.delta import DeltaCounts, delta_counts, delta_sql
from kobi_cpas.sync.desired import DesiredResult, build_desired

log = logging.getLogger(__name__)

_FEED_FIELDS = [c for c in COLUMNS if c != "id"]


@dataclass
class SnapshotOutcome:
    tenant_id: str
    snapshot_id: str
    status: str  # ok | not_modified | failed
    source: str
    ingest: SnapshotResult | None = None
    desired: DesiredResult | None = None
    delta: DeltaCounts | None = None
    message: str | None = None


def _snapshot_id(tenant_id: str, now: datetime, sha: str | None) -> str:
    return f"{tenant_id}:{now:%Y%m%dT%H%M%SZ}:{(sha or 'na')[:12]}"


def refresh_item_state(con: duckdb.DuckDBPyConnection, tenant: Tenant) -> int:
    """Rebuild the analyst table ``catalog_item_state`` for one tenant from the sync state."""
    con.execute("DELETE FROM main.catalog_item_state WHERE tenant_id = ?", [tenant.tenant_id])
    con.execute(
        f"""INSERT INTO main.catalog_item_state
        SELECT $t, coalesce(d.id, m.id), coalesce(d.shard, m.shard), d.item_group_id, d.status, x.change, x.in_flight,
               d.availability, d.price, d.previous_id, d.previous_id_source, m.method, m.synced_at, d.removed_at,
               d.removed_at + to_days(CAST($ret AS INTEGER))
        FROM ({delta_sql()}) x
        LEFT JOIN sync_state.desired_items d ON d.tenant_id = $t AND d.id = x.id
        LEFT JOIN sync_state.meta_items m ON m.tenant_id = $t AND m.id = x.id""",
        {"t": tenant.tenant_id, "ret": tenant.sync.retention_days},
    )
    row = con.execute(
        "SELECT count(*) FROM main.catalog_item_state WHERE tenant_id = ?", [tenant.tenant_id]
    ).fetchone()
    return int(row[0]) if row else 0


def take_snapshot(
    con: duckdb.DuckDBPyConnection,
    *,
    registry: LoadedRegistry,
    tenant: Tenant,
    workdir: Path,
    now: datetime | None = None,
    force: bool = False,
) -> SnapshotOutcome:
    """Fetch and ingest the tenant's feed into ``con`` (the work database) and rebuild the replace view.

    A feed file that cannot be read leaves the previous snapshot and replace view untouched (nothing is lost,
    no catalog is wiped) and records the failure; the caller decides how loudly to fail."""
    now = now or datetime.now(UTC)
    source = registry.feed_location(tenant)
    prev = con.execute(
        "SELECT etag, last_modified, sha256, snapshot_id FROM sync_state.source_state WHERE tenant_id = ?",
        [tenant.tenant_id],
    ).fetchone()
    items_table, issues_table = stage_table_names(tenant.tenant_id)
    have_stage = stage_exists(con, tenant.tenant_id)
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / f"{tenant.tenant_id}.feed"
    try:
        fetched = fetch_feed(
            source,
            dest=dest,
            etag=None if (force or not have_stage or not prev) else prev[0],
            last_modified=None if (force or not have_stage or not prev) else prev[1],
            copy_local=False,
        )
    except FeedFileError as exc:
        return _record_failure(con, tenant, source, now, str(exc))
    except OSError as exc:
        return _record_failure(
            con, tenant, source, now, f"feed {source} for tenant '{tenant.tenant_id}': {exc}"
        )
    unchanged = fetched.not_modified or (
        not force
        and have_stage
        and prev is not None
        and fetched.sha256 is not None
        and fetched.sha256 == prev[2]
    )
    if unchanged and prev is not None:
        snapshot_id = prev[3]
        status = "not_modified"
        ingest = None
    else:
        snapshot_id = _snapshot_id(tenant.tenant_id, now, fetched.sha256)
        status = "ok"
        try:
            ingest = ingest_feed(
                con,
                tenant_id=tenant.tenant_id,
                snapshot_id=snapshot_id,
                path=fetched.path or source,
                fmt=tenant.feed.format.value,
                source_label=source,
                tmp_dir=workdir,
            )
        except FeedFileError as exc:
            return _record_failure(con, tenant, source, now, f"tenant '{tenant.tenant_id}': {exc}")
        finally:
            if fetched.path is not None and fetched.path == dest:
                dest.unlink(missing_ok=True)

    con.execute("BEGIN")
    try:
        if ingest is not None:
            fields = ", ".join(f'"{c}"' for c in _FEED_FIELDS)
            con.execute("DELETE FROM main.feed_items WHERE tenant_id = ?", [tenant.tenant_id])
            # Valid rows are unique by id (the validator flags every later copy of an id as an error), so
            # no de-duplication here: a window over whole rows cost seconds per million items.
            con.execute(
                f"""INSERT INTO main.feed_items (tenant_id, snapshot_id, retailer_id, {fields}, content_hash, volatile_hash)
                SELECT tenant_id, snapshot_id, id, {fields}, content_hash, volatile_hash
                FROM {items_table} WHERE is_valid AND id IS NOT NULL"""
            )
            con.execute("DELETE FROM main.feed_item_issues WHERE tenant_id = ?", [tenant.tenant_id])
            con.execute(
                "INSERT INTO main.feed_item_issues (tenant_id, snapshot_id, retailer_id, row_number, field, severity, "
                f"code, message, call_to_action) SELECT tenant_id, snapshot_id, retailer_id, row_number, field, "
                f"severity, code, message, call_to_action FROM {issues_table}"
            )
        desired = build_desired(
            con,
            tenant_id=tenant.tenant_id,
            snapshot_id=snapshot_id,
            items_table=items_table,
            now=now,
            retention_days=tenant.sync.retention_days,
            n_shards=tenant.sync.shards,
            issues_table="main.feed_item_issues" if ingest is not None else None,
        )
        delta = delta_counts(con, tenant.tenant_id)
        con.execute("DELETE FROM sync_state.source_state WHERE tenant_id = ?", [tenant.tenant_id])
        con.execute(
            "INSERT INTO sync_state.source_state VALUES (?, ?, ?, ?, ?, ?)",
            [
                tenant.tenant_id,
                fetched.etag,
                fetched.last_modified,
                fetched.sha256 or (prev[2] if prev else None),
                now,
                snapshot_id,
            ],
        )
        counts = (
            (
                ingest.item_count,
                ingest.valid_count,
                ingest.invalid_count,
                ingest.issue_counts.get("error", 0),
                ingest.issue_counts.get("warning", 0),
            )
            if ingest
            else (None, None, None, None, None)
        )
        con.execute(
            """INSERT INTO main.feed_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                tenant.tenant_id,
                snapshot_id,
                now,
                source,
                tenant.feed.format.value,
                fetched.sha256,
                fetched.size_bytes,
                ingest is None,
                *counts,
                delta.new,
                delta.changed,
                delta.volatile_only,
                delta.unchanged,
                delta.removed,
                desired.removed_retained,
                ingest.duration_seconds if ingest else 0.0,
                status,
                None,
            ],
        )
        refresh_item_state(con, tenant)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return SnapshotOutcome(tenant.tenant_id, snapshot_id, status, source, ingest, desired, delta)


def _record_failure(
    con: duckdb.DuckDBPyConnection, tenant: Tenant, source: str, now: datetime, message: str
) -> SnapshotOutcome:
    snapshot_id = _snapshot_id(tenant.tenant_id, now, hashlib.sha256(message.encode()).hexdigest())
    con.execute("BEGIN")
    con.execute(
        "DELETE FROM main.feed_item_issues WHERE tenant_id = ? AND code = 'feed_file_error'",
        [tenant.tenant_id],
    )
    con.execute(
        "INSERT INTO main.feed_item_issues (tenant_id, snapshot_id, retailer_id, row_number, field, severity, code, "
        "message, call_to_action) VALUES (?, ?, NULL, NULL, NULL, 'error', 'feed_file_error', ?, ?)",
        [
            tenant.tenant_id,
            snapshot_id,
            message,
            "Fix the feed file (or its URL) and re-run feed_snapshot; the previous snapshot stays in sync meanwhile",
        ],
    )
    con.execute(
        "INSERT INTO main.feed_snapshots (tenant_id, snapshot_id, taken_at, source, format, not_modified, status, "
        "message) VALUES (?, ?, ?, ?, ?, false, 'failed', ?)",
        [tenant.tenant_id, snapshot_id, now, source, tenant.feed.format.value, message],
    )
    con.execute("COMMIT")
    return SnapshotOutcome(tenant.tenant_id, snapshot_id, "failed", source, message=message)
