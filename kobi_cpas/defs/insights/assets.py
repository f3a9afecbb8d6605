from collections import defaultdict
from datetime import date

import dagster as dg

from kobi_cpas.defs.cpas.state import tenant_with_state
from kobi_cpas.defs.insights.checks import (
    FRESHNESS,
    PRODUCTS,
    REPULL,
    ROAS,
    ROLLUPS,
    shared_item_metrics_check_specs,
)
from kobi_cpas.defs.insights.partitions import before_start_note, insights_partitions, split_at_start
from kobi_cpas.defs.shared import (
    OWNERS_DATA,
    SHORT_WRITES,
    md_table,
    specs_by_key,
    table_result,
    table_spec,
)
from kobi_cpas.insights.accounts import META_AD_ACCOUNTS, fetch_account
from kobi_cpas.insights.metrics import write_metric_catalog
from kobi_cpas.insights.products import (
    LookupReport,
    lookup_product_items,
    match_rates,
    match_to_feed,
)
from kobi_cpas.insights.pull import InsightsPullError, pull_account_days
from kobi_cpas.insights.reconcile import (
    check_freshness,
    check_product_presence,
    check_repull,
    check_roas,
    check_rollups,
    record_repull_totals,
)
from kobi_cpas.insights.schema import (
    INSIGHTS_METRIC_CATALOG,
    RETAILER_PRODUCT_ITEMS,
    SHARED_ITEM_METRICS,
    SHARED_ITEM_PRODUCT_METRICS,
)
from kobi_cpas.insights.stage import opener
from kobi_cpas.insights.tables import CPAS_DASHBOARD, RETAILER_PRODUCT_MATCH_RATES
from kobi_cpas.resources import (
    CatalogSyncResource,
    MetaGraphResource,
    TenantRegistryResource,
    WarehouseResource,
)

GROUP = "insights"
OWNERS = ["team:kobi-cpas", *OWNERS_DATA]


def _days_by_tenant(context: dg.AssetExecutionContext) -> dict[str, list[date]]:
    out: dict[str, list[date]] = defaultdict(list)
    for key in context.partition_keys:
        dims = (
            key.keys_by_dimension
            if hasattr(key, "keys_by_dimension")
            else dict(zip(("date", "tenant"), str(key).split("|"), strict=True))
        )
        out[dims["tenant"]].append(date.fromisoformat(dims["date"]))
    return {t: sorted(set(d)) for t, d in out.items()}


def map_converted_products(connect, tenant_id: str, client, log) -> LookupReport:
    """The tenant's converted product ids are the retailer's product items: look up the ones never seen (one
    GET each, cached in retailer_product_items), then match all of them to the brand's feed items. ``connect``
    opens the work database (or is a connection): it is closed during the GETs."""
    try:
        report = lookup_product_items(client, connect, tenant_id=tenant_id)
    finally:
        with opener(connect)() as con:
            match_to_feed(con, tenant_id)  # whatever was cached before a failure still maps
    if report.errors:
        log.warning(f"{tenant_id}: product item lookups stopped, retried next run: {report.errors[0]}")
    return report


def _match_rate_md(rates: list[dict]) -> dg.MetadataValue:
    """Per tenant and retailer: how the converted products (the retailer's items) map to the brand's feed."""
    if not rates:
        return dg.MetadataValue.md("_no converted products yet_")
    cols = ("product_items", "found", "not_found", "pending", "matched_by_retailer_id", "matched_by_gtin")
    rows = [
        (
            r["tenant_id"],
            r["retailer"],
            *(r[c] for c in cols),
            r["matched_by_mpn"],
            r["unmatched"],
            f"{float(r['match_rate'] or 0):.1%}",
            f"{float(r['value_match_rate'] or 0):.1%}",
        )
        for r in rates
    ]
    headers = ["tenant", "retailer", "product items", "found", "not found", "pending", "by retailer id"]
    headers += ["by GTIN", "by MPN", "unmatched", "match rate", "value match rate (7d click)"]
    return dg.MetadataValue.md(md_table(rows, headers, max_rows=50))


# One pull writes these tables (and the match-rate view over two of them); each is its own asset.
_TABLE = dict(group_name=GROUP, owners=OWNERS, kinds={"meta", "duckdb"})
_BY_PRODUCT = [("shared_item_product_metrics", "action_converted_product_id")]
_MATCHED = [("retailer_product_items", "match_method")]
INSIGHTS = specs_by_key(
    table_spec(
        "shared_item_metrics",
        SHARED_ITEM_METRICS,
        description="CPAS shared-item metrics (catalog_segment_*, spend, impressions, clicks) for every "
        "dedicated ad account of the tenant, one row per day, object, metric, action type and attribution "
        "window.",
        deps=["tenant_registry"],
        **_TABLE,
    ),
    table_spec(
        "shared_item_product_metrics",
        SHARED_ITEM_PRODUCT_METRICS,
        description="converted_product_* metrics per converted product (the retailer's product item), mapped "
        "to the brand's feed item where the lookup matched it.",
        deps=["tenant_registry", "retailer_product_items", "feed_items"],
        lineage={
            "retailer_id": [("retailer_product_items", "feed_retailer_id")],
            "match_method": [("retailer_product_items", "match_method")],
            "product_title": [("feed_items", "title")],
            "product_brand": [("feed_items", "brand")],
        },
        **_TABLE,
    ),
    table_spec(
        "insights_metric_catalog",
        INSIGHTS_METRIC_CATALOG,
        description="The insights metrics Kobi pulls: unit, additivity, whether Meta estimates them, request "
        "family and shape (rewritten from code by every pull; the same for every partition).",
        **_TABLE,
    ),
    table_spec(
        "retailer_product_items",
        RETAILER_PRODUCT_ITEMS,
        description="The retailer's product items seen as converted products, each looked up once at Meta "
        "and matched to the brand's feed item (by retailer id, GTIN or MPN).",
        deps=["feed_items"],
        lineage={"feed_retailer_id": [("feed_items", "retailer_id")]},
        **_TABLE,
    ),
    table_spec(
        "retailer_product_match_rates",
        RETAILER_PRODUCT_MATCH_RATES,
        description="View: per tenant and retailer, how the converted products (the retailer's items) map to "
        "the brand's feed items, by count and by converted value.",
        deps=["shared_item_product_metrics", "retailer_product_items"],
        lineage={
            "product_items": _BY_PRODUCT,
            **{c: [("retailer_product_items", "lookup_status")] for c in ("found", "not_found", "pending")},
            **{
                c: _MATCHED
                for c in (
                    "matched",
                    "matched_by_retailer_id",
                    "matched_by_gtin",
                    "matched_by_mpn",
                    "unmatched",
                )
            },
            "match_rate": [*_BY_PRODUCT, *_MATCHED],
            "converted_value": [("shared_item_product_metrics", "value")],
            "matched_value": [("shared_item_product_metrics", "value"), *_MATCHED],
            "value_match_rate": [("shared_item_product_metrics", "value"), *_MATCHED],
        },
        **_TABLE,
    ),
    table_spec(
        "meta_ad_accounts",
        META_AD_ACCOUNTS,
        description="The dedicated CPAS ad accounts (declared in the registry, else observed at Meta by the daily "
        "CPAS reconciliation) as Meta last reported them to the pull: time zone, currency, name.",
        deps=["tenant_registry"],
        **_TABLE,
    ),
)


# The pull waits on Meta's async report jobs (minutes, up to an hour by Meta's docs), and the writers' lock held
# meanwhile would stop every other writer: the work database is opened only for short transactions before and
# after each wait (pages are staged in a local file meanwhile).
_SHORT = "waits on Meta's async report jobs outside the work database; writes in short transactions"
INSIGHTS = {k: s.merge_attributes(metadata={SHORT_WRITES: _SHORT}) for k, s in INSIGHTS.items()}


@dg.multi_asset(
    specs=list(INSIGHTS.values()),
    partitions_def=insights_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=shared_item_metrics_check_specs,
    can_subset=False,
)
def shared_item_metrics(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
):
    """Pull CPAS shared-item metrics (catalog_segment_*, converted_product_*, spend, impressions, clicks) for
    every dedicated ad account of the tenant (declared in the registry, else the one Meta shows, recorded by the
    daily CPAS reconciliation), then look up and match the converted products.

    A run covers any range of days (single-run backfill): async report jobs per account, level and request
    family, several in flight under Meta's insights throttle, split only when Meta asks. Each (account, level,
    family, day) slice is replaced in one transaction only when all its pieces succeeded; raw pages are kept
    append-only so any day can be re-parsed. The work database is never open while a Meta request waits."""
    days_by_tenant, skipped = _from_tenant_starts(registry, _days_by_tenant(context))
    for note in skipped:
        context.log.warning(note)
    if not days_by_tenant:
        raise dg.Failure(description="nothing to pull: " + " | ".join(skipped))
    reports, errors = [], []
    checks: dict[str, list] = defaultdict(list)
    freshness = []
    lookups: list[LookupReport] = []
    connect = warehouse.connection
    with connect() as con:
        write_metric_catalog(con, "main.insights_metric_catalog")
    with meta.get_client(logger=context.log) as client:
        for tenant_id, days in days_by_tenant.items():
            # The account the daily CPAS reconciliation observed when the registry omits it (short read).
            tenant, _ = tenant_with_state(registry, warehouse, tenant_id)
            for r in tenant.cpas_retailers:
                if not r.dedicated_ad_account_id or r.partnership_status.value == "pending":
                    continue
                act = r.dedicated_ad_account_id
                context.log.info(
                    f"{tenant_id} x {r.retailer}: pulling {len(days)} day(s) {days[0]}..{days[-1]}"
                )
                try:
                    rep = pull_account_days(
                        client,
                        connect,
                        tenant_id=tenant_id,
                        retailer=r.retailer,
                        ad_account_id=act,
                        days=days,
                        poll_interval=catalog_sync.poll_interval_seconds,
                    )
                except InsightsPullError as exc:
                    rep = exc.report
                    errors.append(f"{act}: {'; '.join(rep.errors)[:500]}")
                reports.append(rep)
                # Also recorded in meta_ad_accounts: the insights schedule reads the zone from there.
                tz = fetch_account(
                    client, connect, tenant_id=tenant_id, retailer=r.retailer, ad_account_id=act
                ).timezone_name
                yesterday = max(days)
                record_repull_totals(
                    client,
                    connect,
                    tenant_id=tenant_id,
                    retailer=r.retailer,
                    ad_account_id=act,
                    days=[yesterday],
                )
                with connect() as con:
                    checks[ROLLUPS] += check_rollups(con, ad_account_id=act, days=days)
                    checks[ROAS] += check_roas(con, ad_account_id=act, days=days)
                    checks[PRODUCTS] += check_product_presence(con, ad_account_id=act, days=days)
                    checks[REPULL] += check_repull(con, ad_account_id=act, days=[yesterday])
                    freshness.append(check_freshness(con, ad_account_id=act, timezone_name=tz))
            lookups.append(map_converted_products(connect, tenant_id, client, context.log))
    with connect() as con:
        rates = match_rates(con, list(days_by_tenant))
        warehouse.publish(con)
        if errors and not any(r.rows_written for r in reports):
            raise dg.Failure(description="no slice could be pulled: " + " | ".join(errors))
        yield from _results(con, days_by_tenant, reports, errors, lookups, rates, checks, freshness, skipped)


def _from_tenant_starts(
    registry: TenantRegistryResource, days_by_tenant: dict[str, list[date]]
) -> tuple[dict[str, list[date]], list[str]]:
    """The run's days without those before each tenant's insights.start_date (the date partitions are shared by
    every tenant), and a note per tenant that lost days; a tenant left with none is not pulled."""
    kept: dict[str, list[date]] = {}
    notes: list[str] = []
    for tenant_id, days in days_by_tenant.items():
        _, tenant = registry.tenant(tenant_id)
        pull, before = split_at_start(tenant, days)
        if before:
            notes.append(before_start_note(tenant, before))
        if pull:
            kept[tenant_id] = pull
    return kept, notes


def _results(con, days_by_tenant, reports, errors, lookups, rates, checks, freshness, skipped):
    """One result per table of the run's partitions: the run's tenants (and, for the facts, its days); in
    dependency order, as a multi_asset must yield them."""
    stale = [f for f in freshness if not f.get("ok", True)]

    def result(name: str, rows: list, what: str) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            check_name=name,
            passed=not rows,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if not rows else f"{len(rows)} {what}; first: {rows[0]}",
            metadata={"offending_rows": len(rows)},
        )

    tenants = sorted(days_by_tenant)
    days = sorted({d for ds in days_by_tenant.values() for d in ds})
    facts = "list_contains(?::VARCHAR[], tenant_id) AND date BETWEEN ? AND ?"
    fact_params = [tenants, days[0], days[-1]]
    yield table_result(
        INSIGHTS["shared_item_metrics"],
        con,
        facts,
        fact_params,
        f"SELECT date, tenant_id, retailer, level, object_id, metric, action_type, attribution_window, value "
        f"FROM main.shared_item_metrics WHERE {facts} ORDER BY date DESC, tenant_id, retailer, level, metric "
        "LIMIT 11",
        metadata={
            "days_pulled": sum(len(d) for d in days_by_tenant.values()),
            "api_requests": sum(r.api_requests for r in reports),
            "rows_written_this_run": sum(r.rows_written for r in reports),
            "incomplete_slices": sum(len(r.incomplete) for r in reports),
            "errors": "; ".join(errors) or "none",
            "days_before_tenant_start": "; ".join(skipped) or "none",
        },
        check_results=[
            result(ROLLUPS, checks[ROLLUPS], "rollup gaps (ad vs higher levels)"),
            result(ROAS, checks[ROAS], "ROAS gaps (Meta vs value/spend)"),
            result(PRODUCTS, checks[PRODUCTS], "object-days with purchases but no converted products"),
            result(REPULL, checks[REPULL], "account totals differing from a fresh re-pull"),
            result(FRESHNESS, stale, "ad accounts missing yesterday after 10:00 local time"),
        ],
    )
    yield table_result(
        INSIGHTS["insights_metric_catalog"],
        con,
        preview_sql="SELECT metric, unit, additive, is_estimated, family, request_family "
        "FROM main.insights_metric_catalog ORDER BY metric LIMIT 11",
    )
    mine, tenant_params = "list_contains(?::VARCHAR[], tenant_id)", [tenants]
    yield table_result(
        INSIGHTS["retailer_product_items"],
        con,
        mine,
        tenant_params,
        "SELECT tenant_id, retailer, product_item_id, retailer_id, name, lookup_status, feed_retailer_id, "
        f"match_method FROM main.retailer_product_items WHERE {mine} ORDER BY tenant_id, retailer, "
        "product_item_id LIMIT 11",
        metadata={
            "product_lookups": sum(r.requested for r in lookups),
            "product_lookup_errors": "; ".join(e for r in lookups for e in r.errors[:1]) or "none",
        },
    )
    yield table_result(
        INSIGHTS["shared_item_product_metrics"],
        con,
        facts,
        fact_params,
        "SELECT date, tenant_id, retailer, level, action_converted_product_id, metric, value, retailer_id, "
        f"match_method FROM main.shared_item_product_metrics WHERE {facts} "
        "ORDER BY date DESC, tenant_id, retailer, level, metric LIMIT 11",
    )
    yield table_result(
        INSIGHTS["retailer_product_match_rates"],
        con,
        mine,
        tenant_params,
        relation=f"({RETAILER_PRODUCT_MATCH_RATES.sql})",
        metadata={
            "product_match_rate": _match_rate_md(rates),
            "product_match_rates": dg.MetadataValue.json(
                {f"{r['tenant_id']}/{r['retailer']}": float(r["match_rate"] or 0) for r in rates}
            ),
        },
    )
    yield table_result(
        INSIGHTS["meta_ad_accounts"],
        con,
        mine,
        tenant_params,
        "SELECT ad_account_id, tenant_id, retailer, account_name, timezone_name, currency, fetched_at "
        f"FROM main.meta_ad_accounts WHERE {mine} ORDER BY tenant_id, retailer LIMIT 11",
    )


_KPIS = [("shared_item_metrics", "value")]
_FACT = {
    c: [("shared_item_metrics", c)] for c in ("date", "tenant_id", "retailer", "ad_account_id", "campaign_id")
}
_KPI_COLUMNS = ("spend", "purchase_value", "purchases", "add_to_cart", "add_to_cart_value", "view_content")
DASHBOARD = specs_by_key(
    table_spec(
        "cpas_dashboard",
        CPAS_DASHBOARD,
        description="The CPAS dashboard view: per day, tenant, retailer and campaign (with its catalog "
        "segment from the execution manifest) — spend, segment purchase value, add-to-cart and view-content "
        "counts and values, Meta's omni purchase ROAS and ROAS recomputed as value / spend (ratios are "
        "never summed).",
        deps=[
            "shared_item_metrics",
            "shared_item_product_metrics",
            "retailer_product_items",
            "execution_manifest",
        ],
        lineage={
            **_FACT,
            "campaign_name": [("execution_manifest", "campaign_name")],
            "catalog_segment_id": [("execution_manifest", "catalog_segment_id")],
            **{
                c: _KPIS
                for c in (*_KPI_COLUMNS, "view_content_value", "meta_omni_purchase_roas", "roas_recomputed")
            },
            "converted_product_value": [("shared_item_product_metrics", "value")],
            "matched_product_value": [("shared_item_product_metrics", "value"), *_MATCHED],
        },
        group_name=GROUP,
        owners=OWNERS,
        kinds={"duckdb"},
        automation_condition=dg.AutomationCondition.eager(),
    ),
)


@dg.multi_asset(specs=list(DASHBOARD.values()))
def cpas_dashboard(warehouse: WarehouseResource):
    """Refresh the CPAS dashboard view's metadata (row count, ROAS by retailer) after its inputs changed."""
    relation = f"({CPAS_DASHBOARD.sql})"
    with warehouse.connection() as con:
        by_retailer = con.execute(
            f"SELECT tenant_id, retailer, round(sum(spend), 2), round(sum(purchase_value), 2), "
            f"round(sum(purchase_value) / nullif(sum(spend), 0), 2) FROM {relation} GROUP BY ALL ORDER BY 1, 2"
        ).fetchall()
        warehouse.publish(con)
        yield table_result(
            DASHBOARD["cpas_dashboard"],
            con,
            preview_sql="SELECT date, tenant_id, retailer, campaign_id, spend, purchase_value, roas_recomputed "
            f"FROM {relation} ORDER BY date DESC, tenant_id LIMIT 11",
            relation=relation,
            metadata={
                "roas_by_retailer": dg.MetadataValue.md(
                    md_table(by_retailer, ["tenant", "retailer", "spend", "purchase value", "ROAS"])
                    if by_retailer
                    else "_no data yet_"
                ),
            },
        )
