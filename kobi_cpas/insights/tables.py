"""The insights views (the shared-item metrics tables and raw DDL are declared in ``insights.schema``)."""

from __future__ import annotations

from kobi_cpas.insights.products import MATCH_RATES_SQL
from kobi_cpas.insights.schema import CPAS_DASHBOARD_SQL, RAW_DDL
from kobi_cpas.warehouse.specs import ViewSpec, col

# The former id -> retailer_id cache assumed brand catalog ids; retailer_product_items replaces it.
INTERNAL_DDL = (*RAW_DDL, "DROP TABLE IF EXISTS raw.product_items")

# Why the dashboard's counts are DECIMAL and not BIGINT (see VALUE_TYPE in insights.schema).
FRACTIONAL_COUNT = (
    " (decimal, not an integer: Meta types action counts as numeric strings, and modelled or data-driven "
    "attributed counts may be fractional)"
)

RETAILER_PRODUCT_MATCH_RATES = ViewSpec(
    name="retailer_product_match_rates",
    domain="insights",
    comment="Per tenant and retailer: the converted product ids (the retailer's product items) seen in "
    "shared_item_product_metrics, what Meta's lookup said, how many map to a brand feed item by each method, "
    "and the match rate by items and by converted value (campaign level, 7-day click).",
    sql=MATCH_RATES_SQL,
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id"),
        col("retailer", "VARCHAR", "Marketplace retailer"),
        col("product_items", "BIGINT", "Distinct converted product ids (the retailer's product items)"),
        col("found", "BIGINT", "Looked up on Meta and found"),
        col("not_found", "BIGINT", "Unknown to Meta (error 100/33), cached as not_found"),
        col("pending", "BIGINT", "Not looked up yet, or the lookup failed (asked again next run)"),
        col("matched", "BIGINT", "Mapped to a brand feed item (any method)"),
        col("matched_by_retailer_id", "BIGINT", "Mapped because the retailer's SKU is the brand's feed id"),
        col("matched_by_gtin", "BIGINT", "Mapped by GTIN (only when feed_items has a gtin column)"),
        col("matched_by_mpn", "BIGINT", "Mapped by MPN (only when feed_items has an mpn column)"),
        col("unmatched", "BIGINT", "Not mapped: not found, pending, or no brand feed item matches"),
        col("match_rate", "DOUBLE", "matched / product_items"),
        col(
            "converted_value",
            "DECIMAL",
            "converted_product_value of these ids (campaign level, 7d_click)",
        ),
        col("matched_value", "DECIMAL", "The part of converted_value whose product is mapped"),
        col("value_match_rate", "DOUBLE", "matched_value / converted_value"),
    ),
)

CPAS_DASHBOARD = ViewSpec(
    name="cpas_dashboard",
    domain="insights",
    comment="CPAS dashboard: per day, tenant, retailer and campaign — spend, catalog-segment purchase value, "
    "add-to-cart and view-content counts and values (Meta's default attribution), Meta's omni purchase ROAS and "
    "ROAS recomputed as value / spend, and how much converted product value maps to the brand's feed items. "
    "For roll-ups use sum(purchase_value) / sum(spend); never sum ROAS.",
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
        col("currency", "VARCHAR", "The ad account's currency (ISO 4217) of spend and every value"),
        col("spend", "DECIMAL", "Spend in the account currency"),
        col(
            "purchase_value",
            "DECIMAL",
            "catalog_segment_value for omni_purchase (Meta's default attribution)",
        ),
        col("purchases", "DECIMAL", "catalog_segment_actions for omni_purchase" + FRACTIONAL_COUNT),
        col("add_to_cart", "DECIMAL", "catalog_segment_actions for omni_add_to_cart" + FRACTIONAL_COUNT),
        col("add_to_cart_value", "DECIMAL", "catalog_segment_value for omni_add_to_cart"),
        col("view_content", "DECIMAL", "catalog_segment_actions for omni_view_content" + FRACTIONAL_COUNT),
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
        col(
            "converted_product_value",
            "DECIMAL",
            "converted_product_value of the campaign's converted products, 7-day click (Meta sends product "
            "values only per requested window)",
        ),
        col(
            "matched_product_value",
            "DECIMAL",
            "The part of converted_product_value whose retailer product item maps to a brand feed item "
            "(retailer_product_items)",
        ),
        col(
            "product_match_rate",
            "DOUBLE",
            "matched_product_value / converted_product_value; roll up with sums, never average it",
        ),
    ),
)

VIEWS = (RETAILER_PRODUCT_MATCH_RATES, CPAS_DASHBOARD)
