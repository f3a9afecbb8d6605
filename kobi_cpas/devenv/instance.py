"""The Dagster instance's home and the settings dagster.yaml cannot hold.

`prepare_dagster_home` copies the repository's dagster.yaml into DAGSTER_HOME, so dev, CI and prod
read the same file. `ensure_pools` sets the per-pool limits: in Dagster 1.13 dagster.yaml sets only a
default pool limit (`concurrency: pools: default_limit`), a named pool's limit lives in the instance's
storage (what `dagster instance concurrency set POOL N` writes).

The instance is duck-typed (`instance.event_log_storage`): dagster is imported only inside the function
that needs one of its types, so this module imports without it.

Orphaned runs: `release_orphaned_slots` frees the pool slots of a run only when the process executing it is
provably gone from this host. The owner is read from the run tags `kobi/owner_host`, `kobi/owner_pid` and
`kobi/owner_process` (set by `make run` on the runs it executes in-process, see `owner_tags`), else, on an
instance only this machine uses, from the pid Dagster records with the run's RUN_START event. A pid is checked
together with the process's identity (start time), so a pid reused by another process does not keep a dead
run alive, and a live process never loses its run.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kobi_cpas.devenv.procs import (
    alive_since,
    pid_alive,
    process_token,
    same_process_alive,
    this_host,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Pools the project's assets declare, with their limits: none. DuckDB writers take turns on the warehouse's
#: writers' lock instead (kobi_cpas.warehouse.host): a step waiting for a pool slot makes Dagster's in-process
#: executor spin on a core. Operators may still add pools of their own (`ensure_pools(instance, {...})`).
PROJECT_POOLS: Mapping[str, int] = {}

#: Run tags naming the process that executes a run (see `owner_tags`).
OWNER_HOST_TAG = "kobi/owner_host"
OWNER_PID_TAG = "kobi/owner_pid"
OWNER_PROCESS_TAG = "kobi/owner_process"


def prepare_dagster_home(dagster_home: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Create `dagster_home` and copy `<repo_root>/dagster.yaml` into it (only when it changed).

    Returns `dagster_home`. Run it before anything reads the instance (`DagsterInstance.get()`,
    `dagster dev`, the daemon).
    """
    source = Path(repo_root) / "dagster.yaml"
    if not source.is_file():
        raise FileNotFoundError(
            f"No dagster.yaml in {repo_root}: the instance config lives at the repository root"
        )
    dagster_home = Path(dagster_home).absolute()
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if target.resolve() == source.resolve():
        return dagster_home  # DAGSTER_HOME is the repository itself
    if not target.exists() or not filecmp.cmp(source, target, shallow=False):
        tmp = target.with_name(f".dagster.yaml.{os.getpid()}.tmp")  # per process: stacks may start together
        shutil.copyfile(source, tmp)
        tmp.replace(target)  # atomic: a daemon starting now never reads half a file
    return dagster_home


def ensure_pools(instance: Any, pools: Mapping[str, int] | None = None) -> dict[str, int]:
    """Set each pool's limit in the instance storage (default `PROJECT_POOLS`).

    Idempotent: a pool already at its limit is left alone, one that only has the dagster.yaml
    default is made explicit. Returns the pools that were changed, with their new limits.
    """
    wanted = dict(PROJECT_POOLS if pools is None else pools)
    for name, limit in wanted.items():
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"Pool {name!r}: the limit must be a non-negative integer, got {limit!r}")
    if not wanted:  # nothing to set, so the instance need not be asked for its pools
        return {}
    storage = instance.event_log_storage
    current = {p.name: (p.limit, p.from_default) for p in storage.get_pool_limits()}
    changed: dict[str, int] = {}
    for name, limit in wanted.items():
        if current.get(name) != (limit, False):
            storage.set_concurrency_slots(name, limit)
            changed[name] = limit
    return changed


def daemon_alive(instance: Any, within_seconds: float = 120.0) -> bool:
    """Is a dagster-daemon heartbeating on this instance (then run monitoring owns stuck runs)?"""
    beats = instance.get_daemon_heartbeats()
    return any(time.time() - hb.timestamp < within_seconds for hb in beats.values())


def owner_tags() -> dict[str, str]:
    """Run tags naming this process as the one that executes the run (`make run` runs in-process)."""
    pid = os.getpid()
    tags = {OWNER_HOST_TAG: this_host(), OWNER_PID_TAG: str(pid)}
    token = process_token(pid)
    if token:
        tags[OWNER_PROCESS_TAG] = token
    return tags


@dataclass(frozen=True)
class RunOwner:
    """The process that executes a run: `host` None means "this host, as far as anyone can tell"."""

    pid: int
    host: str | None = None
    process: str | None = None  # identity token (procs.process_token), when recorded
    since: float | None = None  # a Unix time at which the process already existed


def run_owner(instance: Any, run: Any, *, same_host: bool = False) -> RunOwner | None:
    """Who executes `run`, or None when unknown.

    Dagster records the pid of the process that started the run with its RUN_START event: the run worker
    (default run launcher) or the process calling execute_in_process. The owner tags add the host and the
    process identity, and are trusted only when they name that same pid (a re-execution copies its parent's
    tags, not its process). A bare pid says nothing about the host, so it is used only with `same_host`."""
    from dagster import DagsterEventType

    starts = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
    with_pid = [e for e in starts if e.dagster_event is not None and e.dagster_event.pid]
    latest = max(with_pid, key=lambda e: e.timestamp) if with_pid else None
    started_by = int(latest.dagster_event.pid) if latest is not None else None
    tags = run.tags or {}
    tagged = tags.get(OWNER_PID_TAG, "")
    host = tags.get(OWNER_HOST_TAG) or None
    if tagged.isdigit() and started_by in (None, int(tagged)) and (host is not None or same_host):
        return RunOwner(int(tagged), host, tags.get(OWNER_PROCESS_TAG) or None)
    if latest is None or started_by is None or not same_host:
        return None
    return RunOwner(started_by, since=latest.timestamp)


def owner_gone(owner: RunOwner) -> bool:
    """Is the owning process provably gone? Only on this host; in doubt, it is not."""
    if owner.host is not None and owner.host != this_host():
        return False
    if owner.process:
        return not same_process_alive(owner.pid, owner.process)
    if owner.since is not None:
        return not alive_since(owner.pid, owner.since)
    return not pid_alive(owner.pid)


def release_orphaned_slots(instance: Any, *, same_host: bool = False) -> list[str]:
    """Free pool slots held by runs that can no longer finish — e.g. a `make dev` killed mid-run leaves its
    run STARTED and its pool slots claimed, and the next run needing them would wait for it forever.

    A run that is not finished counts as orphaned only when its owning process (`run_owner`) is provably gone
    from this host: runs of live processes (another `make run`, the UI's run workers), of other hosts and of
    unknown owners are left alone. `same_host=True` says every process using the instance runs on this
    machine (the devenv's local Postgres listens on loopback only), so Dagster's recorded pid is enough.
    Slots of finished or deleted runs are always freed. Only when no daemon is alive: with a daemon, run
    monitoring fails such runs and frees their slots itself.
    Returns the run ids released (each is marked failed if it was not finished)."""
    if daemon_alive(instance):
        return []
    storage = instance.event_log_storage
    released: list[str] = []
    seen: set[str] = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        run_ids = {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
        for run_id in sorted(run_ids - seen):
            seen.add(run_id)
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                owner = run_owner(instance, run, same_host=same_host)
                if owner is None or not owner_gone(owner):
                    continue
                instance.report_run_failed(
                    run, f"run orphaned (its process {owner.pid} is gone); pool slots released"
                )
            storage.free_concurrency_slots_for_run(run_id)
            released.append(run_id)
    return released
