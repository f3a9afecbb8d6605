"""Scratch copies of the work database, for dry runs.

A dry run must leave Kobi's own state exactly as it was: the sync methods record requests as in flight and
confirm items from Meta's answers, and a dry run's answers are synthetic. So a dry run works on a byte copy of
the work database taken when it starts (``<work dir>/dry_run/<key>/warehouse.duckdb``) and never publishes it;
only the record of the writes it did not send (``meta_dry_run_writes``) goes to the real work database and the
analyst file (``record_dry_run_writes``).

The copy is kept after the run (a person can open it to see the state the run would have left) and removed
by a later dry run once it is older than ``SCRATCH_MAX_AGE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from kobi_cpas.warehouse.publish import PublishResult
from kobi_cpas.warehouse.sql import qident, transaction
from kobi_cpas.warehouse.tables import META_DRY_RUN_WRITES
from kobi_cpas.warehouse.warehouse import Warehouse

log = logging.getLogger(__name__)

SCRATCH_DIR = "dry_run"
SCRATCH_MAX_AGE = timedelta(hours=24)
_KEY_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class ScratchWarehouse(Warehouse):
    """A warehouse on a scratch copy of the work database: connections as usual, ``publish`` does nothing."""

    def __init__(self, real: Warehouse, scratch_dir: Path) -> None:
        super().__init__(
            real.analyst_path,
            work_dir=scratch_dir,
            lock_timeout=real.lock_timeout,
            memory_limit=real.memory_limit,
            threads=real.threads,
            schema=real._schema,
        )
        self.real = real

    def publish(self, con: duckdb.DuckDBPyConnection | None = None) -> PublishResult:
        log.info("dry run: scratch copy %s is not published", self.work_path)
        return PublishResult(path=self.analyst_path)


def scratch_key(value: str) -> str:
    """A file-name-safe key (a run id or the value of the scratch tag)."""
    key = _KEY_RE.sub("_", value.strip())[:64].strip("._")
    if not key:
        raise ValueError(f"dry-run scratch key {value!r} has no usable characters")
    return key


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_old_scratches(root: Path, keep: Path, max_age: timedelta) -> None:
    cutoff = time.time() - max_age.total_seconds()
    for d in root.iterdir():
        if d == keep or not d.is_dir():
            continue
        with contextlib.suppress(OSError):
            if d.stat().st_mtime < cutoff:
                shutil.rmtree(d)
                log.info("removed the dry-run scratch copy %s (older than %s)", d, max_age)


def open_scratch(real: Warehouse, key: str, max_age: timedelta = SCRATCH_MAX_AGE) -> ScratchWarehouse:
    """The scratch warehouse of ``key``, copied from the real work database the first time it is asked for.

    The copy is taken with a connection to the real database open (migrated and checkpointed first): DuckDB's
    file lock keeps every other process from writing it meanwhile, so the copy is a consistent state."""
    root = real.work_dir / SCRATCH_DIR
    scratch_dir = root / scratch_key(key)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    target = scratch_dir / real.work_path.name
    with _flock(scratch_dir / ".lock"):
        if not target.exists():
            _remove_old_scratches(root, scratch_dir, max_age)
            tmp = scratch_dir / f".{uuid.uuid4().hex}.copying"
            try:
                with real.connect() as con:
                    con.execute("CHECKPOINT")
                    shutil.copyfile(real.work_path, tmp)
                    wal = real.work_path.with_name(real.work_path.name + ".wal")
                    if wal.exists():  # not expected after CHECKPOINT; copied so the copy is never short
                        shutil.copyfile(wal, target.with_name(target.name + ".wal"))
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            log.info("dry run: copied the work database %s to %s", real.work_path, target)
    os.utime(scratch_dir)  # in use: not removed as old by another dry run
    return ScratchWarehouse(real, scratch_dir)


def record_dry_run_writes(real: Warehouse, rows: Sequence[dict[str, Any]], publish: bool = True) -> int:
    """Insert ``meta_dry_run_writes`` rows into the real work database and publish it (only this table
    changes, so the incremental publish rewrites only it). Returns the rows inserted."""
    if not rows:
        return 0
    spec = META_DRY_RUN_WRITES
    cols = spec.column_names
    with real.connect() as con:
        with transaction(con):
            con.executemany(
                f"INSERT INTO main.{qident(spec.name)} ({', '.join(qident(c) for c in cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                [[r.get(c) for c in cols] for r in rows],
            )
        if publish:
            real.publish(con)
    return len(rows)
