"""Fixtures for tests against a real PostgreSQL: one throwaway cluster for the whole session.

Register them once, in kobi_cpas_tests/conftest.py:

    pytest_plugins = ["kobi_cpas_tests.pg_fixtures"]

(a plugin is registered once by module name, so test modules may name it too without a second cluster).
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kobi_cpas.devenv.instance import prepare_dagster_home
from kobi_cpas.devenv.postgres import LocalPostgres, PgConnInfo, env_for

REPO_ROOT = Path(__file__).resolve().parents[1]
_db_counter = itertools.count(1)


def dagster_home_for_tests(dagster_home: Path, *, create_tables: bool = False) -> Path:
    """``dagster_home`` holding the repository's dagster.yaml with two changes for tests:

    - Dagster's documented no-op compute log manager: capturing a step's stdout and stderr starts two `tail`
      processes per step and waits for them at its end, ~5 % of the suite's CPU; no test reads the captured
      files, and everything the project reports goes through the event log;
    - unless ``create_tables``, the storages do not look for missing tables (every test database is a copy of
      the session's template, which has them): 16 ms of CPU and 43 ms of wall time per instance opened.
    """
    home = prepare_dagster_home(dagster_home, REPO_ROOT)
    path = home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["compute_logs"] = {
        "module": "dagster._core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        config[storage]["config"]["should_autocreate_tables"] = create_tables
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return home


@pytest.fixture(scope="session")
def local_postgres_server() -> Iterator[LocalPostgres]:
    """The session's LocalPostgres (started), for tests that stop/restart it or create databases."""
    # Not under pytest's basetemp: that is mode 0700 and owned by root, and as root the server runs as the
    # `postgres` user, who must be able to reach the data dir. mkdtemp under /tmp is reachable.
    data_dir = Path(tempfile.mkdtemp(prefix="kobi-pg-test-"))
    server = LocalPostgres(data_dir, durable=False)  # fsync off: a test cluster never outlives a crash
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def local_postgres(local_postgres_server: LocalPostgres) -> PgConnInfo:
    """Connection info of the session's Postgres (database `dagster`)."""
    return local_postgres_server.start()  # idempotent: returns the running server's info


@pytest.fixture(scope="session")
def dagster_template_db(
    local_postgres: PgConnInfo, local_postgres_server: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database holding Dagster's schema, built once per session by the real dagster.yaml: each test's
    database is a copy of it, so no test pays for Dagster creating its tables."""
    import dagster as dg

    name = "dagster_template"
    info = local_postgres_server.create_database(name)
    home = dagster_home_for_tests(tmp_path_factory.mktemp("dagster_template_home"), create_tables=True)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(info).items():
            mp.setenv(key, value)
        dg.DagsterInstance.from_config(str(home)).dispose()  # creates the tables; pools stay unset
    local_postgres_server.close_connections(name)
    return name


@pytest.fixture
def pg_dagster_home(
    local_postgres: PgConnInfo,
    local_postgres_server: LocalPostgres,
    dagster_template_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Path]:
    """A DAGSTER_HOME holding the repository's real dagster.yaml, backed by a fresh database of the
    session's Postgres (one per test, so runs, cursors and pool limits do not leak between tests).

    DAGSTER_PG_* and DAGSTER_HOME are set for the test and restored afterwards; the database is dropped after
    the test, closing whatever connections the test's instances still pool.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())
    dbname = f"t{next(_db_counter)}_{slug}"[:63]
    info = local_postgres_server.create_database(dbname, template=dagster_template_db)
    home = dagster_home_for_tests(tmp_path_factory.mktemp("dagster_home"))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(info).items():
            mp.setenv(key, value)
        mp.setenv("DAGSTER_HOME", str(home))
        yield home
    if local_postgres_server.status() is not None:
        local_postgres_server.drop_database(dbname)
