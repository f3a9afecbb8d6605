"""Declarations of analyst tables and views: one source for DDL, DuckDB COMMENTs and Dagster column schemas."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str
    nullable: bool = True


@dataclass(frozen=True)
class TableSpec:
    """An analyst-facing table in the ``main`` schema. ``key`` columns identify a row (documented, and
    used by writers for delete-then-insert).

    ``row_identity``: columns whose values determine all the others of a row (hashes of them, as written by
    the table's only writer). The publish hashes only these to tell a changed row or table: at a million rows
    of a feed's texts that takes a fifth to a third of the time of hashing every column. Empty: every column."""

    name: str
    comment: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    domain: str = ""
    row_identity: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.key + self.row_identity) - set(self.column_names))
        if unknown:
            raise ValueError(f"table {self.name}: key or row identity names no column {', '.join(unknown)}")

    def ddl(self, qualified_name: str | None = None) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.type}{"" if c.nullable else " NOT NULL"}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {qualified_name or self.name} (\n  {cols}\n)"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def hashed_columns(self) -> list[str]:
        """The columns whose hash tells whether a row changed: the row identity, or every column."""
        return list(self.row_identity) or self.column_names


@dataclass(frozen=True)
class ViewSpec:
    """An analyst-facing view; ``sql`` must only reference analyst tables by their plain names."""

    name: str
    comment: str
    sql: str
    columns: tuple[Column, ...] = field(default_factory=tuple)
    domain: str = ""


def col(name: str, type_: str, comment: str, nullable: bool = True) -> Column:
    return Column(name, type_, comment, nullable)
