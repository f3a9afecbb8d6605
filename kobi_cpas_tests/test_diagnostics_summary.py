"""The summary view, catalog_health, the Markdown report, the asset-check outcomes, catalog-level diagnostics
(no pixel connected) and the published, commented analyst tables."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from kobi_cpas.diagnostics import (
    checks,
    health_metadata,
    markdown_summary,
    poll_catalog,
)
from kobi_cpas.diagnostics.tables import ANALYST_TABLES
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.test_diagnostics_support import (
    NO_PIXEL_CATALOG,
    REFERENCE_ERROR,
    TENANT,
    add_sync,
    diagnostics,
    item_errors_admin,
    rows,
    seed_items,
)
from kobi_cpas_tests.test_sandbox_catalog_feeds import CATALOG, catalog_config
from kobi_cpas_tests.warehouse_template import seed_work_database

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

KOBI_CTA = "Add a price such as '199.90 TRY' to the item in the feed."


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(seed_work_database(tmp_path / "analyst.duckdb"), schema=SCHEMA)


def test_summary_health_markdown_and_checks(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, problem_rate_scale=0)
    rids = seed_items(meta_client, 20)
    for rid in rids[1:4]:
        item_errors_admin(sandbox, "POST", rid, "IMAGE_RESOLUTION_LOW")
    item_errors_admin(sandbox, "POST", rids[10], "NOT_ENOUGH_IMAGES")  # LOW
    now = sandbox.admin.now()
    with wh.connect() as con:
        con.execute(
            """INSERT INTO main.feed_item_issues VALUES
                 (?, 'snap-1', 'sku-0005', 6, 'price', 'error', 'missing_required', 'price is empty', ?),
                 (?, 'snap-1', 'sku-0006', 7, 'description', 'info', 'short_description', 'only 12 characters',
                  'Write a longer description.')""",
            [TENANT, KOBI_CTA, TENANT],
        )
        con.execute(
            "INSERT INTO main.meta_catalogs (tenant_id, catalog_id, pixel_count, app_count, has_event_source, "
            "call_to_action, observed_at) VALUES (?, ?, 0, 0, false, 'Connect the Meta Pixel.', ?)",
            [TENANT, CATALOG, now],
        )
        add_sync(con, "replace-1", "replace", now - timedelta(hours=3))
        add_sync(con, "update-1", "update", now - timedelta(hours=2))
        add_sync(con, "batch-1", "batch", now - timedelta(minutes=30))
        add_sync(con, "batch-2", "batch", now - timedelta(minutes=10), status="failed")
    report = poll_catalog(meta_client, wh, TENANT, CATALOG, now=now)
    assert report.ok and report.summary_rows == 4

    with wh.connect() as con:
        summary = rows(con, "SELECT * FROM main.catalog_diagnostics_summary ORDER BY rank")
        (health,) = rows(con, "SELECT * FROM main.catalog_health")
        md = markdown_summary(con, TENANT)
        numbers = health_metadata(con, TENANT)
        tenant = load_registry(DEFAULT_REGISTRY).tenant(TENANT)
        outcomes = checks.run_checks(con, tenant, now)
        lenient = checks.check_high_problem_share(con, TENANT, CATALOG, threshold=0.5, now=now)
        stale = checks.check_freshness(con, TENANT, CATALOG, now + timedelta(hours=3))
        kobi = diagnostics(con, "source = 'kobi_feed_validation'")

    assert [(s["rank"], s["priority"], s["error_type"], s["affected_items"]) for s in summary] == [
        (1, "HIGH", "IMAGE_RESOLUTION_LOW", 3),
        (2, "HIGH", "MISSING_REQUIRED", 1),
        (3, "LOW", "SHORT_DESCRIPTION", 1),  # ties: by source name, then type
        (4, "LOW", "NOT_ENOUGH_IMAGES", 1),
    ]
    top = summary[0]
    assert (
        top["call_to_action"] == REFERENCE_ERROR["call_to_action"]
        and top["title"] == REFERENCE_ERROR["title"]
    )
    assert top["example_retailer_ids"] == rids[1:4] and top["share_of_items"] == pytest.approx(3 / 20)
    assert summary[1]["call_to_action"] == KOBI_CTA and summary[1]["source"] == "kobi_feed_validation"
    assert {d["retailer_id"]: d["priority"] for d in kobi} == {"sku-0005": "HIGH", "sku-0006": "LOW"}

    # Eligibility is what Meta blocks; Kobi's own feed error on sku-0005 is counted apart.
    assert (health["items"], health["items_source"], health["items_with_high"]) == (
        20,
        "meta_product_count",
        3,
    )
    assert (health["items_with_problems"], health["items_with_low"], health["items_with_feed_errors"]) == (
        6,
        1,
        1,
    )
    assert health["eligible_items"] == 17 and health["eligible_share"] == pytest.approx(0.85)
    assert health["high_share"] == pytest.approx(0.15)
    assert health["has_pixel_or_app"] is False and health["fatal_ingestion_errors"] == 0
    assert health["last_successful_replace_at"] == now - timedelta(hours=3)
    assert health["last_successful_update_at"] == now - timedelta(hours=2)
    assert health["last_successful_batch_at"] == now - timedelta(minutes=30)  # not the failed one
    groups = {g["type"]: g for g in json.loads(health["diagnostic_groups"])}
    assert groups["IMAGE_QUALITY"]["severity"] == "MUST_FIX" and health["must_fix_groups"] == 1
    assert "IMAGE_RESOLUTION_LOW" in groups["IMAGE_QUALITY"]["error_types"]
    assert health["last_item_poll_at"] == now and health["day"] == now.date()

    assert "IMAGE_RESOLUTION_LOW" in md and REFERENCE_ERROR["call_to_action"] in md and KOBI_CTA in md
    assert "| 1 | HIGH |" in md and "blocked by Meta (HIGH): 3" in md and "eligible for ads: 85.0%" in md
    assert numbers["items_with_high"] == 3 and numbers["eligible_share"] == pytest.approx(0.85)

    fatal, share, pixel, fresh = (
        outcomes[n]
        for n in (
            checks.FATAL_INGESTION_CHECK,
            checks.HIGH_SHARE_CHECK,
            checks.PIXEL_CHECK,
            checks.FRESHNESS_CHECK,
        )
    )
    assert fatal.passed and fatal.severity == "ERROR"
    assert not share.passed and share.severity == "WARN" and share.metadata["threshold"] == 0.05
    assert "15.0%" in share.message and REFERENCE_ERROR["title"] in share.message
    assert lenient.passed
    assert not pixel.passed and pixel.severity == "WARN" and pixel.message == "Connect the Meta Pixel."
    assert fresh.passed and not stale.passed and "stale" in stale.message

    # The next day's poll adds a row; the same day's poll replaces it.
    poll_catalog(meta_client, wh, TENANT, CATALOG, now=now + timedelta(minutes=30))
    poll_catalog(meta_client, wh, TENANT, CATALOG, now=now + timedelta(days=1))
    with wh.connect() as con:
        days = con.execute("SELECT day FROM main.catalog_health ORDER BY day").fetchall()
    assert [d[0] for d in days] == [now.date(), (now + timedelta(days=1)).date()]


def test_catalog_level_diagnostics_and_published_comments(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    catalog_config(sandbox, problem_rate_scale=0)
    seed_items(meta_client, 4, catalog=NO_PIXEL_CATALOG)
    now = sandbox.admin.now()
    poll_catalog(meta_client, wh, "cappadocia_ceramics", NO_PIXEL_CATALOG, now=now)
    with wh.connect() as con:
        (d,) = diagnostics(con)
        md = markdown_summary(con, "cappadocia_ceramics")
        (summary,) = rows(con, "SELECT * FROM main.catalog_diagnostics_summary")
    assert (d["retailer_id"], d["level"], d["source"]) == ("", "catalog", "meta_catalog_diagnostics")
    assert d["error_type"] == "CATALOG_NOT_CONNECTED_TO_EVENT_SOURCE" and d["severity"] == "OPPORTUNITY"
    assert d["cta_source"] == "dictionary" and "Pixel" in d["call_to_action"] and d["reported_count"] == 4
    assert (
        summary["is_catalog_level"]
        and summary["affected_items"] == 0
        and summary["example_retailer_ids"] == []
    )
    assert "| catalog |" in md

    # Published: every diagnostics table and column carries a comment.
    wh.publish()
    con = duckdb.connect(str(wh.analyst_path), read_only=True)
    try:
        for spec in ANALYST_TABLES:
            comment = con.execute(
                "SELECT comment FROM duckdb_tables() WHERE table_name = ?", [spec.name]
            ).fetchone()
            cols = dict(
                con.execute(
                    "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = ?", [spec.name]
                ).fetchall()
            )
            assert comment and comment[0]
            assert set(cols) == set(spec.column_names) and all(cols.values()), spec.name
        assert con.execute("SELECT count(*) FROM catalog_diagnostics").fetchone() == (1,)
        internal = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'diag_state'"
        ).fetchone()
        assert internal == (0,)
    finally:
        con.close()
