"""Dry runs (run tag kobi/dry_run=true) through real Dagster jobs against the sandbox: nothing is written to
Meta, Kobi's state and every analyst table but meta_dry_run_writes stay exactly as they were, and the writes
recorded are the ones a normal run of the same job then sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from kobi_cpas.devenv.pipeline import materialize_all
from kobi_cpas.meta.dry_run import DRY_RUN_TAG, DryRunMetaClient, summarize_write
from kobi_cpas.resources import MetaGraphResource
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.sandbox_fixtures import SANDBOX_API_VERSION, SANDBOX_TOKEN
from kobi_cpas_tests.sync_harness import CATALOG, TENANT, SyncHarness
from kobi_cpas_tests.test_cpas_insights_e2e import _campaign_config, _segment_config, _world_catalog

DRY = {DRY_RUN_TAG: "true"}
WRITES = ("POST", "DELETE")


@pytest.fixture
def harness(kobi_env, pg_instance, tmp_path, monkeypatch):
    def make(**sync):
        return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch, **sync)

    return make


def _tables(con: duckdb.DuckDBPyConnection, schemas: tuple[str, ...] | None) -> dict[str, list[tuple]]:
    """Every table's rows (sorted), except meta_dry_run_writes and Kobi's internal bookkeeping."""
    names = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND NOT temporary AND schema_name <> 'kobi_internal' ORDER BY ALL"
    ).fetchall()
    out = {}
    for schema, table in names:
        if table == "meta_dry_run_writes" or (schemas and schema not in schemas):
            continue
        rows = con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
        out[f"{schema}.{table}"] = sorted(rows, key=repr)
    return out


def kobi_state(wh: Warehouse) -> dict[str, Any]:
    """The work database (sync_state, feed staging, every analyst table) and the published analyst file."""
    with wh.connect() as con:
        state: dict[str, Any] = {"work": _tables(con, None)}
    con = duckdb.connect(str(wh.analyst_path), read_only=True)
    try:
        state["analyst"] = _tables(con, ("main",))
    finally:
        con.close()
    assert state["work"]["main.catalog_syncs"] is not None and "sync_state.meta_items" in state["work"]
    return state


def dry_writes(analyst_path: Path, run_id: str) -> list[dict[str, Any]]:
    """meta_dry_run_writes of one run, as published in the analyst file."""
    con = duckdb.connect(str(analyst_path), read_only=True)
    try:
        cur = con.execute(
            "SELECT * FROM meta_dry_run_writes WHERE run_id = ? ORDER BY recorded_at, write_id", [run_id]
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def mutating(admin) -> list[dict[str, Any]]:
    return [r for r in admin.requests() if r.get("method") in WRITES]


def assert_no_secret(rows: list[dict[str, Any]]) -> None:
    text = json.dumps(rows, default=str)
    assert SANDBOX_TOKEN not in text and "access_token" not in text


def test_dry_run_syncs_send_nothing_change_nothing_and_record_what_a_real_run_sends(harness):
    h = harness(batch_chunk_size=10)
    h.write_feed(120)
    h.wh.publish()  # the analyst file exists before the first run, as on a running installation

    # -- a replace on a new tenant: creates the feed and uploads the file -------------------------------------
    before, catalog_before = kobi_state(h.wh), h.meta_items()
    h.admin.clear_requests()
    dry = h.run("catalog_replace_job", tags=DRY)
    assert dry.success
    seen = h.admin.requests()
    assert [r for r in seen if r["method"] in WRITES] == []
    assert any(r["method"] == "GET" for r in seen)  # reads still go to Meta
    assert not [r for r in seen if "dryrun-" in json.dumps(r)]  # synthetic ids never reach Meta
    assert h.meta_items() == catalog_before
    assert kobi_state(h.wh) == before

    rows = dry_writes(h.env.analyst_path, dry.run_id)
    assert [(r["method"], r["path"].split("/")[-1], r["step"]) for r in rows] == [
        ("POST", "product_feeds", "replace_feed_upload"),
        ("POST", "uploads", "replace_feed_upload"),
    ]
    assert rows[0]["path"] == f"{CATALOG}/product_feeds" and rows[0]["synthetic_id"].startswith(
        "dryrun-feed-"
    )
    assert rows[1]["path"] == f"{rows[0]['synthetic_id']}/uploads"
    assert all(r["tenant_id"] == TENANT for r in rows)
    upload = json.loads(rows[1]["summary"])
    assert rows[1]["item_count"] == 120 and upload["files"][0]["row_count"] == 120
    assert upload["files"][0]["size_bytes"] > 1000
    assert len(upload["first_retailer_ids"]) == 5
    assert json.loads(rows[0]["summary"])["values"] == {"name": "Kobi primary feed"}
    assert_no_secret(rows)

    h.admin.clear_requests()
    assert h.run("catalog_replace_job").success
    sent = mutating(h.admin)
    assert [r["route"] for r in sent] == ["catalog.product_feeds.create", "product_feed.uploads.create"]
    assert len(sent) == len(rows)
    h.assert_catalog_equals_desired()
    assert upload["first_retailer_ids"] == sorted(h.desired())[:5]  # the file the real run uploaded

    # -- volatile-only changes through the Batch API --------------------------------------------------------
    h.write_feed(
        120,
        "UPDATE f SET price = '1.00 TRY', sale_price = NULL, sale_price_effective_date = NULL "
        "WHERE id IN (SELECT id FROM f ORDER BY id DESC LIMIT 25)",
    )
    before, catalog_before = kobi_state(h.wh), h.meta_items()
    h.admin.clear_requests()
    dry = h.run("catalog_batch_job", tags=DRY)
    assert dry.success
    assert mutating(h.admin) == []
    assert not [r for r in h.admin.requests() if "dryrun-" in json.dumps(r)]
    assert h.meta_items() == catalog_before
    assert kobi_state(h.wh) == before
    rows = dry_writes(h.env.analyst_path, dry.run_id)
    assert [(r["method"], r["path"], r["step"], r["item_count"]) for r in rows] == [
        ("POST", f"{CATALOG}/items_batch", "price_stock_batch", n) for n in (10, 10, 5)
    ]
    first = json.loads(rows[0]["summary"])
    assert first["request_methods"] == {"UPDATE": 10} and "price" in first["item_fields"]
    assert len(first["first_retailer_ids"]) == 5
    assert_no_secret(rows)
    # every recorded write's log line is in the run log
    logged = [
        e.user_message
        for e in h.instance.all_logs(dry.run_id)
        if "DRY RUN: not sent" in (e.user_message or "")
    ]
    assert len(logged) == 3 and not [m for m in logged if SANDBOX_TOKEN in m]

    h.admin.clear_requests()
    assert h.run("catalog_batch_job").success
    assert [r["route"] for r in mutating(h.admin)] == ["catalog.items_batch"] * len(rows)


def test_dry_run_cpas_jobs_send_nothing_and_record_the_writes(kobi_env, pg_instance):
    defs = kobi_env.defs()
    report = materialize_all(
        defs,
        pg_instance,
        tenants=[TENANT],  # the tenant the trendyol segment and campaign below are for
        on_progress=lambda m: None,
        stages=[
            ["tenant_registry"],
            ["feed_file", "feed_snapshot", "replace_feed_plan", "replace_feed_upload", "catalog_syncs"],
        ],
    )
    assert report.ok, report.runs
    admin = kobi_env.sandbox.admin
    wh = Warehouse(kobi_env.analyst_path, schema=SCHEMA)
    parent, owner = _world_catalog(kobi_env.sandbox.world, "trendyol", compliant=True)
    segment_job = defs.resolve_job_def("create_catalog_segment_job")
    campaign_job = defs.resolve_job_def("create_cpas_campaign_job")

    before, campaigns_before = kobi_state(wh), len(kobi_env.sandbox.world.campaigns)
    admin.clear_requests()
    dry_seg = segment_job.execute_in_process(
        run_config=_segment_config(parent, owner), instance=pg_instance, tags=DRY
    )
    dry_camp = campaign_job.execute_in_process(
        run_config=_campaign_config("trendyol"), instance=pg_instance, tags=DRY
    )
    assert dry_seg.success and dry_camp.success
    assert mutating(admin) == []
    assert dry_seg.output_for_node("create_and_share_segment")["segment_id"].startswith("dryrun-segment-")
    assert dry_camp.output_for_node("create_cpas_campaign")["campaign_id"].startswith("dryrun-campaign-")
    assert len(kobi_env.sandbox.world.campaigns) == campaigns_before
    assert kobi_state(wh) == before

    seg_rows = dry_writes(kobi_env.analyst_path, dry_seg.run_id)  # op without publish: stored at teardown
    camp_rows = dry_writes(kobi_env.analyst_path, dry_camp.run_id)
    assert [r["path"].split("/")[-1] for r in seg_rows] == ["owned_product_catalogs", "agencies"]
    assert {r["step"] for r in seg_rows} == {"create_and_share_segment"}
    assert {r["tenant_id"] for r in seg_rows + camp_rows} == {TENANT}
    assert camp_rows[0]["path"].split("/")[-1] == "campaigns"
    assert {"adsets", "adcreatives", "ads"} <= {r["path"].split("/")[-1] for r in camp_rows}
    assert_no_secret(seg_rows + camp_rows)

    admin.clear_requests()
    assert segment_job.execute_in_process(
        run_config=_segment_config(parent, owner), instance=pg_instance
    ).success
    assert len(mutating(admin)) == len(seg_rows)
    admin.clear_requests()
    assert campaign_job.execute_in_process(
        run_config=_campaign_config("trendyol"), instance=pg_instance
    ).success
    real = mutating(admin)
    assert [r["path"].split("/")[-1] for r in real] == [r["path"].split("/")[-1] for r in camp_rows]


def test_a_step_with_meta_but_no_warehouse_refuses_to_run_dry(kobi_env, pg_instance):
    """A write that could not be recorded is not sent either: the step fails before any client exists."""

    @dg.op
    def share(meta: MetaGraphResource) -> None:
        with meta.get_client() as client:
            client.post("2000000000000001/product_feeds", data={"name": "x"})

    @dg.job
    def lonely():
        share()

    meta = MetaGraphResource(
        base_url=kobi_env.sandbox.url, api_version=SANDBOX_API_VERSION, access_token=SANDBOX_TOKEN
    )
    kobi_env.sandbox.admin.clear_requests()
    res = lonely.execute_in_process(
        resources={"meta": meta}, instance=pg_instance, tags=DRY, raise_on_error=False
    )
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure)
    assert "without the warehouse resource" in failure.event_specific_data.error.message
    assert kobi_env.sandbox.admin.requests() == []


def test_dry_run_client_reads_meta_and_answers_writes_synthetically(sandbox):
    writes = []
    with DryRunMetaClient(
        sandbox.url, SANDBOX_API_VERSION, SANDBOX_TOKEN, recorder=writes.append, app_secret="s3cr3t-app"
    ) as client:
        catalog = client.get(CATALOG, {"fields": "id,name"})
        assert catalog["id"] == CATALOG
        feed = client.post(f"{CATALOG}/product_feeds", data={"name": "n", "access_token": SANDBOX_TOKEN})
        body = b"id,title,price\nA1,x,1.00 TRY\nA2,y,2.00 TRY\n"
        up = client.post(
            f"{feed['id']}/uploads", data={"update_only": "true"}, files={"file": ("f.csv", body)}
        )
        session = client.get(up["id"], {"fields": "id,end_time,num_detected_items,error_count"})
        assert session["end_time"] and session["num_detected_items"] == 2 and session["error_count"] == 0
        assert list(client.paginate(f"{up['id']}/errors")) == []
        batch = client.post(f"{CATALOG}/items_batch", data={"requests": json.dumps([{"method": "DELETE"}])})
        status = client.get(f"{CATALOG}/check_batch_request_status", {"handle": batch["handles"][0]})
        assert status["data"][0]["status"] == "finished"
        assert client.delete("123456/agencies", {"business": "42"}) == {"success": True, "dry_run": True}
        with pytest.raises(RuntimeError, match="refusing"):
            client._call("POST", f"{sandbox.url}/{SANDBOX_API_VERSION}/{CATALOG}/product_feeds")
    log = sandbox.admin.requests()
    assert [r["method"] for r in log] == ["GET"]  # only the catalog read reached Meta
    assert [w.method for w in writes] == ["POST", "POST", "POST", "DELETE"]
    assert writes[1].summary["files"][0] == {
        "param": "file",
        "file_name": "f.csv",
        "size_bytes": len(body),
        "row_count": 2,
        "first_retailer_ids": ["A1", "A2"],
        "columns": 3,
    }
    assert writes[1].summary["values"] == {"update_only": "true"}
    text = json.dumps([w.summary for w in writes]) + "".join(w.path for w in writes)
    assert SANDBOX_TOKEN not in text and "s3cr3t-app" not in text
    assert "access_token" in writes[0].summary["form_params"]  # named, never valued


def test_summary_never_carries_free_form_values():
    s = summarize_write(
        "POST",
        "1/collaborative_ads_collaboration_requests",
        data={"contact_email": "a@b.c", "phone_number": "+90 555", "name": "ok", "brands": ["x"]},
    )
    assert s["form_params"] == ["brands", "contact_email", "name", "phone_number"]
    assert s["values"] == {"name": "ok"}
    assert "a@b.c" not in json.dumps(s) and "+90 555" not in json.dumps(s)


def test_pipeline_dry_run_shares_one_scratch_and_prints_what_was_not_sent(kobi_env, pg_instance, capsys):
    """`kobi-cpas run --dry-run`: every run is tagged, later runs see what earlier ones would have left (one
    scratch copy), nothing is sent and the real state is unchanged."""
    from kobi_cpas.devenv.cli import print_dry_run_writes
    from kobi_cpas.warehouse.scratch import SCRATCH_DIR

    wh = Warehouse(kobi_env.analyst_path, schema=SCHEMA)
    wh.publish()
    before = kobi_state(wh)
    kobi_env.sandbox.admin.clear_requests()
    report = materialize_all(
        kobi_env.defs(),
        pg_instance,
        # two of the demo tenants: runs of several tenants share the one scratch copy (a third adds nothing)
        tenants=[TENANT, "bosphorus_outdoor"],
        on_progress=lambda m: None,
        stages=[
            ["tenant_registry"],
            ["feed_file", "feed_snapshot", "replace_feed_plan", "replace_feed_upload", "catalog_syncs"],
            ["update_feed_upload", "price_stock_batch", "catalog_syncs"],
        ],
        dry_run=True,
    )
    assert report.ok, report.runs
    assert report.dry_run_scratch and len(report.run_ids) == len(report.runs) > 2
    for run_id in report.run_ids:
        assert pg_instance.get_run_by_id(run_id).tags[DRY_RUN_TAG] == "true"
    assert mutating(kobi_env.sandbox.admin) == []
    after = kobi_state(wh)
    assert {k: v for k, v in after["work"].items() if v != before["work"].get(k)} == {}
    assert after == before

    # the scratch copy holds what the runs would have left: the registry of the first run, the replace of the
    # second, confirmed, so the third (update, batch) had nothing left to send
    scratch = wh.work_dir / SCRATCH_DIR / report.dry_run_scratch / "warehouse.duckdb"
    con = duckdb.connect(str(scratch), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM main.tenant_registry").fetchall()[0][0] > 0
        syncs = con.execute("SELECT DISTINCT method, status FROM main.catalog_syncs").fetchall()
    finally:
        con.close()
    assert syncs == [("replace", "finished")]

    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT tenant_id, path FROM meta_dry_run_writes WHERE list_contains(?::VARCHAR[], run_id)",
            [report.run_ids],
        ).fetchall()
    finally:
        con.close()
    tenants = {t for t, _ in rows}
    assert len(tenants) >= 2 and all(p.endswith(("/product_feeds", "/uploads")) for _, p in rows)
    print_dry_run_writes(kobi_env.analyst_path, report.run_ids, report.dry_run_scratch)
    out = capsys.readouterr().out
    assert f"{len(rows)} Meta write(s) NOT sent" in out and str(scratch.parent) in out
