"""The snapshot benchmark measures what it claims: the delta it finds is the change made to the file (volatile,
new and removed items), run after run."""

from __future__ import annotations

import pytest

from kobi_cpas.devenv.bench import bench_snapshot

pytestmark = pytest.mark.bench


def test_snapshot_benchmark_is_exact_and_repeatable(tmp_path):
    # past the size from which the analyst file's rewritten tables are emptied before the copy
    first = bench_snapshot(60_000, tmp_path, repeats=2)
    second = bench_snapshot(60_000, tmp_path)  # same folder: an earlier run's state must not leak in
    assert len(first["runs"]) == 2 and len(second["runs"]) == 1
    ratios = [r["second_to_first"] for r in first["runs"]]
    assert min(ratios) <= first["median_second_to_first"] <= max(ratios)
    assert second["median_second_to_first"] == second["second_to_first"]
    for res in (first, second):
        assert res["expected"]["new"] > 0 and res["expected"]["removed"] > 0
        assert res["expected"]["volatile_only_at_least"] > 0
        assert res["delta_exact"], (res["delta"], res["expected"])
        assert res["batch_calls_exact"]
        assert res["batch_items_planned"] == res["delta"]["volatile_only"]
        assert res["file_growth"] <= 1.1
    assert first["delta"] == second["delta"]


def test_replace_upload_benchmark_delivers_every_item_and_reports_its_own_peak(tmp_path):
    from kobi_cpas.devenv.sync_bench import bench_replace_upload

    res = bench_replace_upload(4_000, tmp_path)
    assert res["records"] == ["finished"] and res["items_at_meta"] == 4_000
    assert 0 < res["replace_peak_rss_mb"] < 1536
    assert res["sandbox_peak_rss_mb"] > 0  # this phase's own peak (the process's is reset before it)
    # then the fleet's change reaches Meta through one update upload and the Batch API, each in its own process
    after = res["after_change"]
    assert after["update_records"] == ["finished"] and after["update_uploads"] == 1
    assert after["items_batch_calls"] >= 1 and set(after["batch_records"]) == {"finished"}
    assert after["new_items"] > 0
    assert after["items_at_meta"] == 4_000 + after["new_items"]  # the removed stay, out of stock (retention)
    for phase in ("snapshot", "update", "batch"):
        assert 0 < after[f"{phase}_peak_rss_mb"] < 1536, phase
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot"]  # only the feed, kept for the next phase


def test_the_profiled_run_gives_every_statement_of_the_step_to_its_stage(tmp_path):
    res = bench_snapshot(5_000, tmp_path, profile=True)
    assert set(res["profile"]) == {"first", "second"}
    for key, stages in res["profile"].items():
        assert set(stages) == set(res[f"{key}_stages"]), key
        for name, st in stages.items():
            # one statement after the other: the statements of a stage cannot take longer than the stage
            assert st["statements"] > 0 and st["statement_seconds"] <= st["seconds"] + 1e-9, (key, name)
            assert [t["seconds"] for t in st["top"]] == sorted(
                (t["seconds"] for t in st["top"]), reverse=True
            )
        labels = {name: " ".join(t["label"] for t in st["top"]) for name, st in stages.items()}
        # the first snapshot builds the stage rows, the second reads the file again for its changed rows
        assert ("feed_stage.item_rows_" if key == "first" else "_inc_") in labels["ingest"].replace(
            '"', ""
        ), labels
        # the publish writes a new analyst file (attached under a kobi_publish_ name) and swaps it in
        assert "kobi_publish_" in labels["publish"], labels["publish"]
    assert "main.feed_items" in " ".join(t["label"] for t in res["profile"]["first"]["feed_tables"]["top"])
