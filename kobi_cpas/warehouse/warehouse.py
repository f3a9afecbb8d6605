"""The DuckDB warehouse: a private work database that assets write, and an analyst file published atomically.

Why two files: DuckDB lets one process write a file, and while a process holds a file open (even read-only) no
other process may write it. Analysts keep sessions open for hours, so scheduled writes must never touch the file
they read. Assets write the work database; ``publish()`` builds a complete new analyst file next to the old one
and ``os.replace``-s it into place. Open analyst sessions keep reading the previous (complete) file until they
reconnect; nobody ever sees a half-written table, and no writer ever waits on a reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kobi_cpas.warehouse.host import attach, release
from kobi_cpas.warehouse.schema import WarehouseSchema
from kobi_cpas.warehouse.specs import TableSpec

log = logging.getLogger(__name__)

DEFAULT_ANALYST_PATH = Path("data") / "kobi_cpas.duckdb"


def analyst_path_from_env() -> Path:
    return Path(os.environ.get("KOBI_CPAS_DUCKDB_PATH") or DEFAULT_ANALYST_PATH).expanduser()


def sql_str(value: str) -> str:
    """A SQL string literal (for DDL such as COMMENT/ATTACH where parameters are not allowed)."""
    return "'" + value.replace("'", "''") + "'"


def qident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PublishResult:
    path: Path
    row_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Tables copied from the work database; the others came unchanged with the previous analyst file.
    rewritten: list[str] = field(default_factory=list)
    incremental: bool = False


# Rebuild the analyst file from scratch once this share of its blocks is free (left by rewritten tables).
_MAX_FREE_BLOCK_SHARE = 0.5
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


def _compact(blocks: list[int] | tuple[int, int] | None) -> bool:
    """Whether a file with these [free, total] blocks may be built on (unknown: no)."""
    if not blocks:
        return False
    free, total = blocks
    return not total or free / total <= _MAX_FREE_BLOCK_SHARE


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
        # Bounded by default (DuckDB's own default is 80 % of RAM): large joins spill to disk instead.
        self.memory_limit = memory_limit or os.environ.get("KOBI_CPAS_DUCKDB_MEMORY_LIMIT", "1GB")
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
        another process holds DuckDB's file lock."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = str(self.work_path.resolve())
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.2
        while True:
            try:
                con = attach(path)
                break
            except duckdb.IOException as exc:
                # Another process (a run outside the duckdb_write pool) holds the lock: wait, bounded. The
                # last sleep is cut to the deadline, so the whole budget is used however slow each try is.
                remaining = deadline - time.monotonic()
                if "lock" not in str(exc).lower() or remaining <= 0:
                    raise
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)
        try:
            if self.memory_limit:
                con.execute(f"SET memory_limit = {sql_str(self.memory_limit)}")
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
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
            self._remove_stale_publishing(wait=False)
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
        con.execute("BEGIN")
        try:
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
                    self._comment_table(con, "main", spec)
                    continue
                changed = self._migrate_columns(con, spec, have)
                stale = {c.name for c in spec.columns if c.name in changed or have[c.name][1] != c.comment}
                self._comment_table(con, "main", spec, stale, comments.get(spec.name) != spec.comment)
            for m in schema.data_migrations.values():
                m.apply(con)
            con.execute(
                "INSERT OR REPLACE INTO kobi_internal.schema_meta VALUES ('fingerprint', ?)",
                [fp],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

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

    @staticmethod
    def _comment_table(
        con: duckdb.DuckDBPyConnection,
        prefix: str,
        spec: TableSpec,
        columns: set[str] | None = None,
        table: bool = True,
    ) -> None:
        """COMMENT the table (unless ``table`` is False) and its ``columns`` (default: all of them)."""
        t = f"{prefix}.{qident(spec.name)}"
        if table:
            con.execute(f"COMMENT ON TABLE {t} IS {sql_str(spec.comment)}")
        for c in spec.columns:
            if columns is None or c.name in columns:
                con.execute(f"COMMENT ON COLUMN {t}.{qident(c.name)} IS {sql_str(c.comment)}")

    # -- publishing --------------------------------------------------------------------------------------------
    def publish(self, con: duckdb.DuckDBPyConnection | None = None) -> PublishResult:
        """Build a new analyst file with every analyst table and view and atomically swap it in.

        Incremental when possible: every asset that writes publishes, and copying a million-row table that did
        not change costs seconds each time (3.3 s for one 1M-item tenant, `make bench`). So the new file
        starts as a byte copy of the current analyst file when that file is exactly the one this work database
        last published (same schema, DuckDB version and file identity), and only the tables whose content
        fingerprint (row count + sum of row hashes) changed are rewritten. Anything else (first publish, a
        schema change, a file replaced or touched outside, too many free blocks) rebuilds from scratch. When no
        table changed, the current analyst file is already that file and stays as it is.
        Writers are serialised by the publish lock (``publish_lock_path``, held from reading the recorded
        state to the swap), so the file copied is never older than the state recorded for it, and a
        ``.publishing`` file found once the lock is held belongs to a writer that died: it is removed.
        """
        if con is None:
            with self.connect() as own:
                return self.publish(own)
        started = time.monotonic()
        self.analyst_path.parent.mkdir(parents=True, exist_ok=True)
        with self._publish_lock(wait=True):
            self._remove_publishing_files()
            result = self._publish_locked(con)
        result.seconds = time.monotonic() - started
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
    def publish_lock_path(self) -> Path:
        """The writers' lock (``fcntl.flock``), beside the analyst file so it covers every work database that
        publishes to it."""
        return self.analyst_path.with_name(f".{self.analyst_path.name}.publish.lock")

    def _publishing_files(self) -> list[Path]:
        # The new file and its WAL, as named in _publish_locked.
        return sorted(self.analyst_path.parent.glob(f".{glob.escape(self.analyst_path.name)}.*.publishing*"))

    @contextlib.contextmanager
    def _publish_lock(self, wait: bool) -> Iterator[bool]:
        """Hold the writers' lock; yields False (holding nothing) when `wait` is False and another writer has
        it. Waiting is bounded by `lock_timeout`."""
        deadline = time.monotonic() + self.lock_timeout
        with open(self.publish_lock_path, "a+") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        yield False
                        return
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"Cannot publish {self.analyst_path}: another writer has held "
                            f"{self.publish_lock_path} for more than {self.lock_timeout:.0f}s"
                        ) from None
                    time.sleep(0.1)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_publishing_files(self) -> None:
        """With the publish lock held, every publishing file is stale: its writer died before its cleanup."""
        for path in self._publishing_files():
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                log.warning("removed %s (%d bytes) left by a publish that did not finish", path, size)

    def _remove_stale_publishing(self, wait: bool) -> None:
        """Remove what a killed publish left, unless a writer is publishing right now."""
        if not self._publishing_files():
            return
        with self._publish_lock(wait=wait) as held:
            if held:
                self._remove_publishing_files()

    def _publish_locked(self, con: duckdb.DuckDBPyConnection) -> PublishResult:
        token = uuid.uuid4().hex
        tmp = self.analyst_path.with_name(f".{self.analyst_path.name}.{token}.publishing")
        alias = f"kobi_publish_{token[:16]}"  # unique: connections of one process share the attached names
        result = PublishResult(path=self.analyst_path)
        tables = self.schema.tables
        fingerprints = self._table_fingerprints(con, list(tables.values()))
        state_key = self._publish_state_key(con)
        state = self._previous_publish(con, state_key)
        previous: dict[str, str] | None = state["tables"] if state else None
        result.rewritten = [n for n in tables if previous is None or previous.get(n) != fingerprints[n]]
        if state and not result.rewritten and _compact(state.get("blocks")):
            # The analyst file is exactly what this database published, and nothing changed since: the new
            # file would be the same, so the current one stays (unless its free space, as measured when it
            # was built, is now past the threshold: the publish below records that, so the next one rebuilds).
            result.incremental = True
            result.row_counts = {n: int(fingerprints[n].split(":", 1)[0]) for n in tables}
            return result
        try:
            if previous is not None:
                shutil.copyfile(self.analyst_path, tmp)
                result.incremental = True
            con.execute(f"ATTACH {sql_str(str(tmp))} AS {alias}")
            try:
                # One transaction: hundreds of COMMENT statements in autocommit cost a commit each.
                con.execute("BEGIN")
                try:
                    for name in result.rewritten:
                        spec = tables[name]
                        target = f"{alias}.main.{qident(spec.name)}"
                        con.execute(f"DROP TABLE IF EXISTS {target}")
                        con.execute(spec.ddl(target))
                        cols = ", ".join(qident(c) for c in spec.column_names)
                        con.execute(f"INSERT INTO {target} SELECT {cols} FROM main.{qident(spec.name)}")
                        self._comment_table(con, f"{alias}.main", spec)
                    result.row_counts = self._row_counts(con, f"{alias}.main", list(tables))
                    con.execute("COMMIT")
                except Exception:
                    con.execute("ROLLBACK")
                    raise
                if not result.incremental:
                    # A copied file already has the views: they are part of the schema in the state key.
                    self._create_views(con, alias)
                con.execute(f"CHECKPOINT {alias}")
                free, total = con.execute(
                    "SELECT free_blocks, total_blocks FROM pragma_database_size() WHERE database_name = ?",
                    [alias],
                ).fetchone()  # type: ignore[misc]
            finally:
                con.execute(f"DETACH {alias}")
            os.replace(tmp, self.analyst_path)
            with contextlib.suppress(OSError):
                dir_fd = os.open(self.analyst_path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        # A file that is half free space is rebuilt by the next publish (no state recorded for it).
        compact = _compact((free, total))
        self._record_publish(con, state_key, fingerprints if compact else None, (free, total))
        return result

    def _create_views(self, con: duckdb.DuckDBPyConnection, alias: str) -> None:
        """Create the views in the attached new file. Their SQL names tables without a catalog, resolved in
        the file itself (this connection's default database is the new file while they are created)."""
        vcon = con.cursor()
        try:
            vcon.execute(f"USE {alias}")
            vcon.execute("BEGIN")
            for view in self.schema.views.values():
                vcon.execute(f"CREATE OR REPLACE VIEW main.{qident(view.name)} AS {view.sql}")
                vcon.execute(f"COMMENT ON VIEW main.{qident(view.name)} IS {sql_str(view.comment)}")
                for c in view.columns:
                    vcon.execute(
                        f"COMMENT ON COLUMN main.{qident(view.name)}.{qident(c.name)} IS {sql_str(c.comment)}"
                    )
            vcon.execute("COMMIT")
        finally:
            vcon.close()  # rolls back on error

    def _table_fingerprints(self, con: duckdb.DuckDBPyConnection, specs: list[TableSpec]) -> dict[str, str]:
        """Per table, row count + sum of row hashes: order-independent, and a changed, added or removed row
        changes it (unless 64-bit hashes collide). About 0.15 s per million wide rows; an empty table costs
        only its count (hashing costs ~1 ms per table even with no rows)."""
        counts = self._row_counts(con, "main", [s.name for s in specs])
        out = {s.name: "0:0" for s in specs if not counts[s.name]}
        parts = [
            f"SELECT {sql_str(s.name)}, count(*), "
            f"coalesce(sum(hash({', '.join(qident(c) for c in s.column_names)})), 0)::HUGEINT "
            f"FROM main.{qident(s.name)}"
            for s in specs
            if counts[s.name]
        ]
        if parts:
            out.update(
                (name, f"{n}:{total}") for name, n, total in con.execute(" UNION ALL ".join(parts)).fetchall()
            )
        return out

    @staticmethod
    def _row_counts(con: duckdb.DuckDBPyConnection, schema: str, names: list[str]) -> dict[str, int]:
        if not names:
            return {}
        sql = " UNION ALL ".join(f"SELECT {sql_str(n)}, count(*) FROM {schema}.{qident(n)}" for n in names)
        return {name: int(n) for name, n in con.execute(sql).fetchall()}

    def _file_identity(self) -> list[int] | None:
        try:
            st = self.analyst_path.stat()
        except FileNotFoundError:
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    def _publish_state_key(self, con: duckdb.DuckDBPyConnection) -> str:
        row = con.execute("SELECT value FROM kobi_internal.schema_meta WHERE key = 'fingerprint'").fetchone()
        return f"{row[0] if row else ''}|duckdb-{duckdb.__version__}|{self.analyst_path.resolve()}"

    def _previous_publish(self, con: duckdb.DuckDBPyConnection, key: str) -> dict | None:
        """The recorded state (``tables``: table fingerprints, ``blocks``: [free, total] blocks) of the current
        analyst file, when it is exactly what this database published and compact enough to build on."""
        row = con.execute("SELECT value FROM kobi_internal.schema_meta WHERE key = 'published'").fetchone()
        if not row:
            return None
        state = json.loads(row[0])
        identity = self._file_identity()
        wal = self.analyst_path.with_name(self.analyst_path.name + ".wal")
        if state.get("key") != key or identity is None or state.get("file") != identity or wal.exists():
            return None
        return state if state.get("tables") is not None else None

    def _record_publish(
        self,
        con: duckdb.DuckDBPyConnection,
        key: str,
        tables: dict[str, str] | None,
        blocks: tuple[int, int] | None = None,
    ) -> None:
        state = {"key": key, "file": self._file_identity(), "tables": tables, "blocks": blocks}
        try:
            con.execute(
                "INSERT OR REPLACE INTO kobi_internal.schema_meta VALUES ('published', ?)",
                [json.dumps(state)],
            )
        except duckdb.Error as exc:  # the file is published; without this record the next publish is full
            log.warning("could not record the published state (%s); the next publish rebuilds the file", exc)

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
    con.execute("BEGIN")
    try:
        con.execute(f"DELETE FROM main.{qident(spec.name)} WHERE {where}", params)
        if records:
            con.executemany(
                f"INSERT INTO main.{qident(spec.name)} ({', '.join(qident(c) for c in cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                [[r.get(c) for c in cols] for r in records],
            )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def read_analyst(analyst_path: Path | str, sql: str, params: list | None = None) -> list[tuple]:
    """Query the published analyst file from a long-lived process (sensors, schedules).

    Opens it afresh through ATTACH (``duckdb.connect(path)`` would reuse a cached instance still pointing at an
    older published file) and read-only, so it never blocks a writer. Missing file -> no rows."""
    path = Path(analyst_path)
    if not path.exists():
        return []
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_str(str(path))} AS analyst (READ_ONLY)")
        con.execute("USE analyst")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
