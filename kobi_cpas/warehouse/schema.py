"""What one warehouse manages: analyst tables and views, internal DDL and data migrations.

The warehouse never looks these up itself; the product's complete schema is assembled in ``kobi_cpas.tables``
from each domain's declarations and passed to :class:`~kobi_cpas.warehouse.Warehouse`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import duckdb

from kobi_cpas.warehouse.specs import TableSpec, ViewSpec


@dataclass(frozen=True)
class DataMigration:
    """A data migration of the work database that DDL alone cannot express (e.g. re-hashing sync state).

    ``version(con)`` names the state the data must be in; it joins the schema fingerprint, so a change
    (including one caused by a DuckDB upgrade) makes the next connection run ``apply(con)``, inside the
    migration transaction after the DDL. ``apply`` must be idempotent.
    """

    name: str
    version: Callable[[duckdb.DuckDBPyConnection], str]
    apply: Callable[[duckdb.DuckDBPyConnection], None]


@dataclass(frozen=True)
class WarehouseSchema:
    """Tables and views by name (in declaration order), internal DDL (run in order by the migration; schemas
    other than ``main`` are never published) and data migrations by name."""

    tables: dict[str, TableSpec]
    views: dict[str, ViewSpec]
    internal_ddl: tuple[str, ...]
    data_migrations: dict[str, DataMigration]

    @classmethod
    def build(
        cls,
        tables: Iterable[TableSpec] = (),
        views: Iterable[ViewSpec] = (),
        internal_ddl: Iterable[str] = (),
        data_migrations: Iterable[DataMigration] = (),
    ) -> WarehouseSchema:
        """A schema from declarations; a name declared twice with different specs is an error."""
        table_map: dict[str, TableSpec] = {}
        for spec in tables:
            _add(table_map, spec.name, spec, "analyst table")
        view_map: dict[str, ViewSpec] = {}
        for view in views:
            _add(view_map, view.name, view, "analyst view")
        migrations: dict[str, DataMigration] = {}
        for m in data_migrations:
            _add(migrations, m.name, m, "data migration")
        return cls(table_map, view_map, tuple(dict.fromkeys(internal_ddl)), migrations)


def _add(into: dict, name: str, value: object, what: str) -> None:
    existing = into.get(name)
    if existing is not None and existing != value:
        raise ValueError(f"{what} '{name}' is declared twice with different specs")
    into[name] = value
