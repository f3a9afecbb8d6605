"""The data of an insights pull's job tree: pieces (one node of a request's split tree) and the job counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kobi_cpas.insights.requests import InsightsRequest

# Piece statuses: pending (created, not finished: its days are incomplete), complete, failed, split.
PENDING, COMPLETE, FAILED, SPLIT = "pending", "complete", "failed", "split"


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
    max_in_flight_seen: int = 0  # most report jobs in flight at once
    held_back: int = 0  # submissions deferred because the insights load was over the threshold
    last_load_pct: float | None = None  # the insights load Meta reported last

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
            "max_in_flight_seen": self.max_in_flight_seen,
            "held_back": self.held_back,
            "last_load_pct": self.last_load_pct,
        }
