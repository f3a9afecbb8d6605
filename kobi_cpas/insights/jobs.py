"""Async insights report jobs: submit, poll, read, and split what Meta will not answer whole.

For one ``InsightsRequest`` the manager:

1. submits it (``POST /{object}/insights`` -> ``report_run_id``);
2. polls ``GET /{report_run_id}`` with growing intervals until async_status == "Job Completed" AND
   async_percent_completion == 100 (a "Job Running" at 100 % is not done: its results are not readable yet).
   Waiting is bounded per job (``max_job_wait``) and per manager (``max_total_wait``);
3. reads ``GET /{report_run_id}/insights`` page by page (the client follows ``paging.next``, empty pages with a
   next link included) and hands every page to a sink (the pull stores it raw).

When Meta will not answer:
- "Job Skipped": resubmit (up to ``max_skipped_resubmits`` times, then handled as a failure);
- "Job Failed" or a job over ``max_job_wait``: retry once, then split;
- too much data (code 100 subcode 1487534, or HTTP 500 code 1 "Please reduce the amount of data"): split at once.
Splitting halves the day range first, then the object ids (``filtering`` on campaign.id / adset.id / ad.id IN
[...], ids discovered with a small synchronous id-only query), then the metric fields. Children keep every other
parameter of their parent. A piece that cannot be split further fails; its days stay incomplete.

Auth, permission and invalid-request errors propagate at once (fail fast with Meta's message and the fix); so do
``MetaRetryBudgetExceeded`` and ``InsightsWaitBudgetExceeded``. Nothing here imports DuckDB or Dagster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kobi_cpas.insights.requests import ID_FILTER_FIELDS, LEVEL_RANK, InsightsRequest
from kobi_cpas.meta import MetaGraphClient, MetaTooMuchDataError

log = logging.getLogger("kobi_cpas.insights")

JOB_COMPLETED = "Job Completed"
JOB_FAILED = "Job Failed"
JOB_SKIPPED = "Job Skipped"
STATUS_FIELDS = "id,async_status,async_percent_completion,date_start,date_stop"

# Piece statuses: pending (created, not finished: its days are incomplete), complete, failed, split.
PENDING, COMPLETE, FAILED, SPLIT = "pending", "complete", "failed", "split"

PageSink = Callable[["Piece", int, dict[str, Any]], None]


class InsightsError(Exception):
    """A problem of the insights pull itself (not a Meta error)."""


class InsightsWaitBudgetExceeded(InsightsError):
    """Polling would exceed the manager's total wait budget (``max_total_wait``)."""


@dataclass
class Piece:
    """One node of a request's split tree. Leaves end complete or failed; split parents say how they split."""

    piece_id: str
    request: InsightsRequest
    parent_id: str | None = None
    status: str = PENDING
    split_by: str | None = None  # days | ids | fields
    reason: str | None = None  # why it split or failed
    report_run_ids: list[str] = field(default_factory=list)
    attempts: int = 0  # report runs submitted for it
    pages: int = 0
    rows: int = 0
    error: str | None = None
    children: list[Piece] = field(default_factory=list)

    def leaves(self) -> list[Piece]:
        if not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "piece_id": self.piece_id,
            "parent_id": self.parent_id,
            "ad_account_id": r.ad_account_id,
            "object_id": r.object_id,
            "level": r.level,
            "family": r.family,
            "since": r.since,
            "until": r.until,
            "status": self.status,
            "split_by": self.split_by,
            "reason": self.reason,
            "report_run_ids": list(self.report_run_ids),
            "attempts": self.attempts,
            "pages": self.pages,
            "rows": self.rows,
            "error": self.error,
            "params": r.params(),
        }


@dataclass
class JobStats:
    """API requests the manager issued (logical calls; the client's stats count HTTP attempts incl. retries)."""

    submits: int = 0
    polls: int = 0
    pages: int = 0
    discovery_calls: int = 0
    failed_jobs: int = 0
    skipped_jobs: int = 0
    timed_out_jobs: int = 0
    too_much_data: int = 0
    splits: int = 0
    waited_seconds: float = 0.0

    @property
    def api_requests(self) -> int:
        return self.submits + self.polls + self.pages + self.discovery_calls

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_requests": self.api_requests,
            "submits": self.submits,
            "polls": self.polls,
            "pages": self.pages,
            "discovery_calls": self.discovery_calls,
            "failed_jobs": self.failed_jobs,
            "skipped_jobs": self.skipped_jobs,
            "timed_out_jobs": self.timed_out_jobs,
            "too_much_data": self.too_much_data,
            "splits": self.splits,
            "waited_seconds": round(self.waited_seconds, 3),
        }


class ReportJobManager:
    """Runs insights requests as async report jobs (see the module docstring). Not thread-safe."""

    def __init__(
        self,
        client: MetaGraphClient,
        *,
        page_limit: int = 500,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        poll_backoff: float = 1.5,
        max_job_wait: float = 3600.0,
        max_total_wait: float = 4 * 3600.0,
        max_failed_retries: int = 1,
        max_skipped_resubmits: int = 3,
        max_split_depth: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_limit < 1:
            raise ValueError("page_limit must be >= 1")
        self.client = client
        self.page_limit = int(page_limit)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.poll_backoff = float(poll_backoff)
        self.max_job_wait = float(max_job_wait)
        self.max_total_wait = float(max_total_wait)
        self.max_failed_retries = int(max_failed_retries)
        self.max_skipped_resubmits = int(max_skipped_resubmits)
        self.max_split_depth = int(max_split_depth)
        self._sleep = sleep
        self.stats = JobStats()
        self.attempt_log: list[dict[str, Any]] = []
        self.pieces: list[Piece] = []  # every piece ever created, in creation order
        self._roots = 0

    # -- public ------------------------------------------------------------------------------------

    def run(self, request: InsightsRequest, sink: PageSink) -> Piece:
        """Run one request to the end; returns the root piece (its leaves tell which days are complete)."""
        (root,) = self.prepare([request])
        self.execute(root, sink)
        return root

    def prepare(self, requests: list[InsightsRequest]) -> list[Piece]:
        """Register root pieces (pending) for a whole plan before running any: if the pull stops half-way, the
        requests that never ran still mark their days incomplete."""
        roots = []
        for request in requests:
            self._roots += 1
            roots.append(self._new_piece(f"r{self._roots}", request, None))
        return roots

    def execute(self, root: Piece, sink: PageSink) -> Piece:
        """Run a prepared root piece to the end."""
        if root.status != PENDING or root.attempts:
            raise InsightsError(f"piece {root.piece_id} already ran")
        self._run_piece(root, sink, depth=0)
        return root

    # -- one piece -----------------------------------------------------------------------------------

    def _new_piece(self, piece_id: str, request: InsightsRequest, parent: Piece | None) -> Piece:
        piece = Piece(piece_id=piece_id, request=request, parent_id=parent.piece_id if parent else None)
        self.pieces.append(piece)
        if parent is not None:
            parent.children.append(piece)
        return piece

    def _log(self, piece: Piece, event: str, **detail: Any) -> None:
        entry = {"piece_id": piece.piece_id, "event": event, **detail}
        self.attempt_log.append(entry)
        log.debug("insights %s %s %s", piece.piece_id, event, detail)

    def _run_piece(self, piece: Piece, sink: PageSink, depth: int) -> None:
        failures = skips = 0
        while True:
            try:
                run_id = self._submit(piece)
            except MetaTooMuchDataError as exc:
                self.stats.too_much_data += 1
                self._log(piece, "too_much_data", at="submit", error=exc.message)
                self._split(piece, sink, depth, reason=f"too much data: {exc.message}")
                return
            outcome = self._poll(piece, run_id)
            if outcome == "completed":
                try:
                    self._read(piece, run_id, sink)
                except MetaTooMuchDataError as exc:
                    self.stats.too_much_data += 1
                    self._log(piece, "too_much_data", at="read", error=exc.message)
                    self._split(piece, sink, depth, reason=f"too much data: {exc.message}")
                    return
                piece.status = COMPLETE
                self._log(piece, "complete", report_run_id=run_id, pages=piece.pages, rows=piece.rows)
                return
            if outcome == "skipped":
                self.stats.skipped_jobs += 1
                skips += 1
                if skips <= self.max_skipped_resubmits:
                    self._log(piece, "resubmit", report_run_id=run_id, why=JOB_SKIPPED)
                    continue
                outcome = "failed"
            # failed or timed out
            if outcome == "timeout":
                self.stats.timed_out_jobs += 1
            else:
                self.stats.failed_jobs += 1
            failures += 1
            if failures <= self.max_failed_retries:
                self._log(piece, "retry", report_run_id=run_id, why=outcome)
                continue
            self._split(piece, sink, depth, reason=f"job {outcome} {failures} time(s)")
            return

    def _submit(self, piece: Piece) -> str:
        req = piece.request
        self.stats.submits += 1
        piece.attempts += 1
        answer = self.client.post(req.path, data=req.params())
        run_id = str(answer.get("report_run_id") or answer.get("id") or "")
        if not run_id:
            raise InsightsError(f"POST {req.path} answered without a report_run_id: {sorted(answer)}")
        piece.report_run_ids.append(run_id)
        self._log(piece, "submit", report_run_id=run_id, request=req.describe())
        return run_id

    def _poll(self, piece: Piece, run_id: str) -> str:
        """'completed', 'failed', 'skipped' or 'timeout' (over max_job_wait)."""
        waited = 0.0
        interval = self.poll_interval
        while True:
            self.stats.polls += 1
            status = self.client.get(run_id, {"fields": STATUS_FIELDS})
            state = str(status.get("async_status") or "")
            try:
                pct = int(float(status.get("async_percent_completion") or 0))
            except (TypeError, ValueError):
                pct = 0
            self._log(piece, "poll", report_run_id=run_id, async_status=state, percent=pct)
            if state == JOB_COMPLETED and pct == 100:
                return "completed"
            if state == JOB_FAILED:
                return "failed"
            if state == JOB_SKIPPED:
                return "skipped"
            # Not started, started, running (even at 100 %), or "completed" below 100 %: not readable yet.
            delay = min(self.max_poll_interval, interval)
            interval *= self.poll_backoff
            if waited + delay > self.max_job_wait:
                self._log(piece, "job_timeout", report_run_id=run_id, waited=round(waited, 3))
                return "timeout"
            if self.stats.waited_seconds + delay > self.max_total_wait:
                raise InsightsWaitBudgetExceeded(
                    f"waiting {delay:.1f} s more for report run {run_id} ({piece.request.describe()}) would exceed "
                    f"max_total_wait={self.max_total_wait:g} s; {self.stats.waited_seconds:.0f} s already spent "
                    "polling"
                )
            self._sleep(delay)
            waited += delay
            self.stats.waited_seconds += delay

    def _read(self, piece: Piece, run_id: str, sink: PageSink) -> None:
        pages = self.client.pages(f"{run_id}/insights", {"limit": self.page_limit})
        for page_no, page in enumerate(pages):
            self.stats.pages += 1
            data = page.get("data")
            rows = data if isinstance(data, list) else []
            sink(piece, page_no, {"data": rows})  # never the paging links: Meta's next URLs carry the token
            piece.pages += 1
            piece.rows += len(rows)

    # -- splitting ------------------------------------------------------------------------------------

    def _split(self, piece: Piece, sink: PageSink, depth: int, *, reason: str) -> None:
        if depth >= self.max_split_depth:
            self._fail(piece, f"{reason}; split depth {depth} reached")
            return
        req = piece.request
        children: list[InsightsRequest] = []
        how = None
        if req.n_days > 1:
            mid = req.since + timedelta(days=req.n_days // 2 - 1)
            children = [req.with_days(req.since, mid), req.with_days(mid + timedelta(days=1), req.until)]
            how = "days"
        if not children:
            children = self._split_by_ids(piece)
            how = "ids"
        if not children and len(req.metric_fields) > 1:
            half = len(req.metric_fields) // 2
            children = [
                req.with_metric_fields(req.metric_fields[:half]),
                req.with_metric_fields(req.metric_fields[half:]),
            ]
            how = "fields"
        if not children:
            self._fail(piece, f"{reason}; cannot split a one-day, one-object, one-metric request further")
            return
        self.stats.splits += 1
        piece.status, piece.split_by, piece.reason = SPLIT, how, reason
        self._log(piece, f"split_{how}", reason=reason, children=len(children))
        # Create every child before running any, so an interrupted pull leaves them pending (incomplete days).
        kids = [
            self._new_piece(f"{piece.piece_id}.{i + 1}", child, piece) for i, child in enumerate(children)
        ]
        for kid in kids:
            self._run_piece(kid, sink, depth + 1)

    def _fail(self, piece: Piece, reason: str) -> None:
        piece.status, piece.error, piece.reason = FAILED, reason, reason
        self._log(piece, "failed", reason=reason)

    def _split_by_ids(self, piece: Piece) -> list[InsightsRequest]:
        """Halve the deepest id filter; without one (or with a single id) discover the ids one level down."""
        req = piece.request
        if req.level == "account":
            return []  # account rows cannot be rebuilt from id-filtered parts without re-aggregating
        chain = [lvl for lvl in ("campaign", "adset", "ad") if LEVEL_RANK[lvl] <= LEVEL_RANK[req.level]]
        current = req
        filters = req.id_filters()
        start = 0
        for i, lvl in enumerate(chain):
            ids = filters.get(ID_FILTER_FIELDS[lvl])
            if ids is not None:
                if len(ids) > 1:
                    return self._halves(current, ID_FILTER_FIELDS[lvl], ids)
                start = i + 1
        for lvl in chain[start:]:
            try:
                ids = self._discover_ids(piece, current, lvl)
            except MetaTooMuchDataError as exc:
                self._log(piece, "discovery_too_much_data", level=lvl, error=exc.message)
                return []
            if len(ids) > 1:
                return self._halves(current, ID_FILTER_FIELDS[lvl], ids)
            if not ids:
                return []
            current = current.with_id_filter(ID_FILTER_FIELDS[lvl], ids)  # one id: look one level deeper
        return []

    @staticmethod
    def _halves(
        req: InsightsRequest, field_name: str, ids: tuple[str, ...] | list[str]
    ) -> list[InsightsRequest]:
        ids = sorted(ids)
        half = len(ids) // 2
        return [req.with_id_filter(field_name, ids[:half]), req.with_id_filter(field_name, ids[half:])]

    def _discover_ids(self, piece: Piece, req: InsightsRequest, level: str) -> list[str]:
        """Ids of ``level`` objects with data in the request's range and filters (a small sync query)."""
        params = {
            "level": level,
            "fields": f"{level}_id",
            "time_range": {"since": req.since.isoformat(), "until": req.until.isoformat()},
            "time_increment": "all_days",
            "filtering": req.filtering_param(),
            "limit": self.page_limit,
        }
        ids: set[str] = set()
        for page in self.client.pages(req.path, params):
            self.stats.discovery_calls += 1
            for row in page.get("data") or []:
                value = row.get(f"{level}_id")
                if value:
                    ids.add(str(value))
        self._log(piece, "discover_ids", level=level, ids=len(ids))
        return sorted(ids)
