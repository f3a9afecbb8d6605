"""Replacing only the changed rows of a big analyst table in the new analyst file, and the compaction that keeps
the file the size of a fresh one. Used by :mod:`kobi_cpas.warehouse.publish`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from kobi_cpas.warehouse.specs import TableSpec
from kobi_cpas.warehouse.sql import qident, sql_str

log = logging.getLogger(__name__)

# A changed table of at least this many rows, with a key, gets only its changed rows replaced (by key and row hash):
# a 1 % change of a million-row table then costs two narrow hash passes instead of a copy of every row.
_BY_ROWS_MIN_ROWS = 50_000
# A deleted row keeps its space until its row group is rewritten, and each publish's new rows take at least a
# block, so the file grows. Once it is this share larger than after its last compaction, the next publish copies
# whole (emptied first) every table holding deleted rows, which brings the file back to a fresh one's size. A
# table with more of its rows changed than this share is copied whole right away.
MAX_GROWTH_SHARE = 0.03
# One publish that replaces a table's rows grows the file by a block or two (the deleted rows' space, the new rows'
# row group, rewritten metadata), whatever the number of rows: in a small file that alone is more than the share
# above. So tables are replaced by rows only while that growth, as measured at the last such publish (1.5 blocks
# per table before any), stays under this share of the file: an 8 MB file gets one table, 100 MB all of them.
_BLOCK_BYTES = 262_144  # DuckDB's default block size
_FIRST_STEP_BYTES = 393_216
_MAX_STEP_SHARE = 0.06


@dataclass
class Churn:
    """What the analyst file holds beyond its rows: the tables with rows deleted by key since they were last
    copied whole, and the file's size when none had (its last compaction)."""

    tables: set[str] = field(default_factory=set)
    compact_bytes: int | None = None
    # How much the file grew per table replaced by rows, at the last publish that did.
    step_bytes: int | None = None

    @classmethod
    def from_state(cls, state: dict | None) -> Churn:
        """From the recorded publish state (an older one listed the tables with their deleted rows)."""
        state = state or {}
        return cls(set(state.get("tables") or ()), state.get("compact_bytes"), state.get("step_bytes"))

    def to_state(self) -> dict:
        return {
            "tables": sorted(self.tables),
            "compact_bytes": self.compact_bytes,
            "step_bytes": self.step_bytes,
        }

    def room(self, file_bytes: int) -> int:
        """How many tables one publish may replace by rows in a file of ``file_bytes``."""
        return int(_MAX_STEP_SHARE * file_bytes) // max(self.step_bytes or _FIRST_STEP_BYTES, 1)

    def measured(self, tables_by_rows: int, before: int, after: int) -> None:
        if tables_by_rows:  # at least a block each: other tables copied whole may have shrunk the file
            self.step_bytes = max((after - before) // tables_by_rows, _BLOCK_BYTES)


def _by_rows_table(name: str, kind: str) -> str:
    return qident(f"_kobi_publish_{kind}_{name}")


def plan_by_rows(
    con: duckdb.DuckDBPyConnection,
    previous_file: Path,
    tables: dict[str, TableSpec],
    names: list[str],
    row_counts: dict[str, int],
    churn: Churn,
) -> dict[str, tuple[int, int]]:
    """Choose the changed tables ``names`` whose changed rows alone are replaced, in the read transaction open on
    ``con``: big tables with a key (the biggest, as many as the file's size leaves room for), with at most
    ``MAX_GROWTH_SHARE`` of their rows changed. The keys of their rows to delete (in the analyst file
    ``previous_file``, not in the work database) and to insert (the other way round), compared by key and row
    hash, are left in a temporary table for :func:`by_rows_sql`. Returns the rows deleted and inserted per table
    chosen, and adds those tables to ``churn``."""
    by_rows: dict[str, tuple[int, int]] = {}
    room = churn.room(previous_file.stat().st_size)
    candidates = sorted(
        (n for n in names if tables[n].key and row_counts[n] >= _BY_ROWS_MIN_ROWS),
        key=lambda n: -row_counts[n],
    )[:room]
    if not candidates:
        return by_rows
    prev = f"kobi_previous_{uuid.uuid4().hex[:16]}"
    con.execute(f"ATTACH {sql_str(str(previous_file))} AS {prev} (READ_ONLY)")
    try:
        for name in candidates:
            spec = tables[name]
            hashes = f"{_key_hash(spec)} AS k, hash({', '.join(qident(c) for c in spec.hashed_columns)}) AS h"
            diff = _by_rows_table(name, "diff")
            # One pass over both sides: the rows of the file without an identical row in the work database go,
            # those of the work database without one in the file come.
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE {diff} AS
                SELECT coalesce(o.k, n.k) AS k, o.k IS NULL AS come
                FROM (SELECT {hashes} FROM {prev}.main.{qident(name)}) o
                FULL JOIN (SELECT {hashes} FROM main.{qident(name)}) n ON o.k = n.k AND o.h = n.h
                WHERE o.k IS NULL OR n.k IS NULL"""
            )
            gone, come = con.execute(
                f"SELECT count(*) FILTER (WHERE NOT come), count(*) FILTER (WHERE come) FROM {diff}"
            ).fetchone()  # type: ignore[misc]
            if gone <= MAX_GROWTH_SHARE * row_counts[name]:
                by_rows[name] = (int(gone), int(come))
                churn.tables.add(name)
            else:
                _drop_by_rows_tables(con, [name])
    finally:
        con.execute(f"DETACH DATABASE IF EXISTS {prev}")
    return by_rows


def _key_hash(spec: TableSpec) -> str:
    """SQL: the hash of a row's key (NULL-safe; two keys sharing a hash make the row counts differ, which
    :func:`check_by_rows` turns into a whole copy)."""
    return f"hash({', '.join(qident(c) for c in spec.key)})"


def by_rows_sql(alias: str, tables: dict[str, TableSpec], by_rows: dict[str, tuple[int, int]]) -> str:
    """The statements that replace the changed rows of the tables ``by_rows`` in the new file ``alias``."""
    statements: list[str] = []
    for name in by_rows:
        spec = tables[name]
        target = f"{alias}.main.{qident(name)}"
        diff = _by_rows_table(name, "diff")
        cols = ", ".join(qident(c) for c in spec.column_names)
        statements.append(
            f"DELETE FROM {target} WHERE {_key_hash(spec)} IN (SELECT k FROM {diff} WHERE NOT come)"
        )
        statements.append(
            f"INSERT INTO {target} SELECT {cols} FROM main.{qident(name)} "
            f"WHERE {_key_hash(spec)} IN (SELECT k FROM {diff} WHERE come)"
        )
    return ";\n".join(statements)


def check_by_rows(
    con: duckdb.DuckDBPyConnection,
    alias: str,
    row_counts: dict[str, int],
    by_rows: dict[str, tuple[int, int]],
) -> list[str]:
    """The tables of ``by_rows`` whose copy in ``alias`` does not hold as many rows as the work database's (a key
    that does not identify its rows leaves rows behind), removed from ``by_rows``: the caller copies them whole."""
    names, wrong = list(by_rows), []
    for name in names:
        (n,) = con.execute(f"SELECT count(*) FROM {alias}.main.{qident(name)}").fetchone()  # type: ignore[misc]
        if n != row_counts[name]:
            log.warning(
                "analyst table %s: %d rows after replacing changed rows, not %d; copied whole",
                name,
                n,
                row_counts[name],
            )
            wrong.append(name)
            del by_rows[name]
    _drop_by_rows_tables(con, names)
    return wrong


def _drop_by_rows_tables(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    for name in names:
        con.execute(f"DROP TABLE IF EXISTS {_by_rows_table(name, 'diff')}")
