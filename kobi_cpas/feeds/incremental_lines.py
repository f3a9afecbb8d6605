"""The incremental ingest by the file's lines, the cheaper of its two ways (see :mod:`kobi_cpas.feeds.incremental`).

When every item of a delimited file is one line (no quoted field spans lines), the stored rows are the lines
of the file they came from, in order: row number n is line n after the header, blank lines left out. The
full ingest then keeps each line's hash beside the rows (``seed_lines``), and the next file is compared by
its lines: hashing a line whole costs a third of parsing and hashing its fields (at 1M items: 0.17-0.39 s
against 0.62 s), and the changed lines alone are parsed, from a small file of them with the same header.

The way is taken only when it is exact, else the caller reads the rows by their fields:
- the stored line hashes describe the stored rows (as many; every hash once);
- every line of the new file is different (a line present twice could not be told apart);
- each changed line is a whole item: parsing the changed lines, strictly, gives one row each. A quoted field
  spanning lines opens on a line no stored line can equal (the stored lines were whole items), so that line is
  a changed one; parsed among the changed lines it either joins the next into one row or leaves a quote open.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from kobi_cpas.feeds.incremental import changed_bitmap, few_changed, raw_hashed_select, validated_rows
from kobi_cpas.feeds.parser import FeedSource
from kobi_cpas.feeds.plan import create_table_streaming

LINE_HASH_SQL = "hash(l)"
_WRITE_BATCH = 10_000


def _hash_lines(con: duckdb.DuckDBPyConnection, source: FeedSource, target: str) -> bool:
    """``target`` := one row per line of the file (``lh``, its hash), in file order (row number = rowid + 1).
    False when the lines cannot be read so (a line holding the line delimiter, or a plan that reorders)."""
    assert source.lines_sql is not None
    try:
        return create_table_streaming(con, target, f"SELECT {LINE_HASH_SQL} AS lh FROM ({source.lines_sql})")
    except duckdb.Error:
        return False


def seed_lines(con: duckdb.DuckDBPyConnection, source: FeedSource, target: str, items: int) -> bool:
    """Build ``target`` (quoted) with the hash of each line of the file the stage rows were just read from,
    when those lines are its ``items`` rows, one each, every line different; else drop it. Whether it did."""
    ok = source.lines_sql is not None and _hash_lines(con, source, target)
    if ok:
        (n, distinct) = con.execute(f"SELECT count(*), count(DISTINCT lh) FROM {target}").fetchone()  # type: ignore[misc]
        ok = n == items == distinct
    if not ok:
        con.execute(f"DROP TABLE IF EXISTS {target}")
    return ok


@dataclass(frozen=True)
class ChangedLines:
    """The new file against the stored rows by lines, in temp tables: ``lines`` every line's hash in file order,
    ``moves`` the stored rows to renumber (``old_rn`` -> ``new_rn``) or delete (``new_rn`` NULL), ``table`` the
    changed rows, normalised and validated (the shape of the stored rows)."""

    lines: str
    moves: str
    table: str
    changed: int


def read_changed_lines(
    con: duckdb.DuckDBPyConnection,
    source: FeedSource,
    *,
    rows_table: str,
    lines_table: str,
    columns: Sequence[str],
    prefix: str,
    tmp_dir: str | Path | None = None,
) -> ChangedLines | None:
    """Read ``source`` against the stored ``rows_table`` and its ``lines_table`` (both quoted; temp tables named
    from ``prefix``, dropped by :func:`drop_line_temps`). None when the way by lines would not be exact or
    cheap: the caller reads the rows by their fields."""
    if source.lines_sql is None or source.header_line is None or source.select_at is None:
        return None
    lines, changed, raw, parsed, table, moves = (
        f"{prefix}_{n}" for n in ("lines", "lchanged", "lraw", "lparsed", "lrows", "moves")
    )
    try:
        (old_lines,) = con.execute(f"SELECT count(*) FROM {lines_table}").fetchone()  # type: ignore[misc]
    except duckdb.CatalogException:
        return None  # not seeded: the stored rows are not the lines of their file
    (old_rows,) = con.execute(f"SELECT count(*) FROM {rows_table}").fetchone()  # type: ignore[misc]
    if old_rows != old_lines or not _hash_lines(con, source, lines):
        return None
    (n, distinct) = con.execute(f"SELECT count(*), count(DISTINCT lh) FROM {lines}").fetchone()  # type: ignore[misc]
    if n == 0 or n != distinct:
        return None
    k = few_changed(
        con, changed, f"SELECT lh, rowid + 1 AS rn FROM {lines} ANTI JOIN {lines_table} o USING (lh)", n
    )
    if k is None:
        return None
    bitmap, bits = changed_bitmap(con, changed, "lh", k)
    # The second pass keeps the changed lines' text (a constant bitmap keeps it a scan and filter; the join is on
    # the few lines it lets by).
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {raw} AS SELECT c.rn, x.l FROM ("
            f"SELECT l, {LINE_HASH_SQL} AS lh FROM ({source.lines_sql}) "
            f"WHERE get_bit('{bitmap}'::BIT, ({LINE_HASH_SQL} % {bits})::INTEGER) = 1) x JOIN {changed} c USING (lh)"
        )
    except duckdb.Error:
        return None
    (got,) = con.execute(f"SELECT count(*) FROM {raw}").fetchone()  # type: ignore[misc]
    if got != k:
        return None
    fd, name = tempfile.mkstemp(prefix=".kobi_lines_", suffix=".csv", dir=tmp_dir)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(source.header_line + b"\n")
            result = con.execute(f"SELECT l FROM {raw} ORDER BY rn")
            while batch := result.fetchmany(_WRITE_BATCH):  # up to a tenth of the file: never all at once
                out.write(b"".join(line.encode("utf-8") + b"\n" for (line,) in batch))
        try:
            if not create_table_streaming(con, parsed, raw_hashed_select(source.select_at(tmp))):
                return None
        except duckdb.Error:
            return None  # the full ingest reads the file again and names what is wrong in it
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    # The parsed rows come in the order of the changed lines: the k-th takes the k-th line's row number.
    numbered = (
        f"SELECT c.rn AS _row_number, p.* EXCLUDE (k) FROM (SELECT rowid + 1 AS k, * FROM {parsed}) p "
        f"JOIN (SELECT rn, row_number() OVER (ORDER BY rn) AS k FROM {changed}) c USING (k)"
    )
    if not validated_rows(con, table, numbered, columns, k):
        return None
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {moves} AS
        SELECT o.rn AS old_rn, n.rn AS new_rn
        FROM (SELECT lh, rowid + 1 AS rn FROM {lines_table}) o
        LEFT JOIN (SELECT lh, rowid + 1 AS rn FROM {lines}) n USING (lh)
        WHERE n.rn IS NULL OR n.rn <> o.rn"""
    )
    return ChangedLines(lines=lines, moves=moves, table=table, changed=int(k))


def apply_changed_lines(
    con: duckdb.DuckDBPyConnection, rows_table: str, lines_table: str, changed: ChangedLines
) -> None:
    """Make the stored ``rows_table`` the rows of the new file (before its cross-row rules) and ``lines_table``
    its lines, in the caller's transaction: the rows of lines that left go, the others take their new row
    numbers, the changed rows come in."""
    con.execute(
        f"DELETE FROM {rows_table} WHERE row_number IN (SELECT old_rn FROM {changed.moves} WHERE new_rn IS NULL)"
    )
    con.execute(
        f"""UPDATE {rows_table} SET row_number = m.new_rn
        FROM (SELECT old_rn, new_rn FROM {changed.moves} WHERE new_rn IS NOT NULL) m
        WHERE {rows_table}.row_number = m.old_rn"""
    )
    con.execute(f"INSERT INTO {rows_table} BY NAME SELECT * FROM {changed.table}")
    # Made by a plain scan, in order: row number = rowid + 1 again (never updated or deleted from after).
    if not create_table_streaming(con, lines_table, f"SELECT lh FROM {changed.lines}"):
        con.execute(f"DROP TABLE {lines_table}")


def drop_line_temps(con: duckdb.DuckDBPyConnection, prefix: str) -> None:
    for name in ("lines", "lchanged", "lraw", "lparsed", "lrows", "moves"):
        con.execute(f"DROP TABLE IF EXISTS {prefix}_{name}")
