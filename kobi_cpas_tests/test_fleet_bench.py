"""The fleet benchmark runs two tiny tenants end to end through the real run queue and reports every figure."""

import json

import pytest

from kobi_cpas.devenv.fleet_bench import CYCLES, run_fleet_bench

pytestmark = pytest.mark.bench


def test_fleet_benchmark_two_tiny_tenants(tmp_path):
    result = run_fleet_bench(tenants=2, min_items=200, max_items=400, large_items=(), out=tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text())["fleet"]["tenants"] == 2
    assert list(result["cycles"]) == [name for name, _, _ in CYCLES]
    for name, cycle in result["cycles"].items():
        runs = 1 if name == "batch" else 2  # the batch cadence syncs both tenants in one fleet run
        assert cycle["runs"] == runs and cycle["runs_succeeded"] == runs, name
        assert cycle["tenants_per_run"] == 2 / runs, name
        assert cycle["changes_reached_meta"] == "2/2", (name, cycle["delta_after"])
        assert cycle["makespan_s"] > 0
        assert cycle["duckdb_writer_hold_per_tenant_s"]["max"] > 0
        assert cycle["run_worker_cpu_s"]["runs_sampled"] >= 1
        assert cycle["api_requests"]["writes"] >= cycle["api_requests"]["minimum_writes"]
        assert cycle["analyst_publish"]["success"] and cycle["analyst_publish"]["cpu_s"] > 0, name
        assert set(cycle["schedule_tick"]) == {"replace", "update", "batch"}, name
    # every change of the last replace reached Meta: nothing left to send
    assert result["cycles"]["replace"]["delta_after"] == {"new": 0, "changed": 0, "removed": 0}
    assert result["cycles"]["update"]["change_to_meta_latency_s"]["tenants_measured"] >= 1
    status = result["cycles"]["batch"]["status_check"]
    assert status["runs"] == status["runs_succeeded"] == 1 and status["cpu_per_tenant_s"] > 0
    cap = result["capacity"]
    assert cap["extrapolated_from_tenants"] == 2 and cap["max_tenants"] > 0
    assert cap["per_tenant_per_hour"]["analyst_publish_cpu_s"] > 0
    assert cap["per_tenant_per_hour"]["status_check_cpu_s"] > 0
    diagnostics = result["cycles"]["update"]["diagnostics_poll"]
    assert diagnostics["runs"] == diagnostics["runs_succeeded"] == 1  # both tenants in one fleet run
    assert cap["per_tenant_per_hour"]["diagnostics_poll_cpu_s"] > 0
    assert cap["bound"]["cadence"] in ("replace", "update", "batch")
