"""SQL text for what DuckDB takes no parameters in (string literals, identifiers and comments), and transactions."""

from __future__ import annotations

import contextlib
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
