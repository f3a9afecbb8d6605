"""Take a tenant's feed snapshot: ingest the downloaded feed into DuckDB, publish the feed tables and rebuild the
replace view. Pure orchestration (no Dagster) so it is testable alone and reused by the benchmark.

Two steps, so no database is ever held across a network wait:

1. :func:`kobi_cpas.sync.feed_download.download_feed` fetches the source into the tenant workdir (total deadline,
   size cap, redirect policy) and writes a manifest; no database is open.
2. :func:`ingest_snapshot` reads the manifest inside the work database: it records a failed download like an
   unreadable file, skips an unchanged source, or ingests the file, holds it when the shrink guard trips
   (:mod:`kobi_cpas.sync.shrink_guard`), and otherwise rebuilds feed_items, the issues and the replace view.

:func:`take_snapshot` chains both for local feeds (tests, benchmark).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from kobi_cpas.feeds.errors import FeedFileError
from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.feeds.reader import is_url, local_validator
from kobi_cpas.feeds.snapshot import (
    SnapshotResult,
    ingest_feed,
    stage_exists,
    stage_lines_table_name,
    stage_rows_table_name,
    stage_table_names,
)
from kobi_cpas.registry import LoadedRegistry, Tenant
from kobi_cpas.sync.adopted import claim_adopted
from kobi_cpas.sync.delta import DeltaCounts
from kobi_cpas.sync.desired import DesiredResult, build_desired
from kobi_cpas.sync.feed_download import FeedFileManifest, download_feed, feed_source
from kobi_cpas.sync.item_state import refresh_item_state_and_delta
from kobi_cpas.sync.shrink_guard import OVERRIDE_SHRINK_TAG, ShrinkVerdict, confirms_held, evaluate_shrink
from kobi_cpas.warehouse.sql import insertion_order, transaction

log = logging.getLogger(__name__)

_FEED_FIELDS = [c for c in COLUMNS if c != "id"]
# The typed columns of feed_items from the validated text ("299.00 TRY"; valid rows only, so the casts hold).
TYPED_COLUMNS = {
    "price_amount": "TRY_CAST(split_part(price, ' ', 1) AS DECIMAL(18,2))",
    "currency": "nullif(split_part(price, ' ', 2), '')",
    "sale_price_amount": "TRY_CAST(split_part(sale_price, ' ', 1) AS DECIMAL(18,2))",
    "quantity": "TRY_CAST(quantity_to_sell_on_facebook AS BIGINT)",
}
FILE_ERROR_CODE = "feed_file_error"
SHRINK_CODE = "feed_shrink_held"
_FILE_CTA = (
    "Fix the feed file (or its URL) and re-run feed_snapshot; the previous snapshot stays in sync meanwhile"
)
_DOWNLOAD_CTA = (
    "Check that the feed URL is reachable and serves the whole file within the tenant's limits "
    "(feed.download_deadline_seconds, feed.max_bytes, redirects), then re-run the sync; the previous snapshot "
    "stays in sync meanwhile"
)


@dataclass
class SnapshotOutcome:
    tenant_id: str
    snapshot_id: str
    status: str  # ok | not_modified | held | failed
    source: str  # redacted
    ingest: SnapshotResult | None = None
    desired: DesiredResult | None = None
    delta: DeltaCounts | None = None
    message: str | None = None
    shrink: ShrinkVerdict | None = None
    removed_from_feed: int = 0  # previously valid items that left the feed
    # Wall seconds of each stage of an applied snapshot: ingest (parse, validate, hash), replace_view (the
    # issues and desired_state), feed_tables (feed_items), item_state (the delta and catalog_item_state).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # time.perf_counter() at the end of each of those stages (the ingest's includes the shrink guard after it), so
    # that a profile can tell which stage ran a statement.
    stage_ends: dict[str, float] = field(default_factory=dict)


def _snapshot_id(tenant_id: str, now: datetime, sha: str | None) -> str:
    return f"{tenant_id}:{now:%Y%m%dT%H%M%SZ}:{(sha or 'na')[:12]}"


def take_snapshot(
    con: duckdb.DuckDBPyConnection,
    *,
    registry: LoadedRegistry,
    tenant: Tenant,
    workdir: Path,
    now: datetime | None = None,
    force: bool = False,
    override_shrink_guard: bool = False,
) -> SnapshotOutcome:
    """Read the tenant's LOCAL feed and ingest it into ``con``. A URL is refused here: its download must not
    run while the caller holds the work database (use ``download_feed`` first, then :func:`ingest_snapshot`)."""
    if is_url(feed_source(registry, tenant)):
        raise ValueError(
            f"tenant '{tenant.tenant_id}': take_snapshot reads local feeds only; download a URL with "
            "download_feed() before opening the work database, then call ingest_snapshot()"
        )
    manifest = download_feed(registry, tenant, workdir)
    return ingest_snapshot(
        con,
        tenant=tenant,
        workdir=workdir,
        manifest=manifest,
        now=now,
        force=force,
        override_shrink_guard=override_shrink_guard,
    )


def _file_moved(path: Path, manifest: FeedFileManifest) -> bool:
    try:
        return local_validator(path.stat()) != manifest.file_validator
    except OSError:
        return True


def ingest_snapshot(
    con: duckdb.DuckDBPyConnection,
    *,
    tenant: Tenant,
    workdir: Path,
    manifest: FeedFileManifest | None,
    now: datetime | None = None,
    force: bool = False,
    override_shrink_guard: bool = False,
) -> SnapshotOutcome:
    """Ingest the downloaded feed described by ``manifest`` into ``con`` and rebuild the replace view.

    A failed download or a file that cannot be read leaves the previous snapshot and replace view untouched
    (nothing is lost, no catalog is wiped) and records the failure; so does a snapshot held by the shrink
    guard. The caller decides how loudly to fail."""
    now = now or datetime.now(UTC)
    tid = tenant.tenant_id
    if manifest is None:
        return _record_failure(
            con, tenant, "", now, f"tenant '{tid}': no downloaded feed file yet; materialize feed_file first"
        )
    source = manifest.source
    if not manifest.ok or not manifest.path:
        return _record_failure(
            con, tenant, source, now, manifest.message or f"tenant '{tid}': download failed", _DOWNLOAD_CTA
        )
    prev = con.execute(
        "SELECT etag, last_modified, sha256, snapshot_id, fetched_at FROM sync_state.source_state WHERE tenant_id = ?",
        [tid],
    ).fetchone()
    items_table, issues_table = stage_table_names(tid)
    have_stage = stage_exists(con, tid)
    workdir.mkdir(parents=True, exist_ok=True)
    # Not modified: the applied file again, and the stage still holds it (a snapshot whose apply failed, or whose
    # run was killed after its ingest, left its own rows there: the replace view must not be built from them).
    unchanged = (
        not force
        and have_stage
        and prev is not None
        and manifest.sha256 == prev[2]
        and _staged_snapshot_id(con, items_table) == prev[3]
    )
    ingest: SnapshotResult | None = None
    shrink: ShrinkVerdict | None = None
    removed = 0
    note = None
    if unchanged and prev is not None:
        snapshot_id, status = prev[3], "not_modified"
    else:
        snapshot_id, status = _snapshot_id(tid, now, manifest.sha256), "ok"
        path = Path(manifest.path)
        busy = (
            f"tenant '{tid}': feed file {source} is being written (it changed after it was fetched); "
            "the previous snapshot stays, retried next run"
        )
        if _file_moved(path, manifest):
            return _record_failure(con, tenant, source, now, busy)
        try:
            ingest = ingest_feed(
                con,
                tenant_id=tid,
                snapshot_id=snapshot_id,
                path=path,
                fmt=tenant.feed.format.value,
                source_label=source,
                tmp_dir=workdir,
            )
        except FeedFileError as exc:
            where = f" (downloaded from {source})" if str(path) != source else ""
            return _record_failure(con, tenant, source, now, f"tenant '{tid}': {exc}{where}")
        if _file_moved(path, manifest):
            _drop_stage(con, tid)
            return _record_failure(con, tenant, source, now, busy)
        shrink = evaluate_shrink(
            con,
            tenant_id=tid,
            items_table=items_table,
            issues_table=issues_table,
            new_valid=ingest.valid_count,
            threshold=tenant.feed.max_shrink_share,
            min_items=tenant.feed.min_shrink_items,
        )
        removed = shrink.left_feed
        if shrink.tripped:
            confirmed = confirms_held(con, tid, manifest.sha256)
            if override_shrink_guard:
                note = (
                    f"shrink guard overridden by the run tag {OVERRIDE_SHRINK_TAG}=true: {shrink.describe()}"
                )
            elif confirmed:
                note = f"shrink confirmed by a second snapshot of different content (after {confirmed}): {shrink.describe()}"
            else:
                return _record_held(con, tenant, manifest, snapshot_id, now, ingest, shrink)

    stages = {"ingest": ingest.duration_seconds} if ingest else {}
    started = time.perf_counter()
    ends = {"ingest": started}

    def stage(name: str) -> None:
        nonlocal started
        now_ = time.perf_counter()
        stages[name] = now_ - started
        ends[name] = started = now_

    # The sync state and the analyst tables are sets: written without file order, DuckDB inserts in parallel.
    with insertion_order(con, False), transaction(con):
        if ingest is not None:
            con.execute("DELETE FROM main.feed_item_issues WHERE tenant_id = ?", [tid])
            con.execute(
                "INSERT INTO main.feed_item_issues (tenant_id, snapshot_id, retailer_id, row_number, field, severity, "
                f"code, message, call_to_action) SELECT tenant_id, snapshot_id, retailer_id, row_number, field, "
                f"severity, code, message, call_to_action FROM {issues_table}"
            )
        else:
            # The source is readable again and unchanged: earlier file-level failures are over.
            con.execute(
                "DELETE FROM main.feed_item_issues WHERE tenant_id = ? AND retailer_id IS NULL AND code IN (?, ?)",
                [tid, FILE_ERROR_CODE, SHRINK_CODE],
            )
        # Before feed_items is rewritten: the replace view reads the last version of an item kept in it there.
        desired = build_desired(
            con,
            tenant_id=tid,
            snapshot_id=snapshot_id,
            items_table=items_table,
            now=now,
            retention_days=tenant.sync.retention_days,
            n_shards=tenant.sync.shards,
            issues_table="main.feed_item_issues" if ingest is not None else None,
            last_seen=prev[4] if prev else None,
        )
        stage("replace_view")
        gone = _apply_feed_items(con, tid, items_table) if ingest is not None else None
        # Rows stored before feed_items had its typed columns get them now (nothing matches afterwards).
        typed = ", ".join(f"{c} = {expr}" for c, expr in TYPED_COLUMNS.items())
        con.execute(
            f"UPDATE main.feed_items SET {typed} WHERE tenant_id = ? AND price_amount IS NULL AND price IS NOT NULL",
            [tid],
        )
        _check_replace_view(con, tid, snapshot_id, gone)
        stage("feed_tables")
        # An adopted id the feed sends again is Kobi's own item from now on.
        claim_adopted(con, tid, now)
        # The item state depends only on the sync state, final once desired_state is rebuilt.
        delta = replace(refresh_item_state_and_delta(con, tenant), removed=removed)
        stage("item_state")
        con.execute("DELETE FROM sync_state.source_state WHERE tenant_id = ?", [tid])
        con.execute(
            "INSERT INTO sync_state.source_state VALUES (?, ?, ?, ?, ?, ?)",
            [
                tid,
                manifest.etag,
                manifest.last_modified,
                manifest.sha256 or (prev[2] if prev else None),
                now,
                snapshot_id,
            ],
        )
        counts = _counts(ingest)
        con.execute(
            """INSERT INTO main.feed_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                tid,
                snapshot_id,
                now,
                source,
                tenant.feed.format.value,
                manifest.sha256,
                manifest.size_bytes,
                ingest is None,
                *counts,
                delta.new,
                delta.changed,
                delta.volatile_only,
                delta.unchanged,
                removed,
                desired.removed_retained,
                (ingest.duration_seconds if ingest else 0.0) + manifest.duration_seconds,
                status,
                note,
            ],
        )
    stage("commit")
    return SnapshotOutcome(
        tid,
        snapshot_id,
        status,
        source,
        ingest,
        desired,
        delta,
        note,
        shrink=shrink,
        removed_from_feed=removed,
        stage_seconds={k: round(v, 3) for k, v in stages.items()},
        stage_ends=ends,
    )


def _apply_feed_items(con: duckdb.DuckDBPyConnection, tenant_id: str, items_table: str) -> str | None:
    """Make the tenant's feed_items the valid items of ``items_table``, writing only what changed: the rows of
    items that left the feed, turned invalid or changed (by their hashes, over every field) are deleted, and
    the new versions inserted. An unchanged item keeps its row, and with it the snapshot it arrived in.
    Returns the temp table of the ids whose rows it deleted (None when the tenant had no rows: all are new)."""
    fields = ", ".join(f'"{c}"' for c in _FEED_FIELDS)
    insert = f"""INSERT INTO main.feed_items (tenant_id, snapshot_id, retailer_id, {fields}, content_hash,
            volatile_hash, {", ".join(TYPED_COLUMNS)})
        SELECT tenant_id, snapshot_id, id, {fields}, content_hash, volatile_hash, {", ".join(TYPED_COLUMNS.values())}
        FROM {items_table} WHERE is_valid AND id IS NOT NULL"""
    (stored,) = con.execute(
        "SELECT EXISTS (SELECT 1 FROM main.feed_items WHERE tenant_id = $t)", {"t": tenant_id}
    ).fetchone()  # type: ignore[misc]
    if not stored:
        # A tenant's first snapshot: every valid item is new, and no join is needed to say so.
        con.execute(insert)
        return None
    # One full join on the id and both hashes finds both sides of the change, narrow: the rows with no equal valid
    # item in the snapshot go, the valid items with no equal row come in (then their whole rows are read). Valid
    # rows are unique by id (the validator flags every later copy of an id as an error), so no de-duplication.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _feed_diff AS
        SELECT f.retailer_id AS gone, s.id AS new
        FROM (SELECT retailer_id, content_hash, volatile_hash FROM main.feed_items WHERE tenant_id = $t) f
        FULL JOIN (SELECT id, content_hash, volatile_hash FROM {items_table} WHERE is_valid AND id IS NOT NULL) s
          ON s.id = f.retailer_id AND s.content_hash = f.content_hash AND s.volatile_hash = f.volatile_hash
        WHERE f.retailer_id IS NULL OR s.id IS NULL""",
        {"t": tenant_id},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _feed_gone AS SELECT gone AS id FROM _feed_diff WHERE gone IS NOT NULL"
    )
    con.execute(
        "DELETE FROM main.feed_items WHERE tenant_id = $t AND retailer_id IN (SELECT id FROM _feed_gone)",
        {"t": tenant_id},
    )
    con.execute(f"{insert} AND id IN (SELECT new FROM _feed_diff WHERE new IS NOT NULL)")
    con.execute("DROP TABLE _feed_diff")
    return "_feed_gone"


def _check_replace_view(
    con: duckdb.DuckDBPyConnection, tenant_id: str, snapshot_id: str, gone: str | None
) -> None:
    """Refuse to commit a replace view with an active item whose values feed_items does not hold: the replace
    feed would send it without them (the snapshot's transaction rolls back; the previous one stays).

    Every snapshot checks what it can break, so the rows it leaves alone were checked when written: the rows it
    wrote (``snapshot_id``) and those whose feed_items row it deleted (the ids in the temp table ``gone``,
    when it rewrote feed_items)."""
    touched = "d.snapshot_id = $s" + (f" OR d.id IN (SELECT id FROM {gone})" if gone else "")
    # An anti join written out: DuckDB plans the NOT EXISTS form as a mark join over a de-duplicated copy of the
    # ids, three times slower at a million.
    (missing, example) = con.execute(
        f"""SELECT count(*), min(d.id)
        FROM (SELECT id FROM sync_state.desired_state d WHERE d.tenant_id = $t AND d.in_feed_items AND ({touched})) d
        ANTI JOIN (SELECT retailer_id FROM main.feed_items WHERE tenant_id = $t) f ON f.retailer_id = d.id""",
        {"t": tenant_id, "s": snapshot_id},
    ).fetchone()  # type: ignore[misc]
    if gone:
        con.execute(f"DROP TABLE {gone}")
    if missing:
        raise RuntimeError(
            f"tenant '{tenant_id}': {missing} item(s) of the replace view have no row in feed_items (e.g. "
            f"retailer_id {example!r}); the snapshot was not applied and the previous one stays in sync"
        )


def _counts(ingest: SnapshotResult | None) -> tuple[int | None, ...]:
    if ingest is None:
        return (None, None, None, None, None)
    return (
        ingest.item_count,
        ingest.valid_count,
        ingest.invalid_count,
        ingest.issue_counts.get("error", 0),
        ingest.issue_counts.get("warning", 0),
    )


def _staged_snapshot_id(con: duckdb.DuckDBPyConnection, items_table: str) -> str | None:
    """The snapshot whose rows the stage holds (None when it holds none)."""
    row = con.execute(f"SELECT snapshot_id FROM {items_table} LIMIT 1").fetchone()
    return str(row[0]) if row else None


def _drop_stage(con: duckdb.DuckDBPyConnection, tenant_id: str) -> None:
    """Forget the staged items: they are not the applied snapshot, so a later 'not modified' run must
    re-ingest rather than build the replace view from them."""
    items, issues = stage_table_names(tenant_id)
    con.execute(f"DROP VIEW IF EXISTS {items}")
    con.execute(f"DROP TABLE IF EXISTS {stage_rows_table_name(tenant_id)}")
    con.execute(f"DROP TABLE IF EXISTS {stage_lines_table_name(tenant_id)}")
    con.execute(f"DROP TABLE IF EXISTS {issues}")


def _record_held(
    con: duckdb.DuckDBPyConnection,
    tenant: Tenant,
    manifest: FeedFileManifest,
    snapshot_id: str,
    now: datetime,
    ingest: SnapshotResult,
    shrink: ShrinkVerdict,
) -> SnapshotOutcome:
    """Record a snapshot the shrink guard holds; feed_items, the issues, the replace view and the source state
    stay those of the last good snapshot."""
    tid = tenant.tenant_id
    message = (
        f"tenant '{tid}': snapshot of {manifest.source} HELD by the shrink guard: {shrink.describe()}. "
        "Nothing was applied: every sync keeps sending the previous snapshot"
    )
    cta = (
        "If the feed is cut short or broken, fix it; if the drop is intended, the next snapshot of different "
        f"content showing it again applies it, or re-run with the run tag {OVERRIDE_SHRINK_TAG}=true"
    )
    _drop_stage(con, tid)
    con.execute("BEGIN")
    con.execute(
        "DELETE FROM main.feed_item_issues WHERE tenant_id = ? AND retailer_id IS NULL AND code IN (?, ?)",
        [tid, FILE_ERROR_CODE, SHRINK_CODE],
    )
    con.execute(
        "INSERT INTO main.feed_item_issues (tenant_id, snapshot_id, retailer_id, row_number, field, severity, code, "
        "message, call_to_action) VALUES (?, ?, NULL, NULL, NULL, 'error', ?, ?, ?)",
        [tid, snapshot_id, SHRINK_CODE, message, cta],
    )
    con.execute(
        "INSERT INTO main.feed_snapshots (tenant_id, snapshot_id, taken_at, source, format, source_sha256, "
        "source_bytes, not_modified, item_count, valid_count, invalid_count, error_count, warning_count, "
        "removed_count, duration_seconds, status, message) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, false, ?, ?, ?, ?, ?, ?, ?, 'held', ?)",
        [
            tid,
            snapshot_id,
            now,
            manifest.source,
            tenant.feed.format.value,
            manifest.sha256,
            manifest.size_bytes,
            *_counts(ingest),
            shrink.left_feed,
            ingest.duration_seconds + manifest.duration_seconds,
            message,
        ],
    )
    con.execute("COMMIT")
    log.warning(message)
    return SnapshotOutcome(
        tid,
        snapshot_id,
        "held",
        manifest.source,
        ingest,
        message=message,
        shrink=shrink,
        removed_from_feed=shrink.left_feed,
    )


def _record_failure(
    con: duckdb.DuckDBPyConnection,
    tenant: Tenant,
    source: str,
    now: datetime,
    message: str,
    call_to_action: str = _FILE_CTA,
) -> SnapshotOutcome:
    snapshot_id = _snapshot_id(tenant.tenant_id, now, hashlib.sha256(message.encode()).hexdigest())
    con.execute("BEGIN")
    con.execute(
        "DELETE FROM main.feed_item_issues WHERE tenant_id = ? AND retailer_id IS NULL AND code IN (?, ?)",
        [tenant.tenant_id, FILE_ERROR_CODE, SHRINK_CODE],
    )
    con.execute(
        "INSERT INTO main.feed_item_issues (tenant_id, snapshot_id, retailer_id, row_number, field, severity, code, "
        "message, call_to_action) VALUES (?, ?, NULL, NULL, NULL, 'error', ?, ?, ?)",
        [tenant.tenant_id, snapshot_id, FILE_ERROR_CODE, message, call_to_action],
    )
    con.execute(
        "INSERT INTO main.feed_snapshots (tenant_id, snapshot_id, taken_at, source, format, not_modified, status, "
        "message) VALUES (?, ?, ?, ?, ?, false, 'failed', ?)",
        [tenant.tenant_id, snapshot_id, now, source, tenant.feed.format.value, message],
    )
    con.execute("COMMIT")
    return SnapshotOutcome(tenant.tenant_id, snapshot_id, "failed", source, message=message)
