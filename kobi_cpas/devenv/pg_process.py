"""Which PostgreSQL server runs in a data dir (its postmaster.pid), and where a new one may listen."""

from __future__ import annotations

import hashlib
import logging
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kobi_cpas.devenv.procs import pid_alive

logger = logging.getLogger(__name__)

# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS), including ".s.PGSQL.<port>".
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Postmaster:
    """The lines of PGDATA/postmaster.pid that we use."""

    pid: int
    port: int
    socket_dir: Path | None
    status: str
    started_at: str  # the postmaster's start time (Unix seconds): with the pid, names this server run

    @classmethod
    def read(cls, pgdata: Path) -> Postmaster | None:
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


def running_postmaster(pgdata: Path) -> Postmaster | None:
    """The server running in pgdata, or None (no pid file, or a stale one)."""
    pm = Postmaster.read(pgdata)
    # pg_ctl daemonises the server, so a stopped postmaster is a zombie until PID 1 reaps it: pid_alive says
    # not running.
    if pm is None or not pid_alive(pm.pid) or not _is_postgres(pm.pid):
        return None
    return pm


def remove_stale_pid_file(pgdata: Path) -> None:
    """A postmaster.pid left by a server that died with its machine may name a pid that now belongs to
    another process; postgres would then refuse to start ("Is another postmaster running?")."""
    pm = Postmaster.read(pgdata)
    if pm is not None and pid_alive(pm.pid) and not _is_postgres(pm.pid):
        logger.info("Removing stale %s (pid %s is not a postgres process)", pgdata / "postmaster.pid", pm.pid)
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As postgres does: connections of a just-stopped server in TIME_WAIT must not make the port "busy".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def socket_dir_for(data_dir: Path) -> Path:
    """`<data_dir>/run`, or a short path under /tmp when that one is too long for a unix socket."""
    preferred = data_dir / "run"
    if len(str(preferred / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"kobi-pg-{digest}"


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
