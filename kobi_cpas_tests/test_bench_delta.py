"""The delta benchmark measures what it claims: exactly the mutated items are volatile-only, run after run."""

from __future__ import annotations

import pytest

from kobi_cpas.devenv.bench import bench_delta

pytestmark = pytest.mark.bench


def test_delta_benchmark_is_exact_and_repeatable(tmp_path):
    first = bench_delta(3_000, tmp_path)
    second = bench_delta(3_000, tmp_path)  # same folder: an earlier run's state must not leak in
    for res in (first, second):
        assert res["expected_volatile_only"] > 0
        assert res["delta_exact"], res["delta"]
        assert res["batch_calls_exact"]
        assert res["batch_items_planned"] == res["expected_volatile_only"]
    assert first["delta"] == second["delta"]
