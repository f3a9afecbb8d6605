"""The product's warehouse schema is assembled explicitly in kobi_cpas.tables: nothing declared is left out."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace

import pytest

import kobi_cpas
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse, WarehouseSchema
from kobi_cpas.warehouse.specs import TableSpec, ViewSpec, col

# Dev tooling and the Meta sandbox declare no analyst tables.
_SKIP = ("meta_sandbox", "kobi_cpas.devenv")


def _declared_specs() -> dict[str, TableSpec | ViewSpec]:
    found: dict[str, TableSpec | ViewSpec] = {}
    for info in pkgutil.walk_packages(kobi_cpas.__path__, "kobi_cpas."):
        if info.name.startswith(_SKIP) or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, TableSpec | ViewSpec):
                found[value.name] = value
    return found


def test_every_declared_table_and_view_is_in_the_schema():
    declared = _declared_specs()
    assert declared, "no TableSpec found: the module walk is broken"
    in_schema = {**SCHEMA.tables, **SCHEMA.views}
    missing = sorted(set(declared) - set(in_schema))
    assert not missing, f"declared but not listed in kobi_cpas/tables.py: {missing}"
    assert all(in_schema[name] == spec for name, spec in declared.items())


def test_schema_rejects_a_name_declared_twice_with_different_specs():
    spec = SCHEMA.tables["meta_catalogs"]
    assert WarehouseSchema.build(tables=(spec, spec)).tables == {"meta_catalogs": spec}
    other = replace(spec, columns=(*spec.columns, col("extra", "INTEGER", "x")))
    with pytest.raises(ValueError, match="meta_catalogs"):
        WarehouseSchema.build(tables=(spec, other))
    assert WarehouseSchema.build(internal_ddl=("a", "b", "a")).internal_ddl == ("a", "b")


def test_warehouse_without_a_schema_only_knows_its_paths(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb")
    assert wh.work_dir == tmp_path / ".kobi_work"
    with pytest.raises(RuntimeError, match="schema"), wh.connect():
        pass


def test_feed_items_row_identity_covers_every_other_column():
    """The publish hashes only feed_items' row identity: every other column must be a field its hashes cover."""
    from kobi_cpas.feeds.fields import CONTENT_COLUMNS, VOLATILE_COLUMNS

    spec = SCHEMA.tables["feed_items"]
    hashed = set(CONTENT_COLUMNS) | set(VOLATILE_COLUMNS)
    outside = set(spec.column_names) - set(spec.row_identity)
    assert outside and outside <= hashed, sorted(outside - hashed)
    assert {"content_hash", "volatile_hash", "snapshot_id"} <= set(spec.row_identity)


def test_a_row_identity_or_key_naming_no_column_is_refused():
    with pytest.raises(ValueError, match="t: key or row identity names no column nope"):
        TableSpec(name="t", comment="c", columns=(col("a", "VARCHAR", "a"),), row_identity=("a", "nope"))
