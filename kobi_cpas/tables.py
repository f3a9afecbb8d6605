"""The product's complete warehouse schema, assembled from each domain's declarations in one place.

Domain modules only declare their specs; this module lists them, so the warehouse (a lower layer) never has to
find them. Order matters: tables are created and published in this order, and internal DDL runs in this order
(it is part of the schema fingerprint, so reordering it re-runs the migration once).
"""

from __future__ import annotations

from kobi_cpas.cpas import state as cpas_state
from kobi_cpas.cpas import tables as cpas_tables
from kobi_cpas.diagnostics import tables as diagnostics_tables
from kobi_cpas.feeds import incremental as feeds_incremental
from kobi_cpas.insights import accounts as insights_accounts
from kobi_cpas.insights import schema as insights_schema
from kobi_cpas.insights import tables as insights_tables
from kobi_cpas.onboarding import tables as onboarding_tables
from kobi_cpas.operations import tables as operations_tables
from kobi_cpas.sync import guards as sync_guards
from kobi_cpas.sync import state as sync_state
from kobi_cpas.sync import tables as sync_tables
from kobi_cpas.warehouse import tables as warehouse_tables
from kobi_cpas.warehouse.schema import WarehouseSchema

SCHEMA = WarehouseSchema.build(
    tables=(
        *warehouse_tables.ANALYST_TABLES,
        *cpas_tables.ANALYST_TABLES,
        *diagnostics_tables.ANALYST_TABLES,
        *insights_schema.ANALYST_TABLES,
        insights_accounts.META_AD_ACCOUNTS,
        *sync_tables.ANALYST_TABLES,
        *operations_tables.ANALYST_TABLES,
        *onboarding_tables.ANALYST_TABLES,
    ),
    views=insights_tables.VIEWS,
    internal_ddl=(
        *diagnostics_tables.DDL,
        *insights_tables.INTERNAL_DDL,
        *sync_state.DDL,
        *feeds_incremental.DDL,
        *sync_guards.DDL,  # sync_state.surplus_deletions, after the sync_state schema
        *cpas_state.DDL,
    ),
    # The replace view's layout first: the re-hash reads it.
    data_migrations=(sync_state.LAYOUT_MIGRATION, sync_state.DATA_MIGRATION),
)
