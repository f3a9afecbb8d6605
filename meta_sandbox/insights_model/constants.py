"""Names and limits of the Ads Insights model: levels, action types, attribution windows, fields, job states."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

LEVELS = ("account", "campaign", "adset", "ad")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
KIND_LEVEL = {"ad_account": "account", "campaign": "campaign", "adset": "adset", "ad": "ad"}

VIEW_CONTENT = "omni_view_content"
ADD_TO_CART = "omni_add_to_cart"
PURCHASE = "omni_purchase"
WEB_PURCHASE = "offsite_conversion.fb_pixel_purchase"
APP_PURCHASE = "app_custom_event.fb_mobile_purchase"
SEGMENT_ACTION_TYPES = (VIEW_CONTENT, ADD_TO_CART, PURCHASE, WEB_PURCHASE, APP_PURCHASE)

CLASSES = ("c1", "c7", "c28", "v1")
# Meta's "value" key is the default attribution (7-day click or 1-day view); window keys as requested.
WINDOW_CLASSES: dict[str, tuple[str, ...]] = {
    "value": ("c1", "c7", "v1"),
    "1d_click": ("c1",),
    "7d_click": ("c1", "c7"),
    "28d_click": ("c1", "c7", "c28"),
    "1d_view": ("v1",),
}
CLASS_WINDOWS: dict[str, tuple[str, ...]] = {
    cls: tuple(w for w, classes in WINDOW_CLASSES.items() if cls in classes) for cls in CLASSES
}
# Accepted in action_attribution_windows; those without data (7d_view, 28d_view since 2026-01-12) are omitted.
KNOWN_WINDOWS = frozenset({"1d_click", "7d_click", "28d_click", "1d_view", "7d_view", "28d_view", "1d_ev"})

ROAS_FIELDS = {
    "catalog_segment_value_omni_purchase_roas": PURCHASE,
    "catalog_segment_value_website_purchase_roas": WEB_PURCHASE,
    "catalog_segment_value_mobile_purchase_roas": APP_PURCHASE,
}
PRODUCT_FIELDS = ("converted_product_value", "converted_product_quantity")
SEGMENT_FIELDS = ("catalog_segment_value", "catalog_segment_actions", *ROAS_FIELDS)
DELIVERY_FIELDS = ("spend", "impressions", "clicks")
METRIC_FIELDS = frozenset({*DELIVERY_FIELDS, *SEGMENT_FIELDS, *PRODUCT_FIELDS})
# Attribute fields and the shallowest level at which Meta fills them.
ATTRIBUTE_FIELDS: dict[str, str] = {
    "account_id": "account",
    "account_name": "account",
    "account_currency": "account",
    "campaign_id": "campaign",
    "campaign_name": "campaign",
    "objective": "campaign",
    "adset_id": "adset",
    "adset_name": "adset",
    "ad_id": "ad",
    "ad_name": "ad",
    "date_start": "account",
    "date_stop": "account",
}
ACTION_BREAKDOWNS = frozenset(
    {
        "action_type",
        "action_converted_product_id",
        "action_target_id",
        "action_destination",
        "action_device",
        "action_reaction",
        "action_video_type",
        "action_carousel_card_id",
        "action_canvas_component_name",
    }
)
FILTER_FIELDS = frozenset(
    {
        "ad.effective_status",
        "adset.effective_status",
        "campaign.effective_status",
        "campaign.id",
        "adset.id",
        "ad.id",
    }
)
# What Meta leaves out of every rollup unless filtering on ad.effective_status asks for them.
HIDDEN_BY_DEFAULT = frozenset({"DELETED", "ARCHIVED"})

JOB_NOT_STARTED = "Job Not Started"
JOB_STARTED = "Job Started"
JOB_RUNNING = "Job Running"
JOB_COMPLETED = "Job Completed"
JOB_FAILED = "Job Failed"
JOB_SKIPPED = "Job Skipped"
JOB_OUTCOMES = frozenset({"completed", "failed", "skipped", "running_at_100", "slow", "not_started"})
REPORT_RUN_TTL = timedelta(days=30)

TOO_MUCH_DATA_MESSAGE = "Please reduce the amount of data you're asking for, then retry your request"
TOO_MUCH_DATA_SUBCODE = 1487534

DEFAULT_CONFIG: dict[str, Any] = {
    "polls_to_complete": 2,  # status polls until "Job Completed" (1 = the first poll sees it done)
    "restatement_period_seconds": 3600.0,  # a new data version every hour of world time
    "restatement_days": 28,  # days younger than this keep changing
    "product_pool_size": 60,  # converted products per segment when the brand catalog holds no items
    # x-fb-ads-insights-throttle acc_id_util_pct per running report job of the account (app_id_util_pct: a
    # tenth of it per running job of every account), capped at 100
    "throttle_pct_per_job": 5,
}
# A running job stops adding load once no insights call touched it for this many insights calls (abandoned).
LOAD_WINDOW_CALLS = 200
DRIFT_KEYS = frozenset(
    {"rollup_skew", "total_skew", "roas_skew", "omit_converted_products", "too_much_data", "jobs", "clear"}
)
