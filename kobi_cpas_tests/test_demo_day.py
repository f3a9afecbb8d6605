"""The demo `make run` shows: day 1 synced by a replace, then day 2 (prices, stock, descriptions, a removed item)
sent by the update feed and the Batch API, and every example query of the README returning rows on it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
import yaml

from kobi_cpas.devenv.demo_day import (
    REGISTRY_ENV,
    day2_before_stage,
    speed_up_sandbox,
    stage_demo,
    use_demo_registry,
)
from kobi_cpas.devenv.pipeline import INCREMENTAL_STAGE, RUN_STAGES, materialize_all
from kobi_cpas.feeds.parser import parse_feed
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"
# Together they cover every query: one has a pending partnership, the other feed errors (and a small catalog).
DEMO_TENANTS = ["bosphorus_outdoor", "cappadocia_ceramics"]


def readme_queries() -> list[tuple[str, str]]:
    """(the comment line above it, the SQL) of each example query of the README's analyst section."""
    section = README.read_text(encoding="utf-8").split("Example queries:", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block, "README.md: no ```sql block after 'Example queries:'"
    out = []
    # A statement ends with ";" at the end of a line (a comment may hold one mid-line).
    for statement in re.split(r";[ \t]*\n", block.group(1)):
        lines = [ln for ln in statement.strip().splitlines() if ln.strip()]
        comments = [ln for ln in lines if ln.lstrip().startswith("--")]
        sql = "\n".join(ln for ln in lines if not ln.lstrip().startswith("--"))
        if sql:
            out.append((comments[0].lstrip("- ") if comments else sql.splitlines()[0], sql))
    return out


def _parsed(path: Path, fmt: str) -> dict[str, dict[str, str | None]]:
    con = duckdb.connect()
    try:
        result = parse_feed(con, path, fmt, schema="t", table="feed")
        cols = list(result.columns_present)
        rows = con.execute(f"SELECT {', '.join(cols)} FROM t.feed WHERE id IS NOT NULL").fetchall()
    finally:
        con.close()
    return {r[cols.index("id")]: dict(zip(cols, r, strict=True)) for r in rows}


def test_day2_changes_prices_stock_descriptions_and_removes_one_item_per_feed(tmp_path: Path) -> None:
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    stage_demo(day1, day=1)
    registry = stage_demo(day2, day=2)
    for tenant in load_registry(registry).tenants:
        fmt = tenant.feed.format.value
        before = _parsed(day1 / tenant.feed.source, fmt)
        after = _parsed(day2 / tenant.feed.source, fmt)
        assert len(before.keys() - after.keys()) == 1, tenant.tenant_id  # one item left the feed
        assert not after.keys() - before.keys(), tenant.tenant_id
        changed: dict[str, int] = {}
        for item_id, row in after.items():
            for field, value in row.items():
                if value != before[item_id][field]:
                    changed[field] = changed.get(field, 0) + 1
        # Volatile fields (Batch API) and content (update feed) change on a few items; nothing else does.
        assert {"price", "availability", "description"} <= changed.keys(), (tenant.tenant_id, changed)
        assert changed.keys() <= {"price", "availability", "quantity_to_sell_on_facebook", "description"}
        assert max(changed.values()) < len(before) * 0.2, (tenant.tenant_id, changed)


def test_day1_restores_the_committed_feeds_after_day2(tmp_path: Path) -> None:
    registry = stage_demo(tmp_path, day=2)
    stage_demo(tmp_path, day=1)
    for tenant in load_registry(registry).tenants:
        committed = (DEFAULT_REGISTRY.parent / tenant.feed.source).read_bytes()
        assert (tmp_path / tenant.feed.source).read_bytes() == committed


def test_incremental_stage_reads_the_feed_again_before_update_and_batch() -> None:
    stage = RUN_STAGES[INCREMENTAL_STAGE]
    assert stage.index("feed_snapshot") < stage.index("update_feed_upload")
    assert {"price_stock_batch", "update_feed_upload"} <= set(stage)


def test_demo_flow_sends_all_three_methods_and_every_readme_query_returns_rows(
    kobi_env, pg_instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REGISTRY_ENV)  # as `make run` without a registry configured: the demo
    where = use_demo_registry(kobi_env.analyst_path, restage=True)
    assert where is not None
    monkeypatch.setenv(REGISTRY_ENV, str(where / "tenants.yaml"))  # restored after the test
    speed_up_sandbox(kobi_env.sandbox.url)
    # The shared-item metrics of the last days only (a registry option): rows for every query, a seventh of the
    # 28-day pull `make run` does.
    _start_insights_recently(where / "tenants.yaml")
    day2 = day2_before_stage(where, lambda m: None)

    def before_stage(index: int) -> None:
        day2(index)  # restages the committed registry
        _start_insights_recently(where / "tenants.yaml")

    report = materialize_all(
        kobi_env.defs(),
        pg_instance,
        tenants=DEMO_TENANTS,
        on_progress=lambda m: None,
        before_stage=before_stage,
    )
    assert report.ok, report.failures

    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        sent = con.execute(
            "SELECT tenant_id, method, sum(items_sent) FROM catalog_syncs WHERE status = 'finished' "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert {(t, m) for t, m, n in sent if n > 0} == {(t, m) for t in DEMO_TENANTS for m in METHODS}
        empty = [title for title, sql in readme_queries() if not con.execute(sql).fetchall()]
    finally:
        con.close()
    assert not empty, f"README example queries without rows on the demo: {empty}"


METHODS = ("batch", "replace", "update")


def _start_insights_recently(registry: Path) -> None:
    data = yaml.safe_load(registry.read_text(encoding="utf-8"))
    start = (datetime.now(ZoneInfo("Europe/Istanbul")).date() - timedelta(days=4)).isoformat()
    for tenant in data["tenants"]:
        tenant.setdefault("insights", {})["start_date"] = start
    registry.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_the_readme_has_the_example_queries_this_test_runs() -> None:
    titles = [t for t, _ in readme_queries()]
    assert len(titles) >= 10 and any("kept out of stock" in t for t in titles)


def test_two_runs_staging_at_once_leave_whole_feeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `make run`s share data/demo: one writes day 1 while the other writes day 2. Both finish, and each
    feed is then one whole day, never a mix (both writers reach the rename before either does it)."""
    import threading

    days = {d: stage_demo(tmp_path / f"day{d}", day=d).parent for d in (1, 2)}
    both_written = threading.Barrier(2, timeout=30)
    real_replace = Path.replace

    def replace_together(self: Path, target):
        if self.name.endswith(".tmp") and Path(target).suffix in (".csv", ".tsv", ".xml"):
            both_written.wait()
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_together)
    shared = tmp_path / "shared"
    errors: list[BaseException] = []

    def stage(day: int) -> None:
        try:
            stage_demo(shared, day=day)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=stage, args=(d,)) for d in (1, 2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(120)
    assert errors == []
    for tenant in load_registry(shared / "tenants.yaml").tenants:
        got = (shared / tenant.feed.source).read_bytes()
        assert got in {(days[d] / tenant.feed.source).read_bytes() for d in (1, 2)}, tenant.tenant_id
    assert not list(shared.rglob("*.tmp"))
