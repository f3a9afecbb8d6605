"""The DuckDB warehouse: a private work database that assets write, and an analyst file published atomically.

Why two files: DuckDB lets one process write a file, and while a process holds a file open (even read-only) no
other process may write it. Analysts keep sessions open for hours, so scheduled writes must never touch the file
they read. Assets write the work database; ``publish()`` builds a complete new analyst file next to the old one
and ``os.replace``-s it into place. Open analyst sessions keep reading the previous (complete) file until they
reconnect; nobody ever sees a half-written table, and no writer ever waits on a reader.

This module opens and migrates the work database; how a publish builds and swaps the file is ``publish.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from kobi_cpas.warehouse.host import attach, configure, release
from kobi_cpas.warehouse.publish import AnalystPublisher, PublishResult
from kobi_cpas.warehouse.publish_due import PublishDue
from kobi_cpas.warehouse.schema import WarehouseSchema
from kobi_cpas.warehouse.specs import TableSpec
from kobi_cpas.warehouse.sql import comment_table, qident, sql_str, transaction

log = logging.getLogger(__name__)

DEFAULT_ANALYST_PATH = Path("data") / "kobi_cpas.duckdb"
DEFAULT_MEMORY_LIMIT = "1GB"


def analyst_path_from_env() -> Path:
    return Path(os.environ.get("KOBI_CPAS_DUCKDB_PATH") or DEFAULT_ANALYST_PATH).expanduser()


_MIGRATE_LOCK = threading.Lock()


# Memoised per schema object. The dicts of a schema can be changed in place (tests do), so a cached value is
# used only while the declarations are equal (the same objects, in practice: compared by identity first).
_FINGERPRINTS: dict[int, tuple[tuple, str]] = {}
# Declared column type -> DuckDB's name for it (``typeof``); fixed for the running DuckDB.
_TYPE_NAMES: dict[str, str] = {}


def _schema_fingerprint(schema: WarehouseSchema) -> str:
    key = (tuple(schema.tables.items()), tuple(schema.views.items()), tuple(schema.internal_ddl))
    hit = _FINGERPRINTS.get(id(schema))
    if hit is not None and hit[0] == key:
        return hit[1]
    h = hashlib.sha256()
    for name in sorted(schema.tables):
        h.update(repr(schema.tables[name]).encode())
    for name in sorted(schema.views):
        h.update(repr(schema.views[name]).encode())
    for ddl in schema.internal_ddl:
        h.update(ddl.encode())
    if len(_FINGERPRINTS) > 64:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(schema)] = (key, h.hexdigest())
    return h.hexdigest()


def _duckdb_types(con: duckdb.DuckDBPyConnection, types: list[str]) -> dict[str, str]:
    """DuckDB's names of declared column types, asked in one query for the ones not seen yet."""
    missing = sorted({t for t in types if t not in _TYPE_NAMES})
    if missing:
        row = con.execute("SELECT " + ", ".join(f"typeof(NULL::{t})" for t in missing)).fetchone()
        _TYPE_NAMES.update(zip(missing, row or (), strict=True))
    return {t: _TYPE_NAMES[t] for t in types}


class Warehouse:
    """Work database access (always closed, lock waits bounded) and atomic publishing to the analyst file.

    ``schema`` is what the warehouse migrates and publishes (the product's is ``kobi_cpas.tables.SCHEMA``);
    only paths and locks are available without one.
    """

    def __init__(
        self,
        analyst_path: Path | str | None = None,
        work_dir: Path | str | None = None,
        lock_timeout: float = 120.0,
        memory_limit: str | None = None,
        threads: int | None = None,
        schema: WarehouseSchema | None = None,
    ) -> None:
        self.analyst_path = Path(analyst_path).expanduser() if analyst_path else analyst_path_from_env()
        self.work_dir = Path(work_dir) if work_dir else self.analyst_path.parent / ".kobi_work"
        self.work_path = self.work_dir / "warehouse.duckdb"
        self.lock_timeout = lock_timeout
        # Bounded by default (DuckDB's own default is 80 % of RAM): large joins spill to disk instead. Set but
        # empty is the default too, as for every setting: a run launcher may pass it empty rather than unset.
        self.memory_limit = (
            memory_limit
            or os.environ.get("KOBI_CPAS_DUCKDB_MEMORY_LIMIT", "").strip()
            or DEFAULT_MEMORY_LIMIT
        )
        self.threads = threads
        self._schema = schema

    @property
    def schema(self) -> WarehouseSchema:
        if self._schema is None:
            raise RuntimeError("this Warehouse has no schema: pass schema=kobi_cpas.tables.SCHEMA")
        return self._schema

    # -- connections -------------------------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        """A connection to the work database (release it with ``_close``), waiting up to ``lock_timeout`` while
        another process writes it (asleep on the writers' lock, see ``host``)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = str(self.work_path.resolve())
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.2
        while True:
            try:
                con = attach(path, deadline - time.monotonic())
                break
            except duckdb.IOException as exc:
                # A process that ignores the writers' lock (a DuckDB client opened by hand) has the file open:
                # retry, bounded. The last sleep is cut to the deadline, so the whole budget is used.
                remaining = deadline - time.monotonic()
                if "lock" not in str(exc).lower() or remaining <= 0:
                    raise
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)
        settings: dict[str, str] = {}
        if self.memory_limit:
            settings["memory_limit"] = sql_str(self.memory_limit)
        if self.threads:
            settings["threads"] = str(int(self.threads))
        try:
            configure(con, settings)
        except BaseException:
            self._close(con)
            raise
        return con

    def _close(self, con: duckdb.DuckDBPyConnection) -> None:
        release(str(self.work_path.resolve()), con)

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The work database, migrated; closed even when the body raises (so the file lock is released)."""
        con = self._open()
        try:
            self.migrate(con)
            self._publisher().remove_stale_publishing(wait=False)
            yield con
        finally:
            self._close(con)

    # -- schema ------------------------------------------------------------------------------------------------
    def migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create or extend every table idempotently and apply comments. Skipped when the fingerprint stored in
        the file is the current one (one query per connection: another process, e.g. an older version during a
        deploy, may have migrated the file since)."""
        schema = self.schema
        fp = _schema_fingerprint(schema)
        for m in schema.data_migrations.values():
            fp += f"|{m.name}={m.version(con)}"
        if self._stored_fingerprint(con) == fp:
            return
        # Connections of one process share the attached file: two migrations at once would conflict.
        with _MIGRATE_LOCK:
            if self._stored_fingerprint(con) != fp:
                self._migrate_locked(con, fp)

    @staticmethod
    def _stored_fingerprint(con: duckdb.DuckDBPyConnection) -> str | None:
        try:
            row = con.execute(
                "SELECT value FROM kobi_internal.schema_meta WHERE key = 'fingerprint'"
            ).fetchone()
        except duckdb.CatalogException:  # a new file
            return None
        return row[0] if row else None

    def _migrate_locked(self, con: duckdb.DuckDBPyConnection, fp: str) -> None:
        schema = self.schema
        con.execute("CREATE SCHEMA IF NOT EXISTS kobi_internal")
        con.execute(
            "CREATE TABLE IF NOT EXISTS kobi_internal.schema_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
        )
        with transaction(con):
            for ddl in schema.internal_ddl:
                con.execute(ddl)
            existing = self._main_columns(con)
            comments = dict(
                con.execute(
                    "SELECT table_name, comment FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = 'main'"
                ).fetchall()
            )
            for spec in schema.tables.values():
                have = existing.get(spec.name)
                if have is None:
                    con.execute(spec.ddl(f"main.{qident(spec.name)}"))
                    comment_table(con, "main", spec)
                    continue
                changed = self._migrate_columns(con, spec, have)
                stale = {c.name for c in spec.columns if c.name in changed or have[c.name][1] != c.comment}
                comment_table(con, "main", spec, stale, comments.get(spec.name) != spec.comment)
            for m in schema.data_migrations.values():
                m.apply(con)
            con.execute(
                "INSERT OR REPLACE INTO kobi_internal.schema_meta VALUES ('fingerprint', ?)",
                [fp],
            )

    @staticmethod
    def _main_columns(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, tuple[str, str | None]]]:
        """Table -> column -> (type, comment) of the ``main`` schema, in one query."""
        out: dict[str, dict[str, tuple[str, str | None]]] = {}
        for table, column, type_, comment in con.execute(
            "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall():
            out.setdefault(table, {})[column] = (type_, comment)
        return out

    @staticmethod
    def _migrate_columns(
        con: duckdb.DuckDBPyConnection, spec: TableSpec, existing: dict[str, tuple[str, str | None]]
    ) -> set[str]:
        """Add new columns; convert a column whose declared type changed (values that do not convert become
        NULL until the owning asset rewrites the table: analyst tables are derived data). Returns the names of
        the columns added or converted."""
        table = f"main.{qident(spec.name)}"
        changed: set[str] = set()
        wanted = _duckdb_types(con, [c.type for c in spec.columns if c.name in existing])
        for c in spec.columns:
            if c.name not in existing:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {qident(c.name)} {c.type}")
                changed.add(c.name)
            elif wanted[c.type] != existing[c.name][0]:
                log.info(
                    "converting %s.%s from %s to %s", spec.name, c.name, existing[c.name][0], wanted[c.type]
                )
                con.execute(
                    f"ALTER TABLE {table} ALTER COLUMN {qident(c.name)} SET DATA TYPE {c.type} "
                    f"USING TRY_CAST({qident(c.name)} AS {c.type})"
                )
                changed.add(c.name)
        return changed

    # -- publishing --------------------------------------------------------------------------------------------
    def publish(self, con: duckdb.DuckDBPyConnection | None = None) -> PublishResult:
        """Build a new analyst file with every analyst table and view and atomically swap it in.

        Incremental when possible: every run that writes publishes, and copying a million-row table that did
        not change costs seconds each time (3.3 s for one 1M-item tenant, `make bench`). So the new file
        starts as a byte copy of the current analyst file when that file is exactly the one this work database
        last published (same schema, DuckDB version and file identity), and only the tables whose content
        fingerprint (row count + sum of row hashes) changed get their rows replaced: a big table with a key only
        its changed rows (see ``publish._plan_by_rows``), the others whole. Anything else (first publish, a
        schema change, a file replaced or touched outside, too many free blocks) rebuilds from scratch. When no
        table changed, the current analyst file is already that file and stays as it is.
        Writers are serialised by the publish lock (``publish_lock_path``, held from reading the recorded
        state to the swap), so the file copied is never older than the state recorded for it, and a
        ``.publishing`` file found once the lock is held belongs to a writer that died: it is removed.
        """
        if con is None:
            with self.connect() as own:
                return self.publish(own)
        started, started_at = time.monotonic(), time.time()
        self.analyst_path.parent.mkdir(parents=True, exist_ok=True)
        publisher = self._publisher()
        with publisher.lock(wait=True):
            publisher.remove_publishing_files()
            result = publisher.publish_locked(con, self.schema)
        result.seconds = time.monotonic() - started
        self.publish_due.record_published(started_at)
        log.info(
            "published %d analyst tables to %s in %.2fs (%s: %d rewritten)",
            len(result.row_counts),
            self.analyst_path,
            result.seconds,
            "incremental" if result.incremental else "full",
            len(result.rewritten),
        )
        return result

    @property
    def publish_due(self) -> PublishDue:
        """Whether runs wrote since the last publish (read without opening the work database)."""
        return PublishDue(self.work_dir)

    @property
    def publish_lock_path(self) -> Path:
        """The publish lock (``fcntl.flock``; not the work database's writers' lock), beside the analyst file so
        it covers every work database that publishes to it."""
        return self._publisher().lock_path

    def _publisher(self) -> AnalystPublisher:
        # Built per use: analyst_path and lock_timeout are plain attributes a caller may change.
        return AnalystPublisher(self.analyst_path, self.lock_timeout, self.work_dir)

    # -- analyst side ------------------------------------------------------------------------------------------
    def analyst_row_counts(self) -> dict[str, int]:
        """Row counts of every analyst table and view, read from the published file."""
        schema = self.schema
        if not self.analyst_path.exists():
            return {}
        con = duckdb.connect(str(self.analyst_path), read_only=True)
        try:
            out: dict[str, int] = {}
            for name in [*schema.tables, *schema.views]:
                try:
                    row = con.execute(f"SELECT count(*) FROM {qident(name)}").fetchone()
                    out[name] = int(row[0]) if row else 0
                except duckdb.CatalogException:
                    continue
            return out
        finally:
            con.close()


def replace_rows(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, records: list[dict], where: str, params: list
) -> None:
    """Delete-then-insert one slice of an analyst table in one transaction, so re-runs give the same rows.
    ``records`` map column names to values (missing columns are NULL)."""
    cols = spec.column_names
    with transaction(con):
        con.execute(f"DELETE FROM main.{qident(spec.name)} WHERE {where}", params)
        if records:
            con.executemany(
                f"INSERT INTO main.{qident(spec.name)} ({', '.join(qident(c) for c in cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                [[r.get(c) for c in cols] for r in records],
            )


def read_analyst(analyst_path: Path | str, sql: str, params: list | None = None) -> list[tuple]:
    """Query the published analyst file from a long-lived process (sensors, schedules). Missing file -> no
    rows."""
    if not Path(analyst_path).exists():
        return []
    with open_analyst(analyst_path) as con:
        return con.execute(sql, params or []).fetchall()


@contextlib.contextmanager
def open_analyst(analyst_path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the published analyst file, its tables and views unqualified.

    Opened afresh through ATTACH (``duckdb.connect(path)`` would reuse a cached instance still pointing at an
    older published file) and read-only, so it never blocks a writer."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_str(str(analyst_path))} AS analyst (READ_ONLY)")
        con.execute("USE analyst")
        yield con
    finally:
        con.close()
