"""The sandbox's Ads Insights model: deterministic delivery and shared-item conversions per (ad, day), rolled
up the way Meta rolls them up, plus the knobs tests use to make the API misbehave.

Data. Every ad delivers every day from its created day up to the world's "now" (in the ad account's time zone;
today is partial). Spend, impressions and clicks come from a per-ad profile; conversions are generated as
*events* (view content, add to cart, purchases of catalog products), each in one attribution class:

    c1  = clicked, converted within 1 day      -> in 1d_click, 7d_click, 28d_click and the default value
    c7  = clicked, converted within 2-7 days   -> in 7d_click, 28d_click and the default value
    c28 = clicked, converted within 8-28 days  -> in 28d_click only
    v1  = viewed, converted within 1 day       -> in 1d_view and the default value

so windows nest as on Meta, the default ``value`` is "7-day click or 1-day view", 7d_view / 28d_view return
nothing (Meta stopped them on 2026-01-12) and converted products add up exactly to the segment's purchases.
Everything is integer cents and counts, so ad-level rows add up to ad set, campaign and account rows exactly.
Converted products are the RETAILER's product items (``retailer_items``: their own ids and the retailer's SKUs,
some delisted since), as Meta reports them, never the brand catalog's items.

Restatement. Days younger than ``restatement_days`` (28) are recomputed for every *version* of the data, a
version being ``floor(now / restatement_period_seconds)`` of the world clock: some purchase events drop out,
late ones appear (converted products come and go), counts wobble, and the last two days' spend moves. Older days
are frozen at their base values.

Knobs (``/__sandbox/insights/...``, see routes_insights): per-account drift (rollup vs ad-level disagreement,
different totals on re-pull, ROAS skew, converted products omitted), too-much-data thresholds, scripted async job
outcomes, global config (polls to complete, restatement period), extra ads for benchmarks, and a request log
that records every insights call's parameters (POST bodies included).

Modules (this package re-exports their public names): ``constants``; ``knobs`` (config, drift, job scripts,
request log, extra ads); ``data`` (per ad-day numbers); ``query`` (parameters, scope, too-much-data);
``rows`` (rollups in Meta's shapes); ``report_runs`` (async jobs).
"""

from meta_sandbox.insights_model.constants import (
    ACTION_BREAKDOWNS,
    ADD_TO_CART,
    APP_PURCHASE,
    ATTRIBUTE_FIELDS,
    CLASS_WINDOWS,
    CLASSES,
    DEFAULT_CONFIG,
    DELIVERY_FIELDS,
    DRIFT_KEYS,
    FILTER_FIELDS,
    HIDDEN_BY_DEFAULT,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_NOT_STARTED,
    JOB_OUTCOMES,
    JOB_RUNNING,
    JOB_SKIPPED,
    JOB_STARTED,
    KIND_LEVEL,
    KNOWN_WINDOWS,
    LEVEL_RANK,
    LEVELS,
    LOAD_WINDOW_CALLS,
    METRIC_FIELDS,
    PRODUCT_FIELDS,
    PURCHASE,
    REPORT_RUN_TTL,
    ROAS_FIELDS,
    SEGMENT_ACTION_TYPES,
    SEGMENT_FIELDS,
    TOO_MUCH_DATA_MESSAGE,
    TOO_MUCH_DATA_SUBCODE,
    VIEW_CONTENT,
    WEB_PURCHASE,
    WINDOW_CLASSES,
)
from meta_sandbox.insights_model.data import (
    Cells,
    account_today,
    ad_day,
    data_version,
    product_pool,
)
from meta_sandbox.insights_model.knobs import (
    account_segment,
    clear_drift,
    configure,
    describe_drift,
    log_call,
    logged_calls,
    seed_extra_ads,
    set_drift,
    state,
)
from meta_sandbox.insights_model.query import (
    Query,
    check_too_much_data,
    level_key,
    parse_query,
    scoped_ads,
)
from meta_sandbox.insights_model.report_runs import (
    check_readable,
    create_report_run,
    expired,
    insights_load,
    poll_report_run,
    report_run_fields,
)
from meta_sandbox.insights_model.rows import (
    run_query,
)

__all__ = [
    "ACTION_BREAKDOWNS",
    "ADD_TO_CART",
    "APP_PURCHASE",
    "ATTRIBUTE_FIELDS",
    "CLASSES",
    "CLASS_WINDOWS",
    "DEFAULT_CONFIG",
    "DELIVERY_FIELDS",
    "DRIFT_KEYS",
    "FILTER_FIELDS",
    "HIDDEN_BY_DEFAULT",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_NOT_STARTED",
    "JOB_OUTCOMES",
    "JOB_RUNNING",
    "JOB_SKIPPED",
    "JOB_STARTED",
    "KIND_LEVEL",
    "KNOWN_WINDOWS",
    "LEVELS",
    "LEVEL_RANK",
    "LOAD_WINDOW_CALLS",
    "METRIC_FIELDS",
    "PRODUCT_FIELDS",
    "PURCHASE",
    "REPORT_RUN_TTL",
    "ROAS_FIELDS",
    "SEGMENT_ACTION_TYPES",
    "SEGMENT_FIELDS",
    "TOO_MUCH_DATA_MESSAGE",
    "TOO_MUCH_DATA_SUBCODE",
    "VIEW_CONTENT",
    "WEB_PURCHASE",
    "WINDOW_CLASSES",
    "Cells",
    "Query",
    "account_segment",
    "account_today",
    "ad_day",
    "check_readable",
    "check_too_much_data",
    "clear_drift",
    "configure",
    "create_report_run",
    "data_version",
    "describe_drift",
    "expired",
    "insights_load",
    "level_key",
    "log_call",
    "logged_calls",
    "parse_query",
    "poll_report_run",
    "product_pool",
    "report_run_fields",
    "run_query",
    "scoped_ads",
    "seed_extra_ads",
    "set_drift",
    "state",
]
