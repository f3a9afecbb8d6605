"""The sandbox's Insights API over HTTP: Meta's shapes, rollups, filtering, the async flow, restatement, knobs."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
import requests

from kobi_cpas.meta import MetaGraphClient, MetaInvalidRequestError, MetaTooMuchDataError, encode_params
from meta_sandbox.admin import InsightsAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

ACT = "act_4000000000000001"
STATUSES = ["ACTIVE", "PAUSED", "DELETED", "ARCHIVED"]
WINDOWS = ["1d_click", "7d_click", "28d_click", "1d_view"]
SEGMENT_FIELDS = (
    "account_id,campaign_id,adset_id,ad_id,account_currency,spend,impressions,clicks,catalog_segment_value,"
    "catalog_segment_actions,catalog_segment_value_omni_purchase_roas,catalog_segment_value_website_purchase_roas,"
    "catalog_segment_value_mobile_purchase_roas"
)


def _today(sandbox: SandboxHandle) -> date:
    return sandbox.admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()


def _params(since: date, until: date, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "fields": SEGMENT_FIELDS,
        "time_range": {"since": since.isoformat(), "until": until.isoformat()},
        "time_increment": 1,
        "action_breakdowns": ["action_type"],
        "action_attribution_windows": WINDOWS,
        "filtering": [{"field": "ad.effective_status", "operator": "IN", "value": STATUSES}],
        "limit": 500,
    }
    base.update(extra)
    return base


def _rows(client: MetaGraphClient, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return list(client.paginate(path, params))


def _total(
    rows: list[dict[str, Any]], metric: str, action_type: str | None = None, key: str = "value"
) -> Decimal:
    total = Decimal(0)
    for row in rows:
        value = row.get(metric)
        if isinstance(value, list):
            total += sum(Decimal(e[key]) for e in value if e.get("action_type") == action_type and key in e)
        elif value is not None:
            total += Decimal(value)
    return total


def test_sync_insights_have_metas_shapes(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    today = _today(sandbox)
    day = today - timedelta(days=3)
    rows = _rows(meta_client, f"{ACT}/insights", _params(day, day, level="ad"))
    assert rows
    for row in rows:
        assert row["date_start"] == row["date_stop"] == day.isoformat()
        assert row["account_id"] == ACT.removeprefix("act_") and row["account_currency"] == "TRY"
        for name in ("spend", "impressions", "clicks"):
            assert isinstance(row[name], str)
            Decimal(row[name])
        for entry in row.get("catalog_segment_value", []):
            assert set(entry) <= {"action_type", "value", *WINDOWS}
            assert "7d_view" not in entry and "28d_view" not in entry
            assert all(isinstance(v, str) for v in entry.values())
            # windows nest like Meta's: 1d_click <= 7d_click <= 28d_click
            d1, d7, d28 = (Decimal(entry.get(w, "0")) for w in ("1d_click", "7d_click", "28d_click"))
            assert d1 <= d7 <= d28
        for entry in row.get("catalog_segment_value_omni_purchase_roas", []):
            value = _total([row], "catalog_segment_value", "omni_purchase")
            assert abs(Decimal(entry["value"]) - value / Decimal(row["spend"])) < Decimal("0.000001")
    # 7d_view asked for: no key comes back (Meta stopped those windows on 2026-01-12)
    rows = _rows(meta_client, f"{ACT}/insights", _params(day, day, action_attribution_windows=["7d_view"]))
    assert all("7d_view" not in e for r in rows for e in r.get("catalog_segment_actions", []))


def test_ad_level_sums_equal_every_rollup_and_deleted_ads_need_the_filter(
    meta_client: MetaGraphClient, sandbox: SandboxHandle
) -> None:
    today = _today(sandbox)
    since, until = today - timedelta(days=4), today - timedelta(days=2)
    by_level = {
        level: _rows(meta_client, f"{ACT}/insights", _params(since, until, level=level))
        for level in ("ad", "adset", "campaign", "account")
    }
    for metric, action in (("spend", None), ("catalog_segment_value", "omni_purchase")):
        totals = {level: _total(rows, metric, action) for level, rows in by_level.items()}
        assert len(set(totals.values())) == 1, (metric, totals)
    # Without the ad.effective_status filter, Meta leaves deleted and archived ads out of every rollup.
    unfiltered = _params(since, until, level="account")
    del unfiltered["filtering"]
    hidden = _rows(meta_client, f"{ACT}/insights", unfiltered)
    assert _total(hidden, "spend") < _total(by_level["account"], "spend")
    deleted = [
        a for a in sandbox.world.ads.values() if a.account_id == ACT and a.effective_status == "DELETED"
    ]
    assert deleted
    ad_ids = {r["ad_id"] for r in by_level["ad"]}
    assert deleted[0].id in ad_ids


def test_product_breakdown_rejected_at_account_level(
    meta_client: MetaGraphClient, sandbox: SandboxHandle
) -> None:
    today = _today(sandbox)
    day = today - timedelta(days=2)
    params = _params(
        day,
        day,
        fields="converted_product_value,converted_product_quantity",
        action_breakdowns=["action_type", "action_converted_product_id"],
    )
    for extra in ({}, {"level": "account"}):
        with pytest.raises(MetaInvalidRequestError) as err:
            meta_client.get(f"{ACT}/insights", {**params, **extra})
        assert "not supported on the ad account level" in str(err.value)
    campaign_rows = _rows(meta_client, f"{ACT}/insights", {**params, "level": "campaign"})
    entries = [e for r in campaign_rows for e in r.get("converted_product_quantity", [])]
    assert entries and all("action_converted_product_id" in e for e in entries)
    assert all("value" not in e for e in entries)  # windows requested: only window keys
    # product values add up to the segment's purchase value, per window
    seg = _rows(meta_client, f"{ACT}/insights", _params(day, day, level="campaign"))
    for w in ("1d_click", "7d_click"):
        prod_total = sum(
            (Decimal(e.get(w, "0")) for r in campaign_rows for e in r.get("converted_product_value", [])),
            Decimal(0),
        )
        assert prod_total == _total(seg, "catalog_segment_value", "omni_purchase", key=w)


def test_async_report_run_flow_and_early_reads(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    ins = InsightsAdmin(sandbox.admin)
    ins.script_jobs(ACT, {"outcome": "running_at_100", "polls": 2})
    today = _today(sandbox)
    params = _params(today - timedelta(days=3), today - timedelta(days=2), level="campaign")
    run_id = meta_client.post(f"{ACT}/insights", data=params)["report_run_id"]
    seen = []
    while True:
        status = meta_client.get(run_id)
        seen.append((status["async_status"], status["async_percent_completion"]))
        if status["async_status"] == "Job Completed":
            break
        if status["async_status"] == "Job Running" and status["async_percent_completion"] == 100:
            # Reading now is a client bug: the sandbox refuses and counts it.
            resp = requests.get(
                f"{sandbox.graph_url}/{run_id}/insights",
                headers={"Authorization": "Bearer EAAtest"},
                timeout=5,
            )
            assert resp.status_code == 400 and resp.json()["error"]["code"] == 2601
    assert seen == [("Job Running", 100), ("Job Running", 100), ("Job Completed", 100)]
    rows = _rows(meta_client, f"{run_id}/insights", {"limit": 3})
    sync_rows = _rows(meta_client, f"{ACT}/insights", params)
    assert rows == sync_rows
    (run,) = ins.report_runs()
    assert run["early_reads"] == 2 and run["polls"] == 3
    # Job Failed and Job Skipped stick and cannot be read
    ins.script_jobs(ACT, "failed", "skipped")
    for expected in ("Job Failed", "Job Skipped"):
        rid = meta_client.post(f"{ACT}/insights", data=params)["report_run_id"]
        assert meta_client.get(rid)["async_status"] == expected
        assert meta_client.get(rid)["async_status"] == expected
        with pytest.raises(MetaInvalidRequestError):
            meta_client.get(f"{rid}/insights")


def test_too_much_data_variants(
    make_meta_client: Callable[..., MetaGraphClient], sandbox: SandboxHandle
) -> None:
    client = make_meta_client(max_retries=3)
    ins = InsightsAdmin(sandbox.admin)
    today = _today(sandbox)
    params = _params(today - timedelta(days=3), today - timedelta(days=1), level="campaign")
    ins.drift(ACT, too_much_data={"max_days": 2, "variant": "alternate"})
    answers = []
    for _ in range(2):
        with pytest.raises(MetaTooMuchDataError) as err:
            client.post(f"{ACT}/insights", data=params)
        answers.append((err.value.http_status, err.value.code, err.value.error_subcode))
    assert answers == [(400, 100, 1487534), (500, 1, None)]
    assert client.stats.retries == 0  # never retried as is: only splitting helps
    ok = _params(today - timedelta(days=2), today - timedelta(days=1), level="campaign")
    assert client.post(f"{ACT}/insights", data=ok)["report_run_id"]
    # an id-only request is small: never refused
    ids_only = {**params, "fields": "campaign_id", "time_increment": "all_days"}
    assert len(_rows(client, f"{ACT}/insights", ids_only)) == 2


def test_restatement_keeps_old_days_frozen_and_moves_recent_ones(
    meta_client: MetaGraphClient, sandbox: SandboxHandle
) -> None:
    sandbox.admin.freeze_clock(True)
    today = _today(sandbox)
    old, recent = today - timedelta(days=40), today - timedelta(days=4)
    fields = "ad_id,spend,converted_product_quantity,catalog_segment_actions"
    extra = {
        "level": "ad",
        "fields": fields,
        "action_breakdowns": ["action_type", "action_converted_product_id"],
    }

    def snapshot(day: date) -> list[dict[str, Any]]:
        # recent: three days, so that some converted product surely drops out
        until = day + timedelta(days=2) if day == recent else day
        return _rows(meta_client, f"{ACT}/insights", _params(day, until, **extra))

    before_old, before_recent = snapshot(old), snapshot(recent)
    assert snapshot(recent) == before_recent  # same data version: same answer
    sandbox.admin.advance_clock(3600)  # next data version
    assert snapshot(old) == before_old
    after_recent = snapshot(recent)
    assert after_recent != before_recent

    def products(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            (r["ad_id"], e["action_converted_product_id"])
            for r in rows
            for e in r.get("converted_product_quantity", [])
        }

    assert products(before_recent) - products(after_recent)  # some converted products disappeared


def test_drift_knobs_and_request_log(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    ins = InsightsAdmin(sandbox.admin)
    today = _today(sandbox)
    day = today - timedelta(days=2)
    clean = {
        lvl: _rows(meta_client, f"{ACT}/insights", _params(day, day, level=lvl)) for lvl in ("ad", "campaign")
    }
    ins.drift(ACT, rollup_skew={"factor": 1.1, "levels": ["campaign"]})
    skewed = {
        lvl: _rows(meta_client, f"{ACT}/insights", _params(day, day, level=lvl)) for lvl in ("ad", "campaign")
    }
    assert skewed["ad"] == clean["ad"]
    assert _total(skewed["campaign"], "spend") != _total(skewed["ad"], "spend")
    logged = ins.requests()
    assert logged and all(e["kind"] == "insights" for e in logged)
    assert json.loads(logged[-1]["params"]["filtering"])[0]["field"] == "ad.effective_status"
    with pytest.raises(Exception, match="unknown drift keys"):
        ins.drift(ACT, bogus=1)
    ins.clear_drift()
    assert ins.describe()["drift"] == {}


def test_insights_calls_carry_the_insights_throttle_header(
    meta_client: MetaGraphClient, sandbox: SandboxHandle
) -> None:
    today = _today(sandbox)
    meta_client.get(f"{ACT}/insights", _params(today - timedelta(days=2), today - timedelta(days=2)))
    usage = meta_client.last_usage
    assert usage is not None and "acc_id_util_pct" in usage.insights


def test_seeding_extra_ads_adds_rows(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    ins = InsightsAdmin(sandbox.admin)
    today = _today(sandbox)
    day = today - timedelta(days=2)
    before = _rows(meta_client, f"{ACT}/insights", _params(day, day, level="ad"))
    assert ins.seed_ads(ACT, 7, ads_per_adset=3)["ads"] == 7
    after = _rows(meta_client, f"{ACT}/insights", _params(day, day, level="ad"))
    assert len(after) == len(before) + 7
    by_campaign: dict[str, int] = defaultdict(int)
    for row in after:
        by_campaign[row["campaign_id"]] += 1
    assert len(by_campaign) == 3  # 2 seeded campaigns + 1 bench campaign
    # encode_params is what the client sends: JSON lists for action params
    assert encode_params({"action_breakdowns": ["action_type"]})["action_breakdowns"] == '["action_type"]'


def test_report_runs_expire_after_30_days(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    today = _today(sandbox)
    day = today - timedelta(days=2)
    run_id = meta_client.post(f"{ACT}/insights", data=_params(day, day))["report_run_id"]
    assert meta_client.get(run_id)["id"] == run_id
    sandbox.admin.advance_clock(31 * 86400)
    with pytest.raises(MetaInvalidRequestError):
        meta_client.get(run_id)
    assert isinstance(sandbox.admin.now(), datetime)
