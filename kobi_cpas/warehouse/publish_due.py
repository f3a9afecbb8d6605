"""When the analyst file is published on a cadence instead of at the end of every run: what is due, as two small
files beside the work database that a sensor can read without opening it (a writer may hold it).

A publish copies the whole analyst file and rewrites every table that changed, so it costs in proportion to the
whole warehouse, not to the run's tenant: once a fleet's file holds millions of items, publishing at the end of
each of hundreds of runs an hour would cost more than the runs. With a publish interval, a run that wrote only
marks the file due (``publish_due``); a sensor publishes at most once per interval (``published`` records when
the last publish started reading the work database, so a write committed after that start stays due)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DUE_FILE = "publish_due"
PUBLISHED_FILE = "published"


def _write_time(path: Path, at: float) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{at:.6f}\n")
    os.replace(tmp, path)  # readers see the old time or the new one, never a half-written file


def _read_time(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class PublishDue:
    """The publish state of one work database's folder."""

    work_dir: Path

    def mark(self, at: float | None = None) -> None:
        """A run committed writes the analyst file does not have yet."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _write_time(self.work_dir / DUE_FILE, time.time() if at is None else at)

    def record_published(self, started_at: float) -> None:
        """A publish that started reading the work database at ``started_at`` (before taking its snapshot)
        swapped its file in."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _write_time(self.work_dir / PUBLISHED_FILE, started_at)

    @property
    def due_at(self) -> float | None:
        return _read_time(self.work_dir / DUE_FILE)

    @property
    def published_at(self) -> float | None:
        return _read_time(self.work_dir / PUBLISHED_FILE)

    def wait_reason(self, interval_s: float, now: float | None = None) -> str | None:
        """Why no publish is needed yet, or None when one is (writes newer than the last publish, and that
        publish at least ``interval_s`` ago)."""
        now = time.time() if now is None else now
        due, published = self.due_at, self.published_at
        if due is None or (published is not None and due <= published):
            last = (
                f"the last publish at {_utc(published)}" if published is not None else "no publish recorded"
            )
            return f"no run wrote the warehouse since {last}"
        if published is not None and now - published < interval_s:
            return (
                f"writes since {_utc(due)} wait for the next publish at {_utc(published + interval_s)} "
                f"(one every {interval_s:.0f} s; the last at {_utc(published)})"
            )
        return None


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
