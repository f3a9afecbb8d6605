"""The process's DuckDB instance that work databases are attached to while a connection uses them.

Starting a DuckDB instance costs ~20 ms (it registers every built-in function), more than opening the work
database itself, and a run connects dozens of times. So each process keeps one in-memory instance and ATTACHes
the work database to it for as long as a connection is in use. The last DETACH in the process checkpoints and
closes the file, which releases DuckDB's file lock exactly as closing an instance did: no connection holds the
work database between uses.

**One writing process at a time, waiting asleep.** DuckDB lets one process open the file and fails at once in any
other ("Could not set lock"). So the first connection of a process takes an exclusive OS lock (``flock``, through
the filelock library) on a file beside the work database, waiting for it to be free; the last one to close gives it
back. Other connections of the same process share it. A waiting process sleeps between short polls, using no CPU:
Dagster's op concurrency pools, the obvious alternative, make the in-process executor spin on a core for as long
as a step waits for its slot (``interval_to_next_pending_claim_check`` never sleeps), which under a queue of
tenants took more CPU than the work itself. How long a process waited for and held the lock is counted
(``writer_time``) for the run log and the fleet benchmark.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import filelock

from kobi_cpas.warehouse.sql import sql_str

_HOST_LOCK = threading.Lock()
_host: duckdb.DuckDBPyConnection | None = None
_attached: dict[str, tuple[str, int]] = {}  # resolved work path -> (alias, connections using it)
# Instance-wide settings (memory_limit, threads) as last SET on _host: each SET costs a statement per connect.
_settings: dict[str, str] = {}
_writer_locks: dict[str, filelock.FileLock] = {}  # resolved work path -> its writers' lock
_held_since: dict[str, float] = {}
# How a run's log line about its waits and holds begins (the fleet benchmark reads it).
WRITER_TIME_PREFIX = "duckdb writer:"


@dataclass
class WriterTime:
    """Seconds this process waited for and held the writers' lock of work databases, since it started."""

    waited_s: float = 0.0
    held_s: float = 0.0
    holds: int = 0

    def since(self, earlier: WriterTime) -> WriterTime:
        return WriterTime(
            self.waited_s - earlier.waited_s, self.held_s - earlier.held_s, self.holds - earlier.holds
        )


_time = WriterTime()


def writer_time() -> WriterTime:
    """A copy of this process's counters (take one before and one after, and subtract with ``since``)."""
    with _HOST_LOCK:
        now = time.monotonic()
        held = sum(now - t for t in _held_since.values())
        return WriterTime(_time.waited_s, _time.held_s + held, _time.holds)


def writer_lock_path(path: str) -> Path:
    """The writers' lock file of the work database at ``path``."""
    p = Path(path)
    return p.with_name(f".{p.name}.writer.lock")


def _reset_host_after_fork() -> None:
    # A forked child holds none of its parent's locks: it starts its own instance (the inherited one is left
    # alone, not closed, as it belongs to the parent); filelock drops the inherited lock state by itself.
    global _HOST_LOCK, _host, _time
    _HOST_LOCK = threading.Lock()
    _host = None
    _attached.clear()
    _settings.clear()
    _writer_locks.clear()
    _held_since.clear()
    _time = WriterTime()


os.register_at_fork(after_in_child=_reset_host_after_fork)


def _writer_lock(path: str) -> filelock.FileLock:
    with _HOST_LOCK:
        lock = _writer_locks.get(path)
        if lock is None:
            # thread_local=False: the process holds it once, for all its threads (re-entered, counted).
            lock = filelock.FileLock(writer_lock_path(path), thread_local=False, preserve_lock_file=True)
            _writer_locks[path] = lock
        return lock


def attach(path: str, timeout: float) -> duckdb.DuckDBPyConnection:
    """A connection (its own transactions) whose default database is the work database at ``path``, once this
    process holds the writers' lock (waiting up to ``timeout`` seconds for another process to give it back:
    ``TimeoutError`` after that)."""
    lock = _writer_lock(path)
    started = time.monotonic()
    try:
        lock.acquire(timeout=max(timeout, 0.0))
    except filelock.Timeout:
        raise TimeoutError(
            f"the work database {path} has been held by another writing process for more than {timeout:.0f}s "
            f"(its lock: {writer_lock_path(path)})"
        ) from None
    try:
        alias, cur = _register(path, time.monotonic() - started)
    except BaseException:
        lock.release()
        raise
    try:
        # Only this connection's default: a cursor() taken from it starts in the in-memory database.
        cur.execute(f"USE {alias}")
    except BaseException:
        release(path, cur)
        raise
    return cur


def _register(path: str, waited: float) -> tuple[str, duckdb.DuckDBPyConnection]:
    """Attach the file (first user in the process) and count one more user; the alias and a new cursor."""
    global _host
    with _HOST_LOCK:
        _time.waited_s += waited
        if _host is None:
            _host = duckdb.connect(":memory:")
            _settings.clear()
        alias, users = _attached.get(path, ("", 0))
        if not users:
            alias = "kobi_work_" + hashlib.sha256(path.encode()).hexdigest()[:16]
            # Raises duckdb.IOException ("Could not set lock ...") while a process that ignores the writers'
            # lock (a DuckDB client opened by hand) has the file open.
            _host.execute(f"ATTACH IF NOT EXISTS {sql_str(path)} AS {alias}")
            _held_since[path] = time.monotonic()
            _time.holds += 1
        _attached[path] = (alias, users + 1)
        return alias, _host.cursor()


def release(path: str, cur: duckdb.DuckDBPyConnection) -> None:
    with _HOST_LOCK:
        registered = _attached.get(path, ("", 0))[1] > 0
    try:
        cur.close()  # rolls back a transaction left open
        with _HOST_LOCK:
            alias, users = _attached.get(path, ("", 0))
            if users > 1:
                _attached[path] = (alias, users - 1)
                return
            _attached.pop(path, None)
            since = _held_since.pop(path, None)
            if since is not None:
                _time.held_s += time.monotonic() - since
            if users and _host is not None:
                _host.execute(f"DETACH DATABASE IF EXISTS {alias}")
    finally:
        # The lock count follows the user count: a release with no user counted gives nothing back.
        lock = _writer_locks.get(path)
        if registered and lock is not None:
            lock.release()


def configure(cur: duckdb.DuckDBPyConnection, settings: dict[str, str]) -> None:
    """SET the instance-wide ``settings`` (SQL literals by name) through ``cur``, skipping the ones the
    instance already has as last set here."""
    with _HOST_LOCK:
        for name, value in settings.items():
            if _settings.get(name) != value:
                cur.execute(f"SET {name} = {value}")
                _settings[name] = value
