"""Request plans and the metric catalog (pure, no sandbox)."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import duckdb
import pytest

from kobi_cpas.insights.metrics import (
    METRIC_CATALOG,
    ROAS_METRICS,
    metrics_for_request_family,
    write_metric_catalog,
)
from kobi_cpas.insights.pull import restatement_window, today_in_timezone
from kobi_cpas.insights.requests import (
    DEFAULT_WINDOWS,
    InsightsRequest,
    build_request,
    contiguous_ranges,
    plan_requests,
)
from kobi_cpas.meta import encode_params

D = date(2026, 3, 1)


def test_plan_one_request_per_level_family_and_day_run() -> None:
    days = [D, D + timedelta(days=1), D + timedelta(days=2), D + timedelta(days=5)]
    plan = plan_requests("4000000000000001", days)
    # 2 runs of days x (4 segment levels + 3 product levels: never product at account level)
    assert len(plan) == 2 * 7
    assert not [r for r in plan if r.family == "product" and r.level == "account"]
    assert {(r.since, r.until) for r in plan} == {(D, D + timedelta(days=2)), (D + timedelta(days=5),) * 2}
    for r in plan:
        assert r.ad_account_id == r.object_id == "act_4000000000000001"
        params = encode_params(r.params())
        assert params["time_increment"] == "1"
        assert "action_target_id" not in params["action_breakdowns"]
        assert "action_destination" not in params["action_breakdowns"]
        assert '"DELETED"' in params["filtering"] and '"ARCHIVED"' in params["filtering"]
        assert r.windows == DEFAULT_WINDOWS
        if r.family == "segment":
            assert r.action_breakdowns == ("action_type",)
            assert not any(f.startswith("converted_product") for f in r.fields)
            assert "catalog_segment_value" in r.fields and "spend" in r.fields
        else:
            assert "action_converted_product_id" in r.action_breakdowns
            assert set(r.metric_fields) == {"converted_product_value", "converted_product_quantity"}


def test_plan_campaign_nodes_and_validation() -> None:
    plan = plan_requests(
        "act_1", [D], levels=["campaign", "ad"], product_scope="campaign_nodes", campaign_ids=["11", "12"]
    )
    products = [r for r in plan if r.family == "product"]
    assert sorted((r.object_id, r.level) for r in products) == [
        ("11", "ad"),
        ("11", "campaign"),
        ("12", "ad"),
        ("12", "campaign"),
    ]
    with pytest.raises(ValueError, match="campaign_ids"):
        plan_requests("act_1", [D], product_scope="campaign_nodes")
    with pytest.raises(ValueError, match="level=account"):
        build_request("act_1", "account", "product", D, D)
    seg = build_request("act_1", "ad", "segment", D, D, windows=["1d_click", "7d_view", "28d_view"])
    assert seg.windows == ("1d_click",)  # dead windows never asked for
    with pytest.raises(ValueError, match="default action breakdowns"):
        dataclasses.replace(seg, action_breakdowns=("action_type", "action_target_id"))
    with pytest.raises(ValueError, match=r"ad\.effective_status"):
        dataclasses.replace(seg, filtering=())


def test_children_keep_every_parent_parameter() -> None:
    parent = build_request(
        "act_1", "ad", "segment", D, D + timedelta(days=3), windows=["1d_click", "28d_click"]
    )
    kids: list[InsightsRequest] = [
        parent.with_days(D, D + timedelta(days=1)),
        parent.with_id_filter("campaign.id", ["1", "2"]),
        parent.with_metric_fields(["spend", "clicks"]),
    ]
    for kid in kids:
        p, k = parent.params(), kid.params()
        for key in ("level", "time_increment", "action_breakdowns", "action_attribution_windows"):
            assert k[key] == p[key]
        assert k["filtering"][0] == p["filtering"][0]  # the status filter stays
    assert kids[1].id_filters() == {"campaign.id": ("1", "2")}
    assert kids[2].fields == (*parent.attribute_fields, "spend", "clicks")
    with pytest.raises(ValueError):
        parent.with_days(D - timedelta(days=1), D)


def test_metric_catalog_labels() -> None:
    assert all(METRIC_CATALOG[m].unit == "ratio" and not METRIC_CATALOG[m].additive for m in ROAS_METRICS)
    for name in ("catalog_segment_value", "converted_product_quantity"):
        assert METRIC_CATALOG[name].is_estimated
        assert "estimated metrics" in METRIC_CATALOG[name].source
    assert not METRIC_CATALOG["spend"].is_estimated
    assert {m.metric for m in metrics_for_request_family("product")} == {
        "converted_product_value",
        "converted_product_quantity",
    }
    con = duckdb.connect()
    assert write_metric_catalog(con) == len(METRIC_CATALOG)
    assert write_metric_catalog(con) == len(METRIC_CATALOG)  # replaces, no duplicates
    assert con.execute("SELECT count(*) FROM insights_metric_catalog WHERE is_estimated").fetchone()[0] == 7


def test_days_helpers() -> None:
    assert contiguous_ranges([D + timedelta(days=2), D, D + timedelta(days=1), D]) == [
        (D, D + timedelta(days=2))
    ]
    window = restatement_window(D, 28)
    assert len(window) == 28 and window[-1] == D - timedelta(days=1) and window[0] == D - timedelta(days=28)
    assert restatement_window(D, 2, include_today=True) == [D - timedelta(days=1), D]
    from datetime import UTC, datetime

    late = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    assert today_in_timezone("Europe/Istanbul", late) == date(2026, 3, 2)
    assert today_in_timezone("America/Los_Angeles", late) == date(2026, 3, 1)
