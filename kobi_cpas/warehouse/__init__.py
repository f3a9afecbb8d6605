from kobi_cpas.warehouse.schema import DataMigration, WarehouseSchema
from kobi_cpas.warehouse.specs import Column, TableSpec, ViewSpec, col
from kobi_cpas.warehouse.warehouse import (
    PublishResult,
    Warehouse,
    analyst_path_from_env,
    qident,
    read_analyst,
    replace_rows,
    sql_str,
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
