"""The Dagster instance's home and the settings dagster.yaml cannot hold.

`prepare_dagster_home` copies the repository's dagster.yaml into DAGSTER_HOME, so dev, CI and prod
read the same file. `ensure_pools` sets the per-pool limits: in Dagster 1.13 dagster.yaml sets only a
default pool limit (`concurrency: pools: default_limit`), a named pool's limit lives in the instance's
storage (what `dagster instance concurrency set POOL N` writes).

No dagster import: the instance is duck-typed (`instance.event_log_storage`).
"""

from __future__ import annotations

import filecmp
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Pools the project's assets declare, with their limits.
#: duckdb_write: DuckDB allows one writing process per file, so every step that writes the work
#: database holds this pool's only slot.
PROJECT_POOLS: Mapping[str, int] = {"duckdb_write": 1}


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
        tmp = target.with_name(".dagster.yaml.tmp")
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
    import time

    beats = instance.get_daemon_heartbeats()
    return any(time.time() - hb.timestamp < within_seconds for hb in beats.values())


def release_orphaned_slots(instance: Any) -> list[str]:
    """Free pool slots held by runs that can no longer finish — e.g. a `make dev` killed mid-run leaves its
    run STARTED and its `duckdb_write` slot claimed, and the next `make run` would wait for it forever.

    Only when no daemon is alive: with a daemon, run monitoring fails such runs and frees their slots itself.
    Returns the run ids released (each is marked failed if it was not finished)."""
    if daemon_alive(instance):
        return []
    storage = instance.event_log_storage
    released: list[str] = []
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        run_ids = {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
        for run_id in sorted(run_ids - set(released)):
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                instance.report_run_failed(run, "run orphaned (its process is gone); pool slots released")
            storage.free_concurrency_slots_for_run(run_id)
            released.append(run_id)
    return released
