"""The Dagster instance's storages: dagster-postgres's, minus a new connection per query and repeated schema
questions.

**A connection pool in every process.** dagster-postgres builds its engines with SQLAlchemy's ``NullPool`` (so
that processes holding many instances accumulate no connections): every query opens a new connection, which
makes Postgres fork a backend and authenticate it. A run worker makes ~250 storage calls per catalog sync run,
the daemon and code servers more per tick; measured here, 200 queries cost the machine 1.65 s of CPU that way
and 0.14 s over a pooled connection (12x), most of it in Postgres, where short-lived backends hide from
``top``. These classes keep one pooled connection per storage (a few more under concurrent use, closed when
returned). A connection that has been idle in the pool for over a second is pinged before use, so a restarted
Postgres costs a reconnect, not a failed run. One used within the last second is not: pinging before every use
(SQLAlchemy's ``pool_pre_ping``) doubles the round trips of a run, whose storage calls come milliseconds apart,
and a Postgres that goes away and is back within a second of the last call is not a case worth that cost (the
call that meets it fails, the pool is replaced).
The webserver still swaps in its own pool (``optimize_for_webserver``), as with dagster-postgres's classes. A
forked child drops the pool it inherited without closing its parent's connections.

**Schema questions answered once.** dagster-postgres asks Postgres's catalog whether a table exists
(``has_table``) or which columns ``runs`` and ``asset_keys`` have (``has_run_stats_index_cols``,
``has_asset_key_col``, ...) before most run updates, event writes and partition lookups: about 65 catalog
queries per run of a catalog sync job, beside ~240 statements of real work. An instance's schema only grows,
and only through ``dagster instance migrate``: a table or column that exists stays. So a positive answer is
kept for the life of the storage object; a negative one is asked again each time, so a migration that adds a
table while a process runs is seen as before.

dagster.yaml names these classes as ``run_storage``, ``event_log_storage`` and ``schedule_storage``; they take
the same ``postgres_db`` config as dagster-postgres's classes.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

# One idle connection per storage; up to four more while threads (the daemon's, the webserver's) use it at once.
POOL_OPTIONS: dict[str, Any] = {
    "pool_size": 1,
    "max_overflow": 4,
    "pool_recycle": 3600,  # below the idle timeouts of managed Postgres services and their proxies
}

# A pooled connection idle for longer than this is pinged before use (see the module docstring).
PING_AFTER_IDLE_SECONDS = 1.0
# The key in a pool entry's info, which lives as long as the entry's DBAPI connection.
_IDLE_SINCE = "kobi_cpas_idle_since"
_clock = time.monotonic


def _note_idle(dbapi_connection: Any, entry: Any, *_: Any) -> None:
    if dbapi_connection is not None:  # None: invalidated, it will not be handed out again
        entry.info[_IDLE_SINCE] = _clock()


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection before use only after it idled ``PING_AFTER_IDLE_SECONDS`` (``pool_pre_ping`` always)."""

    def checkout(dbapi_connection: Any, entry: Any, proxy: Any) -> None:
        since = entry.info.get(_IDLE_SINCE)
        if since is not None and _clock() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs: SELECT 1, in autocommit
        except Exception as error:  # the server closed it, restarted, or the network dropped it
            # SQLAlchemy's documented way out of a checkout: this connection is discarded, a new one handed out.
            raise exc.DisconnectionError(
                f"a pooled Postgres connection failed its ping ({type(error).__name__})"
            ) from error

    event.listen(engine, "connect", _note_idle)  # a new connection needs no ping
    event.listen(engine, "checkin", _note_idle)
    event.listen(engine, "checkout", checkout)


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _drop_inherited_pools() -> None:
    # A connection is a socket: parent and child must never both use it. close=False leaves the parent's alone.
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_pools)


class _Pooled:
    """Replaces dagster-postgres's per-query engine (built in its ``__init__``) with a pooled one."""

    postgres_url: str
    _token_provider: Any
    _engine: Engine

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # dagster-postgres's: builds its engine, creates missing tables
        self._use_pool()

    def _use_pool(self) -> None:
        unpooled = self._engine
        self._engine = create_pg_engine(
            self.postgres_url, self._token_provider, isolation_level="AUTOCOMMIT", **POOL_OPTIONS
        )
        _ping_when_idle(self._engine)
        _ENGINES.add(self._engine)
        unpooled.dispose()

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        ours = self._engine
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)  # type: ignore[misc]
        ours.dispose()  # its idle connection would otherwise stay open until garbage collection

    def dispose(self) -> None:
        self._engine.dispose()
        super().dispose()  # type: ignore[misc]

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> Any:
        # dagster-postgres's classes build themselves by name, not ``cls``: the same three lines for a subclass.
        return cls(  # type: ignore[call-arg]
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class _SchemaFacts:
    """Keeps the positive answers of a storage's schema questions."""

    def _known(self, fact: str, ask: Callable[..., bool], *args: str) -> bool:
        present: set[str] = self.__dict__.setdefault("_schema_facts", set())
        key = f"{fact}:{':'.join(args)}"
        if key in present:
            return True
        answer = ask(*args)
        if answer:
            present.add(key)
        return answer


class PooledPostgresEventLogStorage(_Pooled, _SchemaFacts, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` over a connection pool, remembering which tables and ``asset_keys`` columns
    exist."""

    def has_table(self, table_name: str) -> bool:
        return self._known("table", super().has_table, table_name)

    def has_asset_key_col(self, column_name: str) -> bool:
        return self._known("asset_key_col", super().has_asset_key_col, column_name)


class PooledPostgresRunStorage(_Pooled, _SchemaFacts, PostgresRunStorage):
    """``PostgresRunStorage`` over a connection pool, remembering which ``runs`` and backfill columns and
    tables exist."""

    def has_run_stats_index_cols(self) -> bool:
        return self._known("run_stats_index_cols", super().has_run_stats_index_cols)

    def has_backfill_id_column(self) -> bool:
        return self._known("backfill_id_column", super().has_backfill_id_column)

    def has_bulk_actions_selector_cols(self) -> bool:
        return self._known("bulk_actions_selector_cols", super().has_bulk_actions_selector_cols)

    def has_bulk_action_job_name_column(self) -> bool:
        return self._known("bulk_action_job_name_column", super().has_bulk_action_job_name_column)

    def has_backfill_tags_table(self) -> bool:
        return self._known("backfill_tags_table", super().has_backfill_tags_table)


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """``PostgresScheduleStorage`` (sensor and schedule ticks, cursors, pool limits) over a connection pool."""


# The names of earlier copies of dagster.yaml (a deployed DAGSTER_HOME keeps its copy until the next deploy).
SchemaCachingPostgresEventLogStorage = PooledPostgresEventLogStorage
SchemaCachingPostgresRunStorage = PooledPostgresRunStorage
