"""Registers the shared-item metrics tables, the raw state and the cpas_dashboard view with the warehouse."""

from __future__ import annotations

from kobi_cpas.insights.schema import (
    CPAS_DASHBOARD_SQL,
    INSIGHTS_METRIC_CATALOG,
    RAW_DDL,
    SHARED_ITEM_METRICS,
    SHARED_ITEM_PRODUCT_METRICS,
)
from kobi_cpas.warehouse.specs import ViewSpec, col
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
        columns=(
            col("date", "DATE", "Day in the ad account's time zone"),
            col("tenant_id", "VARCHAR", "Kobi tenant id"),
            col("retailer", "VARCHAR", "Marketplace retailer of the dedicated ad account"),
            col("ad_account_id", "VARCHAR", "Dedicated ad account"),
            col("campaign_id", "VARCHAR", "Campaign id"),
            col("campaign_name", "VARCHAR", "Campaign name (from execution_manifest)"),
            col(
                "catalog_segment_id",
                "VARCHAR",
                "Catalog segment the campaign promotes (from execution_manifest)",
            ),
            col("spend", "DECIMAL", "Spend in the account currency"),
            col(
                "purchase_value",
                "DECIMAL",
                "catalog_segment_value for omni_purchase (Meta's default attribution)",
            ),
            col("purchases", "DECIMAL", "catalog_segment_actions for omni_purchase"),
            col("add_to_cart", "DECIMAL", "catalog_segment_actions for omni_add_to_cart"),
            col("add_to_cart_value", "DECIMAL", "catalog_segment_value for omni_add_to_cart"),
            col("view_content", "DECIMAL", "catalog_segment_actions for omni_view_content"),
            col("view_content_value", "DECIMAL", "catalog_segment_value for omni_view_content"),
            col(
                "meta_omni_purchase_roas",
                "DECIMAL",
                "Meta's catalog_segment_value_omni_purchase_roas (never sum it)",
            ),
            col(
                "roas_recomputed",
                "DOUBLE",
                "purchase_value / spend; for roll-ups use sum(purchase_value) / sum(spend)",
            ),
        ),
    )
)
