"""The Dagster instance's run and event log storages: dagster-postgres's, minus their repeated schema questions.

dagster-postgres asks Postgres's catalog whether a table exists (``has_table``) or which columns ``runs`` and
``asset_keys`` have (``has_run_stats_index_cols``, ``has_asset_key_col``, ...) before most run updates, event
writes and partition lookups: about 65 catalog queries per run of a catalog sync job, each on a pooled
connection of its own, beside ~240 statements of real work. They cost the database ~60 % of its CPU per run and
the run worker ~12 % (measured side by side on the test suite's runs).

An instance's schema only grows, and only through ``dagster instance migrate``: a table or column that exists
stays. So a positive answer is kept for the life of the storage object; a negative one is asked again each
time, so a migration that adds a table while a process runs is seen as before.

dagster.yaml names these classes as ``run_storage`` and ``event_log_storage`` (schedules keep
dagster-postgres's own class); they take the same ``postgres_db`` config as dagster-postgres's classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config


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

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> Any:
        # dagster-postgres's classes build themselves by name, not ``cls``: the same three lines for a subclass.
        return cls(  # type: ignore[call-arg]
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class SchemaCachingPostgresEventLogStorage(_SchemaFacts, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` that remembers which tables and ``asset_keys`` columns exist."""

    def has_table(self, table_name: str) -> bool:
        return self._known("table", super().has_table, table_name)

    def has_asset_key_col(self, column_name: str) -> bool:
        return self._known("asset_key_col", super().has_asset_key_col, column_name)


class SchemaCachingPostgresRunStorage(_SchemaFacts, PostgresRunStorage):
    """``PostgresRunStorage`` that remembers which ``runs`` and backfill columns and tables exist."""

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
