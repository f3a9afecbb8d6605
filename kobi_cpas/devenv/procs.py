"""Is a process still alive, and is it still the same process? (pids are reused.)

A process is named by its pid plus an identity token, `<boot id>:<start time in clock ticks>` read from
/proc: a pid that now belongs to another process, or one recorded before a reboot, no longer matches its
token. Without procfs (macOS) there is no token and liveness falls back to `kill(pid, 0)`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_PROC = Path("/proc")


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when pid names a running process (a zombie is not running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    # A daemonised process that exited is a zombie until PID 1 reaps it, which in a container can take a
    # second or more: it is not running.
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no procfs (macOS) or hidden from us: trust kill()
    return fields[0] not in ("Z", "X")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: fields[0] is the state (field 3 of proc(5))."""
    try:
        line = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return line.rpartition(")")[2].split()


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_token(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of pid, or None when unknown (no such process, or no procfs)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of proc(5): start time after boot, in clock ticks


def booted_at() -> float | None:
    """This machine's boot time as a Unix timestamp (whole seconds), or None without procfs."""
    try:
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_started_at(pid: int) -> float | None:
    """Start time of pid as a Unix timestamp (to about a second: the boot time is whole seconds)."""
    fields = _stat_fields(pid)
    boot = booted_at()
    if fields is None or len(fields) < 20 or boot is None:
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def same_process_alive(pid: int, token: str | None) -> bool:
    """Is the process recorded as (pid, token) still running? A recorded token that no longer matches
    means the pid was reused: the recorded process is gone."""
    if not pid_alive(pid):
        return False
    if not token:
        return True
    current = process_token(pid)
    return current is None or current == token


def alive_since(pid: int, not_after: float, slack: float = 60.0) -> bool:
    """Is pid running a process that already existed at the Unix time `not_after`? A process started
    later (or anything, when the machine booted since) reuses the pid of the one we look for. In doubt,
    alive: `slack` covers the whole-second boot time and wall-clock steps (a pid is rarely reused within a
    minute of its previous owner's start)."""
    if not pid_alive(pid):
        return False
    boot = booted_at()
    if boot is not None and not_after < boot - slack:
        return False
    started = process_started_at(pid)
    return started is None or started <= not_after + slack
