"""The Docker profile (deploy/docker/dagster.yaml): every run in its own container, launched by dagster-docker's
DockerRunLauncher, with the top-level instance's Postgres storage and concurrency rules, and every file a run
writes on the one shared directory mounted into the containers.

No Docker daemon runs on the test machines. The launch test answers the few Docker Engine API calls a launch
makes from a stub on loopback and checks the container the launcher asks for; no container is started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster_docker import DockerRunLauncher

from kobi_cpas.feeds.generator import generate_feed
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.dagster_fixtures import kobi_env_vars
from kobi_cpas_tests.pg_fixtures import REPO_ROOT
from kobi_cpas_tests.sandbox_fixtures import SandboxHandle
from kobi_cpas_tests.sync_harness import CATALOG, TENANT
from kobi_cpas_tests.warehouse_template import seed_work_database

PROFILE = REPO_ROOT / "deploy" / "docker" / "dagster.yaml"
TOP_LEVEL = REPO_ROOT / "dagster.yaml"

# What only the profile has: the launcher, and Dagster's own files of a run on the shared directory.
PROFILE_ONLY = {"run_launcher", "local_artifact_storage", "compute_logs"}
# Read by the code location only under test: it shrinks the Meta client's back-off waits.
TEST_ONLY_SETTINGS = {"KOBI_CPAS_META_BACKOFF_SCALE"}
# Caches and tools' folders of the repository, which no run writes either.
UNWATCHED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".import_linter_cache"}


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def launcher_config(profile: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return (profile or load_yaml(PROFILE))["run_launcher"]["config"]


def shared_mount(profile: Mapping[str, Any]) -> str:
    """The one shared directory, mounted at the same path on the host and in every run container."""
    (volume,) = launcher_config(profile)["container_kwargs"]["volumes"]
    host, container, mode = volume.split(":")
    assert host == container and mode == "rw", volume
    return container


def profile_home(home: Path, shared: Path, drop: tuple[str, ...] = (), **blocks: Mapping[str, Any]) -> Path:
    """A DAGSTER_HOME holding the profile with its shared directory moved to ``shared`` (a test cannot use the
    real one), without the top-level blocks ``drop`` and with ``blocks`` set."""
    config = load_yaml(PROFILE)
    root = shared_mount(config)
    config = {key: value for key, value in {**config, **blocks}.items() if key not in drop}
    home.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False)
    (home / "dagster.yaml").write_text(text.replace(root, str(shared)))
    return home


def env_names(config: Any) -> set[str]:
    """Every ``{env: NAME}`` of an instance config."""
    if isinstance(config, Mapping):
        if set(config) == {"env"}:
            return {config["env"]}
        return set().union(*(env_names(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(env_names(v) for v in config))
    return set()


def settings_read_by_the_code_location() -> set[str]:
    """The environment variables the product code names (the dev environment's own are not the runs')."""
    package = REPO_ROOT / "kobi_cpas"
    names: set[str] = set()
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] != "devenv":
            names |= set(re.findall(r"[\"']((?:KOBI_CPAS|META)_[A-Z0-9_]+)[\"']", path.read_text()))
    return names - TEST_ONLY_SETTINGS


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``root`` (caches left out)."""
    files: dict[str, tuple[int, int]] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in UNWATCHED]
        for name in names:
            path = Path(folder, name)
            info = path.lstat()
            files[str(path)] = (info.st_size, info.st_mtime_ns)
    return files


def base_env(dagster_home: Path, user_home: Path) -> dict[str, str]:
    """A process environment holding nothing of the test's own but PATH, the worktree's code and Postgres."""
    env = {key: os.environ[key] for key in ("PATH", "LANG") if key in os.environ}
    env.update({key: value for key, value in os.environ.items() if key.startswith("DAGSTER_PG_")})
    env.update(PYTHONPATH=str(REPO_ROOT), DAGSTER_HOME=str(dagster_home), HOME=str(user_home))
    return env


def dagster_cli(args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    """Run the `dagster` command line of this venv in a process of its own; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "dagster", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


# ---- the profile's config, on its own


def test_profile_is_the_top_level_instance_config_plus_the_launcher() -> None:
    profile, top = load_yaml(PROFILE), load_yaml(TOP_LEVEL)
    assert not PROFILE_ONLY & set(top)
    assert set(profile) == set(top) | PROFILE_ONLY
    for key in top:  # storages, concurrency, run monitoring, telemetry: block for block
        assert profile[key] == top[key], key

    root = Path(shared_mount(profile))
    for key in ("local_artifact_storage", "compute_logs"):
        assert Path(profile[key]["config"]["base_dir"]).is_relative_to(root), key


def test_runs_get_every_setting_by_name_only() -> None:
    names = launcher_config()["env_vars"]
    assert len(names) == len(set(names))
    # NAME, never NAME=value: the values stay in the launching process's environment.
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in names), names
    # A setting the code location reads but the containers do not get would silently take its default in runs
    # while the code server (sensors, schedules) uses the value set.
    assert set(names) == settings_read_by_the_code_location() | env_names(load_yaml(TOP_LEVEL))


def test_a_setting_set_empty_is_its_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The launcher refuses to launch while a listed name is unset, so a deployment sets the settings it does
    not use to the empty string: each must then be its default."""
    from kobi_cpas.defs.insights.partitions import insights_start_date
    from kobi_cpas.defs.resources import location_resources
    from kobi_cpas.warehouse import Warehouse

    names = [n for n in launcher_config()["env_vars"] if not n.startswith("DAGSTER_PG_")]
    monkeypatch.chdir(tmp_path)  # relative defaults resolve the same way both times

    def configured() -> dict[str, Any]:
        out: dict[str, Any] = {k: r.model_dump() for k, r in location_resources().items()}
        out["duckdb_memory_limit"] = Warehouse(tmp_path / "a.duckdb").memory_limit
        out["insights_start_date"] = insights_start_date(tenant_starts=[])
        return out

    for name in names:
        monkeypatch.delenv(name, raising=False)
    unset = configured()
    for name in names:
        monkeypatch.setenv(name, "")
    assert configured() == unset


# ---- the profile's instance, on Postgres


def test_profile_instance_launches_in_docker_under_the_top_level_rules(
    pg_dagster_home: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    instance = dg.DagsterInstance.from_config(str(profile_home(tmp_path / "home", shared)))
    top = dg.DagsterInstance.from_config(str(pg_dagster_home))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        config = launcher_config()
        assert launcher.image == config["image"]
        assert list(launcher.env_vars) == config["env_vars"]
        assert {
            "DAGSTER_PG_PASSWORD",
            "KOBI_CPAS_DUCKDB_PATH",
            "KOBI_CPAS_TENANTS",
            "META_ACCESS_TOKEN",
        } <= set(launcher.env_vars)
        assert launcher.networks == [config["network"]]
        assert launcher.container_kwargs["volumes"] == [f"{shared}:{shared}:rw"]
        # A container that died is seen by run monitoring, which fails its run.
        assert launcher.supports_check_run_worker_health

        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.get_concurrency_config() == top.get_concurrency_config()
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [
            {"key": "kobi/catalog_shard", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert instance.run_monitoring_enabled
        assert instance.get_settings("run_monitoring") == top.get_settings("run_monitoring")

        # One Postgres: a run one instance stores, the other reads.
        run = instance.add_run(dg.DagsterRun(job_name="probe", run_id=str(uuid.uuid4())))
        assert top.get_run_by_id(run.run_id) is not None

        # Dagster's own files of a run (IO manager outputs, captured output) on the shared directory.
        assert Path(instance.storage_directory()).is_relative_to(shared)
        assert instance.compute_log_manager.inst_data is not None
        assert Path(instance.compute_log_manager.inst_data.config_dict["base_dir"]).is_relative_to(shared)

        # The instance ref rides in every launch command (`docker inspect` shows it): it names the password's
        # variable, resolved inside the container, not its value.
        ref = instance.get_ref()
        assert "DAGSTER_PG_PASSWORD" in ref.run_storage_data.config_yaml
    finally:
        instance.dispose()
        top.dispose()

    from kobi_cpas.definitions import defs

    dg.Definitions.validate_loadable(defs())


class DockerEngineStub:
    """The Docker Engine API calls of one launch (version, create, inspect, start), served on loopback. Records
    every request; anything else is answered 404."""

    CONTAINER_ID = "c0ffee" * 10 + "c0ffee0"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                stub.requests.append((method, path, json.loads(raw) if raw else None))
                route = re.sub(r"^/v[0-9.]+", "", path)
                if (method, route) == ("GET", "/version"):
                    self._answer(200, {"ApiVersion": "1.45", "Version": "stub", "MinAPIVersion": "1.24"})
                elif (method, route) == ("POST", "/containers/create"):
                    self._answer(201, {"Id": stub.CONTAINER_ID, "Warnings": []})
                elif (method, route) == ("GET", f"/containers/{stub.CONTAINER_ID}/json"):
                    self._answer(200, {"Id": stub.CONTAINER_ID, "State": {"Status": "created"}})
                elif (method, route) == ("POST", f"/containers/{stub.CONTAINER_ID}/start"):
                    self._answer(204)
                else:
                    self._answer(404, {"message": f"the stub does not serve {method} {path}"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def routes(self) -> list[tuple[str, str]]:
        return [(method, re.sub(r"^/v[0-9.]+", "", path)) for method, path, _ in self.requests]


@pytest.fixture
def docker_engine() -> Iterator[DockerEngineStub]:
    stub = DockerEngineStub()
    stub.thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()


def test_a_launch_asks_the_docker_host_for_one_container_with_the_shared_directory(
    pg_dagster_home: Path, tmp_path: Path, docker_engine: DockerEngineStub
) -> None:
    """`dagster job launch` against the profile's instance, as the daemon launches a dequeued run: the code
    location loads from workspace.yaml with that instance and the launcher asks the Docker host for the run's
    container. The run coordinator is the default one here: no daemon runs to dequeue."""
    shared = tmp_path / "shared"
    home = profile_home(
        tmp_path / "home",
        shared,
        drop=("concurrency",),
        run_coordinator={"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
    )
    config = launcher_config()
    token = f"EAAdocker{uuid.uuid4().hex}"
    webhook = f"https://hooks.example.com/{uuid.uuid4().hex}"
    settings = {name: "" for name in config["env_vars"] if not name.startswith("DAGSTER_PG_")}
    settings.update(
        KOBI_CPAS_DUCKDB_PATH=str(shared / "warehouse" / "kobi_cpas.duckdb"),
        KOBI_CPAS_TENANTS=str(shared / "registry" / "tenants.yaml"),
        KOBI_CPAS_PUBLISH_INTERVAL_SECONDS="300",
        KOBI_CPAS_ALERT_WEBHOOK_URL=webhook,
        META_ACCESS_TOKEN=token,
    )
    env = {**base_env(home, tmp_path / "user"), **settings, "DOCKER_HOST": docker_engine.url}
    run_id = str(uuid.uuid4())
    job = "tenant_registry_job"
    workspace = str(REPO_ROOT / "workspace.yaml")
    dagster_cli(["job", "launch", "-w", workspace, "-j", job, "--run-id", run_id], cwd=REPO_ROOT, env=env)

    assert docker_engine.routes() == [
        ("GET", "/version"),
        ("POST", "/containers/create"),
        ("GET", f"/containers/{docker_engine.CONTAINER_ID}/json"),
        ("POST", f"/containers/{docker_engine.CONTAINER_ID}/start"),
    ]
    create: dict[str, Any] = docker_engine.requests[1][2]
    assert create["Image"] == config["image"]
    # `dagster` of the image's PATH runs this one run.
    assert create["Cmd"][:3] == ["dagster", "api", "execute_run"]
    args = dg.deserialize_value(create["Cmd"][3])
    assert args.run_id == run_id  # type: ignore[attr-defined]
    # The code location by its module name, installed in the image; no path of the launching machine.
    assert '"module": "kobi_cpas.definitions"' in create["Cmd"][3]
    assert token not in create["Cmd"][3] and webhook not in create["Cmd"][3]
    assert "DAGSTER_PG_PASSWORD" in create["Cmd"][3]
    # Each listed variable with the launching process's value, and nothing of its own besides.
    container_env = dict(entry.split("=", 1) for entry in create["Env"])
    assert container_env == {
        **{name: env[name] for name in config["env_vars"]},
        "DAGSTER_RUN_JOB_NAME": job,
    }
    host = create["HostConfig"]
    assert host["Binds"] == [f"{shared}:{shared}:rw"]
    assert host["NetworkMode"] == config["network"]
    assert host.get("AutoRemove") is True
    assert create["Labels"]["dagster/run_id"] == run_id

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert run.tags["docker/container_id"] == docker_engine.CONTAINER_ID
        assert run.tags["dagster/image"] == config["image"]
    finally:
        instance.dispose()


# ---- what a run writes


def write_registry(path: Path, feed: str) -> None:
    """The demo's first tenant as TENANT, its feed at ``feed`` (relative to the registry file)."""
    demo = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    tenant = {**demo["tenants"][0], "tenant_id": TENANT, "feed": {"source": feed, "format": "csv"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"tenants": [tenant]}))


def test_a_catalog_sync_run_writes_only_to_the_shared_directory(
    pg_dagster_home: Path, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A run container shares nothing with the others but the mounted directory: a replace run executed as
    the run worker does (its own process, the profile's instance, a working directory of its own) writes the
    warehouse, the feed workdir and Dagster's run files there, and nothing in its working directory, home,
    temporary directory, DAGSTER_HOME or the repository."""
    shared = tmp_path / "shared"
    home = profile_home(tmp_path / "dagster_home", shared)
    analyst = seed_work_database(shared / "warehouse" / "kobi_cpas.duckdb")
    registry = shared / "registry" / "tenants.yaml"
    write_registry(registry, f"feeds/{TENANT}.csv")
    generate_feed(registry.parent / "feeds" / f"{TENANT}.csv", 40, seed=7)
    sandbox.admin.catalog_config(problem_rate_scale=0)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        instance.add_dynamic_partitions("tenant", [TENANT])
    finally:
        instance.dispose()

    workdir, user_home, tmp = (tmp_path / name for name in ("workdir", "user", "tmp"))
    for folder in (workdir, user_home, tmp):
        folder.mkdir()
    watched = (REPO_ROOT, workdir, user_home, tmp, home)
    before = {root: tree(root) for root in watched}

    env = {
        **base_env(home, user_home),
        **kobi_env_vars(analyst, sandbox.url),
        "KOBI_CPAS_TENANTS": str(registry),
        "TMPDIR": str(tmp),
    }
    tags = json.dumps({"dagster/partition": TENANT})
    execute = ["job", "execute", "-m", "kobi_cpas.definitions", "-j", "catalog_replace_job", "--tags", tags]
    dagster_cli(execute, cwd=workdir, env=env)
    assert len(sandbox.admin.catalog_items(CATALOG)) == 40

    written = {
        path
        for root in watched
        for path, stat in tree(root).items()
        if before[root].get(path) != stat and not path.endswith(".pyc")
    }
    assert written == set(), sorted(written)[:20]
    # What the run did write, on the shared directory.
    assert (shared / "warehouse" / ".kobi_work" / "feeds" / TENANT).is_dir()
    assert analyst.is_file()
    assert any(p.is_file() for p in (shared / "dagster" / "compute_logs").rglob("*"))
