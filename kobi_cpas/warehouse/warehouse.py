"""The DuckDB warehouse: a private work database that assets write, and an analyst file published atomically.

Why two files: DuckDB lets one process write a file, and while a process holds a file open (even read-only) no
other process may write it. Analysts keep sessions open for hours, so scheduled writes must never touch the file
they read. Assets write the work database; ``publish()`` builds a complete new analyst file next to the old one
and ``os.replace``-s it into place. Open analyst sessions keep reading the previous (complete) file until they
reconnect; nobody ever sees a half-written table, and no writer ever waits on a reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
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
        """Copy every analyst table and view into a fresh file and atomically swap it in."""
        load_all_specs()
        if con is None:
            with self.connect() as own:
                return self.publish(own)
        started = time.monotonic()
        self.analyst_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.analyst_path.with_name(f".{self.analyst_path.name}.{uuid.uuid4().hex}.publishing")
        alias = "kobi_publish"
        result = PublishResult(path=self.analyst_path)
        try:
            con.execute(f"ATTACH {sql_str(str(tmp))} AS {alias}")
            try:
                # One transaction: hundreds of COMMENT statements in autocommit cost a commit each.
                con.execute("BEGIN")
                for spec in TABLES.values():
                    target = f"{alias}.main.{qident(spec.name)}"
                    con.execute(spec.ddl(target))
                    cols = ", ".join(qident(c) for c in spec.column_names)
                    con.execute(f"INSERT INTO {target} SELECT {cols} FROM main.{qident(spec.name)}")
                    self._comment_table(con, f"{alias}.main", spec)
                    n = con.execute(f"SELECT count(*) FROM {target}").fetchone()
                    result.row_counts[spec.name] = int(n[0]) if n else 0
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.execute(f"DETACH {alias}")
            # Views must be created inside the file itself so their SQL names no attach alias.
            if VIEWS:
                vcon = duckdb.connect(str(tmp))
                try:
                    for view in VIEWS.values():
                        vcon.execute(f"CREATE OR REPLACE VIEW {qident(view.name)} AS {view.sql}")
                        vcon.execute(f"COMMENT ON VIEW {qident(view.name)} IS {sql_str(view.comment)}")
                        for c in view.columns:
                            vcon.execute(
                                f"COMMENT ON COLUMN {qident(view.name)}.{qident(c.name)} IS {sql_str(c.comment)}"
                            )
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
        result.seconds = time.monotonic() - started
        log.info(
            "published %d analyst tables to %s in %.2fs",
            len(result.row_counts),
            self.analyst_path,
            result.seconds,
        )
        return result

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
