"""The static HTML report: each tenant's charts carry the series of its own rows (read back from the page as
Plotly draws them), calls to action are escaped, and the page needs no network."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kobi_cpas.operations.report import chart_id, read_report_data, write_report
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.warehouse_template import seed_work_database

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _seed(con) -> None:
    metrics = []
    for tenant, retailers in (
        ("anatolia_home", ("trendyol", "hepsiburada")),
        ("bosphorus_outdoor", ("n11",)),
    ):
        for i, retailer in enumerate(retailers):
            for day in (1, 2, 3):
                spend, value = 100 * day, (300 + 50 * i) * day + 10 * i
                for metric, action, v in (
                    ("spend", "n/a", spend),
                    ("catalog_segment_value", "omni_purchase", value),
                ):
                    metrics.append(
                        (
                            f"2026-11-0{day}",
                            tenant,
                            retailer,
                            "act_1",
                            "campaign",
                            f"c-{retailer}",
                            f"c-{retailer}",
                            "n/a",
                            "n/a",
                            metric,
                            action,
                            "default",
                            v,
                            False,
                            "p",
                            NOW,
                        )
                    )
    cols = (
        "date, tenant_id, retailer, ad_account_id, level, object_id, campaign_id, adset_id, ad_id, metric, "
        "action_type, attribution_window, value, is_estimated, pull_id, pulled_at"
    )
    con.executemany(f"INSERT INTO shared_item_metrics ({cols}) VALUES ({', '.join('?' * 16)})", metrics)
    con.executemany(
        "INSERT INTO catalog_health (tenant_id, catalog_id, day, items, eligible_share, items_with_problems, "
        "items_with_high, items_with_medium, items_with_low, items_with_feed_errors, open_problems, "
        "open_high_problems, fatal_ingestion_errors, observed_at) VALUES (?, 'c', ?, 100, ?, 0, ?, 0, 0, 0, 0, 0, 0, ?)",
        [("anatolia_home", f"2026-11-0{d}", 0.8 + d / 100, 10 - d, NOW) for d in (1, 2, 3)],
    )
    con.execute(
        "INSERT INTO catalog_diagnostics_summary (tenant_id, catalog_id, rank, source, error_type, priority, title, "
        "call_to_action, affected_items, open_problems, is_catalog_level, observed_at) VALUES "
        "('anatolia_home', 'c', 1, 'kobi_feed', 'invalid_price_format', 'HIGH', 'Price not in the format', "
        "'Write price as \"<amount> <currency>\", e.g. 19.99 EUR', 7, 7, false, ?)",
        [NOW],
    )
    con.execute(
        "INSERT INTO sync_compliance (tenant_id, requirement, asset_key, required_every_seconds, age_seconds, "
        "within_requirement, status, evaluated_at) VALUES "
        "('anatolia_home', 'full_replace_24h', 'replace_feed_upload', 86400, 3600, true, 'ok', ?), "
        "('anatolia_home', 'price_stock_15min', 'price_stock_batch', 900, NULL, false, 'never', ?)",
        [NOW, NOW],
    )


def _plots(page: str) -> dict[str, list[dict]]:
    """chart id -> its traces, as the page hands them to Plotly.newPlot."""
    out, decoder = {}, json.JSONDecoder()
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        traces, _ = decoder.raw_decode(page, m.end())
        out[m.group(1)] = traces
    return out


@pytest.fixture
def report(tmp_path: Path) -> tuple[str, dict[str, list[str]]]:
    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        _seed(con)
        data = read_report_data(con)
    path = tmp_path / "report.html"
    charts = write_report(data, path, NOW)
    return path.read_text(encoding="utf-8"), charts


def test_each_chart_carries_its_tenants_series(report) -> None:
    page, charts = report
    plots = _plots(page)
    assert (
        set(plots)
        == set(charts)
        == {
            chart_id(t, c)
            for t in ("anatolia_home", "bosphorus_outdoor")
            for c in ("health", "compliance", "roas")
        }
    )
    roas = {t["name"]: t for t in plots[chart_id("anatolia_home", "roas")]}
    assert sorted(roas) == ["hepsiburada", "trendyol"]  # the other tenant's retailer is not drawn here
    assert roas["trendyol"]["y"] == [3.0, 3.0, 3.0]
    assert roas["hepsiburada"]["y"] == [pytest.approx((350 * d + 10) / (100 * d)) for d in (1, 2, 3)]
    assert [t["name"] for t in plots[chart_id("bosphorus_outdoor", "roas")]] == ["n11"]
    health = {t["name"]: t for t in plots[chart_id("anatolia_home", "health")]}
    assert health["eligible share"]["y"] == pytest.approx([0.81, 0.82, 0.83])
    assert health["items with HIGH problems"]["y"] == [9, 8, 7]
    compliance = {t["name"]: t for t in plots[chart_id("anatolia_home", "compliance")]}
    assert compliance["minutes since last success"]["x"] == ["full_replace_24h", "price_stock_15min"]
    assert compliance["minutes since last success"]["y"] == [60.0, None]  # never succeeded: no bar
    assert compliance["minutes since last success"]["marker"]["color"] == ["#2e7d32", "#c62828"]  # ok, late
    assert health["eligible share"]["x"] == ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_calls_to_action_are_escaped_and_the_page_is_offline(report) -> None:
    page, _ = report
    assert "Write price as &quot;&lt;amount&gt; &lt;currency&gt;&quot;" in page
    # Plotly's JavaScript is in the page, and no script is loaded from elsewhere
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[:500] in page
    tags = re.findall(r"<script[^>]*>", re.sub(r"(<script[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S))
    assert tags and not [t for t in tags if "src=" in t]


def test_two_runs_writing_the_report_at_once_both_succeed(tmp_path: Path, monkeypatch) -> None:
    """Two `make run`s finish with the report at the same moment: each renames its own temporary file (both
    reach the rename before either does it, so a shared temporary name would be gone for the second)."""
    import threading

    path = tmp_path / "report.html"
    both_written = threading.Barrier(2, timeout=30)
    real_replace = Path.replace

    def replace_together(self: Path, target):
        if self.name.endswith(".tmp"):
            both_written.wait()
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_together)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            write_report({}, path, NOW)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    writers = [threading.Thread(target=write) for _ in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(60)
    assert errors == []
    assert path.read_text(encoding="utf-8").endswith("</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind
