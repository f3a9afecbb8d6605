"""CPU and memory of the processes a fleet benchmark starts, sampled from /proc (Linux).

A background thread reads ``/proc/<pid>/stat`` of every process in the watched trees a few times a second. Run
workers (one per run: the DefaultRunLauncher asks a code server, which starts a multiprocessing child, or an
``execute_run`` process whose command line carries the run id) are recognised by their command line and matched
to their run by the pid Dagster reports in the run's "Started process for run" event; every other process of a tree counts towards its tree ("dagster":
daemon, webserver and code servers; "postgres": the postmaster and its backends). A process's CPU is the last
value sampled before it exited, so each process loses at most one sampling interval of CPU (reported as the
interval). Postgres is counted exactly instead: a backend may live for milliseconds (one per connection of a
client without a pool), too short to sample, so the group's CPU is its live processes' plus what the postmaster
reaped from its exited children (``cutime + cstime``)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_RUN_ID = re.compile(r'"run_id":\s*"([0-9a-f-]{36})"')


@dataclass
class ProcSample:
    group: str
    run_id: str | None
    pid: int = 0
    cpu: float = 0.0  # user + system seconds, last sample
    rss: int = 0  # bytes, last sample
    peak_rss: int = 0
    reaped: float = 0.0  # user + system seconds of exited children the process waited for, last sample
    alive: bool = True


# Groups whose root waits for every child (the postmaster): their exited processes are counted through the root's
# reaped time, not through their last sample.
_REAPED_BY_ROOT = frozenset({"postgres"})


@dataclass
class ProcessProbe:
    roots: dict[str, int]  # group -> root pid
    # Processes whose command line holds this (the bench's DAGSTER_HOME) are roots of the "dagster" group too:
    # `dagster dev` starts its code servers in sessions of their own, and run workers are their children.
    marker: str | None = None
    interval: float = 0.2
    procs: dict[tuple[int, int], ProcSample] = field(default_factory=dict)  # (pid, start ticks) -> sample
    peak_total_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ProcessProbe:
        self._thread = threading.Thread(target=self._loop, name="fleet-bench-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
        children: dict[int, list[int]] = {}
        for pid, f in stats.items():
            children.setdefault(int(f[1]), []).append(pid)
        total = _self_rss()
        roots = [(g, pid) for g, pid in self.roots.items()]
        if self.marker:
            roots += [("dagster", pid) for pid in marked_processes(self.marker, stats)]
        seen: set[int] = set()
        with self._lock:
            for sample in self.procs.values():
                sample.alive = False
            for group, root in roots:
                todo = [root]
                while todo:
                    pid = todo.pop()
                    if pid in seen:
                        continue
                    seen.add(pid)
                    todo.extend(children.get(pid, []))
                    f = stats.get(pid)
                    if f is None:
                        continue
                    key = (pid, int(f[19]))
                    sample = self.procs.get(key)
                    if sample is None:
                        sample = self.procs[key] = ProcSample(group, None)
                    if sample.group != "run_worker":  # a child shows its parent's command line until exec
                        sample.run_id, worker = _worker_of(pid, int(f[1]))
                        sample.group = "run_worker" if worker else group
                    sample.pid = pid
                    sample.cpu = (int(f[11]) + int(f[12])) / _TICK
                    sample.reaped = (int(f[13]) + int(f[14])) / _TICK if pid == root else 0.0
                    sample.alive = True
                    sample.rss = int(f[21]) * _PAGE
                    sample.peak_rss = max(sample.peak_rss, sample.rss)
                    total += sample.rss
            self.peak_total_rss = max(self.peak_total_rss, total)

    def cpu_by_group(self) -> dict[str, float]:
        """CPU seconds so far per group (run workers summed), for deltas between two moments."""
        out: dict[str, float] = {}
        with self._lock:
            for s in self.procs.values():
                # an exited process's whole CPU is in its root's reaped time by now
                reaped = s.group in _REAPED_BY_ROOT
                cpu = (s.cpu if s.alive else 0.0) + s.reaped if reaped else s.cpu
                out[s.group] = out.get(s.group, 0.0) + cpu
        return out

    def run_workers(self, run_of_pid: dict[int, str] | None = None) -> dict[str, ProcSample]:
        """run id -> its worker (the last one when a run had several); ``run_of_pid`` names the run of a worker
        whose command line does not carry it."""
        out: dict[str, ProcSample] = {}
        with self._lock:
            for s in self.procs.values():
                rid = (s.run_id or (run_of_pid or {}).get(s.pid)) if s.group == "run_worker" else None
                if rid:
                    out[rid] = s
        return out

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_total_rss = 0


def marked_processes(marker: str, pids: Iterable[int] | None = None) -> list[int]:
    """The processes (of ``pids``, default all) whose command line contains ``marker``."""
    if pids is None:
        pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    me = os.getpid()
    return [pid for pid in pids if pid != me and marker in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _worker_of(pid: int, ppid: int) -> tuple[str | None, bool]:
    """(run id when the command line carries it, whether the process is a run worker: an ``execute_run``
    process, or a child the code server (``dagster api grpc``) started for a run)."""
    cmd = _cmdline(pid)
    if "execute_run" in cmd:
        m = _RUN_ID.search(cmd.replace('\\"', '"'))
        return (m.group(1) if m else None), True
    if "resource_tracker" in cmd:  # multiprocessing's helper, not a run
        return None, False
    return None, "spawn_main" in cmd or " api grpc" in _cmdline(ppid)


def _self_rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system
