"""Ingest one feed file into stage tables: parse -> validate -> hash, all in DuckDB.

:func:`ingest_feed` leaves three relations per tenant, and often a fourth, in schema ``feed_stage`` (created if
missing), replacing that tenant's previous ones only once the new ones are complete (a failed ingest leaves the
old ones):

``feed_stage.items_<tenant>`` — a VIEW, one row per item of the file (``row_number`` gives the file order):
    tenant_id VARCHAR, snapshot_id VARCHAR,
    row_number BIGINT          1-based item number in the file (first data row = 1; XML: first item = 1),
    <every canonical field of fields.COLUMNS> VARCHAR
                               normalised: trimmed, blank -> NULL; valid availability/condition/
                               gender/age_group lower-cased, valid price/sale_price with an upper-case
                               currency (invalid values are kept as written); fields absent from the
                               file are NULL,
    is_valid BOOLEAN           false when the item has at least one 'error' issue,
    error_count INTEGER, warning_count INTEGER,
    content_hash UBIGINT       hash of the non-volatile fields (see hashing.py),
    volatile_hash UBIGINT      hash of price, sale_price, sale_price_effective_date, availability,
                               quantity_to_sell_on_facebook.
    ``id`` is the retailer id. Duplicate ids are all kept; only the first occurrence can be valid.

``feed_stage.item_rows_<tenant>`` — the table under that view: the same rows without the columns that
    are constant in a snapshot (tenant_id, snapshot_id, fields absent from the file), which the view
    adds. Read the view, not this table.

``feed_stage.item_lines_<tenant>`` — when each item of a delimited file is one line: the hash of each line, in
    file order, which the next ingest compares the new file's lines with (:mod:`.incremental_lines`).

``feed_stage.issues_<tenant>`` — one row per problem (columns :data:`validate.ISSUE_COLUMNS`):
    tenant_id VARCHAR, snapshot_id VARCHAR, retailer_id VARCHAR (NULL when the id is missing or for
    file-level issues), row_number BIGINT (NULL for file-level issues), field VARCHAR,
    severity VARCHAR ('error' | 'warning' | 'info'), code VARCHAR, message VARCHAR, call_to_action VARCHAR.

``<tenant>`` is :func:`tenant_slug` of the tenant id, so tenants ingested one after another into the
same database never overwrite each other; re-ingesting a tenant replaces its relations. The caller copies
what it needs, e.g. ``INSERT INTO feed_item_issues SELECT * FROM feed_stage.issues_<tenant>``
(``SnapshotResult.issues_table`` / ``.items_table`` hold the qualified names).

Whole-file problems raise :class:`~kobi_cpas.feeds.errors.FeedFileError`; the tenant's previous stage
relations are then left as they were and no half-built table remains. Call it outside a transaction: it runs
its own.

A feed ingested before under the same rules is ingested incrementally (:mod:`kobi_cpas.feeds.incremental`):
only the rows whose raw content changed are normalised and validated again; the relations are the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kobi_cpas.feeds.errors import FeedFileError
from kobi_cpas.feeds.fields import REQUIRED_COLUMNS
from kobi_cpas.feeds.incremental import (
    RAW_HASH,
    add_raw_hashes,
    apply_changed_rows,
    drop_temp,
    ensure_state_table,
    fingerprint,
    raw_hashed_select,
    read_changed_rows,
    record_fingerprint,
    revalidate_rows,
    stored_fingerprint,
    without_raw_hash,
)
from kobi_cpas.feeds.incremental_lines import (
    apply_changed_lines,
    drop_line_temps,
    read_changed_lines,
    seed_lines,
)
from kobi_cpas.feeds.parser import (
    FeedSource,
    create_table_streaming,
    execute_reading,
    open_feed_source,
    sql_ident,
)
from kobi_cpas.feeds.plan import insertion_order_preserved
from kobi_cpas.feeds.validate import (
    ISSUE_COLUMNS,
    ValidationCounts,
    finish_validation,
    items_select_sql,
    items_view_sql,
)
from kobi_cpas.warehouse.sql import transaction

STAGE_SCHEMA = "feed_stage"
_SLUG_RE = re.compile(r"[^a-z0-9_]+")


def tenant_slug(tenant_id: str) -> str:
    """A safe, unique table-name suffix for a tenant id (``acme-tr`` -> ``acme_tr_<8 hex>``).

    Ids that are already lower-case ``[a-z0-9_]`` (<= 40 chars) are used as they are; anything else
    gets a short md5 suffix so that two different ids never share tables.
    """
    if not tenant_id:
        raise ValueError("tenant_id must not be empty")
    slug = _SLUG_RE.sub("_", tenant_id.lower()).strip("_")[:40] or "tenant"
    if slug != tenant_id:
        slug = f"{slug}_{hashlib.md5(tenant_id.encode('utf-8')).hexdigest()[:8]}"
    return slug


def stage_table_names(tenant_id: str) -> tuple[str, str]:
    """(items view, issues table), qualified and unquoted, e.g. ``feed_stage.items_acme``."""
    slug = tenant_slug(tenant_id)
    return f"{STAGE_SCHEMA}.items_{slug}", f"{STAGE_SCHEMA}.issues_{slug}"


def stage_rows_table_name(tenant_id: str) -> str:
    """The table under the items view, e.g. ``feed_stage.item_rows_acme``."""
    return f"{STAGE_SCHEMA}.item_rows_{tenant_slug(tenant_id)}"


def stage_lines_table_name(tenant_id: str) -> str:
    """The hashes of the lines the stored rows came from, when each was one line (:mod:`.incremental_lines`)."""
    return f"{STAGE_SCHEMA}.item_lines_{tenant_slug(tenant_id)}"


def stage_exists(con: duckdb.DuckDBPyConnection, tenant_id: str) -> bool:
    """Whether the tenant has stage relations from an earlier ingest (a view, or a table before v2)."""
    schema, _, name = stage_table_names(tenant_id)[0].partition(".")
    (n,) = con.execute(  # type: ignore[misc]
        "SELECT (SELECT count(*) FROM duckdb_views() WHERE schema_name = $1 AND view_name = $2) "
        "+ (SELECT count(*) FROM duckdb_tables() WHERE schema_name = $1 AND table_name = $2)",
        [schema, name],
    ).fetchone()
    return bool(n)


@dataclass(frozen=True)
class SnapshotResult:
    tenant_id: str
    snapshot_id: str
    source_label: str
    path: str
    fmt: str
    items_table: str  # qualified name, e.g. feed_stage.items_acme
    issues_table: str
    item_count: int
    valid_count: int
    invalid_count: int
    issue_counts: dict[str, int]  # severity -> count ('error', 'warning', 'info')
    columns_present: tuple[str, ...]
    unknown_columns: tuple[str, ...]
    duration_seconds: float
    issue_columns: tuple[str, ...] = field(default=ISSUE_COLUMNS)
    # Rows normalised and validated again by an incremental ingest (None: the whole file was, see incremental).
    incremental_rows: int | None = None
    # How an incremental ingest found them: by the file's "lines" or by its "rows" (None: a full ingest).
    incremental_by: str | None = None

    @property
    def rows_validated(self) -> int:
        """The rows normalised and validated by this ingest: every row, or only the changed ones."""
        return self.item_count if self.incremental_rows is None else self.incremental_rows


def _q(qualified: str) -> str:
    schema, _, table = qualified.partition(".")
    return f"{sql_ident(schema)}.{sql_ident(table)}"


def ingest_feed(
    con: duckdb.DuckDBPyConnection,
    *,
    tenant_id: str,
    snapshot_id: str,
    path: str | Path,
    fmt: str,
    source_label: str,
    required_columns: tuple[str, ...] = REQUIRED_COLUMNS,
    allow_empty: bool = False,
    tmp_dir: str | Path | None = None,
) -> SnapshotResult:
    """Parse, validate and hash the feed ``path`` (format ``csv`` | ``tsv`` | ``xml``) into the stage tables.

    One ``CREATE TABLE AS`` reads the file and does the normalisation, every row-local rule and the
    hashes in the same pass; two small aggregates then find duplicate ids and item-group mismatches.
    Raises :class:`FeedFileError` for problems with the file as a whole (and for a file with no items
    unless ``allow_empty``: an empty replace upload would delete the whole catalog).
    """
    started = time.perf_counter()
    items_name, issues_name = stage_table_names(tenant_id)
    rows_name, lines_name = stage_rows_table_name(tenant_id), stage_lines_table_name(tenant_id)
    rows_tmp, issues_tmp = _q(rows_name + "__building"), _q(issues_name + "__building")
    lines_tmp = _q(lines_name + "__building")
    raw_tmp = _q(f"{STAGE_SCHEMA}.raw_{tenant_slug(tenant_id)}__building")
    # The full-shape view the checks read while the table is being built (temporary: never seen by others).
    checking_view = f"_checking_items_{tenant_slug(tenant_id)}"
    source = open_feed_source(path, fmt, required_columns=required_columns, tmp_dir=tmp_dir)
    present = source.columns_present
    fp = fingerprint(present)
    view_args = {"tenant_id": tenant_id, "snapshot_id": snapshot_id, "columns": present}
    incremental_rows, incremental_by = None, None
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_ident(STAGE_SCHEMA)}")
        ensure_state_table(con)
        counts = None
        if stored_fingerprint(con, rows_name) == fp:
            incremental = _ingest_changed_rows(
                con,
                source,
                rows_name=rows_name,
                lines=(lines_tmp, lines_name),
                tmp_dir=tmp_dir,
                issues=(issues_tmp, issues_name),
                view=(items_name, view_args),
                checking_view=checking_view,
                fp=fp,
                prefix=f"_inc_{tenant_slug(tenant_id)}",
            )
            if incremental is not None:
                counts, incremental_rows, incremental_by = incremental
        if counts is None:
            raw_hashes = _needs_raw_hashes(con, source, rows_name, lines_name)
            _build_items(con, source, rows_tmp, raw_tmp, raw_hashes=raw_hashes)
            (count,) = con.execute(f"SELECT count(*) FROM {rows_tmp}").fetchone()  # type: ignore[misc]
            if count == 0 and not allow_empty:
                raise FeedFileError(path, "the file has a header but no items")
            counts = _finish(con, checking_view, rows_tmp, issues_tmp, view_args, source)
            seeded = seed_lines(con, source, lines_tmp, count)
            if not seeded and not raw_hashes:
                add_raw_hashes(con, source, rows_tmp, count)
            with transaction(con):
                con.execute(f"DROP TABLE IF EXISTS {_q(lines_name)}")
                _swap(
                    con,
                    tables=[(rows_tmp, rows_name), (issues_tmp, issues_name)]
                    + ([(lines_tmp, lines_name)] if seeded else []),
                    view=(items_name, items_view_sql(_q(rows_name), **view_args)),
                    fingerprint=(rows_name, fp),
                )
    except BaseException:
        for t in (rows_tmp, issues_tmp, raw_tmp, lines_tmp):
            with contextlib.suppress(duckdb.Error):
                con.execute(f"DROP TABLE IF EXISTS {t}")
        raise
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute(f"DROP VIEW IF EXISTS {checking_view}")
        source.cleanup()
    return SnapshotResult(
        tenant_id=tenant_id,
        snapshot_id=snapshot_id,
        source_label=source_label,
        path=str(path),
        fmt=source.fmt,
        items_table=items_name,
        issues_table=issues_name,
        item_count=counts.item_count,
        valid_count=counts.valid_count,
        invalid_count=counts.invalid_count,
        issue_counts=counts.issue_counts,
        columns_present=source.columns_present,
        unknown_columns=source.unknown_columns,
        duration_seconds=time.perf_counter() - started,
        incremental_rows=incremental_rows,
        incremental_by=incremental_by,
    )


def _finish(
    con: duckdb.DuckDBPyConnection,
    checking_view: str,
    rows_table: str,
    issues_tmp: str,
    view_args: dict,
    source: FeedSource,
) -> ValidationCounts:
    """The cross-row rules and the issues table, read through ``checking_view`` (the rows with their issue
    bits, which they keep for the next ingest)."""
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {checking_view} AS "
        + items_view_sql(rows_table, with_mask=True, **view_args)
    )
    return finish_validation(
        con,
        items_table=checking_view,
        rows_table=rows_table,
        issues_table=issues_tmp,
        tenant_id=view_args["tenant_id"],
        snapshot_id=view_args["snapshot_id"],
        unknown_columns=source.unknown_columns,
    )


def _ingest_changed_rows(
    con: duckdb.DuckDBPyConnection,
    source: FeedSource,
    *,
    rows_name: str,
    lines: tuple[str, str],
    tmp_dir: str | Path | None,
    issues: tuple[str, str],
    view: tuple[str, dict],
    checking_view: str,
    fp: str,
    prefix: str,
) -> tuple[ValidationCounts, int, str] | None:
    """The incremental ingest (:mod:`kobi_cpas.feeds.incremental`), by the file's lines when it can be
    (:mod:`kobi_cpas.feeds.incremental_lines`), else by its rows: the stored rows updated in place and the
    issues rebuilt, in one transaction; the counts, the number of rows validated again and the way ("lines" or
    "rows"). None when it does not apply (nothing changed then) and the full ingest must run."""
    rows, (lines_tmp, lines_name) = _q(rows_name), lines
    try:
        by_lines = read_changed_lines(
            con,
            source,
            rows_table=rows,
            lines_table=_q(lines_name),
            columns=source.columns_present,
            prefix=prefix,
            tmp_dir=tmp_dir,
        )
        changed = None if by_lines else read_changed_rows(con, source, rows, source.columns_present, prefix)
        if by_lines is None and changed is None:
            return None
        seeded = False
        if changed is not None:
            # Renumbered by their fields: the new file's line hashes, if its lines are its rows, let the next
            # ingest go by lines again (read before the transaction: a line the reader refuses aborts it).
            seeded = seed_lines(con, source, lines_tmp, changed.rows)
        with transaction(con):
            if by_lines:
                apply_changed_lines(con, rows, _q(lines_name), by_lines)
            else:
                assert changed is not None
                apply_changed_rows(con, rows, changed)
                con.execute(f"DROP TABLE IF EXISTS {_q(lines_name)}")
            revalidate_rows(con, rows)
            items_name, view_args = view
            counts = _finish(con, checking_view, rows, issues[0], view_args, source)
            _swap(
                con,
                tables=[issues] + ([(lines_tmp, lines_name)] if seeded else []),
                view=(items_name, items_view_sql(rows, **view_args)),
                fingerprint=(rows_name, fp),
            )
        if by_lines:
            return counts, by_lines.changed, "lines"
        assert changed is not None
        return counts, changed.changed, "rows"
    finally:
        drop_temp(con, prefix)
        drop_line_temps(con, prefix)


def _needs_raw_hashes(
    con: duckdb.DuckDBPyConnection, source: FeedSource, rows_name: str, lines_name: str
) -> bool:
    """Whether a full ingest keeps each row's raw hash, which only the incremental ingest by rows reads. A
    delimited file whose items are its lines is compared by its lines next time, so its rows go without (the
    hash costs about 0.2 s of the full pass at 1M items) until the tenant's file proves otherwise: a stage kept
    without line hashes. XML is always compared by rows."""
    if source.lines_sql is None:
        return True
    (needs,) = con.execute(  # type: ignore[misc]
        "SELECT count(*) FILTER (WHERE table_name = $rows) > 0 AND count(*) FILTER (WHERE table_name = $lines) = 0 "
        "FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = $schema",
        {"schema": STAGE_SCHEMA, "rows": rows_name.partition(".")[2], "lines": lines_name.partition(".")[2]},
    ).fetchone()
    return bool(needs)


def _build_items(
    con: duckdb.DuckDBPyConnection,
    source: FeedSource,
    rows_tmp: str,
    raw_tmp: str,
    *,
    raw_hashes: bool = True,
) -> None:
    """Create the item rows table from the file, with ``row_number`` = position of the item in the file, and
    ``_raw_hash`` NULL unless ``raw_hashes``.

    Fast path (one pass over the file): ``CREATE TABLE AS`` with insertion order preserved, then
    ``row_number = rowid + 1`` (``row_number() OVER ()`` would cost a second, single-threaded pass).
    That needs a plan made of scan + projections only, which :func:`create_table_streaming` checks on
    the plan that ran; if a future DuckDB plans something else, that table is discarded and the safe
    path copies the file to a plain table first and reads ``rowid`` at its scan, before any operator
    could reorder rows.
    """
    columns = source.columns_present
    hashed = raw_hashed_select if raw_hashes else without_raw_hash
    select = items_select_sql(hashed(source.select_sql), columns=columns, carry=(RAW_HASH,))
    with insertion_order_preserved(con):
        if create_table_streaming(con, rows_tmp, select, source):
            con.execute(f"UPDATE {rows_tmp} SET row_number = rowid + 1")
            return
        con.execute(f"DROP TABLE IF EXISTS {rows_tmp}")
        execute_reading(con, f"CREATE OR REPLACE TABLE {raw_tmp} AS {source.select_sql}", source)
    try:
        select = items_select_sql(
            hashed(f"SELECT *, rowid + 1 AS _row_number FROM {raw_tmp}"),
            columns=columns,
            row_number_sql="_row_number",
            carry=(RAW_HASH,),
        )
        con.execute(f"CREATE OR REPLACE TABLE {rows_tmp} AS {select}")
    finally:
        con.execute(f"DROP TABLE IF EXISTS {raw_tmp}")


def _drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop ``schema.name`` whether it is a view or a table (stage items were a table before v2)."""
    schema, _, rel = name.partition(".")
    is_view = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ?", [schema, rel]
    ).fetchone()[0]  # type: ignore[index]
    con.execute(f"DROP {'VIEW' if is_view else 'TABLE'} IF EXISTS {_q(name)}")


def _swap(
    con: duckdb.DuckDBPyConnection,
    *,
    tables: list[tuple[str, str]],
    view: tuple[str, str],
    fingerprint: tuple[str, str],
) -> None:
    """In the caller's transaction: replace each final table by its freshly built twin (``(quoted tmp,
    unquoted final)``), recreate the items view (``(unquoted name, SELECT)``) and record the rows'
    ``fingerprint`` (``(rows table, fingerprint)``)."""
    view_name, view_sql = view
    _drop_relation(con, view_name)
    for tmp, final in tables:
        con.execute(f"DROP TABLE IF EXISTS {_q(final)}")
        con.execute(f"ALTER TABLE {tmp} RENAME TO {sql_ident(final.partition('.')[2])}")
    con.execute(f"CREATE VIEW {_q(view_name)} AS {view_sql}")
    record_fingerprint(con, *fingerprint)
