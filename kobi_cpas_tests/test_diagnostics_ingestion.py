"""Ingestion errors in catalog_diagnostics: the reference feed-fatal and batch samples reproduced through the
sandbox, row -> item mapping (samples, sync_rows, in-flight rows), supersession by later syncs, pending batches,
and a real replace sync through kobi_cpas.sync.methods."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from kobi_cpas.diagnostics import checks, poll_catalog
from kobi_cpas.diagnostics.after_sync import fatal_errors_for_sync
from kobi_cpas.diagnostics.collect import record_batch_lines, record_upload_rows
from kobi_cpas.diagnostics.dictionary import KOBI_INGESTION_CTA
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.test_diagnostics_support import TENANT, add_sync, diagnostics, rows
from kobi_cpas_tests.test_sandbox_catalog_feeds import (
    BASE_COLUMNS,
    CATALOG,
    catalog_config,
    create_feed,
    item,
    to_csv,
    upload,
)
from kobi_cpas_tests.warehouse_template import seed_work_database
from meta_sandbox import load_fixture

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

COAT_COLUMNS = (*BASE_COLUMNS[:3], "item_group_id", "shipping", *BASE_COLUMNS[3:])  # as in the reference


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(seed_work_database(tmp_path / "k.duckdb"), schema=SCHEMA)


def coats(express_row_10: bool) -> bytes:
    rows_ = [
        item(f"coat-{n}", item_group_id="WinterCoats", shipping="TR::Standard:49.90 TRY")
        for n in range(1, 10)
    ]
    shipping = "TR::Express:89.90 TRY" if express_row_10 else "TR::Standard:49.90 TRY"
    rows_.append(item("coat-10", item_group_id="WinterCoats", shipping=shipping))
    return to_csv(rows_, COAT_COLUMNS)


def sync_sources_only(client: MetaGraphClient, wh: Warehouse, now) -> None:
    poll_catalog(client, wh, TENANT, CATALOG, now=now, item_errors=False, catalog_diagnostics=False)


def test_feed_fatal_reference_sample_lands_on_the_item_of_row_10(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    (expected,) = load_fixture("feed_upload_errors")["data"]
    feed = create_feed(meta_client)
    session = upload(meta_client, feed, coats(express_row_10=True))
    now = sandbox.admin.now()
    with wh.connect() as con:
        add_sync(
            con, "replace-1", "replace", now - timedelta(minutes=5), upload_session_id=session["id"], errors=1
        )
        report = fatal_errors_for_sync(meta_client, con, TENANT, CATALOG, "replace-1", now=now)
        assert (report.status, report.fatal_errors, report.warnings, report.items_rejected) == (
            "finished",
            1,
            0,
            1,
        )
        (d,) = diagnostics(con)
        again = fatal_errors_for_sync(meta_client, con, TENANT, CATALOG, {"sync_id": "replace-1"}, now=now)
        assert again.problems == report.problems and diagnostics(con) == [d]  # idempotent
        outcome = checks.check_fatal_ingestion_errors(con, TENANT, CATALOG)
    assert d["retailer_id"] == "coat-10"  # row 10 of the file
    # row_number through the error's samples; column_number is not in Meta's SDK, so it is not asked for.
    assert (d["row_number"], d["column_number"]) == (expected["row_number"], None)
    assert (d["source"], d["level"], d["severity"], d["priority"]) == ("feed_upload", "item", "fatal", "HIGH")
    assert d["message"] == expected["summary"] and d["description"] == expected["description"]
    assert (d["error_type"], d["field"], d["title"]) == (
        "GROUP_MISMATCH",
        "shipping",
        "Group Mismatch for Property",
    )
    assert d["call_to_action"] == KOBI_INGESTION_CTA["GROUP_MISMATCH"] and d["cta_source"] == "kobi_ingestion"
    assert (d["upload_session_id"], d["sync_id"], d["sync_method"]) == (session["id"], "replace-1", "replace")
    assert d["is_open"] and d["first_seen_at"] == d["last_seen_at"] == now and d["resolved_at"] is None
    assert not outcome.passed and outcome.severity == "ERROR" and outcome.metadata["fatal_errors"] == 1
    assert "GROUP_MISMATCH" in outcome.message

    # The brand fixes the feed; the next replace upload of the shard is clean: the fatal resolves.
    fixed = upload(meta_client, feed, coats(express_row_10=False))
    later = now + timedelta(hours=1)
    with wh.connect() as con:
        add_sync(con, "replace-2", "replace", later - timedelta(minutes=5), upload_session_id=fixed["id"])
    sync_sources_only(meta_client, wh, later)
    with wh.connect() as con:
        (d2,) = diagnostics(con, "source = 'feed_upload'")
        assert checks.check_fatal_ingestion_errors(con, TENANT, CATALOG).passed
    assert d2["resolved_at"] == later and not d2["is_open"] and d2["first_seen_at"] == now


def test_rows_without_retailer_id_in_samples_map_through_sync_rows_then_inflight(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    """Samples of rows with a blank id carry no retailer_id: the row number maps back to the item the sync
    wrote in that row (diag_state.sync_rows), else to the still in-flight row."""
    body = to_csv([item("a"), item(""), item("c"), item("")])
    session = upload(meta_client, create_feed(meta_client), body)
    now = sandbox.admin.now()
    with wh.connect() as con:
        add_sync(con, "update-1", "update", now, upload_session_id=session["id"], errors=2)
        con.execute(
            "CREATE TEMP TABLE _export AS SELECT * FROM (VALUES (1, 'a'), (2, 'ghost-2'), (3, 'c')) v(_rn, id)"
        )
        assert record_upload_rows(con, "update-1") == 3
        con.execute(
            "INSERT INTO sync_state.inflight_items VALUES ('update-1', ?, 'ghost-4', 0, 'update', 4, 1, 2)",
            [TENANT],
        )
        report = fatal_errors_for_sync(meta_client, con, TENANT, CATALOG, "update-1", now=now)
        stored = rows(
            con,
            "SELECT row_number, retailer_id, retailer_id_via, error_type, field, total_count FROM diag_state.sync_errors "
            "ORDER BY row_number",
        )
        found = {(r["retailer_id"], r["row_number"]) for r in diagnostics(con)}
    assert stored == [
        {
            "row_number": 2,
            "retailer_id": "ghost-2",
            "retailer_id_via": "sync_rows",
            "error_type": "MISSING_REQUIRED_FIELD",
            "field": "id",
            "total_count": 2,
        },
        {
            "row_number": 4,
            "retailer_id": "ghost-4",
            "retailer_id_via": "inflight",
            "error_type": "MISSING_REQUIRED_FIELD",
            "field": "id",
            "total_count": 2,
        },
    ]
    assert report.items_rejected == 2 and found == {("ghost-2", 2), ("ghost-4", 4)}


def test_batch_reference_fatals_and_warnings(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    (expected,) = load_fixture("batch_request_status")["data"]
    catalog_config(sandbox, batch_processing_seconds=0)
    no_category = {k: v for k, v in item("retailed_id_3").items() if k != "google_product_category"}
    no_availability = {k: v for k, v in item("retailed_id_2").items() if k != "availability"}
    bad_url = item("retailed_id_1", link="https://user:secret@shop.example.com/p/1")
    requests_ = [{"method": "CREATE", "data": d} for d in (no_category, no_availability, bad_url)]
    (handle,) = meta_client.post(
        f"{CATALOG}/items_batch", data={"item_type": "PRODUCT_ITEM", "requests": json.dumps(requests_)}
    )["handles"]
    now = sandbox.admin.now()
    with wh.connect() as con:
        add_sync(con, "batch-1", "batch", now, handle=handle, errors=2, warnings=1)
        record_batch_lines(con, "batch-1", ["retailed_id_3", "retailed_id_2", "retailed_id_1"])
        report = fatal_errors_for_sync(meta_client, con, TENANT, CATALOG, "batch-1", now=now)
        got = {d["retailer_id"]: d for d in diagnostics(con)}
    assert (report.fatal_errors, report.warnings, report.items_rejected) == (2, 1, 2)
    assert set(got) == {"retailed_id_1", "retailed_id_2", "retailed_id_3"}  # no extra "invalid request" rows
    for err in expected["errors"]:
        d = got[err["id"]]
        assert (d["source"], d["severity"], d["priority"], d["handle"]) == (
            "batch_request",
            "fatal",
            "HIGH",
            handle,
        )
        assert d["message"] == err["message"] and d["row_number"] == err["line"]
        title, description = err["message"].split(": ", 1)
        assert (d["title"], d["description"]) == (title, description) and d["call_to_action"]
    assert got["retailed_id_1"]["error_type"] == "INVALID_URL"
    assert got["retailed_id_2"]["error_type"] == "MISSING_REQUIRED_FIELD"
    (warning,) = expected["warnings"]
    w = got[warning["id"]]
    assert (w["severity"], w["priority"], w["message"]) == ("warning", "MEDIUM", warning["message"])
    assert w["error_type"] == "MISSING_RECOMMENDED_FIELD" and w["cta_source"] == "kobi_ingestion"
    assert w["call_to_action"] == KOBI_INGESTION_CTA["MISSING_RECOMMENDED_FIELD"]

    # A later batch sends retailed_id_1 again, valid: only that item's batch error resolves.
    (handle2,) = meta_client.post(
        f"{CATALOG}/items_batch",
        data={
            "item_type": "PRODUCT_ITEM",
            "requests": json.dumps([{"method": "CREATE", "data": item("retailed_id_1")}]),
        },
    )["handles"]
    later = now + timedelta(minutes=30)
    with wh.connect() as con:
        add_sync(con, "batch-2", "batch", later, handle=handle2)
        record_batch_lines(con, "batch-2", ["retailed_id_1"])
    sync_sources_only(meta_client, wh, later)
    with wh.connect() as con:
        state = {d["retailer_id"]: d["is_open"] for d in diagnostics(con, "source = 'batch_request'")}
    assert state == {"retailed_id_1": False, "retailed_id_2": True, "retailed_id_3": True}


def test_a_batch_still_processing_is_read_later(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, batch_processing_seconds=120)
    bad = {"method": "UPDATE", "data": {"id": "nope", "price": "5.00 TRY"}}
    (handle,) = meta_client.post(
        f"{CATALOG}/items_batch",
        data={"item_type": "PRODUCT_ITEM", "allow_upsert": "false", "requests": json.dumps([bad])},
    )["handles"]
    now = sandbox.admin.now()
    with wh.connect() as con:
        add_sync(con, "batch-1", "batch", now, handle=handle, errors=None, warnings=None)
        assert (
            fatal_errors_for_sync(meta_client, con, TENANT, CATALOG, "batch-1", now=now).status == "pending"
        )
        assert rows(con, "SELECT * FROM diag_state.sync_errors") == []
    sandbox.admin.advance_clock(180)
    later = now + timedelta(minutes=3)
    # The hourly poll picks up the sync whose errors were never read.
    report = poll_catalog(
        meta_client, wh, TENANT, CATALOG, now=later, item_errors=False, catalog_diagnostics=False
    )
    assert report.syncs_fetched == 1
    with wh.connect() as con:
        (d,) = diagnostics(con, "source = 'batch_request'")
    assert (d["retailer_id"], d["error_type"], d["title"]) == ("nope", "ITEM_NOT_FOUND", "Item not found")
    assert d["call_to_action"] == KOBI_INGESTION_CTA["ITEM_NOT_FOUND"]


def test_real_replace_sync_warnings_reach_the_item_view(
    sandbox: SandboxHandle,
    make_meta_client: Callable[..., MetaGraphClient],
    wh: Warehouse,
    tmp_path: Path,
) -> None:
    """kobi_cpas.sync.methods uploads a replace feed; its Meta warnings map back to the items it sent."""
    from kobi_cpas.feeds.generator import generate_feed
    from kobi_cpas.registry import load_registry
    from kobi_cpas.registry.loader import DEFAULT_REGISTRY
    from kobi_cpas.sync.methods import SyncContext, run_replace
    from kobi_cpas.sync.snapshot_step import take_snapshot

    catalog_config(sandbox, problem_rate_scale=0)
    feed = tmp_path / "feed.csv"
    generate_feed(feed, 24, seed=7)
    with feed.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    for line in lines[:3]:  # Meta warns (LOW) about a missing category; Kobi warns too but still sends them
        line["google_product_category"] = ""
    with feed.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    demo = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    tenant_doc = demo["tenants"][0]
    tenant_doc["feed"] = {"source": str(feed), "format": "csv"}
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump({"tenants": [tenant_doc]}))
    registry = load_registry(tmp_path / "tenants.yaml")
    tenant = registry.tenants[0]
    client = make_meta_client()
    with wh.connect() as con:
        assert take_snapshot(con, registry=registry, tenant=tenant, workdir=tmp_path / "w").status == "ok"
    ctx = SyncContext(tenant=tenant, client=client, warehouse=wh, workdir=tmp_path / "w", poll_interval=0)
    (rec,) = run_replace(ctx)
    assert rec.status == "finished" and rec.warnings_count == 3
    with wh.connect() as con:
        report = fatal_errors_for_sync(client, con, tenant.tenant_id, tenant.catalog_id, rec)
        upload_rows = diagnostics(con, "source = 'feed_upload'")
        kobi_rows = diagnostics(con, "source = 'kobi_feed_validation'")
    assert report.fatal_errors == 0 and report.warnings == 3
    missing = [line["id"] for line in lines[:3]]
    assert sorted(d["retailer_id"] for d in upload_rows) == sorted(missing)
    assert {(d["error_type"], d["priority"], d["severity"]) for d in upload_rows} == {
        ("MISSING_RECOMMENDED_FIELD", "LOW", "warning")  # from the summary: Meta sends no error_type
    }
    assert all(d["field"] == "google_product_category" and d["call_to_action"] for d in upload_rows)
    assert kobi_rows == []  # only the ingestion source was merged so far

    report2 = poll_catalog(client, wh, tenant.tenant_id, tenant.catalog_id)
    assert report2.ok and report2.merge.new == len(missing)  # Kobi's own warnings about the same items
    with wh.connect() as con:
        kobi = diagnostics(con, "source = 'kobi_feed_validation'")
    assert sorted(d["retailer_id"] for d in kobi) == sorted(missing)
    assert all(d["priority"] == "MEDIUM" and d["cta_source"] == "kobi" for d in kobi)
