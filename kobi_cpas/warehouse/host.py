"""The process's DuckDB instance that work databases are attached to while a connection uses them.

Starting a DuckDB instance costs ~20 ms (it registers every built-in function), more than opening the work
database itself, and a run connects dozens of times. So each process keeps one in-memory instance and ATTACHes
the work database to it for as long as a connection is in use. The last DETACH in the process checkpoints and
closes the file, which releases DuckDB's file lock exactly as closing an instance did: no connection holds the
work database between uses.
"""

from __future__ import annotations

import hashlib
import os
import threading

import duckdb

from kobi_cpas.warehouse.sql import sql_str

_HOST_LOCK = threading.Lock()
_host: duckdb.DuckDBPyConnection | None = None
_attached: dict[str, tuple[str, int]] = {}  # resolved work path -> (alias, connections using it)
# Instance-wide settings (memory_limit, threads) as last SET on _host: each SET costs a statement per connect.
_settings: dict[str, str] = {}


def _reset_host_after_fork() -> None:
    # A forked child holds none of its parent's file locks: it starts its own instance (the inherited one is
    # left alone, not closed, as it belongs to the parent).
    global _HOST_LOCK, _host
    _HOST_LOCK = threading.Lock()
    _host = None
    _attached.clear()
    _settings.clear()


os.register_at_fork(after_in_child=_reset_host_after_fork)


def attach(path: str) -> duckdb.DuckDBPyConnection:
    """A connection (its own transactions) whose default database is the work database at ``path``."""
    global _host
    with _HOST_LOCK:
        if _host is None:
            _host = duckdb.connect(":memory:")
            _settings.clear()
        alias, users = _attached.get(path, ("", 0))
        if not users:
            alias = "kobi_work_" + hashlib.sha256(path.encode()).hexdigest()[:16]
            # Raises duckdb.IOException ("Could not set lock ...") while another process writes the file.
            _host.execute(f"ATTACH IF NOT EXISTS {sql_str(path)} AS {alias}")
        _attached[path] = (alias, users + 1)
        cur = _host.cursor()
    try:
        # Only this connection's default: a cursor() taken from it starts in the in-memory database.
        cur.execute(f"USE {alias}")
    except BaseException:
        release(path, cur)
        raise
    return cur


def release(path: str, cur: duckdb.DuckDBPyConnection) -> None:
    cur.close()  # rolls back a transaction left open
    with _HOST_LOCK:
        alias, users = _attached.get(path, ("", 0))
        if users > 1:
            _attached[path] = (alias, users - 1)
            return
        _attached.pop(path, None)
        if users and _host is not None:
            _host.execute(f"DETACH DATABASE IF EXISTS {alias}")


def configure(cur: duckdb.DuckDBPyConnection, settings: dict[str, str]) -> None:
    """SET the instance-wide ``settings`` (SQL literals by name) through ``cur``, skipping the ones the
    instance already has as last set here."""
    with _HOST_LOCK:
        for name, value in settings.items():
            if _settings.get(name) != value:
                cur.execute(f"SET {name} = {value}")
                _settings[name] = value
