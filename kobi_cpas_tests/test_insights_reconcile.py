"""Reconciliation checks pass on clean pulls and fail, with the gap, when the sandbox drifts; ROAS recomputation;
freshness; and the benchmark's figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from kobi_cpas.devenv.insights_bench import run_insights_benchmark
from kobi_cpas.insights import reconcile as rc
from kobi_cpas.insights.pull import PullReport, pull_account_days
from kobi_cpas.meta import MetaGraphClient
from meta_sandbox.admin import InsightsAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

ACT = "act_4000000000000001"
TENANT, RETAILER = "anatolia_home", "trendyol"


def _today(sandbox: SandboxHandle) -> date:
    return sandbox.admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()


def _pull(client: MetaGraphClient, con: Any, days: list[date], **kw: Any) -> PullReport:
    return pull_account_days(
        client,
        con,
        tenant_id=TENANT,
        retailer=RETAILER,
        ad_account_id=ACT,
        days=days,
        sleep=lambda s: None,
        poll_interval=0.01,
        **kw,
    )


@pytest.fixture
def ins(sandbox: SandboxHandle) -> InsightsAdmin:
    sandbox.admin.freeze_clock(True)
    return InsightsAdmin(sandbox.admin)


@pytest.fixture
def days(sandbox: SandboxHandle) -> list[date]:
    today = _today(sandbox)
    return [today - timedelta(days=3), today - timedelta(days=2)]


def test_clean_pull_passes_every_check(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin, days: list[date]
) -> None:
    con = duckdb.connect()
    _pull(meta_client, con, days)
    assert rc.check_rollups(con) == []
    assert rc.check_roas(con) == []
    assert rc.check_product_presence(con) == []
    rc.record_repull_totals(
        meta_client, con, tenant_id=TENANT, retailer=RETAILER, ad_account_id=ACT, days=days
    )
    assert con.execute("SELECT count(*) FROM raw.insights_repull_totals").fetchone()[0] > 0
    assert rc.check_repull(con) == []


def test_rollup_check_fails_when_campaign_numbers_drift(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin, days: list[date]
) -> None:
    ins.drift(ACT, rollup_skew={"factor": 1.05, "levels": ["campaign"], "days": [days[1].isoformat()]})
    con = duckdb.connect()
    _pull(meta_client, con, days)
    gaps = rc.check_rollups(con)
    assert gaps
    assert {g["parent_level"] for g in gaps} == {"campaign"} and {g["date"] for g in gaps} == {days[1]}
    spend = [g for g in gaps if g["metric"] == "spend"]
    assert len(spend) == 2  # both campaigns
    for g in spend:
        assert g["gap"] == pytest.approx(g["parent_value"] - g["ad_level_sum"])
        assert g["rel_gap"] == pytest.approx(0.05 / 1.05, abs=1e-3)
    assert rc.check_roas(con) == []  # Meta's ROAS still matches its own value / spend


def test_repull_check_fails_when_the_api_reports_other_totals(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin, days: list[date]
) -> None:
    con = duckdb.connect()
    _pull(meta_client, con, days, levels=["account"], families=["segment"])
    ins.drift(ACT, total_skew={"factor": 1.1})
    rc.record_repull_totals(
        meta_client, con, tenant_id=TENANT, retailer=RETAILER, ad_account_id=ACT, days=days
    )
    gaps = rc.check_repull(con)
    spend = [g for g in gaps if g["metric"] == "spend"]
    assert {g["date"] for g in spend} == set(days)
    assert all(g["rel_gap"] == pytest.approx(0.1, abs=1e-3) for g in spend)
    assert rc.check_repull(con, rel_tol=0.2) == []  # within a looser platform-vs-API tolerance


def test_roas_check_and_recomputation(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin, days: list[date]
) -> None:
    con = duckdb.connect()
    _pull(meta_client, con, days, families=["segment"])
    # campaign ROAS recomputed from ad-level sums (sum value / sum spend) equals Meta's campaign ROAS
    recomputed = rc.recompute_roas(con, level="campaign", from_level="ad")
    assert recomputed
    for row in recomputed:
        assert row["meta_roas"] == pytest.approx(row["recomputed_roas"], rel=1e-5)
    # summing ratios would be wrong: the ad-level ROAS sum differs from the recomputed value
    summed = con.execute(
        "SELECT sum(value) FROM shared_item_metrics WHERE level = 'ad' AND "
        "metric = 'catalog_segment_value_omni_purchase_roas' AND attribution_window = 'default' AND date = ?",
        [days[0]],
    ).fetchone()[0]
    account = [r for r in rc.recompute_roas(con, level="account") if r["date"] == days[0]]
    default = next(r for r in account if r["attribution_window"] == "default")
    assert float(summed) > 2 * default["recomputed_roas"]
    ins.drift(ACT, roas_skew={"factor": 1.2})
    skewed = duckdb.connect()
    _pull(meta_client, skewed, days, levels=["campaign"], families=["segment"])
    gaps = rc.check_roas(skewed)
    assert gaps and {g["problem"] for g in gaps} == {"gap"}
    assert all(g["meta_roas"] == pytest.approx(1.2 * g["recomputed_roas"], rel=1e-4) for g in gaps)


def test_product_presence_fails_when_products_are_missing(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin, days: list[date]
) -> None:
    ins.drift(ACT, omit_converted_products=True)
    con = duckdb.connect()
    _pull(meta_client, con, days, levels=["campaign"])
    missing = rc.check_product_presence(con)
    assert missing and {m["level"] for m in missing} == {"campaign"}
    assert all(m["purchases"] > 0 and m["quantity"] == 0 for m in missing)


def test_freshness(meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin) -> None:
    tz = "Europe/Istanbul"
    today = _today(sandbox)
    con = duckdb.connect()
    _pull(meta_client, con, [today - timedelta(days=2)], levels=["account"], families=["segment"])
    local_morning = datetime.combine(today, datetime.min.time(), ZoneInfo(tz)).replace(hour=7)
    early = rc.check_freshness(con, ad_account_id=ACT, timezone_name=tz, now=local_morning.astimezone(UTC))
    assert early["ok"] and not early["due"] and not early["has_yesterday"]
    late = rc.check_freshness(
        con, ad_account_id=ACT, timezone_name=tz, now=local_morning + timedelta(hours=4)
    )
    assert late["due"] and not late["ok"] and late["latest_date"] == today - timedelta(days=2)
    _pull(meta_client, con, [today - timedelta(days=1)], levels=["account"], families=["segment"])
    assert rc.check_freshness(
        con, ad_account_id=ACT, timezone_name=tz, now=local_morning + timedelta(hours=4)
    )["ok"]


@pytest.mark.bench
def test_benchmark_reports_requests_against_the_minimum() -> None:
    result = run_insights_benchmark(n_ads=30, days=2, page_limit=50)
    assert result["complete"] and result["ads"] == 40
    assert result["minimum_breakdown"]["jobs"] == 7
    assert result["api_requests_issued"] >= result["minimum_requests"] > 0
    assert result["sandbox_requests_logged"] == result["http_requests"]
    assert result["rows_loaded"] > 0 and result["rows_per_second"] > 0
    assert result["reparse_rows"] == result["rows_loaded"]
    split = run_insights_benchmark(n_ads=30, days=2, page_limit=50, too_much_data_max_days=1)
    assert split["complete"] and split["rows_loaded"] == result["rows_loaded"]
    assert split["api_requests_issued"] > result["api_requests_issued"]
    assert split["job_stats"]["too_much_data"] > 0
