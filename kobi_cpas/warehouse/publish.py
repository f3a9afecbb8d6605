"""Publishing the work database to the analyst file: the publish lock, the incremental publish state and its
table fingerprints, and the free-space rule that decides when the analyst file is rebuilt from scratch.

``Warehouse.publish`` is the entry point; this module is the machinery behind it."""

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

from kobi_cpas.warehouse.publish_rows import MAX_GROWTH_SHARE, Churn, by_rows_sql, check_by_rows, plan_by_rows
from kobi_cpas.warehouse.schema import WarehouseSchema
from kobi_cpas.warehouse.specs import TableSpec
from kobi_cpas.warehouse.sql import comment_statements, insertion_order, qident, sql_str

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    path: Path
    row_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Tables copied from the work database; the others came unchanged with the previous analyst file.
    rewritten: list[str] = field(default_factory=list)
    incremental: bool = False
    # Rewritten tables whose changed rows alone were replaced, with how many rows were deleted and inserted.
    by_rows: dict[str, tuple[int, int]] = field(default_factory=dict)


# The analyst file is written in this storage format, not the newest the running DuckDB knows: analysts open it
# with their own tools (the DuckDB CLI, DBeaver, notebooks on an older DuckDB), and a file in a newer format is
# refused by every older reader. DuckDB 1.4 and later read it; the DuckDB CLI installed by `make` is one of them.
ANALYST_STORAGE_VERSION = "v1.4.0"

# Rebuild the analyst file from scratch once this share of its blocks is free (left by rewritten tables).
_MAX_FREE_BLOCK_SHARE = 0.5
# Rewritten tables of at least this many rows are emptied and checkpointed before their rows are copied, which
# keeps the file the size of a fresh one (~17 ms of CPU per publish). Smaller rewrites skip it: their old and
# new blocks coexist until the checkpoint, a few MB at most, freed for the next publish to reuse.
_EMPTY_FIRST_ROWS = 50_000


def _compact(blocks: list[int] | tuple[int, int] | None) -> bool:
    """Whether a file with these [free, total] blocks may be built on (unknown: no)."""
    if not blocks:
        return False
    free, total = blocks
    return not total or free / total <= _MAX_FREE_BLOCK_SHARE


def row_counts(con: duckdb.DuckDBPyConnection, schema: str, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    sql = " UNION ALL ".join(f"SELECT {sql_str(n)}, count(*) FROM {schema}.{qident(n)}" for n in names)
    return {name: int(n) for name, n in con.execute(sql).fetchall()}


def table_fingerprints(con: duckdb.DuckDBPyConnection, specs: list[TableSpec]) -> dict[str, str]:
    """Per table, row count + sum of row hashes (of ``TableSpec.hashed_columns``): order-independent, and a
    changed, added or removed row changes it (unless 64-bit hashes collide). About 0.1 s per million wide rows,
    0.02 s by a row identity of hashes; an empty table costs only its count (hashing costs ~1 ms per table even
    with no rows)."""
    counts = row_counts(con, "main", [s.name for s in specs])
    out = {s.name: "0:0" for s in specs if not counts[s.name]}
    parts = [
        f"SELECT {sql_str(s.name)}, count(*), "
        f"coalesce(sum(hash({', '.join(qident(c) for c in s.hashed_columns)})), 0)::HUGEINT "
        f"FROM main.{qident(s.name)}"
        for s in specs
        if counts[s.name]
    ]
    if parts:
        out.update(
            (name, f"{n}:{total}") for name, n, total in con.execute(" UNION ALL ".join(parts)).fetchall()
        )
    return out


@dataclass(frozen=True)
class AnalystPublisher:
    """Publishes work databases to one analyst file: its publish lock, the ``.publishing`` files writers
    build, and the state each work database records of the file it published last.

    ``template_dir`` (the work database's folder) keeps an empty analyst file of the current schema: every table,
    comment and view, no rows. A publish from scratch copies it and inserts the rows instead of running the DDL
    and hundreds of COMMENT statements again (~0.3 s of CPU, ten times a whole incremental publish)."""

    analyst_path: Path
    lock_timeout: float
    template_dir: Path

    @property
    def lock_path(self) -> Path:
        return self.analyst_path.with_name(f".{self.analyst_path.name}.publish.lock")

    def publishing_files(self) -> list[Path]:
        # The new file and its WAL, as named in publish_locked.
        return sorted(self.analyst_path.parent.glob(f".{glob.escape(self.analyst_path.name)}.*.publishing*"))

    @contextlib.contextmanager
    def lock(self, wait: bool) -> Iterator[bool]:
        """Hold the publish lock; yields False (holding nothing) when `wait` is False and another writer has
        it. Waiting is bounded by `lock_timeout`."""
        deadline = time.monotonic() + self.lock_timeout
        with open(self.lock_path, "a+") as handle:
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
                            f"{self.lock_path} for more than {self.lock_timeout:.0f}s"
                        ) from None
                    time.sleep(0.1)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_publishing_files(self) -> None:
        """With the publish lock held, every publishing file is stale: its writer died before its cleanup."""
        for path in self.publishing_files():
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                log.warning("removed %s (%d bytes) left by a publish that did not finish", path, size)

    def remove_stale_publishing(self, wait: bool) -> None:
        """Remove what a killed publish left, unless a writer is publishing right now."""
        if not self.publishing_files():
            return
        with self.lock(wait=wait) as held:
            if held:
                self.remove_publishing_files()

    def publish_locked(self, con: duckdb.DuckDBPyConnection, schema: WarehouseSchema) -> PublishResult:
        """Build the new analyst file and swap it in; the caller holds the publish lock."""
        tables = schema.tables
        schema_key = self._schema_key(con)
        template = self.ensure_template(con, schema, schema_key)
        # One read transaction of the work database: the fingerprints, the rows copied and the row counts are
        # all of the same state, even while other connections of this process write.
        con.execute("BEGIN")
        done = False
        try:
            fingerprints = table_fingerprints(con, list(tables.values()))
            state_key = f"{schema_key}|{self.analyst_path.resolve()}"
            state = self._previous_publish(con, state_key)
            previous: dict[str, str] | None = state["tables"] if state else None
            result = PublishResult(
                path=self.analyst_path,
                row_counts={n: int(fingerprints[n].split(":", 1)[0]) for n in tables},
                rewritten=[n for n in tables if previous is None or previous.get(n) != fingerprints[n]],
            )
            if state and not result.rewritten and _compact(state.get("blocks")):
                # The analyst file is exactly what this database published, and nothing changed since: the
                # new file would be the same, so the current one stays (unless its free space, as measured
                # when it was built, is now past the threshold: the publish below records that, so the next
                # one rebuilds).
                result.incremental = True
                return result
            done = True  # the build commits (or rolls back) the transaction
            churn = Churn.from_state((state or {}).get("churn"))
            free, total = self._build_and_swap(
                con, tables, result, template if previous is None else None, churn
            )
        finally:
            if not done:
                con.execute("ROLLBACK")  # it only read
        # A file that is half free space is rebuilt by the next publish (no state recorded for it).
        compact = _compact((free, total))
        self._record_publish(con, state_key, fingerprints if compact else None, (free, total), churn)
        return result

    def _build_and_swap(
        self,
        con: duckdb.DuckDBPyConnection,
        tables: dict[str, TableSpec],
        result: PublishResult,
        template: Path | None,
        churn: Churn,
    ) -> tuple[int, int]:
        """Write the new file from the read transaction open on ``con`` (committed here) and swap it in;
        returns its [free, total] blocks. The new file starts as a copy of the analyst file (incremental) or,
        given ``template``, of the empty analyst file of the schema. ``churn`` is updated in place."""
        token = uuid.uuid4().hex
        tmp = self.analyst_path.with_name(f".{self.analyst_path.name}.{token}.publishing")
        alias = f"kobi_publish_{token[:16]}"  # unique: connections of one process share the attached names
        open_txn = True

        def end(statement: str) -> None:
            nonlocal open_txn
            if open_txn:
                open_txn = False
                con.execute(statement)

        try:
            result.incremental = template is None
            names = [n for n in result.rewritten if template is None or result.row_counts[n]]
            if not result.incremental:
                churn.tables.clear()
            elif churn.compact_bytes is None or (
                self.analyst_path.stat().st_size > (1 + MAX_GROWTH_SHARE) * churn.compact_bytes
            ):
                # Compaction: the tables holding deleted rows are copied whole, changed or not (an unchanged
                # one's rows are those in the file).
                names += [
                    n for n in sorted(churn.tables) if n in tables and n not in names and result.row_counts[n]
                ]
                churn.tables.clear()
            else:
                # Before the copy: the analyst file is read as it is, and the copy starts after.
                result.by_rows = plan_by_rows(con, self.analyst_path, tables, names, result.row_counts, churn)
            shutil.copyfile(template or self.analyst_path, tmp)
            whole = [n for n in names if n not in result.by_rows]
            # The file's copies of the tables copied whole are empty before their rows are copied: the template's
            # are, big ones are emptied first (their blocks freed), small ones are emptied with the copy.
            emptied = not result.incremental
            if result.incremental and sum(result.row_counts[n] for n in whole) >= _EMPTY_FIRST_ROWS:
                _empty_tables(tmp, [tables[n] for n in whole])
                emptied = True
            con.execute(f"ATTACH {sql_str(str(tmp))} AS {alias}")
            try:
                try:
                    # In the read transaction: the rows copied are those fingerprinted. The template's tables are
                    # empty, so only tables with rows are filled.
                    parts = [
                        _rewrite_sql(alias, tables, whole, emptied),
                        by_rows_sql(alias, tables, result.by_rows),
                    ]
                    sql = ";\n".join(filter(None, parts))
                    # Analysts' tables are sets: rows copied in any order cost a fifth less than in the work
                    # database's (1.6-1.8 s against 2.0-2.3 s per million feed_items rows, the copy measured alone).
                    with insertion_order(con, False):
                        if sql:
                            con.execute(sql)
                        # A key that does not identify its rows leaves the counts apart: that table is copied
                        # whole.
                        for name in check_by_rows(con, alias, result.row_counts, result.by_rows):
                            con.execute(_rewrite_sql(alias, tables, [name], emptied=False))
                    end("COMMIT")
                    for name in names:
                        if name not in result.by_rows:
                            churn.tables.discard(name)  # copied whole: the file holds no deleted rows of it
                finally:
                    end("ROLLBACK")  # before the DETACH, which an aborted transaction would refuse
                con.execute(f"CHECKPOINT {alias}")
                free, total = con.execute(
                    "SELECT free_blocks, total_blocks FROM pragma_database_size() WHERE database_name = ?",
                    [alias],
                ).fetchone()  # type: ignore[misc]
            finally:
                # IF EXISTS: attached in the read transaction, the file is detached by its rollback.
                con.execute(f"DETACH DATABASE IF EXISTS {alias}")
            before = self.analyst_path.stat().st_size if result.incremental else 0
            os.replace(tmp, self.analyst_path)
            _fsync_dir(self.analyst_path.parent)
            churn.measured(len(result.by_rows), before, self.analyst_path.stat().st_size)
            if not churn.tables:
                churn.compact_bytes = self.analyst_path.stat().st_size
        finally:
            end("ROLLBACK")
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return int(free), int(total)

    # -- the empty analyst file of the schema ------------------------------------------------------------------
    def ensure_template(
        self, con: duckdb.DuckDBPyConnection, schema: WarehouseSchema, schema_key: str | None = None
    ) -> Path:
        """The empty analyst file of ``schema`` in ``template_dir``, built when missing (under the publish
        lock, held by the caller). Named by ``schema_key`` (read from the work database when not given: the
        schema fingerprint and DuckDB version), so a schema change gets a new one; the older ones are removed
        then."""
        key = schema_key or self._schema_key(con)
        path = self.template_dir / f"analyst-template-{hashlib.sha256(key.encode()).hexdigest()[:16]}.duckdb"
        if path.exists():
            return path
        for stale in self.template_dir.glob("analyst-template-*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.building")
        alias = f"kobi_template_{uuid.uuid4().hex[:16]}"
        cur = con.cursor()  # its own transaction: the caller's connection may be in one
        try:
            cur.execute(
                f"ATTACH {sql_str(str(tmp))} AS {alias} (STORAGE_VERSION {sql_str(ANALYST_STORAGE_VERSION)})"
            )
            cur.execute("BEGIN")  # hundreds of COMMENT statements in autocommit would cost a commit each
            statements: list[str] = []
            for spec in schema.tables.values():
                statements += [
                    spec.ddl(f"{alias}.main.{qident(spec.name)}"),
                    *comment_statements(f"{alias}.main", spec),
                ]
            cur.execute(";\n".join(statements))
            cur.execute("COMMIT")
            _create_views(cur, alias, schema)
            cur.execute(f"DETACH DATABASE {alias}")  # checkpoints the file
            os.replace(tmp, path)
        finally:
            cur.close()
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return path

    # -- incremental publish state -----------------------------------------------------------------------------
    def _file_identity(self) -> list[int] | None:
        try:
            st = self.analyst_path.stat()
        except FileNotFoundError:
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    @staticmethod
    def _schema_key(con: duckdb.DuckDBPyConnection) -> str:
        row = con.execute("SELECT value FROM kobi_internal.schema_meta WHERE key = 'fingerprint'").fetchone()
        # the storage version too: a file published in another format is rebuilt from the template, not built on
        return f"{row[0] if row else ''}|duckdb-{duckdb.__version__}|storage-{ANALYST_STORAGE_VERSION}"

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
        churn: Churn | None = None,
    ) -> None:
        state = {
            "key": key,
            "file": self._file_identity(),
            "tables": tables,
            "blocks": blocks,
            "churn": churn.to_state() if churn else {},
        }
        try:
            con.execute(
                "INSERT OR REPLACE INTO kobi_internal.schema_meta VALUES ('published', ?)",
                [json.dumps(state)],
            )
        except duckdb.Error as exc:  # the file is published; without this record the next publish is full
            log.warning("could not record the published state (%s); the next publish rebuilds the file", exc)


def _empty_tables(path: Path, specs: list[TableSpec]) -> None:
    """Delete every row of ``specs``' tables in the file ``path`` and checkpoint it, which frees their blocks
    for the rows copied next. Deleting and inserting in one transaction would keep both versions' blocks
    until the checkpoint, so every other incremental publish would double the file."""
    if not specs:
        return
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_str(str(path))} AS f")
        con.execute(";\n".join(f"DELETE FROM f.main.{qident(spec.name)}" for spec in specs))
        con.execute("CHECKPOINT f")
    finally:
        con.close()


def _rewrite_sql(alias: str, tables: dict[str, TableSpec], names: list[str], emptied: bool) -> str:
    """The statements that copy the tables ``names`` from the work database into the new file ``alias``, which
    holds every table with this schema's definition and comments already (a copy of the analyst file or the
    schema's empty template: the schema is part of the state key). Rows are replaced, which keeps the
    comments; ``emptied``: the file's copies of those tables hold no rows already."""
    statements: list[str] = []
    for name in names:
        spec = tables[name]
        target = f"{alias}.main.{qident(spec.name)}"
        if not emptied:
            statements.append(f"DELETE FROM {target}")
        cols = ", ".join(qident(c) for c in spec.column_names)
        statements.append(f"INSERT INTO {target} SELECT {cols} FROM main.{qident(spec.name)}")
    return ";\n".join(statements)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the platform allows opening a directory)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_views(con: duckdb.DuckDBPyConnection, alias: str, schema: WarehouseSchema) -> None:
    """Create the views in the attached file ``alias``. Their SQL names tables without a catalog, resolved in
    the file itself (this connection's default database is that file while they are created)."""
    vcon = con.cursor()
    try:
        vcon.execute(f"USE {alias}")
        vcon.execute("BEGIN")
        for view in schema.views.values():
            vcon.execute(f"CREATE OR REPLACE VIEW main.{qident(view.name)} AS {view.sql}")
            vcon.execute(f"COMMENT ON VIEW main.{qident(view.name)} IS {sql_str(view.comment)}")
            for c in view.columns:
                vcon.execute(
                    f"COMMENT ON COLUMN main.{qident(view.name)}.{qident(c.name)} IS {sql_str(c.comment)}"
                )
        vcon.execute("COMMIT")
    finally:
        vcon.close()  # rolls back on error
