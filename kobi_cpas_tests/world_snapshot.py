"""Build an expensive starting state once per module and restore it exactly before each test.

A *world* is everything a test of the code location can change:

- the sandbox: world objects, id counters, faults, request log and its sequence, config and clock (kept by the
  sandbox itself as a named snapshot, see ``SandboxAdmin.save_snapshot``);
- the warehouse files (work and analyst DuckDB) and DAGSTER_HOME (where ``dg.materialize`` stores outputs);
- the Dagster database in Postgres (runs, event logs, dynamic partitions, pool limits), copied per test with
  ``CREATE DATABASE ... TEMPLATE``.

Files are restored into the very directory the world was built in, so paths recorded in the databases (and in
Dagster's event log) still name the live files. Tests of one module run one after the other in a process (also
under xdist), so one live directory per module suffices.

In a test module::

    pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

    @pytest.fixture(scope="module")
    def synced(build_world_snapshot):
        return build_world_snapshot("synced", lambda env, instance: ...)  # runs once per module

    @pytest.fixture
    def world(synced, restore_world):
        return restore_world(synced)  # .env (a KobiEnv) and .instance (a fresh DagsterInstance)
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from kobi_cpas.devenv.postgres import LocalPostgres, PgConnInfo, env_for
from kobi_cpas_tests.dagster_fixtures import KobiEnv, apply_kobi_env, open_instance
from kobi_cpas_tests.pg_fixtures import dagster_home_for_tests
from kobi_cpas_tests.sandbox_fixtures import SandboxHandle
from kobi_cpas_tests.warehouse_template import seed_work_database
from meta_sandbox import SandboxAdmin, SandboxAdminError, SandboxServer

__all__ = [
    "RestoredWorld",
    "WorldSnapshot",
    "build_world_snapshot",
    "restore_world",
]

_counter = itertools.count(1)

Setup = Callable[[KobiEnv, dg.DagsterInstance], None]


@dataclass(frozen=True)
class WorldSnapshot:
    name: str  # the sandbox snapshot's name
    template_db: str  # the Postgres database every test's database is copied from
    live: Path  # the directory the environment points at (analyst file, work dir, DAGSTER_HOME)
    frozen: Path  # the live directory as the setup left it

    @property
    def analyst_path(self) -> Path:
        return self.live / "data" / "kobi_cpas.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.live / "dagster_home"


@dataclass
class RestoredWorld:
    env: KobiEnv
    instance: dg.DagsterInstance
    dbname: str


def _apply_env(
    mp: pytest.MonkeyPatch, snap: WorldSnapshot, db: PgConnInfo, sandbox: SandboxHandle
) -> KobiEnv:
    """The kobi_env environment on the snapshot's live directory, its Dagster database and DAGSTER_HOME."""
    return apply_kobi_env(
        mp, snap.analyst_path, sandbox, extra={**env_for(db), "DAGSTER_HOME": str(snap.dagster_home)}
    )


def _dbname(prefix: str, label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower())
    return f"{prefix}{next(_counter)}_{slug}"[:63]


def _sandbox_handle(server: SandboxServer, admin: SandboxAdmin) -> SandboxHandle:
    return SandboxHandle(url=server.url, admin=admin, server=server, world=server.world)


@pytest.fixture(scope="module")
def build_world_snapshot(
    sandbox_server: SandboxServer,
    local_postgres_server: LocalPostgres,
    dagster_template_db: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str, Setup], WorldSnapshot]]:
    """Factory: ``build_world_snapshot(name, setup)`` resets the sandbox, runs ``setup(env, instance)`` on a
    fresh warehouse and Dagster database, and keeps the result as a snapshot (removed after the module)."""
    built: list[WorldSnapshot] = []
    admin = SandboxAdmin(sandbox_server.url)

    def build(name: str, setup: Setup) -> WorldSnapshot:
        root = tmp_path_factory.mktemp(f"world_{name}")
        dbname = _dbname("w", name)
        snap = WorldSnapshot(name=dbname, template_db=dbname, live=root / "live", frozen=root / "frozen")
        db = local_postgres_server.create_database(dbname, template=dagster_template_db)
        built.append(snap)
        dagster_home_for_tests(snap.dagster_home)
        snap.analyst_path.parent.mkdir(parents=True)
        seed_work_database(snap.analyst_path)  # the setup starts on a new warehouse, migrated already
        admin.reset()
        with pytest.MonkeyPatch.context() as mp:
            env = _apply_env(mp, snap, db, _sandbox_handle(sandbox_server, admin))
            instance = open_instance(snap.dagster_home)
            try:
                setup(env, instance)
            finally:
                instance.dispose()
        local_postgres_server.close_connections(dbname)  # a template must have no open connection
        admin.save_snapshot(snap.name)
        shutil.copytree(snap.live, snap.frozen, symlinks=True)
        return snap

    try:
        yield build
    finally:
        for snap in built:
            if local_postgres_server.status() is not None:
                local_postgres_server.drop_database(snap.template_db)
            with contextlib.suppress(SandboxAdminError):  # a failed setup saved none
                admin.delete_snapshot(snap.name)
            shutil.rmtree(snap.live.parent, ignore_errors=True)
        admin.close()


@pytest.fixture
def restore_world(
    sandbox: SandboxHandle,
    local_postgres_server: LocalPostgres,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[WorldSnapshot], RestoredWorld]]:
    """Factory: ``restore_world(snapshot)`` puts the sandbox, the files and a copy of the Dagster database
    back as the snapshot's setup left them, points the environment at them for the test, and returns the
    environment and an instance on that copy (disposed, and its database dropped, after the test)."""
    opened: list[RestoredWorld] = []

    def restore(snap: WorldSnapshot) -> RestoredWorld:
        sandbox.admin.restore_snapshot(snap.name)
        shutil.rmtree(snap.live, ignore_errors=True)
        shutil.copytree(snap.frozen, snap.live, symlinks=True)
        dbname = _dbname("r", f"{snap.name}_{request.node.name}")
        db = local_postgres_server.create_database(dbname, template=snap.template_db)
        env = _apply_env(monkeypatch, snap, db, sandbox)
        world = RestoredWorld(env=env, instance=open_instance(snap.dagster_home), dbname=dbname)
        opened.append(world)
        return world

    yield restore
    for world in opened:
        world.instance.dispose()
        if local_postgres_server.status() is not None:
            local_postgres_server.drop_database(world.dbname)
