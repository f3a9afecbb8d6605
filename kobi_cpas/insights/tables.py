"""Registers the shared-item metrics tables, the raw state and the cpas_dashboard view with the warehouse."""

from __future__ import annotations

from kobi_cpas.insights.schema import (
    CPAS_DASHBOARD_SQL,
    INSIGHTS_METRIC_CATALOG,
    RAW_DDL,
    SHARED_ITEM_METRICS,
    SHARED_ITEM_PRODUCT_METRICS,
)
from kobi_cpas.warehouse.specs import ViewSpec
from kobi_cpas.warehouse.tables import register_internal_ddl, register_table, register_view

for _spec in (SHARED_ITEM_METRICS, SHARED_ITEM_PRODUCT_METRICS, INSIGHTS_METRIC_CATALOG):
    register_table(_spec)
register_internal_ddl(*RAW_DDL)
register_internal_ddl(
    """CREATE TABLE IF NOT EXISTS raw.product_items (
  tenant_id VARCHAR NOT NULL,
  product_item_id VARCHAR NOT NULL,
  retailer_id VARCHAR,
  fetched_at TIMESTAMPTZ NOT NULL
)"""
)

CPAS_DASHBOARD = register_view(
    ViewSpec(
        name="cpas_dashboard",
        domain="insights",
        comment="CPAS dashboard: per day, tenant, retailer and campaign — spend, catalog-segment purchase value, "
        "add-to-cart and view-content counts and values (Meta's default attribution), Meta's omni purchase ROAS and "
        "ROAS recomputed as value / spend. For roll-ups use sum(purchase_value) / sum(spend); never sum ROAS.",
        sql=CPAS_DASHBOARD_SQL,
    )
)
