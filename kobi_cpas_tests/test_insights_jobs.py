"""The async report job manager against the sandbox: polling, Job Failed / Skipped, too much data, splits; and
the daily schedule, which takes each account's time zone from meta_ad_accounts (written by the pull)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from kobi_cpas.insights.accounts import META_AD_ACCOUNTS
from kobi_cpas.insights.jobs import (
    COMPLETE,
    FAILED,
    SPLIT,
    InsightsWaitBudgetExceeded,
    Piece,
    ReportJobManager,
)
from kobi_cpas.insights.requests import InsightsRequest, build_request
from kobi_cpas.meta import DEFAULT_API_VERSION, MetaAuthError, MetaGraphClient
from kobi_cpas.resources import WarehouseResource
from kobi_cpas.warehouse.warehouse import replace_rows
from kobi_cpas_tests.dagster_fixtures import KobiEnv, tick_schedule
from meta_sandbox.admin import InsightsAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

ACT = "act_4000000000000001"


def _today(sandbox: SandboxHandle) -> date:
    return sandbox.admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()


class Sink:
    def __init__(self) -> None:
        self.pages: list[tuple[str, int, list[dict[str, Any]]]] = []

    def __call__(self, piece: Piece, page_no: int, page: dict[str, Any]) -> None:
        assert set(page) == {"data"}  # paging links (which carry tokens on Meta) are never handed on
        self.pages.append((piece.piece_id, page_no, page["data"]))

    def rows(self) -> list[dict[str, Any]]:
        return [r for _pid, _no, data in self.pages for r in data]


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return row["date_start"], row.get("ad_id") or row.get("adset_id") or row.get("campaign_id") or "account"


def _merged(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of split pieces merged per (day, object): field splits give partial rows of the same object."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        out.setdefault(_key(row), {}).update(row)
    return out


def _sync(client: MetaGraphClient, req: InsightsRequest) -> list[dict[str, Any]]:
    return list(client.paginate(req.path, {**req.params(), "limit": 500}))


def _manager(client: MetaGraphClient, **kw: Any) -> ReportJobManager:
    sleeps: list[float] = []
    kw.setdefault("poll_interval", 1.0)
    kw.setdefault("page_limit", 7)
    mgr = ReportJobManager(client, sleep=sleeps.append, **kw)
    mgr.sleeps = sleeps  # type: ignore[attr-defined]
    return mgr


def _events(mgr: ReportJobManager) -> list[str]:
    return [e["event"] for e in mgr.attempt_log]


@pytest.fixture
def ins(sandbox: SandboxHandle) -> InsightsAdmin:
    sandbox.admin.freeze_clock(True)
    return InsightsAdmin(sandbox.admin)


def test_happy_path_polls_until_completed_and_reads_every_page(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    today = _today(sandbox)
    req = build_request(ACT, "ad", "segment", today - timedelta(days=3), today - timedelta(days=2))
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(req, sink)
    assert root.status == COMPLETE and root.attempts == 1
    assert _events(mgr)[:3] == ["submit", "poll", "poll"]  # default: running, then completed
    assert len(sink.pages) > 2  # page_limit=7 over ~20 rows
    assert sink.rows() == _sync(meta_client, req)
    assert mgr.stats.api_requests == mgr.stats.submits + mgr.stats.polls + mgr.stats.pages
    assert mgr.sleeps == [1.0]  # type: ignore[attr-defined]


def test_job_running_at_100_percent_is_not_read(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    ins.script_jobs(ACT, {"outcome": "running_at_100", "polls": 3})
    today = _today(sandbox)
    req = build_request(ACT, "campaign", "segment", today - timedelta(days=2), today - timedelta(days=2))
    mgr, sink = _manager(meta_client), Sink()
    assert mgr.run(req, sink).status == COMPLETE
    polls = [(e["async_status"], e["percent"]) for e in mgr.attempt_log if e["event"] == "poll"]
    assert polls == [("Job Running", 100)] * 3 + [("Job Completed", 100)]
    (run,) = ins.report_runs()
    assert run["early_reads"] == 0
    assert sink.rows() == _sync(meta_client, req)
    reads = [e for e in sandbox.admin.requests() if e["route"] == "report_run.insights"]
    polls_logged = [e for e in sandbox.admin.requests() if e["route"] == "report_run.get"]
    assert min(e["seq"] for e in reads) > max(e["seq"] for e in polls_logged)


def test_job_failed_is_retried_once_then_split_by_days(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    ins.script_jobs(ACT, "failed", "failed")
    today = _today(sandbox)
    req = build_request(ACT, "adset", "segment", today - timedelta(days=4), today - timedelta(days=2))
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(req, sink)
    assert root.status == SPLIT and root.split_by == "days" and root.attempts == 2
    assert _events(mgr)[:6] == ["submit", "poll", "retry", "submit", "poll", "split_days"]
    assert [(c.request.since, c.request.until) for c in root.children] == [
        (req.since, req.since),
        (req.since + timedelta(days=1), req.until),
    ]
    for child in root.children:
        p, c = req.params(), child.request.params()
        assert {k: v for k, v in c.items() if k != "time_range"} == {
            k: v for k, v in p.items() if k != "time_range"
        }
        assert child.status == COMPLETE
    assert _merged(sink.rows()) == _merged(_sync(meta_client, req))
    assert mgr.stats.failed_jobs == 2 and mgr.stats.splits == 1


def test_one_day_failure_splits_by_ids_then_fields(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    today = _today(sandbox)
    day = today - timedelta(days=2)
    req = build_request(ACT, "ad", "segment", day, day)
    ins.script_jobs(ACT, "failed", "failed")
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(req, sink)
    assert root.split_by == "ids"
    assert [c.request.id_filters().keys() for c in root.children] == [{"campaign.id": ()}.keys()] * 2
    assert "discover_ids" in _events(mgr)
    assert _merged(sink.rows()) == _merged(_sync(meta_client, req))
    # account level cannot be split by ids: fields instead
    acc = build_request(ACT, "account", "segment", day, day)
    ins.script_jobs(ACT, "failed", "failed")
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(acc, sink)
    assert root.split_by == "fields" and all(c.status == COMPLETE for c in root.children)
    assert _merged(sink.rows()) == _merged(_sync(meta_client, acc))


def test_job_skipped_is_resubmitted(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    ins.script_jobs(ACT, "skipped", "skipped")
    today = _today(sandbox)
    req = build_request(ACT, "campaign", "product", today - timedelta(days=3), today - timedelta(days=2))
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(req, sink)
    assert root.status == COMPLETE and root.attempts == 3 and not root.children
    assert mgr.stats.skipped_jobs == 2 and _events(mgr).count("resubmit") == 2
    assert sink.rows() == _sync(meta_client, req)


@pytest.mark.parametrize("variant", ["subcode", "http_500"])
def test_too_much_data_splits_days_then_ids(
    make_meta_client: Callable[..., MetaGraphClient], sandbox: SandboxHandle, ins: InsightsAdmin, variant: str
) -> None:
    client = make_meta_client()
    today = _today(sandbox)
    ins.drift(ACT, too_much_data={"max_days": 1, "max_ids": 3, "variant": variant})
    req = build_request(ACT, "ad", "segment", today - timedelta(days=4), today - timedelta(days=2))
    mgr, sink = _manager(client), Sink()
    root = mgr.run(req, sink)
    leaves = root.leaves()
    assert all(leaf.status == COMPLETE for leaf in leaves)
    assert all(leaf.request.n_days == 1 for leaf in leaves)
    assert all(len(next(iter(leaf.request.id_filters().values()))) <= 3 for leaf in leaves)
    assert {p.split_by for p in mgr.pieces if p.status == SPLIT} == {"days", "ids"}
    assert mgr.stats.too_much_data > 0 and client.stats.retries == 0
    ins.clear_drift()
    assert _merged(sink.rows()) == _merged(_sync(client, req))


def test_too_much_data_splits_fields_and_gives_up_when_it_cannot(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    today = _today(sandbox)
    day = today - timedelta(days=2)
    ins.drift(ACT, too_much_data={"max_fields": 3})
    req = build_request(ACT, "account", "segment", day, day)
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(req, sink)
    assert all(leaf.status == COMPLETE and len(leaf.request.metric_fields) <= 3 for leaf in root.leaves())
    ins.drift(ACT, too_much_data={"max_fields": 0})
    mgr, sink = _manager(meta_client), Sink()
    root = mgr.run(req, sink)
    assert {leaf.status for leaf in root.leaves()} == {FAILED}
    assert "cannot split" in (root.leaves()[0].error or "")
    assert sink.pages == []


def test_slow_jobs_time_out_and_the_total_wait_is_bounded(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    today = _today(sandbox)
    req = build_request(ACT, "campaign", "segment", today - timedelta(days=3), today - timedelta(days=2))
    ins.script_jobs(ACT, {"outcome": "slow", "polls": 30}, {"outcome": "slow", "polls": 30})
    mgr, sink = _manager(meta_client, poll_interval=1.0, poll_backoff=1.0, max_job_wait=5), Sink()
    root = mgr.run(req, sink)
    assert mgr.stats.timed_out_jobs == 2 and root.split_by == "days"
    assert all(c.status == COMPLETE for c in root.children)
    ins.script_jobs(ACT, {"outcome": "slow", "polls": 30})
    mgr = _manager(meta_client, poll_interval=1.0, poll_backoff=1.0, max_total_wait=3)
    with pytest.raises(InsightsWaitBudgetExceeded, match="max_total_wait"):
        mgr.run(req, Sink())
    assert sum(mgr.sleeps) <= 3  # type: ignore[attr-defined]


def test_auth_errors_fail_fast(
    make_meta_client: Callable[..., MetaGraphClient], sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    client = make_meta_client()
    sandbox.admin.add_fault("auth_error", route="report_run.get", times=1)
    today = _today(sandbox)
    req = build_request(ACT, "campaign", "segment", today - timedelta(days=2), today - timedelta(days=2))
    mgr = _manager(client)
    with pytest.raises(MetaAuthError):
        mgr.run(req, Sink())
    assert client.stats.retries == 0 and mgr.stats.submits == 1


# -- the daily schedule: account time zones from meta_ad_accounts, which the pull writes; never Meta itself

TENANTS = ("anatolia_home", "bosphorus_outdoor", "cappadocia_ceramics")
# 2026-11-22 (after the US and EU summer time): 04:00 UTC is 07:00 in Istanbul, 12:00 UTC 07:00 in New York.
ISTANBUL_7AM = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
NEW_YORK_7AM = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _tick_insights(kobi_env: KobiEnv, instance: dg.DagsterInstance, when: datetime) -> Any:
    from kobi_cpas.defs.insights.schedules import shared_item_metrics_schedule

    return tick_schedule(
        shared_item_metrics_schedule, instance, kobi_env.resources(), scheduled_execution_time=when
    )


def _record_accounts(kobi_env: KobiEnv, rows: list[tuple[str, str, str]]) -> None:
    """Publish meta_ad_accounts rows (ad account, tenant, time zone) as the pull would."""
    warehouse = kobi_env.resources()["warehouse"]
    assert isinstance(warehouse, WarehouseResource)
    records = [
        {"ad_account_id": a, "tenant_id": t, "timezone_name": tz, "fetched_at": datetime.now(UTC)}
        for a, t, tz in rows
    ]
    with warehouse.connection() as con:
        replace_rows(con, META_AD_ACCOUNTS, records, "true", [])
        warehouse.publish(con)


def test_insights_schedule_takes_no_meta_resource() -> None:
    from kobi_cpas.defs.insights.schedules import shared_item_metrics_schedule

    assert shared_item_metrics_schedule.required_resource_keys == {"registry", "warehouse"}


def test_insights_schedule_falls_back_to_the_tenant_zone_until_the_first_pull(
    kobi_env: KobiEnv, pg_instance: dg.DagsterInstance
) -> None:
    from kobi_cpas.defs.insights.schedules import FALLBACK_SOURCE, TIMEZONE_SOURCE_TAG, TIMEZONE_TAG

    pg_instance.add_dynamic_partitions("tenant", list(TENANTS))
    skipped = _tick_insights(kobi_env, pg_instance, ISTANBUL_7AM - timedelta(hours=4))
    assert isinstance(skipped, dg.SkipReason)
    assert "anatolia_home: 03:00 in Europe/Istanbul" in skipped.skip_message
    assert (
        "anatolia_home: act_4000000000000001 has no row in meta_ad_accounts yet (the first pull records its "
        "time zone); using the tenant's sync.timezone Europe/Istanbul"
    ) in skipped.skip_message
    runs = _tick_insights(kobi_env, pg_instance, ISTANBUL_7AM)
    assert sorted(r.tags["kobi/tenant"] for r in runs) == list(TENANTS)
    for r in runs:
        assert (r.tags[TIMEZONE_TAG], r.tags[TIMEZONE_SOURCE_TAG]) == ("Europe/Istanbul", FALLBACK_SOURCE)
        assert r.tags["dagster/asset_partition_range_end"].startswith("2026-11-21|")
        assert r.tags["dagster/asset_partition_range_start"].startswith("2026-10-25|")


def test_insights_schedule_uses_the_zone_the_pull_recorded(
    kobi_env: KobiEnv, pg_instance: dg.DagsterInstance
) -> None:
    from kobi_cpas.defs.insights.schedules import TIMEZONE_SOURCE_TAG, TIMEZONE_TAG

    pg_instance.add_dynamic_partitions("tenant", list(TENANTS))
    _record_accounts(kobi_env, [("act_4000000000000001", "anatolia_home", "America/New_York")])
    early = _tick_insights(kobi_env, pg_instance, ISTANBUL_7AM)
    assert sorted(r.tags["kobi/tenant"] for r in early) == ["bosphorus_outdoor", "cappadocia_ceramics"]
    late = _tick_insights(kobi_env, pg_instance, NEW_YORK_7AM)
    assert [r.tags["kobi/tenant"] for r in late] == ["anatolia_home"]
    assert (late[0].tags[TIMEZONE_TAG], late[0].tags[TIMEZONE_SOURCE_TAG]) == (
        "America/New_York",
        "meta_ad_accounts",
    )
    assert late[0].run_key == "insights:anatolia_home:2026-11-22"
    skipped = _tick_insights(kobi_env, pg_instance, NEW_YORK_7AM + timedelta(hours=1))
    assert isinstance(skipped, dg.SkipReason)
    assert "anatolia_home: 08:00 in America/New_York" in skipped.skip_message
    assert "act_4000000000000001 has no row" not in skipped.skip_message
    assert "act_4000000000000003 has no row" in skipped.skip_message  # the others still fall back


def test_fetch_account_records_the_zone_the_schedule_reads(kobi_env: KobiEnv) -> None:
    """The pull's own account request (id, name, timezone_name, currency) writes meta_ad_accounts; once
    published, the schedule's reader finds it."""
    from kobi_cpas.insights.accounts import account_timezones, fetch_account

    warehouse = kobi_env.resources()["warehouse"]
    assert isinstance(warehouse, WarehouseResource)
    assert account_timezones(warehouse.read_published, [ACT]) == {}  # nothing published yet
    with (
        MetaGraphClient(kobi_env.sandbox.url, DEFAULT_API_VERSION, kobi_env.token) as client,
        warehouse.connection() as con,
    ):
        for _ in range(2):  # a re-fetch replaces the row
            info = fetch_account(
                client, con, tenant_id="anatolia_home", retailer="trendyol", ad_account_id=ACT
            )
        rows = con.execute(
            "SELECT ad_account_id, tenant_id, retailer, timezone_name, currency FROM main.meta_ad_accounts"
        ).fetchall()
        assert account_timezones(warehouse.read_published, [ACT]) == {}  # not published yet
        warehouse.publish(con)
    assert rows == [(ACT, "anatolia_home", "trendyol", info.timezone_name, info.currency)]
    assert info.timezone_name == "Europe/Istanbul"
    # registry ids with or without the act_ prefix name the same account
    assert account_timezones(warehouse.read_published, [ACT.removeprefix("act_")]) == {ACT: "Europe/Istanbul"}


def test_account_timezones_of_a_file_published_before_the_table(tmp_path) -> None:
    import duckdb

    from kobi_cpas.insights.accounts import account_timezones
    from kobi_cpas.warehouse import read_analyst

    old = tmp_path / "old.duckdb"
    duckdb.connect(str(old)).close()
    assert account_timezones(lambda sql, params: read_analyst(old, sql, params), [ACT]) == {}
    assert account_timezones(lambda sql, params: pytest.fail("read without accounts"), []) == {}


def test_date_partitions_start_where_the_history_does(monkeypatch):
    from datetime import date

    from kobi_cpas.defs.insights.partitions import START_DATE_ENV, insights_start_date

    monkeypatch.delenv(START_DATE_ENV, raising=False)
    assert (
        insights_start_date(date(2026, 12, 4)) == "2026-09-01"
    )  # three months back, not years of empty days
    assert insights_start_date(date(2026, 2, 28)) == "2025-11-01"
    monkeypatch.setenv(START_DATE_ENV, "2024-06-01")  # the brands' ads history, to backfill from
    assert insights_start_date(date(2026, 12, 4)) == "2024-06-01"
    monkeypatch.setenv(START_DATE_ENV, "June 2024")
    with pytest.raises(
        ValueError, match="KOBI_CPAS_INSIGHTS_START_DATE='June 2024' is not a date as YYYY-MM-DD"
    ):
        insights_start_date()
