"""Pull one ad account's shared-item metrics for some days: plan -> async jobs -> raw pages -> parse -> replace.

    report = pull_account_days(client, con, tenant_id="anatolia_home", retailer="trendyol",
                               ad_account_id="act_4000000000000001", days=restatement_window(today))

Days are dates in the ad account's time zone (``account_timezone`` + ``today_in_timezone``). Each
(level, request family, day) slice is replaced in one transaction only when every piece of it succeeded; failed
or unfinished slices keep their previous rows and are listed in the report. Auth, permission and
invalid-request errors propagate at once (fail fast); other failures are collected and, with
``raise_on_error=True``, raised as ``InsightsPullError`` (carrying the report) after the complete slices were
replaced.

The report jobs run several at a time (``jobs.ReportJobManager``). No DuckDB connection is held while they run
when ``con`` is a connection opener: the pull row is written first, pages are staged in a local file
(``stage.PageStage``) and written with the piece tree in one short transaction, then the slices are replaced.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kobi_cpas.insights.jobs import (
    COMPLETE,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_THROTTLE_THRESHOLD,
    FAILED,
    InsightsError,
    InsightsWaitBudgetExceeded,
    Piece,
    ReportJobManager,
)
from kobi_cpas.insights.parse import replace_slices
from kobi_cpas.insights.requests import (
    DEFAULT_WINDOWS,
    FAMILIES,
    LEVELS,
    normalize_account_id,
    plan_requests,
    status_filter,
)
from kobi_cpas.insights.schema import ensure_schema
from kobi_cpas.insights.stage import PageStage, opener
from kobi_cpas.meta import (
    MetaAPIError,
    MetaAuthError,
    MetaGraphClient,
    MetaInvalidRequestError,
    MetaPermissionError,
    MetaRetryBudgetExceeded,
)

RESTATEMENT_DAYS = 28
# Errors that mean "stop everything now": a person must act (token, permission, a bad request of ours).
FAIL_FAST = (MetaAuthError, MetaPermissionError, MetaInvalidRequestError)
# Errors after which further requests would only burn more budget.
ABORT = (MetaRetryBudgetExceeded, InsightsWaitBudgetExceeded)


@dataclass(frozen=True)
class AccountInfo:
    ad_account_id: str
    timezone_name: str
    currency: str | None
    name: str | None = None


@dataclass
class SliceOutcome:
    level: str
    family: str
    date: date
    status: str  # replaced | incomplete
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "date": self.date.isoformat()}


@dataclass
class PullReport:
    pull_id: str
    tenant_id: str
    retailer: str
    ad_account_id: str
    days: list[date]
    levels: list[str]
    families: list[str]
    started_at: datetime
    finished_at: datetime | None = None
    slices: list[SliceOutcome] = field(default_factory=list)
    job_stats: dict[str, Any] = field(default_factory=dict)
    http_requests: int = 0  # HTTP attempts the client sent (retries included)
    raw_pages: int = 0
    raw_rows: int = 0
    errors: list[str] = field(default_factory=list)
    pieces: list[dict[str, Any]] = field(default_factory=list)
    attempt_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_requests(self) -> int:
        """Logical API calls issued: submits + status polls + result pages + id discoveries."""
        return int(self.job_stats.get("api_requests", 0))

    @property
    def rows_written(self) -> int:
        return sum(s.rows for s in self.slices if s.status == "replaced")

    @property
    def incomplete(self) -> list[SliceOutcome]:
        return [s for s in self.slices if s.status != "replaced"]

    @property
    def complete(self) -> bool:
        return not self.errors and not self.incomplete

    @property
    def seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    def as_dict(self, *, with_log: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pull_id": self.pull_id,
            "tenant_id": self.tenant_id,
            "retailer": self.retailer,
            "ad_account_id": self.ad_account_id,
            "days": [d.isoformat() for d in self.days],
            "levels": self.levels,
            "families": self.families,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "api_requests": self.api_requests,
            "http_requests": self.http_requests,
            "job_stats": self.job_stats,
            "raw_pages": self.raw_pages,
            "raw_rows": self.raw_rows,
            "rows_written": self.rows_written,
            "slices_replaced": sum(1 for s in self.slices if s.status == "replaced"),
            "slices_incomplete": [s.as_dict() for s in self.incomplete],
            "errors": self.errors,
        }
        if with_log:
            out["pieces"] = self.pieces
            out["attempt_log"] = self.attempt_log
        return out


class InsightsPullError(InsightsError):
    """Some slices could not be pulled; ``report`` says which (the complete ones were replaced)."""

    def __init__(self, report: PullReport) -> None:
        self.report = report
        bad = report.incomplete
        sample = ", ".join(f"{s.level}/{s.family}/{s.date}" for s in bad[:5])
        super().__init__(
            f"insights pull {report.pull_id} for {report.tenant_id}/{report.retailer} ({report.ad_account_id}) "
            f"left {len(bad)} slice(s) incomplete ({sample}{', ...' if len(bad) > 5 else ''}): "
            + "; ".join(report.errors[:3])
        )


# -- accounts and days ----------------------------------------------------------------------------------


def account_info(client: MetaGraphClient, ad_account_id: str) -> AccountInfo:
    act = normalize_account_id(ad_account_id)
    data = client.get(act, {"fields": "id,name,timezone_name,currency"})
    tz = data.get("timezone_name")
    if not tz:
        raise InsightsError(f"Meta returned no timezone_name for {act}")
    ZoneInfo(tz)  # fail here, clearly, on a zone Python does not know
    return AccountInfo(act, tz, data.get("currency"), data.get("name"))


def account_timezone(client: MetaGraphClient, ad_account_id: str) -> str:
    """The ad account's IANA time zone (``GET act_<id>?fields=timezone_name``): insights days are in it."""
    return account_info(client, ad_account_id).timezone_name


def today_in_timezone(timezone_name: str, now: datetime | None = None) -> date:
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(ZoneInfo(timezone_name)).date()


def restatement_window(
    today_in_tz: date, days: int = RESTATEMENT_DAYS, *, include_today: bool = False
) -> list[date]:
    """The trailing days Meta may still restate: ``days`` days ending yesterday (or today), oldest first."""
    if days < 1:
        raise ValueError("days must be >= 1")
    end = today_in_tz if include_today else today_in_tz - timedelta(days=1)
    return [end - timedelta(days=i) for i in range(days - 1, -1, -1)]


def discover_campaign_ids(client: MetaGraphClient, ad_account_id: str, since: date, until: date) -> list[str]:
    """Campaigns with any data in [since, until], deleted and archived ones included (one small sync query)."""
    act = normalize_account_id(ad_account_id)
    field_name, op, values = status_filter()
    params = {
        "level": "campaign",
        "fields": "campaign_id",
        "time_range": {"since": since.isoformat(), "until": until.isoformat()},
        "time_increment": "all_days",
        "filtering": [{"field": field_name, "operator": op, "value": list(values)}],
        "limit": 500,
    }
    return sorted(
        {str(r["campaign_id"]) for r in client.paginate(f"{act}/insights", params) if r.get("campaign_id")}
    )


# -- the pull ---------------------------------------------------------------------------------------------


def pull_account_days(
    client: MetaGraphClient,
    con: Any,
    *,
    tenant_id: str,
    retailer: str,
    ad_account_id: str,
    days: Iterable[date],
    levels: Sequence[str] = LEVELS,
    windows: Sequence[str] = DEFAULT_WINDOWS,
    families: Sequence[str] = FAMILIES,
    product_scope: str = "account_node",
    campaign_ids: Sequence[str] | None = None,
    page_limit: int = 500,
    poll_interval: float = 5.0,
    max_poll_interval: float = 60.0,
    max_job_wait: float = 3600.0,
    max_total_wait: float = 4 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    raise_on_error: bool = True,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    throttle_threshold: float = DEFAULT_THROTTLE_THRESHOLD,
) -> PullReport:
    """Pull ``days`` (dates in the account's time zone) for ``levels`` x ``families`` into DuckDB.

    ``con`` is a DuckDB connection or a zero-argument callable returning a context manager that yields one
    (``WarehouseResource.connection``): with a callable the connection is opened only for the short writes
    before and after the Meta phase, never while report jobs run. One async report job per (level, family,
    run of consecutive days), up to ``max_in_flight`` at once, split only when Meta asks for it; pages read from
    Meta are staged in a local file and appended to ``raw.insights_pages`` in one set-based statement; every
    complete slice is replaced in one transaction.
    """
    act = normalize_account_id(ad_account_id)
    day_list = sorted(set(days))
    if not day_list:
        raise ValueError("days is empty")
    connect = opener(con)
    started_at = datetime.now(UTC)
    report = PullReport(
        pull_id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        retailer=retailer,
        ad_account_id=act,
        days=day_list,
        levels=[lvl for lvl in LEVELS if lvl in levels],
        families=[f for f in FAMILIES if f in families],
        started_at=started_at,
    )
    with connect() as db:
        ensure_schema(db)
        db.execute(
            "INSERT INTO raw.insights_pulls VALUES (?, ?, ?, ?, ?, NULL, 'running', NULL)",
            [report.pull_id, tenant_id, retailer, act, started_at],
        )
    manager = ReportJobManager(
        client,
        page_limit=page_limit,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
        max_job_wait=max_job_wait,
        max_total_wait=max_total_wait,
        max_in_flight=max_in_flight,
        throttle_threshold=throttle_threshold,
        sleep=sleep,
    )
    http_before = client.stats.requests
    extra_calls = 0
    fail_fast: BaseException | None = None
    with PageStage() as stage:

        def sink(piece: Piece, page_no: int, page: dict[str, Any]) -> None:
            rows = page.get("data") or []
            stage.add(piece, page_no, page)
            report.raw_pages += 1
            report.raw_rows += len(rows)

        def on_error(root: Piece, exc: Exception) -> bool:
            if isinstance(exc, FAIL_FAST) or not isinstance(exc, MetaAPIError | InsightsError):
                raise exc
            report.errors.append(f"{root.request.describe()}: {exc}")
            return not isinstance(exc, ABORT)  # after these more requests would only burn more budget

        # The Meta phase: no database connection is open while report jobs run.
        try:
            if "product" in families and product_scope == "campaign_nodes" and campaign_ids is None:
                before = client.stats.requests
                campaign_ids = discover_campaign_ids(client, act, day_list[0], day_list[-1])
                extra_calls += client.stats.requests - before
            plan = plan_requests(
                act,
                day_list,
                levels=levels,
                families=families,
                windows=windows,
                product_scope=product_scope,
                campaign_ids=campaign_ids,
            )
            manager.execute_all(manager.prepare(plan), sink, on_error)
        except FAIL_FAST as exc:
            fail_fast = exc
            report.errors.append(str(exc))
        finally:
            for piece in manager.pieces:
                if piece.status == FAILED:
                    report.errors.append(f"{piece.piece_id} {piece.request.describe()}: {piece.error}")
            report.pieces = [p.as_dict() for p in manager.pieces]
            report.attempt_log = list(manager.attempt_log)
            stats = manager.stats.as_dict()
            stats["api_requests"] += extra_calls
            stats["discovery_calls"] += extra_calls
            report.job_stats = stats
            report.http_requests = client.stats.requests - http_before
            # The write phase: staged pages and the piece tree in one short transaction.
            with connect() as db:
                db.execute("BEGIN TRANSACTION")
                try:
                    stage.write(
                        db,
                        pull_id=report.pull_id,
                        tenant_id=tenant_id,
                        retailer=retailer,
                        ad_account_id=act,
                        pulled_at=started_at,
                    )
                    _record_pieces(db, report.pull_id, manager.pieces)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise

    with connect() as db:
        if fail_fast is None:
            planned = {(p.request.level, p.request.family) for p in manager.pieces if p.parent_id is None}
            for level in report.levels:
                for family in report.families:
                    if (level, family) not in planned:
                        continue
                    counts = replace_slices(
                        db,
                        pull_id=report.pull_id,
                        tenant_id=tenant_id,
                        retailer=retailer,
                        ad_account_id=act,
                        level=level,
                        family=family,
                        days=day_list,
                        pulled_at=started_at,
                    )
                    for d in day_list:
                        if d in counts:
                            report.slices.append(SliceOutcome(level, family, d, "replaced", counts[d]))
                        else:
                            report.slices.append(SliceOutcome(level, family, d, "incomplete", 0))
        report.finished_at = datetime.now(UTC)
        status = "failed" if fail_fast else ("complete" if report.complete else "partial")
        db.execute(
            "UPDATE raw.insights_pulls SET finished_at = ?, status = ?, report = ? WHERE pull_id = ?",
            [report.finished_at, status, json.dumps(report.as_dict(), default=str), report.pull_id],
        )
    if fail_fast is not None:
        raise fail_fast
    if (report.errors or report.incomplete) and raise_on_error:
        raise InsightsPullError(report)
    return report


def _record_pieces(con: Any, pull_id: str, pieces: list[Piece]) -> None:
    now = datetime.now(UTC)
    rows = []
    for p in pieces:
        r = p.request
        rows.append(
            [
                pull_id,
                p.piece_id,
                p.parent_id,
                r.ad_account_id,
                r.object_id,
                r.level,
                r.family,
                r.since,
                r.until,
                p.status,
                p.split_by,
                p.reason,
                list(p.report_run_ids),
                p.attempts,
                p.pages,
                p.rows,
                json.dumps(r.params(), separators=(",", ":")),
                now,
            ]
        )
    if rows:
        con.executemany(
            "INSERT INTO raw.insights_pieces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def completed_leaves(pieces: Iterable[Piece]) -> list[Piece]:
    return [p for p in pieces if p.status == COMPLETE]
