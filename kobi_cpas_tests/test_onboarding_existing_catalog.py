"""Onboarding a brand whose Ads catalog already holds 500 items from another tool's feed, through Dagster against
the sandbox: the preflight reports the items, the other feed and what the first replace keeps, links and leaves;
the first sync sends nothing until a person confirms; after it nothing of the other feed is deleted, the feed's
variants of existing items carry their previous_id, and the catalog holds the feed's items plus the ones Kobi
leaves."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest

from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas_tests.dagster_fixtures import requested_tenants, tick_schedule
from kobi_cpas_tests.sync_harness import CATALOG, TENANT, SyncHarness

EXISTING = 500
BRAND_BIZ = "1000000000000001"  # anatolia_home's business
CONFIRM = {"kobi/confirm_existing_catalog": "true"}


@pytest.fixture
def harness(kobi_env, pg_instance, tmp_path, monkeypatch) -> SyncHarness:
    return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch)


def _other_tools_feed(h: SyncHarness, client: MetaGraphClient, rows: list[dict[str, str]]) -> str:
    """Another tool's feed on the brand's catalog, uploaded through the Graph API as that tool would."""
    feed_id = str(client.post(f"{CATALOG}/product_feeds", data={"name": "Shopify catalog feed"})["id"])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    upload = client.post(
        f"{feed_id}/uploads", files={"file": ("shopify.csv", out.getvalue().encode(), "text/csv")}
    )
    # the sandbox processes uploads in the background, like Meta; pytest-timeout ends a hung test
    while not client.get(str(upload["id"]), params={"fields": "end_time"}).get("end_time"):
        time.sleep(0.05)
    return feed_id


def _feed_rows(h: SyncHarness) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(h.feed.read_text())))


def _findings(h: SyncHarness) -> dict[str, list[dict]]:
    con = duckdb.connect(str(h.env.analyst_path), read_only=True)
    try:
        cur = con.execute("SELECT * FROM tenant_onboarding WHERE tenant_id = ?", [h.tenant])
        cols = [d[0] for d in cur.description]
        out: dict[str, list[dict]] = {}
        for r in cur.fetchall():
            row = dict(zip(cols, r, strict=True))
            out.setdefault(row["check_name"], []).append(row)
        return out
    finally:
        con.close()


def _failure(result) -> str:
    return " ".join(str(e.event_specific_data.error.message) for e in result.all_events if e.is_step_failure)


def test_a_catalog_holding_another_feeds_items_is_reported_and_waits_for_a_person(harness, meta_client):
    h = harness
    h.write_feed(300)
    rows = _feed_rows(h)
    feed_ids = {r["id"] for r in rows}
    # The other tool's catalog: 200 ids the feed sends again, the ids the feed now splits into variants
    # ("X" became "X-S", "X-M", ...) and other products the feed does not have.
    kept = sorted(feed_ids)[:200]
    bases = sorted({i.rsplit("-", 1)[0] for i in feed_ids if "-" in i} - feed_ids)
    assert len(bases) >= 10, "the generated feed has variants"
    template = rows[0]
    others = [f"SHOP-{i:04d}" for i in range(EXISTING - len(kept) - len(bases))]
    existing_ids = kept + bases + others
    other_feed = _other_tools_feed(
        h, meta_client, [{**template, "id": i, "availability": "in stock"} for i in existing_ids]
    )
    assert len(h.meta_items()) == EXISTING
    h.admin.clear_requests()

    blocked = h.run("catalog_replace_job")
    assert not blocked.success
    text = _failure(blocked)
    assert f"catalog {CATALOG} already holds 500 items" in text and other_feed in text and TENANT in text
    assert "kobi/confirm_existing_catalog=true" in text and "tenant_onboarding" in text
    assert h.requests("catalog.product_feeds.create") == 0 and h.requests("product_feed.uploads.create") == 0

    assert h.run("tenant_onboarding_job").success  # findings are data; the check warns
    found = _findings(h)
    (existing,) = found["existing_items"]
    assert existing["status"] == "confirm" and existing["item_count"] == EXISTING
    assert (existing["kept_items"], existing["linked_items"], existing["left_items"]) == (
        len(kept),
        len(bases),
        len(others),
    )
    with duckdb.connect(str(h.env.analyst_path), read_only=True) as con:
        (n_feed,) = con.execute("SELECT count(*) FROM feed_items WHERE tenant_id = ?", [TENANT]).fetchone()
    assert existing["new_items"] == n_feed - len(kept)
    assert "kobi/confirm_existing_catalog=true" in existing["next_action"]
    assert [(r["object_id"], r["item_count"]) for r in found["other_feed"]] == [(other_feed, EXISTING)]
    assert {r["status"] for r in found["business"] + found["catalog"]} == {"ok"}
    # onsite checkout or not, as the catalog's commerce_merchant_settings say
    cms = h.env.sandbox.world.catalogs[CATALOG].commerce_merchant_settings
    (checkout,) = found["checkout"]
    assert cms and cms["id"] in checkout["finding"]
    assert checkout["finding"].startswith("onsite checkout") is (cms["cta"] == "ONSITE_CHECKOUT")
    assert ("quantity_to_sell_on_facebook" in (checkout["next_action"] or "")) is (
        cms["cta"] == "ONSITE_CHECKOUT"
    )

    confirmed = h.run("catalog_replace_job", tags=CONFIRM)
    assert confirmed.success, _failure(confirmed)
    at_meta = h.meta_items()
    # nothing of the other tool's catalog is deleted; Kobi's feed items are there with the feed's values
    assert set(existing_ids) <= set(at_meta)
    desired = h.desired()
    assert set(desired) <= set(at_meta) and set(at_meta) == set(desired) | set(existing_ids)
    for rid in kept[:20]:
        assert at_meta[rid]["title"] == desired[rid]["title"]
    # the feed's variants of existing items arrive linked to them: their ad learnings carry over
    variants = {rid: base for base in bases for rid in desired if rid.startswith(f"{base}-")}
    assert set(variants.values()) == set(bases)
    assert {rid: at_meta[rid].get("previous_id") for rid in variants} == variants
    assert {rid: desired[rid]["previous_id"] for rid in variants} == variants
    assert not any(d["previous_id"] for rid, d in desired.items() if rid not in variants)
    # the items the feed does not send are what the brand no longer sells: out of stock (only that field is
    # written, through the Batch API), kept, recorded; the variants' originals and the kept ones are not touched
    assert h.requests("catalog.items_batch") == 1
    h.admin.advance_clock(130)  # Meta applies a batch after ~2 minutes
    at_meta = h.meta_items()
    assert {rid: at_meta[rid]["availability"] for rid in others} == dict.fromkeys(others, "out of stock")
    assert {at_meta[rid]["title"] for rid in others} == {
        template["title"]
    }  # its other values stay the feed's
    assert {at_meta[rid]["availability"] for rid in bases} == {"in stock"}
    with h.wh.connect() as con:
        adopted = [
            r[0]
            for r in con.execute(
                "SELECT retailer_id FROM sync_state.adopted_items WHERE tenant_id = ? ORDER BY 1", [TENANT]
            ).fetchall()
        ]
    assert adopted == sorted(others)

    # from now on the tenant is live: no confirmation asked, the preflight says so
    assert h.run("tenant_onboarding_job").success
    (after,) = _findings(h)["existing_items"]
    assert after["status"] == "ok"
    h.write_feed(301)
    assert h.run("catalog_replace_job").success
    # the links stay with the next snapshots (dropping one would change the item and send it again)
    later = h.desired()
    assert {rid: later[rid]["previous_id"] for rid in variants if rid in later} == {
        rid: base for rid, base in variants.items() if rid in later
    }


def test_an_empty_catalog_needs_no_confirmation(harness):
    h = harness
    h.write_feed(50)
    assert h.run("catalog_replace_job").success
    assert h.run("tenant_onboarding_job").success
    (existing,) = _findings(h)["existing_items"]
    assert existing["status"] == "ok" and existing["item_count"] > 0  # Kobi's own items, after its first sync


def test_a_tenant_whose_preflight_blocks_is_not_synced_until_it_passes_again(harness):
    from kobi_cpas.defs.catalog_sync.schedules import catalog_batch_schedule

    h = harness
    h.write_feed(20)
    tick = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert requested_tenants(
        tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    ) == [TENANT]
    # the brand's business no longer lets Kobi's system user in
    fault = h.admin.add_fault("permission_error", path_regex=f"/{BRAND_BIZ}$", method="GET", rate=1.0)
    assert h.run("tenant_onboarding_job").success
    (business,) = _findings(h)["business"]
    assert business["status"] == "blocking" and "System users" in business["next_action"]
    skipped = tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    assert isinstance(skipped, dg.SkipReason)
    assert f"{TENANT}: its preflight blocks it (business" in skipped.skip_message
    assert "materialize tenant_onboarding again" in skipped.skip_message
    # fixed at Meta and checked again: synced on the next tick
    h.admin.remove_fault(fault)
    assert h.run("tenant_onboarding_job").success
    assert requested_tenants(
        tick_schedule(catalog_batch_schedule, h.instance, scheduled_execution_time=tick)
    ) == [TENANT]
