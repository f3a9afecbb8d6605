"""Full pulls into DuckDB against the sandbox: keys, replace semantics, restatement, paging, idempotency, secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from kobi_cpas.insights.parse import SliceKey, reparse_days, replace_slice
from kobi_cpas.insights.pull import (
    InsightsPullError,
    PullReport,
    account_timezone,
    pull_account_days,
)
from kobi_cpas.insights.schema import SHARED_ITEM_METRICS, SHARED_ITEM_PRODUCT_METRICS
from kobi_cpas.meta import MetaAuthError, MetaGraphClient
from kobi_cpas_tests.sandbox_fixtures import SANDBOX_TOKEN
from meta_sandbox.admin import InsightsAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

ACT = "act_4000000000000001"
TENANT, RETAILER = "anatolia_home", "trendyol"
FACT_KEYS = [
    c.name for c in SHARED_ITEM_METRICS.columns if not c.nullable and c.name not in ("pull_id", "pulled_at")
]
PRODUCT_KEYS = [
    c.name
    for c in SHARED_ITEM_PRODUCT_METRICS.columns
    if not c.nullable and c.name not in ("pull_id", "pulled_at")
]


def _today(sandbox: SandboxHandle) -> date:
    return sandbox.admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()


def _pull(client: MetaGraphClient, con: Any, days: list[date], **kw: Any) -> PullReport:
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("poll_interval", 0.01)
    kw.setdefault("page_limit", 50)
    return pull_account_days(
        client, con, tenant_id=TENANT, retailer=RETAILER, ad_account_id=ACT, days=days, **kw
    )


def _facts(con: Any, table: str = "shared_item_metrics", where: str = "TRUE") -> list[tuple[Any, ...]]:
    cols = FACT_KEYS if table == "shared_item_metrics" else PRODUCT_KEYS
    return con.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {where} ORDER BY ALL").fetchall()


@pytest.fixture
def frozen(sandbox: SandboxHandle) -> InsightsAdmin:
    sandbox.admin.freeze_clock(True)
    return InsightsAdmin(sandbox.admin)


def test_pull_loads_every_level_with_no_null_keys_and_unique_keys(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    assert account_timezone(meta_client, ACT) == "Europe/Istanbul"
    today = _today(sandbox)
    days = [today - timedelta(days=3), today - timedelta(days=2)]
    con = duckdb.connect()
    report = _pull(meta_client, con, days)
    assert report.complete and len(report.slices) == len(days) * 7
    levels = con.execute("SELECT DISTINCT level FROM shared_item_metrics ORDER BY 1").fetchall()
    assert [lvl for (lvl,) in levels] == ["account", "ad", "adset", "campaign"]
    plevels = con.execute("SELECT DISTINCT level FROM shared_item_product_metrics ORDER BY 1").fetchall()
    assert [lvl for (lvl,) in plevels] == ["ad", "adset", "campaign"]  # never account
    for spec in (SHARED_ITEM_METRICS, SHARED_ITEM_PRODUCT_METRICS):
        nulls = " OR ".join(f"{c.name} IS NULL" for c in spec.columns if not c.nullable)
        assert con.execute(f"SELECT count(*) FROM {spec.name} WHERE {nulls}").fetchone()[0] == 0
        keys = ", ".join(spec.key)
        dupes = con.execute(
            f"SELECT count(*) FROM (SELECT {keys} FROM {spec.name} GROUP BY ALL HAVING count(*) > 1)"
        )
        assert dupes.fetchone()[0] == 0
    sentinel = con.execute(
        "SELECT DISTINCT campaign_id, adset_id, ad_id, action_type FROM shared_item_metrics "
        "WHERE level = 'account' AND metric = 'spend'"
    ).fetchall()
    assert sentinel == [("n/a", "n/a", "n/a", "n/a")]
    windows = {
        w for (w,) in con.execute("SELECT DISTINCT attribution_window FROM shared_item_metrics").fetchall()
    }
    assert windows == {"default", "1d_click", "7d_click", "28d_click", "1d_view"}
    estimated = dict(con.execute("SELECT DISTINCT metric, is_estimated FROM shared_item_metrics").fetchall())
    assert estimated["spend"] is False and estimated["catalog_segment_value"] is True
    # deleted and archived ads are in (filtering on ad.effective_status)
    deleted = [
        a.id for a in sandbox.world.ads.values() if a.account_id == ACT and a.effective_status != "ACTIVE"
    ]
    stored = {
        a
        for (a,) in con.execute(
            "SELECT DISTINCT ad_id FROM shared_item_metrics WHERE level = 'ad'"
        ).fetchall()
    }
    assert set(deleted) <= stored


def test_account_level_product_breakdown_is_never_requested(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    today = _today(sandbox)
    _pull(meta_client, duckdb.connect(), [today - timedelta(days=2)])
    calls = frozen.requests()
    insights_calls = [c for c in calls if c["kind"] == "insights"]
    assert insights_calls
    for call in insights_calls:
        params = call["params"]
        breakdowns = json.loads(params.get("action_breakdowns", "[]"))
        level = params.get("level") or ("account" if call["object_id"].startswith("act_") else "")
        if "action_converted_product_id" in breakdowns:
            assert level != "account"
        assert not {"action_target_id", "action_destination"} & set(breakdowns)
        assert "ad.effective_status" in params.get("filtering", "")
    # and the server's own request log agrees: no 100 error, no product breakdown at account level
    logged = sandbox.admin.requests()
    assert all(e["error_code"] is None for e in logged)
    assert not [
        e
        for e in logged
        if "action_converted_product_id" in e["query"].get("action_breakdowns", "")
        and e["query"].get("level", "account") == "account"
    ]


def test_rerun_is_idempotent_and_reparse_rebuilds_from_raw(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    today = _today(sandbox)
    days = [today - timedelta(days=4), today - timedelta(days=3)]
    con = duckdb.connect()
    _pull(meta_client, con, days)
    first, first_products = _facts(con), _facts(con, "shared_item_product_metrics")
    second_report = _pull(meta_client, con, days)
    assert _facts(con) == first and _facts(con, "shared_item_product_metrics") == first_products
    assert {p for (p,) in con.execute("SELECT DISTINCT pull_id FROM shared_item_metrics").fetchall()} == {
        second_report.pull_id
    }
    # wipe one day at ad level and rebuild it from the raw pages alone
    con.execute("DELETE FROM shared_item_metrics WHERE level = 'ad' AND date = ?", [days[0]])
    rebuilt = reparse_days(
        con, tenant_id=TENANT, ad_account_id=ACT, level="ad", family="segment", days=[days[0]]
    )
    assert rebuilt[days[0]] > 0 and _facts(con) == first
    raw_pages = con.execute("SELECT count(*) FROM raw.insights_pages").fetchone()[0]
    assert raw_pages >= 2 * 7  # append-only: both pulls' pages are kept


def test_restated_day_loses_vanished_products(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    today = _today(sandbox)
    days = [today - timedelta(days=5), today - timedelta(days=4), today - timedelta(days=3)]
    con = duckdb.connect()
    sql = (
        "SELECT DISTINCT date, level, object_id, action_converted_product_id FROM shared_item_product_metrics"
    )
    _pull(meta_client, con, days, levels=["ad"], families=["product"])
    before = set(con.execute(sql).fetchall())
    sandbox.admin.advance_clock(3600)  # the next data version: recent days are restated
    _pull(meta_client, con, days, levels=["ad"], families=["product"])
    after = set(con.execute(sql).fetchall())
    vanished = before - after
    assert vanished and after - before  # products came and went
    # exactly what Meta answers now, nothing stale
    sync = list(
        meta_client.paginate(
            f"{ACT}/insights",
            {
                "level": "ad",
                "fields": "ad_id,converted_product_quantity",
                "time_range": {"since": days[0].isoformat(), "until": days[-1].isoformat()},
                "time_increment": 1,
                "action_breakdowns": ["action_type", "action_converted_product_id"],
                "action_attribution_windows": ["1d_click", "7d_click", "28d_click", "1d_view"],
                "filtering": [
                    {
                        "field": "ad.effective_status",
                        "operator": "IN",
                        "value": ["ACTIVE", "DELETED", "ARCHIVED"],
                    }
                ],
                "limit": 500,
            },
        )
    )
    expected = {
        (date.fromisoformat(r["date_start"]), "ad", r["ad_id"], e["action_converted_product_id"])
        for r in sync
        for e in r.get("converted_product_quantity", [])
    }
    assert after == expected


def test_empty_page_with_next_link_loses_nothing(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    today = _today(sandbox)
    days = [today - timedelta(days=3)]
    clean = duckdb.connect()
    _pull(meta_client, clean, days, levels=["ad"], page_limit=4)
    sandbox.admin.add_fault("empty_page", route="report_run.insights", times=2)
    faulty = duckdb.connect()
    report = _pull(meta_client, faulty, days, levels=["ad"], page_limit=4)
    assert [e["fault"] for e in sandbox.admin.requests() if e["fault"]] == ["empty_page", "empty_page"]
    assert report.complete
    assert _facts(faulty) == _facts(clean) and _facts(faulty, "shared_item_product_metrics") == _facts(
        clean, "shared_item_product_metrics"
    )


def test_half_finished_pull_never_replaces_a_complete_day(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    today = _today(sandbox)
    d1, d2 = today - timedelta(days=3), today - timedelta(days=2)
    con = duckdb.connect()
    _pull(meta_client, con, [d1, d2], levels=["account"])
    old_d1 = _facts(con, where=f"date = DATE '{d1}'")
    old_d2 = _facts(con, where=f"date = DATE '{d2}'")
    # Now the API reports other numbers, the 2-day job fails twice, day 1 succeeds, and day 2 fails all the way.
    frozen.drift(ACT, total_skew=1.5)
    frozen.script_jobs(ACT, "failed", "failed", "completed", *["failed"] * 40)
    with pytest.raises(InsightsPullError) as err:
        _pull(meta_client, con, [d1, d2], levels=["account"], families=["segment"])
    report = err.value.report
    assert {(s.date, s.status) for s in report.slices} == {(d1, "replaced"), (d2, "incomplete")}
    assert _facts(con, where=f"date = DATE '{d1}'") != old_d1  # replaced with the new numbers
    assert _facts(con, where=f"date = DATE '{d2}'") == old_d2  # untouched
    statuses = con.execute(
        "SELECT date, status FROM raw.insights_slices WHERE pull_id = ? ORDER BY 1", [report.pull_id]
    ).fetchall()
    assert statuses == [(d1, "replaced"), (d2, "incomplete")]
    # replace_slice refuses a slice the pull did not complete
    key = SliceKey(TENANT, RETAILER, ACT, "account", "segment", d2)
    assert replace_slice(con, key, pull_id=report.pull_id) is None
    assert _facts(con, where=f"date = DATE '{d2}'") == old_d2


def test_auth_error_fails_fast_and_changes_nothing(
    make_meta_client: Callable[..., MetaGraphClient], sandbox: SandboxHandle, frozen: InsightsAdmin
) -> None:
    client = make_meta_client()
    today = _today(sandbox)
    con = duckdb.connect()
    _pull(client, con, [today - timedelta(days=2)], levels=["campaign"])
    before = _facts(con)
    sandbox.admin.add_fault("auth_error", route="ad_account.insights.async", times=1)
    with pytest.raises(MetaAuthError):
        _pull(client, con, [today - timedelta(days=2)], levels=["campaign"])
    assert _facts(con) == before
    status = con.execute("SELECT status FROM raw.insights_pulls ORDER BY started_at DESC LIMIT 1").fetchone()[
        0
    ]
    assert status == "failed"


def test_token_is_never_stored(
    make_meta_client: Callable[..., MetaGraphClient],
    sandbox: SandboxHandle,
    frozen: InsightsAdmin,
    tmp_path: Path,
) -> None:
    client = make_meta_client(max_retries=0)
    today = _today(sandbox)
    path = tmp_path / "insights.duckdb"
    con = duckdb.connect(str(path))
    frozen.script_jobs(ACT, "failed", "failed")  # errors and attempts are recorded too
    sandbox.admin.add_fault("http_500", route="report_run.insights", times=1)
    with pytest.raises(InsightsPullError):
        _pull(client, con, [today - timedelta(days=3), today - timedelta(days=2)], levels=["campaign"])
    _pull(client, con, [today - timedelta(days=2)], levels=["ad"])
    con.close()
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert len(blobs) > 10_000
    assert SANDBOX_TOKEN.encode() not in blobs
    assert b"access_token" not in blobs
