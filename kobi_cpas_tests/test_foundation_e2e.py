"""The code location end to end on real parts: Postgres-backed Dagster, the sandbox over HTTP, DuckDB files.

- the token never appears in logs, the Dagster event storage, run config or the DuckDB files, even with faults;
- analysts holding the analyst file open never make a materialization fail;
- the tenant partitions follow the registry through the sensor.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import yaml

from kobi_cpas.devenv.pipeline import materialize_all
from kobi_cpas.devenv.postgres import conninfo_from_env
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.dagster_fixtures import tick_sensor

FOUNDATION = [["tenant_registry"], ["meta_catalogs"]]


def _pg_dump_text() -> str:
    """Every text column of every Dagster table, as one string (what the token hunt searches)."""
    info = conninfo_from_env()
    assert info is not None
    conn = psycopg2.connect(**info.connect_kwargs())
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'bytea', 'json', 'jsonb')"
        )
        chunks = []
        for table, column in cur.fetchall():
            cur.execute(f'SELECT "{column}"::text FROM "{table}"')
            chunks.extend(r[0] for r in cur.fetchall() if r[0])
        return "\n".join(chunks)
    finally:
        conn.close()


def test_token_never_leaks_with_faults(kobi_env, pg_instance, caplog, capfd):
    admin = kobi_env.sandbox.admin
    # Retries (5xx, throttling with usage headers, malformed JSON) and one hard failure that echoes the token:
    # Meta's "Malformed access token <token>" message must be scrubbed before it reaches any event.
    admin.add_fault("http_500", route="catalog.get", times=1)
    admin.add_fault(
        "throttle", route="catalog.external_event_sources", times=1, estimated_time_to_regain_access=0
    )
    admin.add_fault("malformed_json", route="catalog.get", times=1)
    admin.add_fault(
        "error",
        route="catalog.get",
        path_regex=".*2000000000000003.*",
        times=20,
        code=190,
        status=400,
        message=f"Malformed access token {kobi_env.token}",
        type="OAuthException",
    )
    caplog.set_level(logging.DEBUG)
    progress: list[str] = []
    report = materialize_all(kobi_env.defs(), pg_instance, stages=FOUNDATION, on_progress=progress.append)
    # the faulted tenant fails, the others succeed after retries
    outcome = {(label, key): ok for label, key, ok, _ in report.runs}
    assert outcome[("meta_catalogs", "anatolia_home")] is True
    assert outcome[("meta_catalogs", "cappadocia_ceramics")] is False
    assert admin.count_requests(route="catalog.get") >= 4
    # one progress line per run ("run 3/7 [...]"), then its outcome; a failure says why, in one line
    starts = [m for m in progress if m.startswith("run ")]
    assert starts[0].startswith(f"run 1/{len(report.runs)} [") and len(starts) == len(report.runs)
    ((label, key, why),) = report.failures
    assert (label, key) == ("meta_catalogs", "cappadocia_ceramics")
    assert "Malformed access token" in why and "Traceback" not in why and "\n" not in why
    assert any(m.startswith("  FAILED in ") and "Malformed access token" in m for m in progress)
    assert kobi_env.token not in " ".join(progress)

    token = kobi_env.token
    out, err = capfd.readouterr()
    assert token not in caplog.text and token not in out and token not in err
    events = _pg_dump_text()
    assert "Malformed access token" in events  # the failure itself is recorded...
    assert token not in events  # ...without the token
    for rec in pg_instance.get_run_records():
        assert token not in repr(rec.dagster_run.run_config)
    for f in kobi_env.analyst_path.parent.rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    for entry in admin.requests():
        assert token not in repr(entry)


READER = textwrap.dedent(
    """
    import duckdb, sys, time
    con = duckdb.connect(sys.argv[1], read_only=True)   # an analyst's session, left open
    print("ready", con.execute("SELECT count(*) FROM tenant_registry").fetchone()[0], flush=True)
    sys.stdin.readline()                                 # hold it until the writer is done
    print("still", con.execute("SELECT count(*) FROM tenant_registry").fetchone()[0], flush=True)
    """
)


def test_materializations_succeed_while_an_analyst_holds_the_file(kobi_env, pg_instance):
    defs = kobi_env.defs()
    assert materialize_all(defs, pg_instance, stages=[["tenant_registry"]], on_progress=lambda m: None).ok
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(kobi_env.analyst_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = reader.stdout.readline().split()
        assert first[0] == "ready" and int(first[1]) > 0
        report = materialize_all(defs, pg_instance, stages=FOUNDATION, on_progress=lambda m: None)
        assert report.ok, report.runs
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().split()[0] == "still"  # the open session kept working
    finally:
        reader.kill()
    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT tenant_id, has_event_source, call_to_action FROM meta_catalogs ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == ["anatolia_home", "bosphorus_outdoor", "cappadocia_ceramics"]
    no_pixel = rows[2]
    assert no_pixel[1] is False and "Connect the brand's Meta Pixel" in no_pixel[2]
    assert rows[0][1] is True and rows[0][2] is None


def test_tenant_sensor_adds_and_removes_partitions(kobi_env, pg_instance, tmp_path):
    from kobi_cpas.defs.tenants.sensors import tenant_partitions_sensor

    result = tick_sensor(tenant_partitions_sensor, pg_instance, kobi_env.resources())
    assert isinstance(result, dg.SensorResult)
    for req in result.dynamic_partitions_requests:
        pg_instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    assert sorted(pg_instance.get_dynamic_partitions("tenant")) == [
        "anatolia_home",
        "bosphorus_outdoor",
        "cappadocia_ceramics",
    ]
    # the registry reloaded once, and each tenant that joined gets its preflight run on its partition
    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("tenant_onboarding_job", "anatolia_home"),
        ("tenant_onboarding_job", "bosphorus_outdoor"),
        ("tenant_onboarding_job", "cappadocia_ceramics"),
        ("tenant_registry_job", None),
    ]
    # unchanged registry: skip with a reason
    again = tick_sensor(tenant_partitions_sensor, pg_instance, kobi_env.resources(), cursor=result.cursor)
    assert isinstance(again, dg.SkipReason) and "registry unchanged" in again.skip_message
    # a tenant removed from the registry is dropped
    data = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    data["tenants"] = data["tenants"][:2]
    p = tmp_path / "tenants.yaml"
    p.write_text(yaml.safe_dump(data))
    changed = tick_sensor(tenant_partitions_sensor, pg_instance, kobi_env.resources(p), cursor=result.cursor)
    assert [list(r.partition_keys) for r in changed.dynamic_partitions_requests] == [["cappadocia_ceramics"]]
    assert [r.job_name for r in changed.run_requests] == ["tenant_registry_job"]  # no preflight for a leaver
    # a broken registry never drops partitions
    p.write_text("tenants: [{tenant_id: 'bad id!'}]")
    broken = tick_sensor(tenant_partitions_sensor, pg_instance, kobi_env.resources(p), cursor=result.cursor)
    assert isinstance(broken, dg.SkipReason)
    assert "left unchanged" in broken.skip_message and str(p) in broken.skip_message


def test_make_run_releases_pool_slots_of_orphaned_runs(pg_instance):
    """A killed `make dev` leaves a STARTED run holding a pool slot (of a pool an operator added); the next make
    run must not wait for it forever."""
    import uuid

    from kobi_cpas.devenv.instance import ensure_pools, release_orphaned_slots

    ensure_pools(pg_instance, {"exports": 1})
    run_id = str(uuid.uuid4())
    pg_instance.add_run(
        dg.DagsterRun(job_name="catalog_batch_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED)
    )
    # Its run worker recorded its pid with RUN_START, then was killed with make dev.
    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    worker.wait(timeout=60)
    start = dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, "catalog_batch_job", pid=worker.pid)
    pg_instance.report_dagster_event(start, run_id)
    claim = pg_instance.event_log_storage.claim_concurrency_slot("exports", run_id, "price_stock_batch")
    assert claim.is_claimed
    blocked = pg_instance.event_log_storage.claim_concurrency_slot("exports", str(uuid.uuid4()), "x")
    assert not blocked.is_claimed  # limit 1: everything else waits
    assert run_id in release_orphaned_slots(pg_instance, same_host=True)  # the local Postgres: one machine
    assert pg_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert not [
        s
        for s in pg_instance.event_log_storage.get_concurrency_info("exports").claimed_slots
        if s.run_id == run_id
    ]
