"""Several async report jobs in flight per ad account, admitted by Meta's insights throttle header, with results
identical to one job at a time; and no DuckDB connection open while the pull waits on Meta."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from kobi_cpas.insights.accounts import META_AD_ACCOUNTS, fetch_account
from kobi_cpas.insights.jobs import ReportJobManager
from kobi_cpas.insights.products import lookup_product_items
from kobi_cpas.insights.pull import InsightsPullError, PullReport, pull_account_days
from kobi_cpas.insights.reconcile import record_repull_totals
from kobi_cpas.insights.requests import plan_requests
from kobi_cpas.meta import MetaGraphClient
from meta_sandbox.admin import InsightsAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

ACT = "act_4000000000000001"
TENANT, RETAILER = "anatolia_home", "trendyol"


@pytest.fixture
def ins(sandbox: SandboxHandle) -> InsightsAdmin:
    sandbox.admin.freeze_clock(True)
    admin = InsightsAdmin(sandbox.admin)
    admin.configure(polls_to_complete=3)  # every job takes several polls
    return admin


def _days(sandbox: SandboxHandle, n: int) -> list[date]:
    today = sandbox.admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()
    return [today - timedelta(days=i) for i in range(n + 1, 1, -1)]


def _sandbox_in_flight(ins: InsightsAdmin) -> list[int]:
    """Report runs submitted and not yet read, after each insights call the sandbox logged (every job here
    completes, so a job leaves flight when its results are first read)."""
    out, submitted, read = [], 0, set()
    for e in sorted(ins.requests(), key=lambda e: e["seq"]):
        if e["method"] == "POST" and e["kind"] == "insights":
            submitted += 1
        elif e["kind"] == "report_run.insights":
            read.add(e["object_id"])
        out.append(submitted - len(read))
    return out


def _manager(client: MetaGraphClient, sleeps: list[float], **kw: Any) -> ReportJobManager:
    return ReportJobManager(client, poll_interval=0.01, page_limit=50, sleep=sleeps.append, **kw)


def _plan(days: list[date]) -> list[Any]:
    plan = plan_requests(ACT, days, levels=["account", "campaign", "adset"], families=["segment", "product"])
    assert len(plan) == 5
    return plan


def test_several_jobs_are_in_flight_before_the_first_is_read(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    sleeps: list[float] = []
    mgr = _manager(meta_client, sleeps, max_in_flight=4)
    pages: list[tuple[str, int]] = []
    roots = mgr.prepare(_plan(_days(sandbox, 2)))
    mgr.execute_all(roots, lambda piece, no, page: pages.append((piece.piece_id, no)))
    assert all(r.status == "complete" for r in roots)
    log = sorted(ins.requests(), key=lambda e: e["seq"])
    first_read = next(i for i, e in enumerate(log) if e["kind"] == "report_run.insights")
    assert sum(1 for e in log[:first_read] if e["method"] == "POST") == 4
    in_flight = _sandbox_in_flight(ins)
    assert max(in_flight) == 4 and in_flight[-1] == 0
    assert mgr.stats.max_in_flight_seen == 4
    # every job was polled several times and none was read early
    assert all(run["polls"] >= 3 and run["early_reads"] == 0 for run in ins.report_runs())
    assert {pid for pid, _no in pages} == {r.piece_id for r in roots}


def test_throttle_header_reflects_jobs_in_flight(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    ins.configure(throttle_pct_per_job=30)
    day = _days(sandbox, 1)
    req = plan_requests(ACT, day, levels=["account"], families=["segment"])[0]
    meta_client.post(req.path, data=req.params())
    first = meta_client.last_usage
    meta_client.post(req.path, data=req.params())
    second = meta_client.last_usage
    assert first is not None and second is not None
    assert set(second.insights) == {"app_id_util_pct", "acc_id_util_pct", "ads_api_access_tier"}
    assert (first.insights["acc_id_util_pct"], second.insights["acc_id_util_pct"]) == (30, 60)
    assert second.insights["app_id_util_pct"] == 6  # a tenth per job: the app has more room than an account
    # a finished job no longer loads the account
    run = ins.report_runs()[0]
    for _ in range(3):
        meta_client.get(run["id"], {"fields": "id,async_status"})
    assert meta_client.last_usage is not None and meta_client.last_usage.insights["acc_id_util_pct"] == 30


def test_high_throttle_holds_new_submissions_back(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    # 40 % per running job: two jobs in flight read 80 %, over the 75 % threshold, so a third must wait.
    ins.configure(throttle_pct_per_job=40)
    sleeps: list[float] = []
    mgr = _manager(meta_client, sleeps, max_in_flight=4, throttle_threshold=75)
    roots = mgr.prepare(_plan(_days(sandbox, 2)))
    mgr.execute_all(roots, lambda piece, no, page: None)
    assert all(r.status == "complete" for r in roots)
    assert max(_sandbox_in_flight(ins)) == 2
    assert mgr.stats.max_in_flight_seen == 2 and mgr.stats.held_back > 0
    # with a lower load the same plan runs four at a time
    sandbox.admin.reset()
    sandbox.admin.freeze_clock(True)
    ins.configure(polls_to_complete=3, throttle_pct_per_job=10)
    mgr = _manager(meta_client, sleeps, max_in_flight=4, throttle_threshold=75)
    mgr.execute_all(mgr.prepare(_plan(_days(sandbox, 2))), lambda piece, no, page: None)
    assert max(_sandbox_in_flight(ins)) == 4 and mgr.stats.held_back == 0


def _tables(con: Any, report: PullReport) -> dict[str, list[tuple[Any, ...]]]:
    q = {
        "metrics": "SELECT * EXCLUDE (pull_id, pulled_at) FROM shared_item_metrics",
        "products": "SELECT * EXCLUDE (pull_id, pulled_at) FROM shared_item_product_metrics",
        "pages": "SELECT piece_id, level, family, since, until, page_no, row_count, payload::VARCHAR "
        "FROM raw.insights_pages",
        "pieces": "SELECT piece_id, parent_id, object_id, level, family, since, until, status, split_by, "
        "attempts, pages, row_count, params::VARCHAR FROM raw.insights_pieces",
        "slices": "SELECT level, family, date, status, row_count FROM raw.insights_slices",
    }
    out = {name: con.execute(f"{sql} ORDER BY ALL").fetchall() for name, sql in q.items()}
    out["report"] = [(s.level, s.family, s.date, s.status, s.rows) for s in report.slices]
    return out


def test_results_are_identical_to_a_sequential_pull(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    days = _days(sandbox, 3)
    ins.drift(ACT, too_much_data={"max_days": 2})  # splits too, decided by Meta per request
    results, posts = {}, {}
    for n in (1, 4):
        con = duckdb.connect()
        before = len(ins.requests())
        report = pull_account_days(
            meta_client,
            con,
            tenant_id=TENANT,
            retailer=RETAILER,
            ad_account_id=ACT,
            days=days,
            levels=["campaign"],
            sleep=lambda s: None,
            poll_interval=0.01,
            page_limit=50,
            max_in_flight=n,
        )
        assert report.complete and report.rows_written > 0
        assert report.job_stats["max_in_flight_seen"] == n
        results[n] = _tables(con, report)
        calls = ins.requests()[before:]
        posts[n] = sorted(str(sorted(e["params"].items())) for e in calls if e["method"] == "POST")
    assert results[1] == results[4]
    assert posts[1] == posts[4]  # the same report jobs, only more of them at once
    assert any(p[8] == "days" for p in results[1]["pieces"])


class _WatchedClient(MetaGraphClient):
    """Fails any Meta request sent while the watched DuckDB connection is open."""

    db_open = False
    calls = 0

    def _call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        assert not self.db_open, "a Meta request was sent while the DuckDB work connection was open"
        type(self).calls += 1
        return super()._call(*args, **kwargs)


def test_no_database_connection_is_open_while_waiting_on_meta(
    make_meta_client: Callable[..., MetaGraphClient], sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    base = make_meta_client()
    client = _WatchedClient(base.base_url, base.api_version, base._token, sleep=lambda s: None)
    con = duckdb.connect()
    con.execute(META_AD_ACCOUNTS.ddl())  # an analyst table: the warehouse creates it, not the insights schema
    opened: list[str] = []

    @contextlib.contextmanager
    def connection() -> Iterator[duckdb.DuckDBPyConnection]:
        opened.append("open")
        _WatchedClient.db_open = True
        try:
            yield con
        finally:
            _WatchedClient.db_open = False

    try:
        report = pull_account_days(
            client,
            connection,
            tenant_id=TENANT,
            retailer=RETAILER,
            ad_account_id=ACT,
            days=_days(sandbox, 2),
            levels=["campaign"],
            sleep=lambda s: None,
            poll_interval=0.01,
        )
        assert len(opened) == 3  # before (the pull row), after (pages + pieces), the slice replaces
        # The asset's other Meta calls open the database only around their writes too.
        calls = _WatchedClient.calls
        fetch_account(client, connection, tenant_id=TENANT, retailer=RETAILER, ad_account_id=ACT)
        record_repull_totals(
            client, connection, tenant_id=TENANT, retailer=RETAILER, ad_account_id=ACT, days=report.days[-1:]
        )
        lookups = lookup_product_items(client, connection, tenant_id=TENANT)
        assert lookups.requested > 1 and _WatchedClient.calls >= calls + 2 + lookups.requested
        assert con.execute("SELECT count(*) FROM retailer_product_items").fetchone() == (lookups.requested,)
    finally:
        client.close()
    assert report.complete and report.rows_written > 0
    assert _WatchedClient.calls > report.job_stats["submits"] > 1
    pages = con.execute(
        "SELECT count(*), sum(row_count) FROM raw.insights_pages WHERE pull_id = ?", [report.pull_id]
    ).fetchone()
    assert pages == (report.raw_pages, report.raw_rows)


def test_wait_budget_stops_the_pull_and_keeps_what_completed(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, ins: InsightsAdmin
) -> None:
    # The first job (account level) never finishes; the others complete while it is polled.
    ins.script_jobs(ACT, {"outcome": "slow", "polls": 50})
    con = duckdb.connect()
    with pytest.raises(InsightsPullError) as err:
        pull_account_days(
            meta_client,
            con,
            tenant_id=TENANT,
            retailer=RETAILER,
            ad_account_id=ACT,
            days=_days(sandbox, 1),
            levels=["account", "campaign"],
            families=["segment"],
            sleep=lambda s: None,
            poll_interval=0.01,
            max_poll_interval=0.01,
            max_total_wait=0.2,
        )
    report = err.value.report
    assert any("max_total_wait" in e for e in report.errors)
    assert {(s.level, s.status) for s in report.slices} == {
        ("account", "incomplete"),
        ("campaign", "replaced"),
    }
    status = con.execute("SELECT status FROM raw.insights_pulls").fetchone()
    assert status == ("partial",)
