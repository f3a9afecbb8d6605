"""One sync of a tenant's catalog at a time, across processes: an OS lock per tenant beside its feed files.

The run queue keeps two runs of one tenant apart by their catalog-shard tag, but a run that syncs many tenants
(the batch cadence's fleet runs) cannot carry one tag per tenant. So every sync takes the tenant's lock: a
tenant's own run for its whole length, a fleet run only while it syncs that tenant. The fleet run does not wait
for a busy tenant (its next tick takes it); a tenant's own run waits, bounded, for the fleet run to move on.

An flock on the machine's disk: on several machines the same rule needs a lock service (e.g. Postgres
advisory locks on the instance's database)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import filelock

_LOCK = threading.Lock()
_locks: dict[str, filelock.FileLock] = {}


class ShardBusy(TimeoutError):
    """Another process syncs the tenant's catalog."""


def shard_lock_path(workdir_root: str | Path, tenant_id: str) -> Path:
    """The tenant's lock file, beside its feed and upload files (``<workdir>/<tenant>/.sync.lock``)."""
    return Path(workdir_root) / tenant_id / ".sync.lock"


def _reset_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()
    _locks.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def _lock(path: Path) -> filelock.FileLock:
    key = str(path.resolve())
    with _LOCK:
        lock = _locks.get(key)
        if lock is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # thread_local=False: held by the process (the steps of one run may run on other threads).
            lock = filelock.FileLock(path, thread_local=False, preserve_lock_file=True)
            _locks[key] = lock
        return lock


class ShardHold:
    """The tenant's sync lock, taken by ``acquire`` (re-entrant in this process) and given back by ``release``."""

    def __init__(self, workdir_root: str | Path, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.path = shard_lock_path(workdir_root, tenant_id)
        self._lock = _lock(self.path)
        self._held = 0  # acquisitions of this hold not yet released

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds (0: do not wait); ``ShardBusy`` after that."""
        try:
            self._lock.acquire(timeout=max(timeout, 0.0), poll_interval=0.1)
        except filelock.Timeout:
            raise ShardBusy(
                f"tenant '{self.tenant_id}': another process has been syncing its catalog for more than "
                f"{timeout:.0f} s (lock {self.path}); syncs of one catalog never overlap"
            ) from None
        self._held += 1

    def release(self) -> None:
        """Give back what this hold took (nothing when it took nothing)."""
        while self._held:
            self._held -= 1
            self._lock.release()

    def __enter__(self) -> ShardHold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
