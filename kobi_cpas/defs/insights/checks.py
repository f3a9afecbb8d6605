"""Reconciliation checks of the shared-item metrics (results emitted by the asset that pulls them)."""

import dagster as dg

ROLLUPS = "rollups_reconcile"
ROAS = "meta_roas_matches_value_over_spend"
PRODUCTS = "products_present_when_purchases"
REPULL = "api_totals_match_repull"
FRESHNESS = "yesterday_present"

shared_item_metrics_check_specs = [
    dg.AssetCheckSpec(
        ROLLUPS,
        asset="shared_item_metrics",
        description="WARN with the gap when additive metrics at ad level do not sum to the ad set, "
        "campaign and account levels per day.",
    ),
    dg.AssetCheckSpec(
        ROAS,
        asset="shared_item_metrics",
        description="WARN when Meta's catalog_segment_value_omni_purchase_roas differs from "
        "catalog_segment_value / spend.",
    ),
    dg.AssetCheckSpec(
        PRODUCTS,
        asset="shared_item_metrics",
        description="WARN when catalog_segment_actions shows purchases but converted_product_quantity "
        "has no rows for that object and day.",
    ),
    dg.AssetCheckSpec(
        REPULL,
        asset="shared_item_metrics",
        description="WARN when the account totals reported by a fresh re-pull of yesterday differ from "
        "the stored totals by more than 2 % (platform vs API tolerance).",
    ),
    dg.AssetCheckSpec(
        FRESHNESS,
        asset="shared_item_metrics",
        description="WARN when yesterday (account time zone) is missing after 10:00 local time.",
    ),
]
