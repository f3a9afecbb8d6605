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
    used by writers for delete-then-insert)."""

    name: str
    comment: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    domain: str = ""

    def ddl(self, qualified_name: str | None = None) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.type}{"" if c.nullable else " NOT NULL"}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {qualified_name or self.name} (\n  {cols}\n)"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


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
