"""The metric catalog: every metric the puller stores, with its unit, additivity, Meta's estimated /
in-development labels (and where they come from), the request family it travels in, and its JSON shape.

``is_estimated`` in the fact tables comes from here (the Kobi spec's ``cpas_metric_estimated``): Meta sends no
per-row flag, the labels belong to metric definitions in the docs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from kobi_cpas.insights.schema import METRIC_CATALOG_DDL

COLLAB_ADS_URL = "https://developers.facebook.com/docs/marketing-api/collaborative-ads#insights"
INSIGHTS_REFERENCE_URL = "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/"
ESTIMATED_SOURCE = (
    f'{COLLAB_ADS_URL} (Collaborative Ads, "Insights"): "The following estimated metrics are related to '
    'Collaborative Ads — see About Estimated, In development, and Third-party metrics." None is labelled in '
    "development there."
)
DELIVERY_SOURCE = (
    f"{INSIGHTS_REFERENCE_URL} (Ads Insights reference): a standard delivery metric, not labelled estimated or "
    "in development."
)

# Metric families: what a metric is about. Request families: which request carries it (never mixed).
FAMILY_DELIVERY = "delivery"
FAMILY_SEGMENT = "segment"
FAMILY_PRODUCT = "product"
REQUEST_FAMILIES: dict[str, tuple[str, ...]] = {
    "segment": (FAMILY_DELIVERY, FAMILY_SEGMENT),  # action_breakdowns=action_type
    "product": (FAMILY_PRODUCT,),  # action_breakdowns=action_converted_product_id (+ action_type)
}

SHAPE_SCALAR = "scalar"  # "spend": "12.34"
SHAPE_ACTIONS = "action_list"  # [{"action_type", "value", "1d_click", ...}]
SHAPE_PRODUCTS = "product_list"  # [{"action_converted_product_id", ["action_type"], "1d_click", ...}]


@dataclass(frozen=True)
class MetricDef:
    metric: str
    unit: str  # count | currency | ratio
    additive: bool  # may be summed across objects and days (ratios never are)
    is_estimated: bool
    in_development: bool
    family: str  # delivery | segment | product
    shape: str
    description: str
    source: str

    @property
    def request_family(self) -> str:
        return "product" if self.family == FAMILY_PRODUCT else "segment"


METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        "spend",
        "currency",
        True,
        False,
        False,
        FAMILY_DELIVERY,
        SHAPE_SCALAR,
        "Amount spent, in the ad account's currency.",
        DELIVERY_SOURCE,
    ),
    MetricDef(
        "impressions",
        "count",
        True,
        False,
        False,
        FAMILY_DELIVERY,
        SHAPE_SCALAR,
        "Times the ads were on screen.",
        DELIVERY_SOURCE,
    ),
    MetricDef(
        "clicks",
        "count",
        True,
        False,
        False,
        FAMILY_DELIVERY,
        SHAPE_SCALAR,
        "Clicks on the ads (all).",
        DELIVERY_SOURCE,
    ),
    MetricDef(
        "catalog_segment_value",
        "currency",
        True,
        True,
        False,
        FAMILY_SEGMENT,
        SHAPE_ACTIONS,
        "Value from conversion events (purchases, add-to-carts, view content) for the catalog segment, by "
        "action_type.",
        ESTIMATED_SOURCE,
    ),
    MetricDef(
        "catalog_segment_actions",
        "count",
        True,
        True,
        False,
        FAMILY_SEGMENT,
        SHAPE_ACTIONS,
        "Conversion actions for the catalog segment, by action_type.",
        ESTIMATED_SOURCE,
    ),
    MetricDef(
        "catalog_segment_value_omni_purchase_roas",
        "ratio",
        False,
        True,
        False,
        FAMILY_SEGMENT,
        SHAPE_ACTIONS,
        "ROAS from purchases of items shared between brand and retailer (all channels); value / spend.",
        ESTIMATED_SOURCE,
    ),
    MetricDef(
        "catalog_segment_value_website_purchase_roas",
        "ratio",
        False,
        True,
        False,
        FAMILY_SEGMENT,
        SHAPE_ACTIONS,
        "ROAS from website purchases of shared items; value / spend.",
        ESTIMATED_SOURCE,
    ),
    MetricDef(
        "catalog_segment_value_mobile_purchase_roas",
        "ratio",
        False,
        True,
        False,
        FAMILY_SEGMENT,
        SHAPE_ACTIONS,
        "ROAS from mobile app purchases of shared items; value / spend.",
        ESTIMATED_SOURCE,
    ),
    MetricDef(
        "converted_product_value",
        "currency",
        True,
        True,
        False,
        FAMILY_PRODUCT,
        SHAPE_PRODUCTS,
        "Value of conversions driven by the ads for a product id (retailer's pixel or app SDK).",
        ESTIMATED_SOURCE,
    ),
    MetricDef(
        "converted_product_quantity",
        "count",
        True,
        True,
        False,
        FAMILY_PRODUCT,
        SHAPE_PRODUCTS,
        "Quantity of conversions driven by the ads for a product id (retailer's pixel or app SDK).",
        ESTIMATED_SOURCE,
    ),
)

METRIC_CATALOG: dict[str, MetricDef] = {m.metric: m for m in METRICS}

ROAS_METRICS = tuple(m.metric for m in METRICS if m.unit == "ratio")
ADDITIVE_METRICS = tuple(m.metric for m in METRICS if m.additive)
# The catalog_segment_value action_type each ROAS divides by spend (what the sandbox and Meta send back).
ROAS_VALUE_ACTION_TYPES: dict[str, str] = {
    "catalog_segment_value_omni_purchase_roas": "omni_purchase",
    "catalog_segment_value_website_purchase_roas": "offsite_conversion.fb_pixel_purchase",
    "catalog_segment_value_mobile_purchase_roas": "app_custom_event.fb_mobile_purchase",
}


def metrics_for_request_family(request_family: str) -> list[MetricDef]:
    """The metrics one request family asks for (``segment`` = delivery + catalog_segment_*, ``product``)."""
    try:
        families = REQUEST_FAMILIES[request_family]
    except KeyError:
        raise ValueError(
            f"unknown request family {request_family!r}; expected one of {sorted(REQUEST_FAMILIES)}"
        ) from None
    return [m for m in METRICS if m.family in families]


def metric(name: str) -> MetricDef:
    try:
        return METRIC_CATALOG[name]
    except KeyError:
        raise KeyError(f"metric {name!r} is not in the insights metric catalog") from None


def catalog_rows(metrics: Iterable[MetricDef] = METRICS) -> list[dict[str, Any]]:
    """Rows of the ``insights_metric_catalog`` table."""
    return [{**asdict(m), "request_family": m.request_family} for m in metrics]


CATALOG_COLUMNS = (
    "metric",
    "unit",
    "additive",
    "is_estimated",
    "in_development",
    "family",
    "request_family",
    "shape",
    "description",
    "source",
)


def write_metric_catalog(con: Any, table: str = "insights_metric_catalog") -> int:
    """Replace the catalog table's rows (creates it when missing). ``con`` is a DuckDB connection."""
    con.execute(METRIC_CATALOG_DDL.replace("insights_metric_catalog", table, 1))
    rows = catalog_rows()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {table}")
        con.executemany(
            f"INSERT INTO {table} ({', '.join(CATALOG_COLUMNS)}) VALUES ({', '.join('?' * len(CATALOG_COLUMNS))})",
            [[r[c] for c in CATALOG_COLUMNS] for r in rows],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def catalog_values_sql(alias: str = "mc") -> str:
    """The catalog as an inline ``VALUES`` relation ``alias(metric, unit, additive, is_estimated, family)`` for
    SQL that must not depend on the catalog table existing."""
    parts = [
        f"('{m.metric}', '{m.unit}', {str(m.additive).lower()}, {str(m.is_estimated).lower()}, '{m.family}')"
        for m in METRICS
    ]
    return f"(VALUES {', '.join(parts)}) AS {alias}(metric, unit, additive, is_estimated, family)"
