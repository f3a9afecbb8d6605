"""The local stack behind `make run` / `make dev`: Postgres for the Dagster instance and the Meta sandbox,
each started only when the environment does not already point at a real one."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kobi_cpas.devenv.instance import prepare_dagster_home
from kobi_cpas.devenv.postgres import LocalPostgres, env_for
from kobi_cpas.registry import load_registry

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StackInfo:
    env: dict[str, str] = field(default_factory=dict)
    postgres: str = "external"
    meta: str = "external"
    dagster_home: Path | None = None
    sandbox_url: str | None = None


def _sandbox_token() -> str:
    # A fresh, recognisable-but-random token per stack: the sandbox accepts any well-formed bearer token.
    return "sandbox-" + secrets.token_urlsafe(24)


@contextlib.contextmanager
def local_stack(
    repo_root: Path = REPO_ROOT,
    *,
    state_dir: Path | None = None,
    sandbox_port: int = 0,
    sandbox_seed: int | None = None,
    with_sandbox: bool = True,
) -> Iterator[StackInfo]:
    """Start what is missing, export the env vars for this process (and its children), stop it all at exit."""
    state_dir = state_dir or repo_root / ".local"
    info = StackInfo()
    saved = dict(os.environ)
    pg: LocalPostgres | None = None
    sandbox = None
    try:
        if not os.environ.get("DAGSTER_PG_HOST"):
            pg = LocalPostgres(data_dir=state_dir / "postgres")
            conn = pg.start()
            info.env.update(env_for(conn))
            info.postgres = f"local ({state_dir / 'postgres'})"
        else:
            info.postgres = f"{os.environ['DAGSTER_PG_HOST']}:{os.environ.get('DAGSTER_PG_PORT', '5432')}"
        if with_sandbox and not os.environ.get("META_GRAPH_API_URL"):
            from kobi_cpas.sandbox import SandboxServer, World

            seed = (
                sandbox_seed
                if sandbox_seed is not None
                else int(os.environ.get("KOBI_CPAS_SANDBOX_SEED", "42"))
            )
            world = World.from_registry(load_registry().registry, seed=seed)
            sandbox = SandboxServer(world, port=sandbox_port)
            sandbox.start()
            info.env["META_GRAPH_API_URL"] = sandbox.url
            # Never hand a real token to the sandbox; tests pass a recognisable one to hunt for leaks.
            info.env["META_ACCESS_TOKEN"] = os.environ.get("KOBI_CPAS_SANDBOX_TOKEN") or _sandbox_token()
            info.meta = f"sandbox ({sandbox.url})"
            # The sandbox answers in milliseconds: poll it fast unless told otherwise.
            info.env.setdefault("KOBI_CPAS_POLL_SECONDS", os.environ.get("KOBI_CPAS_POLL_SECONDS") or "0.5")
            info.sandbox_url = sandbox.url
        else:
            info.meta = os.environ.get("META_GRAPH_API_URL", "https://graph.facebook.com")
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or state_dir / "dagster_home")
        prepare_dagster_home(dagster_home, repo_root)
        info.env["DAGSTER_HOME"] = str(dagster_home)
        info.dagster_home = dagster_home
        os.environ.update(info.env)
        yield info
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if sandbox is not None:
            sandbox.stop()
        if pg is not None:
            pg.stop()
