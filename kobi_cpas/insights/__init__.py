"""Pure (no Dagster) CPAS shared-item metrics from Meta's Insights API into DuckDB.

- ``metrics``: the metric catalog (unit, additive, estimated / in development with the source, family).
- ``requests``: request plans (two families never mixed, status filtering, windows, time_increment=1).
- ``jobs``: async report jobs, several in flight per account under Meta's insights throttle (submit, poll
  round-robin, read; retry, resubmit, split by days, ids, fields); ``pieces``: the job tree's data.
- ``stage``: pages staged in a local file while jobs run, appended in one statement; connection openers.
- ``schema``: table specs and DDL (analyst tables in ``main``, raw state in ``raw``).
- ``parse``: raw pages -> long rows in SQL; ``replace_slices`` (one transaction, complete slices only).
- ``pull``: ``pull_account_days`` orchestrating it all; account time zone and restatement window helpers.
- ``products``: converted product ids (the retailer's product items) looked up once each, cached in
  ``retailer_product_items``, matched to the brand's feed; match rates per tenant and retailer.
- ``reconcile``: rollup, ROAS, product presence, re-pull and freshness checks as SQL.
"""

from kobi_cpas.insights.jobs import (
    InsightsError,
    InsightsWaitBudgetExceeded,
    JobStats,
    Piece,
    ReportJobManager,
)
from kobi_cpas.insights.metrics import METRIC_CATALOG, METRICS, MetricDef, write_metric_catalog
from kobi_cpas.insights.parse import (
    SliceKey,
    complete_days,
    parsed_rows_sql,
    reparse_days,
    replace_slice,
    replace_slices,
)
from kobi_cpas.insights.products import (
    LOOKUP_FIELDS,
    LookupReport,
    ProductLookupError,
    lookup_product_items,
    match_rates,
    match_to_feed,
)
from kobi_cpas.insights.pull import (
    AccountInfo,
    InsightsPullError,
    PullReport,
    SliceOutcome,
    account_info,
    account_timezone,
    discover_campaign_ids,
    pull_account_days,
    restatement_window,
    today_in_timezone,
)
from kobi_cpas.insights.requests import (
    DEFAULT_WINDOWS,
    FAMILIES,
    LEVELS,
    InsightsRequest,
    build_request,
    plan_requests,
)
from kobi_cpas.insights.schema import (
    INSIGHTS_METRIC_CATALOG,
    SHARED_ITEM_METRICS,
    SHARED_ITEM_PRODUCT_METRICS,
    all_ddl,
    ensure_schema,
)

__all__ = [
    "DEFAULT_WINDOWS",
    "FAMILIES",
    "INSIGHTS_METRIC_CATALOG",
    "LEVELS",
    "LOOKUP_FIELDS",
    "METRICS",
    "METRIC_CATALOG",
    "SHARED_ITEM_METRICS",
    "SHARED_ITEM_PRODUCT_METRICS",
    "AccountInfo",
    "InsightsError",
    "InsightsPullError",
    "InsightsRequest",
    "InsightsWaitBudgetExceeded",
    "JobStats",
    "LookupReport",
    "MetricDef",
    "Piece",
    "ProductLookupError",
    "PullReport",
    "ReportJobManager",
    "SliceKey",
    "SliceOutcome",
    "account_info",
    "account_timezone",
    "all_ddl",
    "build_request",
    "complete_days",
    "discover_campaign_ids",
    "ensure_schema",
    "lookup_product_items",
    "match_rates",
    "match_to_feed",
    "parsed_rows_sql",
    "plan_requests",
    "pull_account_days",
    "reparse_days",
    "replace_slice",
    "replace_slices",
    "restatement_window",
    "today_in_timezone",
    "write_metric_catalog",
]
