"""CPAS jobs and the shared-item metrics asset through Dagster against the sandbox: segment creation (idempotent,
2310068), campaign creation blocked by QC and allowed when clean, single-run pulls of a date range, idempotent
re-runs and the dashboard view."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from kobi_cpas.defs.insights.partitions import range_tags
from kobi_cpas_tests.sync_harness import sync_demo_catalogs

TENANT = "anatolia_home"

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]


@pytest.fixture(scope="module")
def synced_world(build_world_snapshot):
    """Built once per module; each test gets it back exactly (sandbox, warehouse files, Dagster database). The
    catalogs of the two tenants the tests name are synced."""
    return build_world_snapshot(
        "cpas_synced", lambda env, instance: sync_demo_catalogs(env, instance, [TENANT, "bosphorus_outdoor"])
    )


@pytest.fixture
def restored(synced_world, restore_world):
    return restore_world(synced_world)


@pytest.fixture
def kobi_env(restored):
    return restored.env


@pytest.fixture
def pg_instance(restored):
    return restored.instance


@pytest.fixture
def loaded(kobi_env):
    return kobi_env.defs()


def _world_catalog(world, retailer: str, compliant: bool) -> tuple[str, str]:
    for c in world.catalogs.values():
        if c.retailer == retailer and not c.is_catalog_segment and c.collaborative_ads_compliant == compliant:
            return c.id, c.business_id
    raise AssertionError(f"no {'compliant' if compliant else 'non-compliant'} parent for {retailer}")


# A retailer the registry does not list for the tenant: no segment is known for the pair, so the job creates one.
NEW_PAIR = "n11"


def _segment_config(parent: str, owner: str, retailer: str = NEW_PAIR, rule: dict | None = None) -> dict:
    return {
        "ops": {
            "create_and_share_segment": {
                "config": {
                    "tenant_id": TENANT,
                    "retailer": retailer,
                    "parent_catalog_id": parent,
                    "owner_business_id": owner,
                    "segment_filter": json.dumps(rule or {"brand": {"i_contains": "anatolia"}}),
                    "name": f"Kobi CPAS test | {TENANT} | {retailer}",
                    "utm_source": "facebook",
                    "collab_terms": ["ENFORCE_SHARE_AD_PERFORMANCE_ACCESS"],
                }
            }
        }
    }


def test_create_segment_job_is_idempotent_and_shares(loaded, kobi_env, pg_instance):
    world = kobi_env.sandbox.world
    parent, owner = _world_catalog(world, "trendyol", compliant=True)
    job = loaded.resolve_job_def("create_catalog_segment_job")
    first = job.execute_in_process(run_config=_segment_config(parent, owner), instance=pg_instance)
    out = first.output_for_node("create_and_share_segment")
    assert first.success and out["created"] is True
    seg = world.catalogs[out["segment_id"]]
    assert seg.is_catalog_segment and seg.parent_catalog_id == parent
    # the brand sees it: shared with its business (pending until accepted in Collaboration Center)
    from kobi_cpas.cpas import read_segment_shares
    from kobi_cpas.meta.client import MetaGraphClient

    with MetaGraphClient(kobi_env.sandbox.url, "v26.0", kobi_env.token) as client:
        shares = read_segment_shares(client, out["segment_id"])
    assert shares.status_for("1000000000000001") in ("pending", "accepted")
    again = job.execute_in_process(run_config=_segment_config(parent, owner), instance=pg_instance)
    assert again.success
    assert again.output_for_node("create_and_share_segment") == {
        "segment_id": out["segment_id"],
        "created": False,
    }
    # exactly one create POST over the two launches (the route name is the sandbox's, so this can fail)
    assert kobi_env.sandbox.admin.count_requests(route="cpas.business.owned_product_catalogs.create") == 1


def test_segment_from_non_compliant_parent_fails_with_clear_message(loaded, kobi_env, pg_instance):
    parent, owner = _world_catalog(kobi_env.sandbox.world, "n11", compliant=False)
    kobi_env.sandbox.admin.clear_requests()
    res = loaded.resolve_job_def("create_catalog_segment_job").execute_in_process(
        run_config=_segment_config(parent, owner),
        instance=pg_instance,
        raise_on_error=False,
    )
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "not Collaborative Ads compliant" in failure.event_specific_data.error.message
    posts = [r for r in kobi_env.sandbox.admin.requests() if r.get("method") == "POST"]
    assert len(posts) == 1  # never retried


def test_invalid_filter_names_the_clause(loaded, kobi_env, pg_instance):
    parent, owner = _world_catalog(kobi_env.sandbox.world, "trendyol", compliant=True)
    bad = {"and": [{"brand": {"eq": "x"}}, {"availability": {"is_anyy": ["in stock"]}}]}
    res = loaded.resolve_job_def("create_catalog_segment_job").execute_in_process(
        run_config=_segment_config(parent, owner, rule=bad), instance=pg_instance, raise_on_error=False
    )
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "and[1].availability" in failure.event_specific_data.error.message


def _campaign_config(retailer: str) -> dict:
    return {
        "ops": {
            "create_cpas_campaign": {
                "config": {
                    "tenant_id": "bosphorus_outdoor" if retailer == "hepsiburada" else TENANT,
                    "retailer": retailer,
                    "page_id": "5550001112223334",
                }
            }
        }
    }


def test_campaign_creation_blocked_by_qc_then_allowed_when_clean(loaded, kobi_env, pg_instance):
    job = loaded.resolve_job_def("create_cpas_campaign_job")
    # bosphorus_outdoor x hepsiburada is pending: no segment yet, so QC blocks before any POST
    kobi_env.sandbox.admin.clear_requests()
    blocked = job.execute_in_process(
        run_config=_campaign_config("hepsiburada"), instance=pg_instance, raise_on_error=False
    )
    assert not blocked.success
    failure = next(e for e in blocked.all_events if e.event_type_value == "STEP_FAILURE")
    assert "QC failed" in failure.event_specific_data.error.message
    assert not [r for r in kobi_env.sandbox.admin.requests() if r.get("method") == "POST"]
    ok = job.execute_in_process(run_config=_campaign_config("trendyol"), instance=pg_instance)
    assert ok.success
    campaign_id = ok.output_for_node("create_cpas_campaign")["campaign_id"]
    camp = kobi_env.sandbox.world.campaigns[campaign_id]
    assert camp.status == "PAUSED" and camp.objective == "OUTCOME_SALES"
    assert camp.promoted_object == {"product_catalog_id": "3000000000000001"}
    con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT catalog_segment_id, qc_status FROM execution_manifest WHERE campaign_id = ?",
            [campaign_id],
        ).fetchall()
    finally:
        con.close()
    assert rows and all(r == ("3000000000000001", "pass") for r in rows)


def _product_lookups(admin) -> int:
    """GET /{product-item-id} calls (an unknown id has no route in the log, so match the path)."""
    return len(admin.requests(method="GET", path_regex=r"^/v[0-9.]+/62[0-9]{14}$"))


def test_shared_item_metrics_single_run_range_is_idempotent(loaded, kobi_env, pg_instance):
    job = dg.define_asset_job(
        "t", selection=dg.AssetSelection.assets("shared_item_metrics").required_multi_asset_neighbors()
    )
    d = dg.Definitions.merge(loaded, dg.Definitions(jobs=[job])).resolve_job_def("t")
    tags = range_tags(TENANT, "2026-11-10", "2026-11-12")  # three days in one run (each day costs a pull)
    kobi_env.sandbox.admin.freeze_clock(True)

    def run():
        res = d.execute_in_process(instance=pg_instance, tags=tags)
        assert res.success
        con = duckdb.connect(str(kobi_env.analyst_path), read_only=True)
        try:
            return (
                con.execute(
                    "SELECT count(*), count(DISTINCT date), sum(value), min(date)::VARCHAR, max(date)::VARCHAR "
                    "FROM shared_item_metrics"
                ).fetchone(),
                con.execute(
                    "SELECT count(*) FROM shared_item_product_metrics WHERE level = 'account'"
                ).fetchone()[0],
                con.execute(
                    """SELECT count(*), count(retailer_id), count(match_method),
                              count(*) FILTER (WHERE retailer_id IS NOT NULL AND retailer_id NOT IN
                                  (SELECT retailer_id FROM feed_items WHERE tenant_id = 'anatolia_home'))
                       FROM shared_item_product_metrics"""
                ).fetchone(),
                con.execute(
                    "SELECT DISTINCT action_converted_product_id, retailer_id FROM shared_item_product_metrics"
                ).fetchall(),
                res,
            )
        finally:
            con.close()

    kobi_env.sandbox.admin.clear_requests()
    first, account_products, products, mapped, res = run()
    lookups = _product_lookups(kobi_env.sandbox.admin)
    assert first[0] > 0 and first[1] == 3 and first[3:] == ("2026-11-10", "2026-11-12")
    assert account_products == 0  # never requested at account level
    # every converted product was looked up once; the retailer's items map to the brand's feed items only where the
    # retailer's SKU is the brand's feed id, so some stay unmatched
    assert products[0] > 0 and products[2] == products[0]
    assert 0 < products[1] < products[0] and products[3] == 0
    world = kobi_env.sandbox.world
    assert lookups == len({pid for pid, _ in mapped})
    for pid, feed_id in mapped:
        node = world.product_items.get(pid)
        assert node is None or node.catalog_id != "2000000000000001"  # never the brand catalog's item
        assert feed_id is None or feed_id == node.retailer_id
    evals = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert evals["rollups_reconcile"] and evals["meta_roas_matches_value_over_spend"]
    rates_key = dg.AssetKey("retailer_product_match_rates")  # the match-rate view's own materialization
    meta = next(
        e for e in res.get_asset_materialization_events() if e.asset_key == rates_key
    ).materialization.metadata
    assert "| anatolia_home | trendyol |" in meta["product_match_rate"].value
    kobi_env.sandbox.admin.clear_requests()
    second, _, _, _, _ = run()
    assert second == first  # same rows, nothing doubled
    assert _product_lookups(kobi_env.sandbox.admin) == 0  # ids are cached, found or not
    reqs = kobi_env.sandbox.admin.insights.requests()
    product_reqs = [r for r in reqs if "action_converted_product_id" in json.dumps(r)]
    assert product_reqs and not any(
        '"level": "account"' in json.dumps(r) or "level=account" in json.dumps(r) for r in product_reqs
    )
