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
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kobi_cpas.warehouse.specs import TableSpec, ViewSpec
from kobi_cpas.warehouse.tables import DATA_MIGRATIONS, INTERNAL_DDL, TABLES, VIEWS

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


def load_all_specs() -> None:
    """Import every domain's table declarations (lazily: domain packages import the warehouse themselves)."""
    import kobi_cpas.warehouse.all_tables  # noqa: F401


def _schema_fingerprint(tables: dict[str, TableSpec], views: dict[str, ViewSpec], internal: list[str]) -> str:
    h = hashlib.sha256()
    for name in sorted(tables):
        h.update(repr(tables[name]).encode())
    for name in sorted(views):
        h.update(repr(views[name]).encode())
    for ddl in internal:
        h.update(ddl.encode())
    return h.hexdigest()


class Warehouse:
    """Work database access (always closed, lock waits bounded) and atomic publishing to the analyst file."""

    def __init__(
        self,
        analyst_path: Path | str | None = None,
        work_dir: Path | str | None = None,
        lock_timeout: float = 120.0,
        memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.analyst_path = Path(analyst_path).expanduser() if analyst_path else analyst_path_from_env()
        self.work_dir = Path(work_dir) if work_dir else self.analyst_path.parent / ".kobi_work"
        self.work_path = self.work_dir / "warehouse.duckdb"
        self.lock_timeout = lock_timeout
        # Bounded by default (DuckDB's own default is 80 % of RAM): large joins spill to disk instead.
        self.memory_limit = memory_limit or os.environ.get("KOBI_CPAS_DUCKDB_MEMORY_LIMIT", "1GB")
        self.threads = threads

    # -- connections -------------------------------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.2
        while True:
            try:
                con = duckdb.connect(str(self.work_path))
                break
            except duckdb.IOException as exc:
                # Another process (a run outside the duckdb_write pool) holds the lock: wait, bounded.
                if "lock" not in str(exc).lower() or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self.memory_limit:
            con.execute(f"SET memory_limit = {sql_str(self.memory_limit)}")
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        return con

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The work database, migrated; closed even when the body raises (so the file lock is released)."""
        con = self._open()
        try:
            self.migrate(con)
            self._remove_stale_publishing(wait=False)
            yield con
        finally:
            con.close()

    # -- schema ------------------------------------------------------------------------------------------------
    def migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create or extend every table idempotently and (re)apply comments. Skipped when unchanged."""
        load_all_specs()
        con.execute("CREATE SCHEMA IF NOT EXISTS kobi_internal")
        con.execute(
            "CREATE TABLE IF NOT EXISTS kobi_internal.schema_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"
        )
        fp = _schema_fingerprint(TABLES, VIEWS, INTERNAL_DDL)
        for m in DATA_MIGRATIONS.values():
            fp += f"|{m.name}={m.version(con)}"
        row = con.execute("SELECT value FROM kobi_internal.schema_meta WHERE key = 'fingerprint'").fetchone()
        if row and row[0] == fp:
            return
        con.execute("BEGIN")
        try:
            for ddl in INTERNAL_DDL:
                con.execute(ddl)
            for spec in TABLES.values():
                con.execute(spec.ddl(f"main.{qident(spec.name)}"))
                self._migrate_columns(con, spec)
                self._comment_table(con, "main", spec)
            for m in DATA_MIGRATIONS.values():
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
    def _migrate_columns(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> None:
        """Add new columns; convert a column whose declared type changed (values that do not convert become
        NULL until the owning asset rewrites the table: analyst tables are derived data)."""
        table = f"main.{qident(spec.name)}"
        existing = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND table_name = ?",
                [spec.name],
            ).fetchall()
        )
        for c in spec.columns:
            if c.name not in existing:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {qident(c.name)} {c.type}")
                continue
            (wanted,) = con.execute(f"SELECT typeof(NULL::{c.type})").fetchone()  # type: ignore[misc]
            if wanted != existing[c.name]:
                log.info("converting %s.%s from %s to %s", spec.name, c.name, existing[c.name], wanted)
                con.execute(
                    f"ALTER TABLE {table} ALTER COLUMN {qident(c.name)} SET DATA TYPE {c.type} "
                    f"USING TRY_CAST({qident(c.name)} AS {c.type})"
                )

    @staticmethod
    def _comment_table(con: duckdb.DuckDBPyConnection, prefix: str, spec: TableSpec) -> None:
        t = f"{prefix}.{qident(spec.name)}"
        con.execute(f"COMMENT ON TABLE {t} IS {sql_str(spec.comment)}")
        for c in spec.columns:
            con.execute(f"COMMENT ON COLUMN {t}.{qident(c.name)} IS {sql_str(c.comment)}")

    # -- publishing --------------------------------------------------------------------------------------------
    def publish(self, con: duckdb.DuckDBPyConnection | None = None) -> PublishResult:
        """Build a new analyst file with every analyst table and view and atomically swap it in.

        Incremental when possible: every asset that writes publishes, and copying a million-row table that did
        not change costs seconds each time (3.3 s for one 1M-item tenant, `make bench`). So the new file
        starts as a byte copy of the current analyst file when that file is exactly the one this work database
        last published (same schema, DuckDB version and file identity), and only the tables whose content
        fingerprint (row count + sum of row hashes) changed are rewritten. Anything else (first publish, a
        schema change, a file replaced or touched outside, too many free blocks) rebuilds from scratch.
        Writers are serialised by the publish lock (``publish_lock_path``, held from reading the recorded
        state to the swap), so the file copied is never older than the state recorded for it, and a
        ``.publishing`` file found once the lock is held belongs to a writer that died: it is removed.
        """
        load_all_specs()
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
        tmp = self.analyst_path.with_name(f".{self.analyst_path.name}.{uuid.uuid4().hex}.publishing")
        alias = "kobi_publish"
        result = PublishResult(path=self.analyst_path)
        fingerprints = {name: self._table_fingerprint(con, spec) for name, spec in TABLES.items()}
        state_key = self._publish_state_key(con)
        previous = self._previous_publish(con, state_key)
        try:
            if previous is not None:
                shutil.copyfile(self.analyst_path, tmp)
                result.incremental = True
            result.rewritten = [n for n in TABLES if previous is None or previous.get(n) != fingerprints[n]]
            con.execute(f"ATTACH {sql_str(str(tmp))} AS {alias}")
            try:
                # One transaction: hundreds of COMMENT statements in autocommit cost a commit each.
                con.execute("BEGIN")
                for name in result.rewritten:
                    spec = TABLES[name]
                    target = f"{alias}.main.{qident(spec.name)}"
                    con.execute(f"DROP TABLE IF EXISTS {target}")
                    con.execute(spec.ddl(target))
                    cols = ", ".join(qident(c) for c in spec.column_names)
                    con.execute(f"INSERT INTO {target} SELECT {cols} FROM main.{qident(spec.name)}")
                    self._comment_table(con, f"{alias}.main", spec)
                for name in TABLES:
                    n = con.execute(f"SELECT count(*) FROM {alias}.main.{qident(name)}").fetchone()
                    result.row_counts[name] = int(n[0]) if n else 0
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.execute(f"DETACH {alias}")
            # Views must be created inside the file itself so their SQL names no attach alias.
            vcon = duckdb.connect(str(tmp))
            try:
                for view in VIEWS.values():
                    vcon.execute(f"CREATE OR REPLACE VIEW {qident(view.name)} AS {view.sql}")
                    vcon.execute(f"COMMENT ON VIEW {qident(view.name)} IS {sql_str(view.comment)}")
                    for c in view.columns:
                        vcon.execute(
                            f"COMMENT ON COLUMN {qident(view.name)}.{qident(c.name)} IS {sql_str(c.comment)}"
                        )
                vcon.execute("CHECKPOINT")
                free, total = vcon.execute(
                    "SELECT free_blocks, total_blocks FROM pragma_database_size() WHERE database_name = current_database()"
                ).fetchone()  # type: ignore[misc]
            finally:
                vcon.close()
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
        compact = not total or free / total <= _MAX_FREE_BLOCK_SHARE
        self._record_publish(con, state_key, fingerprints if compact else None)
        return result

    @staticmethod
    def _table_fingerprint(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> str:
        """Row count + sum of row hashes: order-independent, and a changed, added or removed row changes it
        (unless 64-bit hashes collide). About 0.15 s per million wide rows."""
        cols = ", ".join(qident(c) for c in spec.column_names)
        n, total = con.execute(
            f"SELECT count(*), coalesce(sum(hash({cols})), 0) FROM main.{qident(spec.name)}"
        ).fetchone()  # type: ignore[misc]
        return f"{n}:{total}"

    def _file_identity(self) -> list[int] | None:
        try:
            st = self.analyst_path.stat()
        except FileNotFoundError:
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    def _publish_state_key(self, con: duckdb.DuckDBPyConnection) -> str:
        row = con.execute("SELECT value FROM kobi_internal.schema_meta WHERE key = 'fingerprint'").fetchone()
        return f"{row[0] if row else ''}|duckdb-{duckdb.__version__}|{self.analyst_path.resolve()}"

    def _previous_publish(self, con: duckdb.DuckDBPyConnection, key: str) -> dict[str, str] | None:
        """Table fingerprints of the current analyst file, when it is exactly what this database published."""
        row = con.execute("SELECT value FROM kobi_internal.schema_meta WHERE key = 'published'").fetchone()
        if not row:
            return None
        state = json.loads(row[0])
        identity = self._file_identity()
        wal = self.analyst_path.with_name(self.analyst_path.name + ".wal")
        if state.get("key") != key or identity is None or state.get("file") != identity or wal.exists():
            return None
        return state.get("tables")

    def _record_publish(
        self, con: duckdb.DuckDBPyConnection, key: str, tables: dict[str, str] | None
    ) -> None:
        state = {"key": key, "file": self._file_identity(), "tables": tables}
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
        load_all_specs()
        if not self.analyst_path.exists():
            return {}
        con = duckdb.connect(str(self.analyst_path), read_only=True)
        try:
            out: dict[str, int] = {}
            for name in [*TABLES, *VIEWS]:
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
