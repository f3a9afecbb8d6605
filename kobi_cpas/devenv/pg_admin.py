"""Roles and databases of the local cluster, administered as the `postgres` superuser over its private socket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection
from psycopg2.extensions import cursor as PgCursor

from kobi_cpas.devenv.pg_conninfo import LocalPostgresError, PgConnInfo
from kobi_cpas.devenv.pg_process import Postmaster

SUPERUSER = "postgres"
_CLOSE_CONNECTIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
)


def superuser_connect(running: Postmaster, connect_timeout: int = 5) -> PgConnection:
    # Over the unix socket, where initdb's --auth-local=trust lets the superuser in without a password.
    host = str(running.socket_dir) if running.socket_dir else "127.0.0.1"
    return psycopg2.connect(
        host=host, port=running.port, user=SUPERUSER, dbname="postgres", connect_timeout=connect_timeout
    )


@contextlib.contextmanager
def superuser_cursor(running: Postmaster) -> Iterator[PgCursor]:
    """An autocommit cursor (CREATE/DROP DATABASE cannot run in a transaction)."""
    conn = superuser_connect(running)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def ensure_role_and_database(cur: PgCursor, user: str, password: str, dbname: str) -> None:
    """Create the login role (or reset its password to `password`) and its database."""
    role = sql.Identifier(user)
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
    verb = "CREATE" if cur.fetchone() is None else "ALTER"
    cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(role), (password,))
    create_database(cur, dbname, owner=user)


def create_database(cur: PgCursor, dbname: str, owner: str, template: str | None = None) -> None:
    """Create `dbname` owned by `owner` unless it exists; with `template`, as a file-level copy of that one."""
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
    if cur.fetchone() is not None:
        return
    statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(owner))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if cur.connection.server_version >= 150000:
            # PostgreSQL 15 copies through the WAL by default, block by block; for a small database a file
            # copy costs a fraction of that (its checkpoint is cheap on a small cluster).
            statement += sql.SQL(" STRATEGY FILE_COPY")
    cur.execute(statement)


def close_connections(cur: PgCursor, dbname: str) -> None:
    cur.execute(_CLOSE_CONNECTIONS, (dbname,))


def drop_database(cur: PgCursor, dbname: str) -> None:
    """Drop `dbname` (no error when it does not exist), closing its connections."""
    name = sql.Identifier(dbname)
    if cur.connection.server_version >= 130000:
        # FORCE closes the connections in the same statement: a pool cannot reconnect in between.
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        return
    close_connections(cur, dbname)
    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))


def check_login(info: PgConnInfo) -> None:
    """Log in as the configured user over TCP, as dagster will (password auth)."""
    try:
        psycopg2.connect(**info.connect_kwargs(), connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        raise LocalPostgresError(f"Cannot log in to {info.host}:{info.port} as {info.user}: {exc}") from exc
