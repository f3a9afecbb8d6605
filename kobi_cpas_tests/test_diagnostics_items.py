"""Meta's async item errors in catalog_diagnostics: the reference products / item samples, paging over several
pages, an undocumented error type, the resolve / reopen lifecycle on the world clock, idempotency, a failed poll
that resolves nothing, throttling during the poll, and problems that come and go over hours."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kobi_cpas.diagnostics import check_items, poll_catalog
from kobi_cpas.diagnostics.collect import clear_stage
from kobi_cpas.diagnostics.dictionary import GENERIC_CTA
from kobi_cpas.diagnostics.lifecycle import last_successful_poll, merge_problems
from kobi_cpas.diagnostics.meta_checks import ItemErrorsFetch, stage_item_errors
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.test_diagnostics_support import (
    TENANT,
    diagnostics,
    item_errors_admin,
    product_ids,
    rows,
    seed_items,
)
from kobi_cpas_tests.test_sandbox_catalog_feeds import CATALOG, catalog_config
from kobi_cpas_tests.warehouse_template import seed_work_database
from meta_sandbox import load_fixture

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

HOUR = timedelta(hours=1)


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(seed_work_database(tmp_path / "k.duckdb"), schema=SCHEMA)


@pytest.fixture
def quiet(sandbox: SandboxHandle) -> SandboxHandle:
    """A frozen world clock and no generated problems: only what a test forces."""
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, problem_rate_scale=0)
    return sandbox


def item_rows(wh: Warehouse) -> list[dict]:
    with wh.connect() as con:
        return diagnostics(con, "source = 'meta_item_check'")


def poll(client: MetaGraphClient, wh: Warehouse, now, **kwargs):
    return poll_catalog(
        client, wh, TENANT, CATALOG, now=now, page_limit=kwargs.pop("page_limit", 3), **kwargs
    )


def test_item_errors_reference_samples_through_several_pages(
    quiet: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    rids = seed_items(meta_client, 30)
    flagged = rids[2:9]  # 7 items: three pages of 3 for the HIGH poll
    for rid in flagged:
        item_errors_admin(quiet, "POST", rid, "IMAGE_RESOLUTION_LOW")
    item_errors_admin(quiet, "POST", rids[20], "QUALITY_ITEM_LINK_REDIRECTING")  # MEDIUM
    ids = product_ids(meta_client)
    now = quiet.admin.now()
    report = poll(meta_client, wh, now)
    assert report.ok and report.item_error_pages == 3 + 1 + 1  # HIGH 3 pages, MEDIUM 1, LOW 1 (empty)
    got = item_rows(wh)
    assert sorted(d["retailer_id"] for d in got) == sorted([*flagged, rids[20]])
    expected = load_fixture("products_with_errors")["data"][0]["errors"][0]
    for d in got:
        assert d["product_item_id"] == ids[d["retailer_id"]]
        if d["retailer_id"] in flagged:
            assert {k: d[k] for k in ("title", "description", "call_to_action")} == {
                k: expected[k] for k in ("title", "description", "call_to_action")
            }
            assert (d["error_type"], d["priority"], d["severity"]) == (
                "IMAGE_RESOLUTION_LOW",
                "HIGH",
                "MUST_FIX",
            )
            assert d["cta_source"] == "dictionary" and d["retailer_id"] != ""
    with wh.connect() as con:
        health = rows(con, "SELECT items, items_with_high, eligible_share FROM main.catalog_health")
    assert health == [{"items": 30, "items_with_high": 7, "eligible_share": pytest.approx(23 / 30)}]

    # The item view: one item read through GET /{item_id}?fields=errors matches the reference item sample.
    single = meta_client.get(ids[flagged[0]], params={"fields": "errors"})
    assert single["errors"] == load_fixture("item_errors")["errors"]
    item_errors_admin(quiet, "DELETE", flagged[0], "IMAGE_RESOLUTION_LOW")
    counts = check_items(meta_client, wh, TENANT, CATALOG, [ids[flagged[0]], ids[flagged[1]]], now=now + HOUR)
    assert (counts.resolved, counts.seen, counts.new) == (1, 1, 0)  # only the items read can resolve
    after = {d["retailer_id"]: d for d in item_rows(wh)}
    assert after[flagged[0]]["is_open"] is False and all(after[r]["is_open"] for r in flagged[1:])
    (node_error,) = load_fixture("item_errors")["errors"]
    checked = after[flagged[1]]  # read again through the item node
    assert (checked["last_seen_at"], checked["product_item_id"]) == (now + HOUR, ids[flagged[1]])
    assert {k: checked[k] for k in ("title", "description", "call_to_action")} == {
        k: node_error[k] for k in ("title", "description", "call_to_action")
    }
    assert after[flagged[2]]["last_seen_at"] == now  # not read by the item check


def test_undocumented_error_type_still_gets_a_cta(
    quiet: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    seed_items(meta_client, 4)
    item_errors_admin(quiet, "POST", "sku-0001", "NEW_UNDOCUMENTED_ERROR")
    poll(meta_client, wh, quiet.admin.now())
    (d,) = item_rows(wh)
    with wh.connect() as con:
        documented = con.execute(
            "SELECT count(*) FROM main.catalog_error_types WHERE error_type = 'NEW_UNDOCUMENTED_ERROR'"
        ).fetchone()
    assert documented == (0,)
    assert d["error_type"] == "NEW_UNDOCUMENTED_ERROR" and d["call_to_action"].strip()
    assert d["cta_source"] == "meta" and d["title"] and d["priority"] == "MEDIUM"

    # Without a CTA on the item either, the generic CTA of the priority applies.
    fetch = ItemErrorsFetch(
        [
            {
                "id": "99",
                "retailer_id": "sku-0002",
                "errors": [{"error_type": "BRAND_NEW", "error_priority": "HIGH"}],
            }
        ],
        ("HIGH",),
        retailer_scope=["sku-0002"],
    )
    with wh.connect() as con:
        clear_stage(con, TENANT, CATALOG)
        stage_item_errors(con, TENANT, CATALOG, fetch, quiet.admin.now())
        merge_problems(con, TENANT, CATALOG, quiet.admin.now())
        (new,) = diagnostics(con, "error_type = 'BRAND_NEW'")
    assert (new["call_to_action"], new["cta_source"], new["title"]) == (
        GENERIC_CTA["HIGH"],
        "generic",
        "BRAND NEW",
    )


def test_resolve_and_reopen_on_the_world_clock(
    quiet: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    seed_items(meta_client, 6)
    item_errors_admin(quiet, "POST", "sku-0001", "IMAGE_RESOLUTION_LOW")
    item_errors_admin(quiet, "POST", "sku-0002", "DA_POLICY_VIOLATION")
    t0 = quiet.admin.now()
    first = poll(meta_client, wh, t0)
    assert (first.merge.new, first.merge.resolved) == (2, 0)
    snapshot = item_rows(wh)
    again = poll(meta_client, wh, t0)  # the same poll twice: the same rows
    assert (again.merge.new, again.merge.resolved, again.merge.reopened) == (0, 0, 0)
    assert item_rows(wh) == snapshot

    t1 = quiet.admin.advance_clock(3600)
    poll(meta_client, wh, t1)
    d = {r["retailer_id"]: r for r in item_rows(wh)}["sku-0001"]
    assert (d["first_seen_at"], d["last_seen_at"], d["occurrences"], d["is_open"]) == (t0, t1, 2, True)

    item_errors_admin(quiet, "DELETE", "sku-0001", "IMAGE_RESOLUTION_LOW")  # the seller fixed the image
    t2 = quiet.admin.advance_clock(3600)
    report = poll(meta_client, wh, t2)
    assert report.merge.resolved == 1
    d = {r["retailer_id"]: r for r in item_rows(wh)}["sku-0001"]
    assert (d["resolved_at"], d["is_open"], d["last_seen_at"], d["first_seen_at"]) == (t2, False, t1, t0)
    resolved_snapshot = item_rows(wh)
    poll(meta_client, wh, t2)
    assert item_rows(wh) == resolved_snapshot  # resolving is idempotent too

    item_errors_admin(quiet, "POST", "sku-0001", "IMAGE_RESOLUTION_LOW")  # the image link broke again
    t3 = quiet.admin.advance_clock(3600)
    report = poll(meta_client, wh, t3)
    assert report.merge.reopened == 1 and report.merge.new == 0
    d = {r["retailer_id"]: r for r in item_rows(wh)}["sku-0001"]
    assert (d["resolved_at"], d["is_open"], d["reopened_count"]) == (None, True, 1)
    assert (d["first_seen_at"], d["last_seen_at"], d["occurrences"]) == (t0, t3, 3)
    other = {r["retailer_id"]: r for r in item_rows(wh)}["sku-0002"]
    assert (other["first_seen_at"], other["last_seen_at"], other["occurrences"]) == (t0, t3, 4)
    with wh.connect() as con:
        assert last_successful_poll(con, TENANT, CATALOG) == t3


def test_a_failed_poll_resolves_nothing(
    quiet: SandboxHandle, make_meta_client: Callable[..., MetaGraphClient], wh: Warehouse
) -> None:
    client = make_meta_client(max_retries=1)
    seed_items(client, 4)
    item_errors_admin(quiet, "POST", "sku-0001", "IMAGE_RESOLUTION_LOW")
    t0 = quiet.admin.now()
    poll(client, wh, t0)
    item_errors_admin(quiet, "DELETE", "sku-0001", "IMAGE_RESOLUTION_LOW")
    quiet.admin.add_fault("http_500", route="catalog.products", times=10)
    t1 = quiet.admin.advance_clock(3600)
    report = poll(client, wh, t1)
    assert "meta_item_check" in report.sources_failed and "meta_item_check" not in report.sources_polled
    assert report.merge.resolved == 0
    (d,) = item_rows(wh)
    assert d["is_open"] and d["last_seen_at"] == t0
    with wh.connect() as con:
        assert last_successful_poll(con, TENANT, CATALOG) == t0
        failed = rows(con, "SELECT source, status FROM diag_state.poll_log WHERE status = 'failed'")
    assert failed == [{"source": "meta_item_check", "status": "failed"}]
    quiet.admin.clear_faults()
    t2 = quiet.admin.advance_clock(3600)
    assert poll(client, wh, t2).merge.resolved == 1


def test_throttling_during_polling(
    quiet: SandboxHandle,
    make_meta_client: Callable[..., MetaGraphClient],
    recorded_sleeps: list[float],
    wh: Warehouse,
) -> None:
    client = make_meta_client()
    rids = seed_items(client, 12)
    for rid in rids[:7]:
        item_errors_admin(quiet, "POST", rid, "IMAGE_FETCH_FAILED")
    quiet.admin.script_faults(
        [
            {"kind": "pass"},
            {"kind": "throttle", "code": 80009, "estimated_time_to_regain_access": 0},
            {"kind": "throttle", "code": 4, "estimated_time_to_regain_access": 0},
        ],
        route="catalog.products",
    )
    report = poll(client, wh, quiet.admin.now())
    assert report.ok and report.item_error_pages == 3 + 1 + 1
    assert client.stats.throttled == 2 and len(recorded_sleeps) >= 2  # waited (fake sleep), then went on
    assert sorted(d["retailer_id"] for d in item_rows(wh)) == rids[:7]


def test_generated_problems_come_and_go_over_hours(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    sandbox.admin.freeze_clock(True)
    catalog_config(sandbox, problem_rate_scale=4)
    seed_items(meta_client, 150)
    totals = {"new": 0, "resolved": 0, "reopened": 0}
    for _ in range(6):
        now = sandbox.admin.advance_clock(6 * 3600)
        report = poll(meta_client, wh, now, page_limit=50)
        for k in totals:
            totals[k] += getattr(report.merge, k)
    assert totals["new"] > 0 and totals["resolved"] > 0
    with wh.connect() as con:
        (opened, closed) = con.execute(
            "SELECT count(*) FILTER (WHERE is_open), count(*) FILTER (WHERE NOT is_open) FROM main.catalog_diagnostics "
            "WHERE source = 'meta_item_check'"
        ).fetchone()
        undocumented = con.execute(
            "SELECT count(*) FROM main.catalog_diagnostics WHERE call_to_action IS NULL OR trim(call_to_action) = ''"
        ).fetchone()
    assert opened > 0 and closed > 0 and undocumented == (0,)
