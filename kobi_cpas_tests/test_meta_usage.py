"""Usage headers parsing."""

from __future__ import annotations

import json

from kobi_cpas.meta import parse_usage


def test_parse_all_headers() -> None:
    headers = {
        "x-app-usage": json.dumps({"call_count": 12, "total_cputime": 3, "total_time": 40}),
        "X-Business-Use-Case-Usage": json.dumps(
            {
                "1000": [
                    {
                        "type": "catalog_management",
                        "call_count": 80,
                        "total_cputime": 5,
                        "total_time": 7,
                        "estimated_time_to_regain_access": 0,
                    }
                ],
                "2000": [{"type": "ads_insights", "call_count": 10, "estimated_time_to_regain_access": 3}],
            }
        ),
        "x-fb-ads-insights-throttle": json.dumps({"app_id_util_pct": 91.5, "acc_id_util_pct": 2}),
        "X-Ad-Account-Usage": json.dumps({"acc_id_util_pct": 9}),
    }
    usage = parse_usage(headers)
    assert usage is not None
    assert usage.app["total_time"] == 40
    assert usage.max_pct == 91.5
    assert usage.regain_seconds == 180.0
    assert "insights.app_id_util_pct" in usage.describe()
    assert usage.percentages()["business.1000.catalog_management.call_count"] == 80
    assert usage.as_dict()["max_pct"] == 91.5


def test_no_headers_and_garbage() -> None:
    assert parse_usage({"Content-Type": "application/json"}) is None
    usage = parse_usage(
        {"X-App-Usage": "{not json", "X-Business-Use-Case-Usage": json.dumps({"1": {"call_count": 5}})}
    )
    assert usage is not None
    assert usage.app == {}
    assert usage.max_pct == 5
    assert usage.regain_seconds is None
