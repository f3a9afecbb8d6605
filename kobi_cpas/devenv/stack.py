"""The local stack behind `make run` / `make dev`: Postgres for the Dagster instance and the Meta sandbox,
each started only when the environment does not already point at a real one.

Several stacks (a `make dev` and any number of `make run`s) share one local Postgres, and none of them may
break another:

* **Start lock.** `<state dir>/stack.lock` (an `fcntl.flock`) is held while a stack checks for and starts
  Postgres and registers itself, and while a stack leaves and decides whether to stop it; two stacks starting
  at once never both initialise or start the cluster, and a stack never stops a server another is joining.
* **Users.** `<state dir>/stack_users.json`, read and written only under the lock, lists the stacks using the
  local Postgres (pid + process identity token + a per-stack id) and the server the stacks started
  (`<postmaster pid>@<start time>`). A stack registers when it joins and removes itself when it leaves;
  entries of processes that are gone (killed, crashed, pid reused) are pruned whenever the file is read.
* **Stopping.** A stack that leaves stops Postgres only when no live stack is registered any more and the
  running server is the one a stack started: the last one out stops it, whoever started it (so a server left
  by a killed stack is cleaned up by the next stack that leaves). A server found running that no stack
  started (`kobi-cpas postgres start`, a test) is never stopped by a stack.
* **The sandbox** runs in the stack's own process. With a fixed port (`make dev`, 8765), a sandbox already
  answering there is reused and left running (it lives as long as the process that started it); a port held
  by anything else gets a sandbox on a free port instead. Each stack stops only the sandbox it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kobi_cpas.devenv.instance import prepare_dagster_home
from kobi_cpas.devenv.pg_process import port_is_free
from kobi_cpas.devenv.postgres import LocalPostgres, PgConnInfo, env_for
from kobi_cpas.devenv.procs import process_token, same_process_alive
from kobi_cpas.meta.config import DEFAULT_BASE_URL, ENV_BASE_URL
from kobi_cpas.registry import load_registry
from kobi_cpas.warehouse.warehouse import DEFAULT_ANALYST_PATH

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK_FILE = "stack.lock"
USERS_FILE = "stack_users.json"


@dataclass
class StackInfo:
    env: dict[str, str] = field(default_factory=dict)
    postgres: str = "external"
    meta: str = "external"
    dagster_home: Path | None = None
    sandbox_url: str | None = None
    #: The Postgres is the local one (loopback only): every process using the instance runs on this machine.
    postgres_local: bool = False


def _sandbox_token() -> str:
    # A fresh, recognisable-but-random token per stack: the sandbox accepts any well-formed bearer token.
    return "sandbox-" + secrets.token_urlsafe(24)


@contextlib.contextmanager
def stack_lock(state_dir: Path) -> Iterator[None]:
    """The start lock shared by every stack using `state_dir` (blocks until free)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SharedPostgres:
    """This stack's membership of the local Postgres in `state_dir` (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pg = LocalPostgres(data_dir=state_dir / "postgres")
        self.users_path = state_dir / USERS_FILE
        pid = os.getpid()
        self.me = {"id": uuid.uuid4().hex, "pid": pid, "process": process_token(pid)}

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self.users_path.read_text())
            users = [u for u in state["users"] if isinstance(u.get("pid"), int) and u.get("id")]
            server = state.get("server")
        except FileNotFoundError:
            users, server = [], None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Unreadable: forget the users rather than stop a server someone may use; nobody will stop it.
            log.warning("ignoring unreadable %s (%s)", self.users_path, exc)
            users, server = [], None
        live = [u for u in users if same_process_alive(u["pid"], u.get("process"))]
        for gone in (u for u in users if u not in live):
            log.info("pruning stack of pid %s from %s: its process is gone", gone["pid"], self.users_path)
        return {"server": server if isinstance(server, str) else None, "users": live}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.users_path.with_name(f".{USERS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        tmp.replace(self.users_path)

    def join(self) -> PgConnInfo:
        """Start Postgres unless running, and register this stack as a user."""
        with stack_lock(self.state_dir):
            state = self._load()
            conn = self.pg.start()
            server = self.pg.server_id()
            if self.pg.started_here:
                state["server"] = server
            elif state["server"] != server:
                state["server"] = None  # running, but no stack started it: never ours to stop
            state["users"].append(self.me)
            self._save(state)
            return conn

    def leave(self) -> bool:
        """Unregister; stop Postgres when this was the last live user of a server a stack started.
        Returns True when it stopped the server."""
        with stack_lock(self.state_dir):
            state = self._load()
            state["users"] = [u for u in state["users"] if u["id"] != self.me["id"]]
            server = self.pg.server_id()
            stopped = False
            if not state["users"] and server is not None and state["server"] == server:
                stopped = self.pg.stop()
            if stopped or server is None or state["server"] != server:
                state["server"] = None
            self._save(state)
            if not stopped and server is not None and state["users"]:
                log.info("leaving PostgreSQL running for %d other stack(s)", len(state["users"]))
            return stopped


def _answers_as_sandbox(port: int) -> bool:
    import requests

    try:
        response = requests.get(f"http://127.0.0.1:{port}/__sandbox/health", timeout=3)
        return response.ok and response.json().get("ok") is True
    except (requests.RequestException, ValueError, AttributeError):
        return False


def _start_sandbox(state_dir: Path, port: int, seed: int) -> tuple[str, Any]:
    """(url, the server this stack started or None when it reuses one)."""
    from meta_sandbox import SandboxServer, World

    # Under the start lock: two `make dev`s starting at once must not both find the port free.
    with stack_lock(state_dir):
        if port and _answers_as_sandbox(port):
            return f"http://127.0.0.1:{port}", None
        if port and not port_is_free(port):  # binds with SO_REUSEADDR, as werkzeug does
            log.warning("port %s is taken by something that is not the Meta sandbox: using a free port", port)
            port = 0
        world = World.from_registry(load_registry().registry, seed=seed)
        return "", SandboxServer(world, port=port).start()


DEV_LOCK_FILE = "dev.lock"


def analyst_path(repo_root: Path = REPO_ROOT) -> Path:
    """The local stack's analyst file: KOBI_CPAS_DUCKDB_PATH, a relative one (or the default `data/...`) taken
    from the repo, so a command run from another directory uses the same file as the Dagster history beside it."""
    given = os.environ.get("KOBI_CPAS_DUCKDB_PATH")
    path = Path(given).expanduser() if given else DEFAULT_ANALYST_PATH
    return path if path.is_absolute() else repo_root / path


class DevSessionError(RuntimeError):
    """`make dev` cannot start: its UI port is taken, or another `make dev` runs on this instance."""


@contextlib.contextmanager
def dev_session(state_dir: Path, ui_port: int) -> Iterator[None]:
    """Held for the life of one `make dev`: a second one on the same state dir would start a second daemon on the
    same Dagster instance (two daemons launch every schedule tick twice), so it is refused with the first one's
    address; a UI port another program holds is refused before anything starts."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / DEV_LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = handle.read().strip() or "unknown"
            raise DevSessionError(
                f"make dev is already running on this Dagster instance ({other}); open its UI, or stop it "
                "(Ctrl-C) before starting another"
            ) from None
        try:
            if not port_is_free(ui_port):
                raise DevSessionError(
                    f"UI port {ui_port} is in use by another program: start with `make dev UI_PORT=<free port>`"
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, UI http://localhost:{ui_port}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def local_stack(
    repo_root: Path = REPO_ROOT,
    *,
    state_dir: Path | None = None,
    sandbox_port: int = 0,
    sandbox_seed: int | None = None,
    with_sandbox: bool = True,
) -> Iterator[StackInfo]:
    """Start what is missing, export the env vars for this process (and its children); at exit stop only what
    this stack started and no other stack still uses."""
    state_dir = (state_dir or repo_root / ".local").absolute()
    info = StackInfo()
    saved = dict(os.environ)
    shared: SharedPostgres | None = None
    sandbox = None
    try:
        if not os.environ.get("DAGSTER_PG_HOST"):
            candidate = SharedPostgres(state_dir)
            conn = candidate.join()
            shared = candidate
            info.env.update(env_for(conn))
            info.postgres = f"local ({state_dir / 'postgres'})"
            info.postgres_local = True
        else:
            info.postgres = f"{os.environ['DAGSTER_PG_HOST']}:{os.environ.get('DAGSTER_PG_PORT', '5432')}"
        if with_sandbox and not os.environ.get("META_GRAPH_API_URL"):
            seed = (
                sandbox_seed
                if sandbox_seed is not None
                else int(os.environ.get("KOBI_CPAS_SANDBOX_SEED", "42"))
            )
            url, sandbox = _start_sandbox(state_dir, sandbox_port, seed)
            url = sandbox.url if sandbox is not None else url
            info.env["META_GRAPH_API_URL"] = url
            # Never hand a real token to the sandbox; tests pass a recognisable one to hunt for leaks.
            info.env["META_ACCESS_TOKEN"] = os.environ.get("KOBI_CPAS_SANDBOX_TOKEN") or _sandbox_token()
            info.meta = f"sandbox ({url})" if sandbox is not None else f"sandbox (reused, {url})"
            # The sandbox answers in milliseconds: poll it fast unless told otherwise.
            info.env.setdefault("KOBI_CPAS_POLL_SECONDS", os.environ.get("KOBI_CPAS_POLL_SECONDS") or "0.5")
            info.sandbox_url = url
        else:
            info.meta = os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        info.env["KOBI_CPAS_DUCKDB_PATH"] = str(analyst_path(repo_root))
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
        if shared is not None:
            shared.leave()
