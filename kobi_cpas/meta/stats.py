"""What a Meta client sent and got back: counts by HTTP status, retries, throttling, pacing and the peak
rate-limit usage, summed up in one line for a run's log."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ClientStats:
    requests: int = 0  # HTTP requests sent (each attempt counts)
    retries: int = 0  # retry sleeps taken
    throttled: int = 0  # throttled answers received
    slept_seconds: float = 0.0  # every sleep: backoff and pacing
    paced: int = 0  # pacing sleeps taken
    paced_seconds: float = 0.0
    errors: int = 0  # error answers and transport failures
    statuses: dict[int, int] = field(default_factory=dict)  # answers by HTTP status
    peak_usage_pct: float = 0.0  # the highest rate-limit usage Meta reported
    peak_usage: str = ""  # ... described with the counter it was on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, *more: ClientStats) -> str:
        """One line for the run's log: requests by status, retries, throttling, pacing and the peak usage of
        these stats and ``more`` (the clients of one run)."""
        every = (self, *more)
        statuses: Counter[int] = Counter()
        for s in every:
            statuses.update(s.statuses)
        peak = max(every, key=lambda s: s.peak_usage_pct)
        answered = ", ".join(f"{status} x {n}" for status, n in sorted(statuses.items()))
        text = f"Meta: {sum(s.requests for s in every)} requests ({answered or 'no answer'})"
        counts = {
            "errors": sum(s.errors for s in every),
            "retries": sum(s.retries for s in every),
            "throttled": sum(s.throttled for s in every),
            "paced": sum(s.paced for s in every),
        }
        if any(counts.values()):
            text += "; " + ", ".join(f"{label} {n}" for label, n in counts.items() if n)
        return text + f"; peak {peak.peak_usage or 'usage n/a'}"
