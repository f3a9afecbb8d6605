from kobi_cpas.warehouse.publish import PublishResult
from kobi_cpas.warehouse.schema import DataMigration, WarehouseSchema
from kobi_cpas.warehouse.specs import Column, TableSpec, ViewSpec, col
from kobi_cpas.warehouse.sql import qident, sql_str
from kobi_cpas.warehouse.warehouse import (
    Warehouse,
    analyst_path_from_env,
    read_analyst,
    replace_rows,
)

__all__ = [
    "Column",
    "DataMigration",
    "PublishResult",
    "TableSpec",
    "ViewSpec",
    "Warehouse",
    "WarehouseSchema",
    "analyst_path_from_env",
    "col",
    "qident",
    "read_analyst",
    "replace_rows",
    "sql_str",
]
