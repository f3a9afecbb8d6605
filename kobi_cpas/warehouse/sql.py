"""SQL text for what DuckDB takes no parameters in (string literals, identifiers and comments), and transactions."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import duckdb

from kobi_cpas.warehouse.specs import TableSpec


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN; COMMIT when the body finishes, ROLLBACK (and re-raise) when it raises."""
    con.execute("BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# preserve_insertion_order is a setting of the whole DuckDB instance, which the process's connections share
# (warehouse/host.py): a statement whose rows must keep the file's order must not see another thread's change.
_ORDER_LOCK = threading.RLock()


@contextlib.contextmanager
def insertion_order(con: duckdb.DuckDBPyConnection, preserve: bool) -> Iterator[None]:
    """Run the body with DuckDB's ``preserve_insertion_order`` set to ``preserve``, then restore the previous
    setting; threads of the process wait for each other's body."""
    with _ORDER_LOCK:
        (old,) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()  # type: ignore[misc]
        was = str(old).lower() in ("true", "1")
        if was == preserve:
            yield
            return
        con.execute(f"SET preserve_insertion_order = {str(preserve).lower()}")
        try:
            yield
        finally:
            # On a cursor of its own: the body may leave ``con`` in an aborted transaction, which refuses a SET.
            cur = con.cursor()
            try:
                cur.execute(f"SET preserve_insertion_order = {str(was).lower()}")
            finally:
                cur.close()


def sql_str(value: str) -> str:
    """A SQL string literal (for DDL such as COMMENT/ATTACH where parameters are not allowed)."""
    return "'" + value.replace("'", "''") + "'"


def qident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def comment_table(
    con: duckdb.DuckDBPyConnection,
    prefix: str,
    spec: TableSpec,
    columns: set[str] | None = None,
    table: bool = True,
) -> None:
    """COMMENT the table (unless ``table`` is False) and its ``columns`` (default: all of them)."""
    for statement in comment_statements(prefix, spec, columns, table):
        con.execute(statement)


def comment_statements(
    prefix: str, spec: TableSpec, columns: set[str] | None = None, table: bool = True
) -> list[str]:
    """The COMMENT statements of the table (unless ``table`` is False) and its ``columns`` (default: all)."""
    t = f"{prefix}.{qident(spec.name)}"
    out = [f"COMMENT ON TABLE {t} IS {sql_str(spec.comment)}"] if table else []
    out += [
        f"COMMENT ON COLUMN {t}.{qident(c.name)} IS {sql_str(c.comment)}"
        for c in spec.columns
        if columns is None or c.name in columns
    ]
    return out
