"""SQL text for what DuckDB takes no parameters in: string literals, identifiers and comments."""

from __future__ import annotations

import duckdb

from kobi_cpas.warehouse.specs import TableSpec


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
    t = f"{prefix}.{qident(spec.name)}"
    if table:
        con.execute(f"COMMENT ON TABLE {t} IS {sql_str(spec.comment)}")
    for c in spec.columns:
        if columns is None or c.name in columns:
            con.execute(f"COMMENT ON COLUMN {t}.{qident(c.name)} IS {sql_str(c.comment)}")
