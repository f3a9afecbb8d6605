"""Async insights report jobs: submit, poll, read, and split what Meta will not answer whole.

For a set of ``InsightsRequest`` roots of one ad account the manager keeps up to ``max_in_flight`` report jobs
running at Meta at once (the pattern of Airbyte's Facebook Marketing job manager):

1. it submits a request (``POST /{object}/insights`` -> ``report_run_id``) only while fewer than
   ``max_in_flight`` jobs are in flight AND the last insights load Meta reported (``x-fb-ads-insights-throttle``
   ``app_id_util_pct`` / ``acc_id_util_pct`` and the ``ads_insights`` entries of ``X-Business-Use-Case-Usage``)
   is under ``throttle_threshold``; otherwise it holds submissions back until polls report a lower load (with
   nothing in flight it waits ``poll_interval`` and then lets one job through, so the value is refreshed);
2. it polls every job in flight round-robin (``GET /{report_run_id}``), each with its own growing interval,
   until async_status == "Job Completed" AND async_percent_completion == 100 (a "Job Running" at 100 % is not
   done: its results are not readable yet). Waiting is bounded per job (``max_job_wait``) and per manager
   (``max_total_wait``, the sum of the manager's sleeps);
3. it reads a finished job's ``GET /{report_run_id}/insights`` page by page (the client follows ``paging.next``)
   and hands every page to a sink.

With ``max_in_flight=1`` requests go out in the one-job-at-a-time order. Results never depend on the order:
piece ids are deterministic (``r<n>`` roots, ``<parent>.<i>`` children) and pages are keyed by (piece, page).

When Meta will not answer:
- "Job Skipped": resubmit (up to ``max_skipped_resubmits`` times, then handled as a failure);
- "Job Failed" or a job over ``max_job_wait``: retry once, then split;
- too much data (code 100 subcode 1487534, or HTTP 500 code 1 "Please reduce the amount of data"): split at once.
Splitting halves the day range first, then the object ids (``filtering`` on campaign.id / adset.id / ad.id IN
[...], ids discovered with a small synchronous id-only query), then the metric fields. Children keep every other
parameter of their parent and run before the requests queued after them. A piece that cannot be split further
fails; its days stay incomplete.

Errors: with ``execute``/``run`` every error propagates. ``execute_all`` hands an error to ``on_error(root,
exc)``: it re-raises (fail fast), returns True (drop that root's remaining work, go on with the others) or
False (stop everything). Nothing here imports DuckDB or Dagster.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kobi_cpas.insights.pieces import COMPLETE, FAILED, PENDING, SPLIT, JobStats, Piece
from kobi_cpas.insights.requests import ID_FILTER_FIELDS, LEVEL_RANK, InsightsRequest
from kobi_cpas.meta import MetaGraphClient, MetaTooMuchDataError

log = logging.getLogger("kobi_cpas.insights")

JOB_COMPLETED = "Job Completed"
JOB_FAILED = "Job Failed"
JOB_SKIPPED = "Job Skipped"
STATUS_FIELDS = "id,async_status,async_percent_completion,date_start,date_stop"


PageSink = Callable[["Piece", int, dict[str, Any]], None]
ErrorHandler = Callable[["Piece", Exception], bool]

# Meta sets no fixed number of concurrent async jobs: it asks clients to watch x-fb-ads-insights-throttle and
# slow down before it reaches 100 % (Insights API "Limits and Best Practices"), and says an async job can take up
# to an hour. Four per account keep its jobs (which share acc_id_util_pct) few while overlapping the waits;
# Airbyte's connector admits many more behind a 70-90 % gate. 75 % is also where the client starts pacing.
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_THROTTLE_THRESHOLD = 75.0
_LOAD_KEYS = ("app_id_util_pct", "acc_id_util_pct")
_BUC_KEYS = ("call_count", "total_cputime", "total_time")


class InsightsError(Exception):
    """A problem of the insights pull itself (not a Meta error)."""


class InsightsWaitBudgetExceeded(InsightsError):
    """Polling would exceed the manager's total wait budget (``max_total_wait``)."""


@dataclass
class _Task:
    """A piece waiting for (re)submission, with its retry counters."""

    piece: Piece
    root: Piece
    depth: int
    failures: int = 0
    skips: int = 0


@dataclass
class _Job:
    """A report run in flight at Meta. Times are the manager's own clock: the sum of its sleeps."""

    task: _Task
    run_id: str
    submitted_at: float
    interval: float
    next_poll_at: float


class ReportJobManager:
    """Runs insights requests as async report jobs, several in flight (see the module docstring). One thread."""

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
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        throttle_threshold: float = DEFAULT_THROTTLE_THRESHOLD,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_limit < 1:
            raise ValueError("page_limit must be >= 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
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
        self.max_in_flight = int(max_in_flight)
        self.throttle_threshold = float(throttle_threshold)
        self._sleep = sleep
        self._now = 0.0
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
        """Run a prepared root piece to the end; every error propagates."""
        self.execute_all([root], sink)
        return root

    def execute_all(
        self, roots: Iterable[Piece], sink: PageSink, on_error: ErrorHandler | None = None
    ) -> None:
        """Run prepared root pieces to the end, up to ``max_in_flight`` report jobs at once (in root order)."""
        tasks = []
        for root in roots:
            if root.status != PENDING or root.attempts:
                raise InsightsError(f"piece {root.piece_id} already ran")
            tasks.append(_Task(root, root, 0))
        self._drive(deque(tasks), sink, on_error)

    # -- the scheduler ---------------------------------------------------------------------------------

    def _drive(self, queue: deque[_Task], sink: PageSink, on_error: ErrorHandler | None) -> None:
        inflight: list[_Job] = []
        force_one = False
        while queue or inflight:
            while queue and len(inflight) < self.max_in_flight and (force_one or self._may_submit()):
                force_one = False
                task = queue.popleft()
                try:
                    job = self._start(task, queue)
                except Exception as exc:
                    if not self._failed(task.root, exc, queue, inflight, on_error):
                        return
                    continue
                if job is not None:
                    inflight.append(job)
                    self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, len(inflight))
            if queue and len(inflight) < self.max_in_flight:
                self.stats.held_back += 1
                if not inflight:
                    # Over the threshold with nothing running: wait, then let one job through (its answer
                    # carries a fresh load figure); the client paces that request by the same headers too.
                    what = f"the insights load ({self.stats.last_load_pct:.0f} %) to drop"
                    if not self._wait_for(self.poll_interval, what, queue[0].root, queue, inflight, on_error):
                        return
                    force_one = True
                    continue
            if not inflight:
                continue
            due = [job for job in inflight if job.next_poll_at <= self._now]
            if not due:
                nxt = min(inflight, key=lambda j: j.next_poll_at)
                what = f"report run {nxt.run_id} ({nxt.task.piece.request.describe()})"
                if not self._wait_for(
                    nxt.next_poll_at - self._now, what, nxt.task.root, queue, inflight, on_error
                ):
                    return
                continue
            for job in due:  # round-robin: every due job once per round, in submission order
                try:
                    outcome = self._poll(job)
                    if outcome is None:
                        continue
                    inflight.remove(job)
                    self._finish(job, outcome, queue, sink)
                except Exception as exc:
                    if job in inflight:
                        inflight.remove(job)
                    if not self._failed(job.task.root, exc, queue, inflight, on_error):
                        return
                    break  # the lists changed: start a new round

    def _failed(
        self,
        root: Piece,
        exc: Exception,
        queue: deque[_Task],
        inflight: list[_Job],
        on_error: ErrorHandler | None,
    ) -> bool:
        """An error while working on ``root``: propagate, drop the root's remaining work, or stop."""
        if on_error is None or not on_error(root, exc):
            if on_error is None:
                raise exc
            return False
        kept = [t for t in queue if t.root is not root]
        queue.clear()
        queue.extend(kept)
        inflight[:] = [j for j in inflight if j.task.root is not root]
        return True

    def _wait_for(
        self,
        delay: float,
        what: str,
        root: Piece,
        queue: deque[_Task],
        inflight: list[_Job],
        on_error: ErrorHandler | None,
    ) -> bool:
        """Sleep ``delay``; over the wait budget the error is the root's (False: stop everything)."""
        try:
            self._wait(delay, what)
        except InsightsWaitBudgetExceeded as exc:
            return self._failed(root, exc, queue, inflight, on_error)
        return True

    def _may_submit(self) -> bool:
        pct = self.stats.last_load_pct
        return pct is None or pct < self.throttle_threshold

    def _observe_load(self) -> None:
        """Remember the insights load of the last answer (throttle header, ads_insights business use case)."""
        usage = self.client.last_usage
        if usage is None:
            return
        values = [float(v) for k in _LOAD_KEYS if (v := _num(usage.insights.get(k))) is not None]
        for entries in usage.business.values():
            for entry in entries:
                if entry.get("type") == "ads_insights":
                    values += [float(v) for k in _BUC_KEYS if (v := _num(entry.get(k))) is not None]
        if values:
            self.stats.last_load_pct = max(values)

    def _wait(self, delay: float, what: str) -> None:
        delay = max(0.0, delay)
        if self.stats.waited_seconds + delay > self.max_total_wait:
            raise InsightsWaitBudgetExceeded(
                f"waiting {delay:.1f} s more for {what} would exceed max_total_wait={self.max_total_wait:g} s; "
                f"{self.stats.waited_seconds:.0f} s already spent polling"
            )
        if delay > 0:
            self._sleep(delay)
        self._now += delay
        self.stats.waited_seconds += delay

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

    def _start(self, task: _Task, queue: deque[_Task]) -> _Job | None:
        """Submit a task's piece; too much data at submission splits it at once (no job then)."""
        piece = task.piece
        try:
            run_id = self._submit(piece)
        except MetaTooMuchDataError as exc:
            self._observe_load()
            self.stats.too_much_data += 1
            self._log(piece, "too_much_data", at="submit", error=exc.message)
            self._split(task, queue, reason=f"too much data: {exc.message}")
            return None
        return _Job(task, run_id, self._now, self.poll_interval, self._now)

    def _submit(self, piece: Piece) -> str:
        req = piece.request
        self.stats.submits += 1
        piece.attempts += 1
        answer = self.client.post(req.path, data=req.params())
        self._observe_load()
        run_id = str(answer.get("report_run_id") or answer.get("id") or "")
        if not run_id:
            raise InsightsError(f"POST {req.path} answered without a report_run_id: {sorted(answer)}")
        piece.report_run_ids.append(run_id)
        self._log(piece, "submit", report_run_id=run_id, request=req.describe())
        return run_id

    def _poll(self, job: _Job) -> str | None:
        """One status read: 'completed', 'failed', 'skipped', 'timeout' (over max_job_wait) or None (not yet;
        the next poll is scheduled)."""
        piece, run_id = job.task.piece, job.run_id
        self.stats.polls += 1
        status = self.client.get(run_id, {"fields": STATUS_FIELDS})
        self._observe_load()
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
        delay = min(self.max_poll_interval, job.interval)
        job.interval *= self.poll_backoff
        waited = self._now - job.submitted_at
        if waited + delay > self.max_job_wait:
            self._log(piece, "job_timeout", report_run_id=run_id, waited=round(waited, 3))
            return "timeout"
        job.next_poll_at = self._now + delay
        return None

    def _finish(self, job: _Job, outcome: str, queue: deque[_Task], sink: PageSink) -> None:
        task, run_id = job.task, job.run_id
        piece = task.piece
        if outcome == "completed":
            try:
                self._read(piece, run_id, sink)
            except MetaTooMuchDataError as exc:
                self.stats.too_much_data += 1
                self._log(piece, "too_much_data", at="read", error=exc.message)
                self._split(task, queue, reason=f"too much data: {exc.message}")
                return
            piece.status = COMPLETE
            self._log(piece, "complete", report_run_id=run_id, pages=piece.pages, rows=piece.rows)
            return
        if outcome == "skipped":
            self.stats.skipped_jobs += 1
            task.skips += 1
            if task.skips <= self.max_skipped_resubmits:
                self._log(piece, "resubmit", report_run_id=run_id, why=JOB_SKIPPED)
                queue.appendleft(task)
                return
            outcome = "failed"
        if outcome == "timeout":
            self.stats.timed_out_jobs += 1
        else:
            self.stats.failed_jobs += 1
        task.failures += 1
        if task.failures <= self.max_failed_retries:
            self._log(piece, "retry", report_run_id=run_id, why=outcome)
            queue.appendleft(task)
            return
        self._split(task, queue, reason=f"job {outcome} {task.failures} time(s)")

    def _read(self, piece: Piece, run_id: str, sink: PageSink) -> None:
        pages = self.client.pages(f"{run_id}/insights", {"limit": self.page_limit})
        for page_no, page in enumerate(pages):
            self.stats.pages += 1
            data = page.get("data")
            rows = data if isinstance(data, list) else []
            sink(piece, page_no, {"data": rows})  # never the paging links: Meta's next URLs carry the token
            piece.pages += 1
            piece.rows += len(rows)
        self._observe_load()

    # -- splitting ------------------------------------------------------------------------------------

    def _split(self, task: _Task, queue: deque[_Task], *, reason: str) -> None:
        piece, depth = task.piece, task.depth
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
        # Create every child before running any, so an interrupted pull leaves them pending (incomplete days);
        # they go first in the queue, as the one-job-at-a-time manager ran them before the next request.
        kids = [
            self._new_piece(f"{piece.piece_id}.{i + 1}", child, piece) for i, child in enumerate(children)
        ]
        queue.extendleft(_Task(kid, task.root, depth + 1) for kid in reversed(kids))

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


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
