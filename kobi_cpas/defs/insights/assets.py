from collections import defaultdict
from datetime import date

import dagster as dg

from kobi_cpas.defs.insights.checks import (
    FRESHNESS,
    PRODUCTS,
    REPULL,
    ROAS,
    ROLLUPS,
    shared_item_metrics_check_specs,
)
from kobi_cpas.defs.insights.partitions import insights_partitions
from kobi_cpas.defs.shared import (
    DUCKDB_POOL,
    OWNERS_DATA,
    count,
    md_table,
    preview,
    table_definition_metadata,
)
from kobi_cpas.insights.metrics import write_metric_catalog
from kobi_cpas.insights.products import (
    LookupReport,
    lookup_product_items,
    match_rates,
    match_to_feed,
)
from kobi_cpas.insights.pull import InsightsPullError, account_timezone, pull_account_days
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


def map_converted_products(con, tenant_id: str, client, log) -> LookupReport:
    """The tenant's converted product ids are the retailer's product items: look up the ones never seen (one
    GET each, cached in retailer_product_items), then match all of them to the brand's feed items."""
    try:
        report = lookup_product_items(client, con, tenant_id=tenant_id)
    finally:
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


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"meta", "duckdb"},
    partitions_def=insights_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    deps=["tenant_registry", "feed_snapshot"],
    check_specs=shared_item_metrics_check_specs,
    metadata=table_definition_metadata(
        SHARED_ITEM_METRICS,
        SHARED_ITEM_PRODUCT_METRICS,
        INSIGHTS_METRIC_CATALOG,
        RETAILER_PRODUCT_ITEMS,
        RETAILER_PRODUCT_MATCH_RATES,
    ),
)
def shared_item_metrics(
    context: dg.AssetExecutionContext,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
    warehouse: WarehouseResource,
    catalog_sync: CatalogSyncResource,
) -> dg.MaterializeResult:
    """CPAS shared-item metrics (catalog_segment_*, converted_product_*, spend, impressions, clicks) for every
    dedicated ad account of the tenant, one row per day, object, metric, action type and attribution window.

    A run covers any range of days (single-run backfill): one async report job per account, level and request
    family, split only when Meta asks. Each (account, level, family, day) slice is replaced in one transaction
    only when all its pieces succeeded; raw pages are kept append-only so any day can be re-parsed."""
    days_by_tenant = _days_by_tenant(context)
    reports, errors = [], []
    checks: dict[str, list] = defaultdict(list)
    freshness = []
    lookups: list[LookupReport] = []
    with meta.get_client(logger=context.log) as client, warehouse.connection() as con:
        write_metric_catalog(con, "main.insights_metric_catalog")
        for tenant_id, days in days_by_tenant.items():
            _, tenant = registry.tenant(tenant_id)
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
                        con,
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
                tz = account_timezone(client, act)
                yesterday = max(days)
                record_repull_totals(
                    client, con, tenant_id=tenant_id, retailer=r.retailer, ad_account_id=act, days=[yesterday]
                )
                checks[ROLLUPS] += check_rollups(con, ad_account_id=act, days=days)
                checks[ROAS] += check_roas(con, ad_account_id=act, days=days)
                checks[PRODUCTS] += check_product_presence(con, ad_account_id=act, days=days)
                checks[REPULL] += check_repull(con, ad_account_id=act, days=[yesterday])
                freshness.append(check_freshness(con, ad_account_id=act, timezone_name=tz))
            lookups.append(map_converted_products(con, tenant_id, client, context.log))
        n = count(con, "SELECT count(*) FROM main.shared_item_metrics")
        n_products = count(con, "SELECT count(*) FROM main.shared_item_product_metrics")
        rates = match_rates(con, list(days_by_tenant))
        md = preview(
            con,
            "SELECT date, tenant_id, retailer, campaign_id, spend, purchase_value, roas_recomputed "
            "FROM (" + CPAS_DASHBOARD.sql + ") ORDER BY date DESC, tenant_id LIMIT 10",
        )
        warehouse.publish(con)
    if errors and not any(r.rows_written for r in reports):
        raise dg.Failure(description="no slice could be pulled: " + " | ".join(errors))
    stale = [f for f in freshness if not f.get("ok", True)]

    def result(name: str, rows: list, what: str) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            check_name=name,
            passed=not rows,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if not rows else f"{len(rows)} {what}; first: {rows[0]}",
            metadata={"offending_rows": len(rows)},
        )

    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "product_rows": n_products,
            "days_pulled": sum(len(d) for d in days_by_tenant.values()),
            "api_requests": sum(r.api_requests for r in reports),
            "rows_written_this_run": sum(r.rows_written for r in reports),
            "incomplete_slices": sum(len(r.incomplete) for r in reports),
            "errors": "; ".join(errors) or "none",
            "dashboard_preview": md,
            "product_lookups": sum(r.requested for r in lookups),
            "product_lookup_errors": "; ".join(e for r in lookups for e in r.errors[:1]) or "none",
            "product_match_rate": _match_rate_md(rates),
            "product_match_rates": dg.MetadataValue.json(
                {f"{r['tenant_id']}/{r['retailer']}": float(r["match_rate"] or 0) for r in rates}
            ),
        },
        check_results=[
            result(ROLLUPS, checks[ROLLUPS], "rollup gaps (ad vs higher levels)"),
            result(ROAS, checks[ROAS], "ROAS gaps (Meta vs value/spend)"),
            result(PRODUCTS, checks[PRODUCTS], "object-days with purchases but no converted products"),
            result(REPULL, checks[REPULL], "account totals differing from a fresh re-pull"),
            result(FRESHNESS, stale, "ad accounts missing yesterday after 10:00 local time"),
        ],
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
    deps=[shared_item_metrics, "execution_manifest"],
    automation_condition=dg.AutomationCondition.eager(),
    metadata={**table_definition_metadata(CPAS_DASHBOARD), "kobi/kind": "view"},
)
def cpas_dashboard(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The CPAS dashboard view: per day, tenant, retailer and campaign (with its catalog segment from the
    execution manifest) — spend, segment purchase value, add-to-cart and view-content counts and values, Meta's
    omni purchase ROAS and ROAS recomputed as value / spend (ratios are never summed)."""
    with warehouse.connection() as con:
        n = count(con, f"SELECT count(*) FROM ({CPAS_DASHBOARD.sql})")
        by_retailer = con.execute(
            f"SELECT tenant_id, retailer, round(sum(spend), 2), round(sum(purchase_value), 2), "
            f"round(sum(purchase_value) / nullif(sum(spend), 0), 2) FROM ({CPAS_DASHBOARD.sql}) GROUP BY ALL ORDER BY 1, 2"
        ).fetchall()
        warehouse.publish(con)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "roas_by_retailer": dg.MetadataValue.md(
                md_table(by_retailer, ["tenant", "retailer", "spend", "purchase value", "ROAS"])
                if by_retailer
                else "_no data yet_"
            ),
        }
    )
