"""DuckDB tables of the shared-item metrics: analyst tables (schema ``main``) and internal raw state (``raw``).

Key semantics (documented once here, repeated in the column comments):
- No key column is ever NULL. Ids that do not apply to a row's level are ``'n/a'`` (e.g. ``adset_id`` of a
  campaign row; ``campaign_id``/``adset_id``/``ad_id`` of an account row). ``action_type`` is ``'n/a'`` for scalar
  metrics (spend, impressions, clicks) and for product rows pulled without the action_type breakdown.
  ``attribution_window`` is ``'default'`` for Meta's ``value`` key (the ad set's attribution setting) and the window
  name (1d_click, 7d_click, 28d_click, 1d_view, ...) for window keys; scalar metrics are ``'default'``.
- ``ad_account_id`` is ``act_<digits>`` (as in the tenant registry); at level=account ``object_id`` is that id.
- Keys: shared_item_metrics (date, tenant_id, ad_account_id, level, object_id, metric, action_type,
  attribution_window); shared_item_product_metrics the same plus action_converted_product_id. retailer,
  campaign_id, adset_id and ad_id are functionally dependent on the key (kept for joins and filters).
- A slice is (ad_account_id, level, request family, date). Writers replace whole slices in one transaction, and
  only slices whose every piece succeeded (kobi_cpas.insights.parse.replace_slices).
"""

from __future__ import annotations

from typing import Any

from kobi_cpas.warehouse.specs import Column, TableSpec, col

NA = "n/a"
DEFAULT_WINDOW = "default"
# The window product value roll-ups use: product rows carry only the requested window keys (no 'default').
PRODUCT_VALUE_WINDOW = "7d_click"
# ROAS arrives with 6 decimals, money with 2. Counts stay decimal too: Meta types every action value as a
# "numeric string" (Ads Action Stats reference; the SDK's AdsActionStats: 'string'), never as an integer, offers
# data-driven attribution (window 'dda') that splits a conversion's credit between ads, and labels
# catalog_segment_actions and converted_product_quantity estimated (modelled): a count may be fractional.
VALUE_TYPE = "DECIMAL(20,6)"

_KEY_IDS = (
    col(
        "date",
        "DATE",
        "Day in the ad account's time zone (Meta date_start == date_stop, time_increment=1)",
        False,
    ),
    col("tenant_id", "VARCHAR", "Kobi tenant id", False),
    col(
        "retailer",
        "VARCHAR",
        "Marketplace retailer of the dedicated ad account (trendyol, hepsiburada, ...)",
        False,
    ),
    col("ad_account_id", "VARCHAR", "Dedicated CPAS ad account, act_<digits>", False),
    col("level", "VARCHAR", "Insights level of the row: account, campaign, adset or ad", False),
    col("object_id", "VARCHAR", "Id of the row's object at its level (the act_ id at level=account)", False),
    col("campaign_id", "VARCHAR", "Campaign id; 'n/a' at level=account", False),
    col("adset_id", "VARCHAR", "Ad set id; 'n/a' at levels account and campaign", False),
    col("ad_id", "VARCHAR", "Ad id; 'n/a' above level=ad", False),
)
_TAIL = (
    col("account_currency", "VARCHAR", "Currency of money values (the ad account's currency)"),
    col("pull_id", "VARCHAR", "Pull that wrote the row (raw.insights_pulls)", False),
    col("pulled_at", "TIMESTAMPTZ", "When the row was pulled from Meta", False),
)

SHARED_ITEM_METRICS = TableSpec(
    name="shared_item_metrics",
    domain="insights",
    comment="CPAS shared-item metrics from Meta's Insights API, long format: one row per day, object, metric, "
    "action_type and attribution window. Ratios (ROAS) are never summed: recompute value / spend.",
    key=(
        "date",
        "tenant_id",
        "ad_account_id",
        "level",
        "object_id",
        "metric",
        "action_type",
        "attribution_window",
    ),
    columns=(
        *_KEY_IDS,
        col("metric", "VARCHAR", "Meta metric name (see insights_metric_catalog)", False),
        col(
            "action_type",
            "VARCHAR",
            "Meta action_type of list metrics (omni_purchase, omni_add_to_cart, ...); 'n/a' for spend, "
            "impressions, clicks",
            False,
        ),
        col(
            "attribution_window",
            "VARCHAR",
            "'default' for Meta's value key (the ad set's attribution setting), else 1d_click, 7d_click, 28d_click, "
            "1d_view",
            False,
        ),
        col(
            "value",
            VALUE_TYPE,
            "The number Meta reported (money in account_currency, counts, ratios); decimal for counts too, as "
            "Meta's action counts may be fractional (modelled, data-driven attribution)",
            False,
        ),
        col(
            "is_estimated",
            "BOOLEAN",
            "Meta labels the metric estimated (from insights_metric_catalog)",
            False,
        ),
        *_TAIL,
    ),
)

SHARED_ITEM_PRODUCT_METRICS = TableSpec(
    name="shared_item_product_metrics",
    domain="insights",
    comment="converted_product_value and converted_product_quantity by action_converted_product_id at campaign, "
    "ad set and ad level (Meta does not support the breakdown at account level; never requested there).",
    key=(
        "date",
        "tenant_id",
        "ad_account_id",
        "level",
        "object_id",
        "action_converted_product_id",
        "metric",
        "action_type",
        "attribution_window",
    ),
    columns=(
        *_KEY_IDS,
        col(
            "action_converted_product_id",
            "VARCHAR",
            "Product item id Meta reports for the conversion (join to the catalog's product items)",
            False,
        ),
        col(
            "action_type",
            "VARCHAR",
            "Meta action_type (omni_purchase, ...); 'n/a' without that breakdown",
            False,
        ),
        col("metric", "VARCHAR", "converted_product_value or converted_product_quantity", False),
        col(
            "attribution_window",
            "VARCHAR",
            "Window key (1d_click, 7d_click, 28d_click, 1d_view); 'default' for Meta's value key",
            False,
        ),
        col(
            "value",
            VALUE_TYPE,
            "Money in account_currency (value) or units (quantity; decimal: Meta's estimated counts may be "
            "fractional)",
            False,
        ),
        col(
            "is_estimated",
            "BOOLEAN",
            "Meta labels the metric estimated (from insights_metric_catalog)",
            False,
        ),
        *_TAIL,
        # Filled after each pull from the mapping in retailer_product_items (the id is the retailer's product
        # item, looked up on Meta, then matched to the brand's feed); NULL while unmatched.
        col(
            "retailer_id",
            "VARCHAR",
            "The brand's feed item (its id, Meta's retailer_id in the brand catalog) the retailer's product item "
            "maps to (see retailer_product_items); NULL when it maps to none",
        ),
        col("product_title", "VARCHAR", "Title of that brand feed item; NULL when unmatched"),
        col("product_brand", "VARCHAR", "Brand of that brand feed item; NULL when unmatched"),
        col(
            "match_method",
            "VARCHAR",
            "How the product item was matched to the brand's feed: retailer_id, gtin, mpn or unmatched "
            "(retailer_product_items.match_method); NULL until looked up",
        ),
    ),
)
# Filled after the pull from retailer_product_items; the parser writes every other column.
PRODUCT_MAPPED_COLUMNS = ("retailer_id", "product_title", "product_brand", "match_method")
PRODUCT_PARSED_COLUMNS: tuple[str, ...] = tuple(
    c for c in SHARED_ITEM_PRODUCT_METRICS.column_names if c not in PRODUCT_MAPPED_COLUMNS
)

RETAILER_PRODUCT_ITEMS = TableSpec(
    name="retailer_product_items",
    domain="insights",
    comment="The retailer's product items behind converted_product_* (action_converted_product_id is an item of "
    "the RETAILER's catalog segment, not of the brand's catalog): each looked up once on Meta with "
    "GET /{product-item-id} and cached here, then matched to the brand's feed by retailer id, else GTIN, else "
    "MPN (the latter two only when the feed has such a column). Per-tenant and retailer rates: "
    "retailer_product_match_rates.",
    key=("tenant_id", "retailer", "product_item_id"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id (the brand)", False),
        col(
            "retailer", "VARCHAR", "Marketplace retailer whose catalog holds the item (trendyol, ...)", False
        ),
        col(
            "product_item_id",
            "VARCHAR",
            "Meta product item id as reported in action_converted_product_id (the retailer's item)",
            False,
        ),
        col(
            "retailer_id",
            "VARCHAR",
            "The item's retailer_id on Meta: the RETAILER's SKU (equals the brand's feed id only when the retailer "
            "reuses it); NULL when not found",
        ),
        col("name", "VARCHAR", "Product name on the retailer's item (Meta's ProductItem.name)"),
        col("brand", "VARCHAR", "Brand on the retailer's item (ProductItem.brand)"),
        col(
            "gtin", "VARCHAR", "GTIN on the retailer's item (ProductItem.gtin), where the retailer sends one"
        ),
        col("mpn", "VARCHAR", "Manufacturer part number (ProductItem.manufacturer_part_number), where sent"),
        col(
            "lookup_status",
            "VARCHAR",
            "found; not_found (Meta answered error 100/33: the retailer removed the item or it is not readable; "
            "cached, never asked again); failed (another error; asked again on the next run)",
            False,
        ),
        col("lookup_error", "VARCHAR", "Meta's error for not_found and failed lookups (no secrets)"),
        col("looked_up_at", "TIMESTAMPTZ", "When Kobi asked Meta (the one lookup of a found id)", False),
        col(
            "feed_retailer_id",
            "VARCHAR",
            "The brand feed item (feed_items.retailer_id) the item maps to; NULL when unmatched",
        ),
        col(
            "match_method",
            "VARCHAR",
            "retailer_id (the retailer's SKU is the brand's feed id), gtin, mpn, or unmatched (no brand feed item, "
            "or the item was not found on Meta); recomputed after every pull as the feed changes",
            False,
        ),
        col("matched_at", "TIMESTAMPTZ", "When the match to the brand's feed was last computed", False),
    ),
)

INSIGHTS_METRIC_CATALOG = TableSpec(
    name="insights_metric_catalog",
    domain="insights",
    comment="Each insights metric Kobi stores: unit, additivity, Meta's estimated / in-development labels with "
    "their source, and the request family that carries it.",
    key=("metric",),
    columns=(
        col("metric", "VARCHAR", "Meta metric name", False),
        col("unit", "VARCHAR", "count, currency or ratio", False),
        col("additive", "BOOLEAN", "May be summed across objects and days (ratios never)", False),
        col("is_estimated", "BOOLEAN", "Meta labels it an estimated metric", False),
        col("in_development", "BOOLEAN", "Meta labels it in development", False),
        col("family", "VARCHAR", "delivery, segment or product", False),
        col("request_family", "VARCHAR", "Request that carries it: segment or product (never mixed)", False),
        col("shape", "VARCHAR", "scalar, action_list or product_list (Meta's JSON shape)", False),
        col("description", "VARCHAR", "What the metric counts"),
        col("source", "VARCHAR", "Where the labels come from (URL and quoted text)"),
    ),
)

ANALYST_TABLES: tuple[TableSpec, ...] = (
    SHARED_ITEM_METRICS,
    SHARED_ITEM_PRODUCT_METRICS,
    INSIGHTS_METRIC_CATALOG,
    RETAILER_PRODUCT_ITEMS,
)

METRIC_CATALOG_DDL = INSIGHTS_METRIC_CATALOG.ddl()

# Internal state: raw pages (append-only), the pieces each pull ran, the slices it replaced, pulls, re-pulls.
RAW_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS raw",
    """CREATE TABLE IF NOT EXISTS raw.insights_pages (
  pull_id VARCHAR NOT NULL,
  piece_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  retailer VARCHAR NOT NULL,
  ad_account_id VARCHAR NOT NULL,
  level VARCHAR NOT NULL,
  family VARCHAR NOT NULL,
  since DATE NOT NULL,
  until DATE NOT NULL,
  page_no INTEGER NOT NULL,
  row_count INTEGER NOT NULL,
  payload JSON NOT NULL,
  pulled_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS raw.insights_pieces (
  pull_id VARCHAR NOT NULL,
  piece_id VARCHAR NOT NULL,
  parent_id VARCHAR,
  ad_account_id VARCHAR NOT NULL,
  object_id VARCHAR NOT NULL,
  level VARCHAR NOT NULL,
  family VARCHAR NOT NULL,
  since DATE NOT NULL,
  until DATE NOT NULL,
  status VARCHAR NOT NULL,
  split_by VARCHAR,
  reason VARCHAR,
  report_run_ids VARCHAR[],
  attempts INTEGER NOT NULL,
  pages INTEGER NOT NULL,
  row_count INTEGER NOT NULL,
  params JSON NOT NULL,
  recorded_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS raw.insights_slices (
  pull_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  retailer VARCHAR NOT NULL,
  ad_account_id VARCHAR NOT NULL,
  level VARCHAR NOT NULL,
  family VARCHAR NOT NULL,
  date DATE NOT NULL,
  status VARCHAR NOT NULL,
  row_count BIGINT NOT NULL,
  recorded_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS raw.insights_pulls (
  pull_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  retailer VARCHAR NOT NULL,
  ad_account_id VARCHAR NOT NULL,
  started_at TIMESTAMPTZ NOT NULL,
  finished_at TIMESTAMPTZ,
  status VARCHAR NOT NULL,
  report JSON
)""",
    """CREATE TABLE IF NOT EXISTS raw.insights_repull_totals (
  repull_id VARCHAR NOT NULL,
  tenant_id VARCHAR NOT NULL,
  retailer VARCHAR NOT NULL,
  ad_account_id VARCHAR NOT NULL,
  date DATE NOT NULL,
  metric VARCHAR NOT NULL,
  action_type VARCHAR NOT NULL,
  attribution_window VARCHAR NOT NULL,
  value DECIMAL(20,6) NOT NULL,
  pulled_at TIMESTAMPTZ NOT NULL
)""",
)


# Account-level product totals are never requested (Meta rejects the breakdown there): derive them from the
# campaign rows (additive across campaigns) and flag them.
DERIVED_PRODUCT_ACCOUNT_TOTALS_SQL = """
SELECT date, tenant_id, retailer, ad_account_id, 'account' AS level, ad_account_id AS object_id,
       action_converted_product_id, action_type, metric, attribution_window, sum(value) AS value,
       bool_or(is_estimated) AS is_estimated, any_value(account_currency) AS account_currency,
       true AS is_derived
FROM shared_item_product_metrics
WHERE level = 'campaign'
GROUP BY date, tenant_id, retailer, ad_account_id, action_converted_product_id, action_type, metric,
         attribution_window
"""

# Segment KPIs per campaign and day, wide (one attribution window), with ROAS recomputed as value / spend. Roll it up
# further with sum(value) / sum(spend), never by summing ROAS.
CAMPAIGN_DAY_KPIS_SQL = """
SELECT date, tenant_id, retailer, ad_account_id, campaign_id, any_value(account_currency) AS currency,
       sum(value) FILTER (WHERE metric = 'spend') AS spend,
       sum(value) FILTER (WHERE metric = 'catalog_segment_value' AND action_type = 'omni_purchase'
                          AND attribution_window = $window) AS purchase_value,
       sum(value) FILTER (WHERE metric = 'catalog_segment_actions' AND action_type = 'omni_purchase'
                          AND attribution_window = $window) AS purchases,
       sum(value) FILTER (WHERE metric = 'catalog_segment_actions' AND action_type = 'omni_add_to_cart'
                          AND attribution_window = $window) AS add_to_cart,
       sum(value) FILTER (WHERE metric = 'catalog_segment_value' AND action_type = 'omni_add_to_cart'
                          AND attribution_window = $window) AS add_to_cart_value,
       sum(value) FILTER (WHERE metric = 'catalog_segment_actions' AND action_type = 'omni_view_content'
                          AND attribution_window = $window) AS view_content,
       sum(value) FILTER (WHERE metric = 'catalog_segment_value' AND action_type = 'omni_view_content'
                          AND attribution_window = $window) AS view_content_value,
       max(value) FILTER (WHERE metric = 'catalog_segment_value_omni_purchase_roas'
                          AND attribution_window = $window) AS meta_omni_purchase_roas,
       CAST(purchase_value AS DOUBLE) / nullif(CAST(spend AS DOUBLE), 0) AS roas_recomputed
FROM shared_item_metrics
WHERE level = 'campaign'
GROUP BY date, tenant_id, retailer, ad_account_id, campaign_id
"""


def analyst_ddl() -> list[str]:
    return [spec.ddl() for spec in ANALYST_TABLES]


def all_ddl() -> list[str]:
    return [*analyst_ddl(), *RAW_DDL]


def ensure_schema(con: Any) -> None:
    """Create every insights table that does not exist yet (idempotent)."""
    for ddl in all_ddl():
        con.execute(ddl)


def column_names(spec: TableSpec) -> list[str]:
    return spec.column_names


__all__ = [
    "ANALYST_TABLES",
    "CAMPAIGN_DAY_KPIS_SQL",
    "DEFAULT_WINDOW",
    "DERIVED_PRODUCT_ACCOUNT_TOTALS_SQL",
    "INSIGHTS_METRIC_CATALOG",
    "METRIC_CATALOG_DDL",
    "NA",
    "PRODUCT_MAPPED_COLUMNS",
    "PRODUCT_PARSED_COLUMNS",
    "PRODUCT_VALUE_WINDOW",
    "RAW_DDL",
    "RETAILER_PRODUCT_ITEMS",
    "SHARED_ITEM_METRICS",
    "SHARED_ITEM_PRODUCT_METRICS",
    "Column",
    "all_ddl",
    "analyst_ddl",
    "column_names",
    "ensure_schema",
]


# The CPAS dashboard: segment KPIs per campaign and day (Meta's default attribution), joined to the execution
# manifest for the catalog segment. ROAS is recomputed from value / spend so roll-ups stay correct.
CPAS_DASHBOARD_SQL = (
    "WITH k AS ("
    + CAMPAIGN_DAY_KPIS_SQL.replace("$window", "'default'")
    + """), seg AS (
    SELECT tenant_id, retailer, campaign_id, any_value(campaign_name) AS campaign_name,
           any_value(catalog_segment_id) AS catalog_segment_id
    FROM execution_manifest GROUP BY ALL
), prod AS (
    -- Converted products through the mapping: the retailer's product item -> the brand's feed item.
    SELECT p.date, p.tenant_id, p.retailer, p.campaign_id, sum(p.value) AS converted_product_value,
           coalesce(sum(p.value) FILTER (WHERE m.match_method IN ('retailer_id', 'gtin', 'mpn')), 0)
               AS matched_product_value
    FROM shared_item_product_metrics p LEFT JOIN retailer_product_items m
      ON m.tenant_id = p.tenant_id AND m.retailer = p.retailer AND m.product_item_id = p.action_converted_product_id
    WHERE p.level = 'campaign' AND p.metric = 'converted_product_value'
      AND p.attribution_window = '"""
    + PRODUCT_VALUE_WINDOW
    + """'
    GROUP BY ALL
)
SELECT k.date, k.tenant_id, k.retailer, k.ad_account_id, k.campaign_id, seg.campaign_name, seg.catalog_segment_id,
       k.currency,
       k.spend, k.purchase_value, k.purchases, k.add_to_cart, k.add_to_cart_value, k.view_content,
       k.view_content_value, k.meta_omni_purchase_roas, k.roas_recomputed,
       prod.converted_product_value, prod.matched_product_value,
       CAST(prod.matched_product_value AS DOUBLE) / nullif(CAST(prod.converted_product_value AS DOUBLE), 0)
           AS product_match_rate
FROM k LEFT JOIN seg USING (tenant_id, retailer, campaign_id)
       LEFT JOIN prod USING (date, tenant_id, retailer, campaign_id)"""
)
