"""Partnerships as state, not hand edits, through Dagster against the sandbox: an ``api`` partnership gets its
segment created and shared by the daily CPAS run, recorded in cpas_state.segments and used from there (a second
run creates nothing); the segment job reuses the pair's known segment instead of creating a second one; an
``api`` rule that matches nothing creates nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from kobi_cpas.defs.cpas.checks import PARTNERSHIP_DRIFT
from kobi_cpas.defs.insights.partitions import range_tags
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.dagster_fixtures import tick_schedule
from kobi_cpas_tests.sync_harness import sync_demo_catalogs

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

BRAND = "bosphorus_outdoor"
BRAND_BIZ = "1000000000000002"
RETAILER = "hepsiburada"  # pending, no segment in the demo registry
HB_BIZ, HB_PARENT = "9000000000000002", "9100000000000002"
CREATE_ROUTE = "cpas.business.owned_product_catalogs.create"
SHARE_ROUTE = "cpas.catalog.agencies.share"


@pytest.fixture(scope="module")
def synced_world(build_world_snapshot):
    # only the brand's catalog: every test is about its partnerships
    return build_world_snapshot(
        "cpas_onboarding", lambda env, instance: sync_demo_catalogs(env, instance, [BRAND])
    )


@pytest.fixture
def restored(synced_world, restore_world):
    return restore_world(synced_world)


def _registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **pair: object) -> Path:
    """The demo registry with the brand's hepsiburada partnership updated by ``pair``, in effect for the test."""
    data = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    tenant = next(t for t in data["tenants"] if t["tenant_id"] == BRAND)
    r = next(r for r in tenant["cpas_retailers"] if r["retailer"] == RETAILER)
    r.update(pair)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("KOBI_CPAS_TENANTS", str(path))
    return path


def _run_cpas(restored, partition: str = BRAND) -> dg.ExecuteInProcessResult:
    job = restored.env.defs().resolve_job_def("cpas_daily_job")
    result = job.execute_in_process(instance=restored.instance, partition_key=partition, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def _partnership(analyst: Path, tenant: str, retailer: str) -> dict:
    con = duckdb.connect(str(analyst), read_only=True)
    try:
        cur = con.execute(
            "SELECT * FROM cpas_partnerships WHERE tenant_id = ? AND retailer = ?", [tenant, retailer]
        )
        cols = [d[0] for d in cur.description]
        (row,) = cur.fetchall()
        return dict(zip(cols, row, strict=True))
    finally:
        con.close()


def _state(analyst: Path, tenant: str) -> dict[str, dict]:
    with Warehouse(analyst, schema=SCHEMA).connect() as con:
        cur = con.execute("SELECT * FROM cpas_state.segments WHERE tenant_id = ?", [tenant])
        cols = [d[0] for d in cur.description]
        return {r[cols.index("retailer")]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}


def test_an_api_partnership_gets_its_segment_created_shared_and_recorded_once(
    restored, tmp_path, monkeypatch
):
    _registry(
        tmp_path, monkeypatch, onboarding_mode="api", segment_filter={"brand": {"eq": "Bosphorus Outdoor"}}
    )
    admin, world = restored.env.sandbox.admin, restored.env.sandbox.world
    admin.clear_requests()

    _run_cpas(restored)
    assert admin.count_requests(route=CREATE_ROUTE) == 1 and admin.count_requests(route=SHARE_ROUTE) == 1
    row = _partnership(restored.env.analyst_path, BRAND, RETAILER)
    segment_id = row["catalog_segment_id"]
    assert segment_id and row["segment_id_source"] == "created"
    seg = world.catalogs[segment_id]
    assert seg.is_catalog_segment and seg.parent_catalog_id == HB_PARENT and seg.business_id == HB_BIZ
    assert row["partnership_status"] == "pending" and row["shared_with_business_id"] == BRAND_BIZ
    assert row["next_action"].startswith(f"Kobi has created and shared Hepsiburada's segment {segment_id}")
    assert row["segment_product_count"] == row["expected_product_count"] > 0
    state = _state(restored.env.analyst_path, BRAND)[RETAILER]
    assert (state["catalog_segment_id"], state["origin"], state["share_status"]) == (
        segment_id,
        "created",
        "pending",
    )
    assert (state["owner_business_id"], state["parent_catalog_id"]) == (HB_BIZ, HB_PARENT)
    first_recorded = state["recorded_at"]

    # The next run finds the recorded segment: nothing is created or shared again.
    _run_cpas(restored)
    assert admin.count_requests(route=CREATE_ROUTE) == 1 and admin.count_requests(route=SHARE_ROUTE) == 1
    again = _partnership(restored.env.analyst_path, BRAND, RETAILER)
    assert (again["catalog_segment_id"], again["segment_id_source"]) == (segment_id, "created")

    # The brand accepts in Collaboration Center: observed on the next run and kept in the state.
    admin.cpas.accept_share(segment_id, BRAND_BIZ)
    _run_cpas(restored)
    accepted = _partnership(restored.env.analyst_path, BRAND, RETAILER)
    assert accepted["partnership_status"] == "accepted" and "registry_outdated" in accepted["drift"]
    state = _state(restored.env.analyst_path, BRAND)[RETAILER]
    assert (state["share_status"], state["origin"], state["recorded_at"]) == (
        "accepted",
        "created",
        first_recorded,
    )
    assert state["owner_business_id"] == HB_BIZ  # what only the creation knew is not forgotten


def test_an_api_rule_matching_no_item_creates_nothing_and_says_why(restored, tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, onboarding_mode="api", segment_filter={"brand": {"eq": "No Such Brand"}})
    admin = restored.env.sandbox.admin
    admin.clear_requests()
    result = _run_cpas(restored)
    assert admin.count_requests(route=CREATE_ROUTE) == 0
    row = _partnership(restored.env.analyst_path, BRAND, RETAILER)
    assert row["catalog_segment_id"] is None and row["drift"] == "api_step_blocked"
    assert "matches no item of the tenant's feed snapshot" in row["next_action"]
    assert RETAILER not in _state(restored.env.analyst_path, BRAND)
    drift = next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_partnership_drift")
    assert not drift.passed and "api_step_blocked" in (drift.description or "")


def _segment_run(restored, **config: object) -> dg.ExecuteInProcessResult:
    job = restored.env.defs().resolve_job_def("create_catalog_segment_job")
    return job.execute_in_process(
        run_config={"ops": {"create_and_share_segment": {"config": {"tenant_id": BRAND, **config}}}},
        instance=restored.instance,
        raise_on_error=False,
    )


def test_the_segment_job_takes_the_registry_inputs_and_reuses_the_pairs_segment(
    restored, tmp_path, monkeypatch
):
    # The registry declares the pair's inputs but no id: the launch needs nothing else.
    _registry(tmp_path, monkeypatch, segment_filter={"brand": {"eq": "Bosphorus Outdoor"}})
    admin, world = restored.env.sandbox.admin, restored.env.sandbox.world
    admin.clear_requests()
    first = _segment_run(restored, retailer=RETAILER)
    assert first.success
    out = first.output_for_node("create_and_share_segment")
    assert out["created"] is True and world.catalogs[out["segment_id"]].parent_catalog_id == HB_PARENT
    assert _state(restored.env.analyst_path, BRAND)[RETAILER]["origin"] == "created"

    # Launched again for the pair, even under another name: the recorded segment is reused, not duplicated.
    again = _segment_run(restored, retailer=RETAILER, name="Another name")
    assert again.success
    assert again.output_for_node("create_and_share_segment") == {
        "segment_id": out["segment_id"],
        "created": False,
    }
    assert admin.count_requests(route=CREATE_ROUTE) == 1

    # The daily reconciliation uses the recorded id although the registry has none.
    _run_cpas(restored)
    row = _partnership(restored.env.analyst_path, BRAND, RETAILER)
    assert (row["catalog_segment_id"], row["segment_id_source"]) == (out["segment_id"], "created")
    assert row["partnership_status"] == "pending" and row["shared_with_business_id"] == BRAND_BIZ


def test_the_segment_job_reuses_a_declared_segment_and_never_replaces_a_missing_one_unasked(
    restored, tmp_path, monkeypatch
):
    _registry(tmp_path, monkeypatch)
    admin = restored.env.sandbox.admin
    admin.clear_requests()
    # bosphorus_outdoor x trendyol declares segment 3000000000000003 in the demo registry
    declared = _segment_run(restored, retailer="trendyol")
    assert declared.success
    assert declared.output_for_node("create_and_share_segment") == {
        "segment_id": "3000000000000003",
        "created": False,
    }
    assert admin.count_requests(route=CREATE_ROUTE) == 0
    assert _state(restored.env.analyst_path, BRAND)["trendyol"]["origin"] == "registry"

    # a declared segment Meta no longer has: the job fails, names it, and creates nothing
    _registry(
        tmp_path,
        monkeypatch,
        catalog_segment_id="3999999999999999",
        segment_filter={"brand": {"eq": "Bosphorus Outdoor"}},
    )
    missing = _segment_run(restored, retailer=RETAILER)
    assert not missing.success
    failure = next(e for e in missing.all_events if e.is_step_failure)
    data = failure.event_specific_data
    text = f"{data.error.message if data.error else ''} {data.user_failure_data.description if data.user_failure_data else ''}"
    assert "3999999999999999" in text and "replace_missing_segment" in text
    assert admin.count_requests(route=CREATE_ROUTE) == 0


def _steps(analyst: Path, tenant: str, retailer: str) -> dict[str, tuple]:
    con = duckdb.connect(str(analyst), read_only=True)
    try:
        rows = con.execute(
            "SELECT step, meta_mode, mode, status, next_action FROM cpas_onboarding_steps "
            "WHERE tenant_id = ? AND retailer = ? ORDER BY step_order",
            [tenant, retailer],
        ).fetchall()
    finally:
        con.close()
    return {r[0]: r[1:] for r in rows}


def test_the_onboarding_step_matrix_follows_the_partnership(restored, tmp_path, monkeypatch):
    _registry(
        tmp_path,
        monkeypatch,
        onboarding_mode="api",
        segment_filter={"brand": {"eq": "Bosphorus Outdoor"}},
        onboarding_steps={"collaboration_request": "manual"},
    )
    admin = restored.env.sandbox.admin
    _run_cpas(restored)
    steps = _steps(restored.env.analyst_path, BRAND, RETAILER)
    assert list(steps) == [
        "retailer_program",
        "collaboration_request",
        "segment_shared",
        "brand_accepts",
        "dedicated_ad_account",
        "people_assigned",
        "campaign",
    ]
    # Meta's bound and the partnership's decision per step: the person's choice wins where it automates less
    assert {k: v[:2] for k, v in steps.items()} == {
        "retailer_program": ("manual", "manual"),
        "collaboration_request": ("api", "manual"),
        "segment_shared": ("api", "api"),
        "brand_accepts": ("manual", "manual"),
        "dedicated_ad_account": ("hybrid", "hybrid"),
        "people_assigned": ("api", "api"),
        "campaign": ("api", "api"),
    }
    status = {k: v[2] for k, v in steps.items()}
    assert status["segment_shared"] == "done"  # created and shared by this run
    assert status["brand_accepts"] == "todo" and "Accept assets" in steps["brand_accepts"][3]
    assert status["people_assigned"] == status["campaign"] == "waiting"

    # accepted, then the brand's people assigned: those steps are done on the next run
    segment_id = _partnership(restored.env.analyst_path, BRAND, RETAILER)["catalog_segment_id"]
    admin.cpas.accept_share(segment_id, BRAND_BIZ)
    _registry(
        tmp_path,
        monkeypatch,
        onboarding_mode="api",
        segment_filter={"brand": {"eq": "Bosphorus Outdoor"}},
        partnership_status="accepted",
        dedicated_ad_account_id="act_3000000000000099",
    )
    _run_cpas(restored)
    status = {k: v[2] for k, v in _steps(restored.env.analyst_path, BRAND, RETAILER).items()}
    assert status["brand_accepts"] == "done" and status["people_assigned"] == "todo"
    users = restored.env.defs().resolve_job_def("assign_catalog_users_job")
    config = {"tenant_id": BRAND, "retailer": RETAILER, "user_ids": ["100000000000555"]}
    assert users.execute_in_process(
        run_config={"ops": {"assign_catalog_users_op": {"config": config}}}, instance=restored.instance
    ).success
    _run_cpas(restored)
    steps = _steps(restored.env.analyst_path, BRAND, RETAILER)
    assert steps["people_assigned"][2] == "done" and steps["people_assigned"][3] is None
    # an ad account Meta does not know blocks its step, with the partnership's call to action
    assert (
        steps["dedicated_ad_account"][2] == "blocked"
        and "act_3000000000000099" in steps["dedicated_ad_account"][3]
    )


TY_BIZ, TY_ACCOUNT = "9000000000000001", "act_4000000000000003"  # bosphorus_outdoor x trendyol, accepted


def _trendyol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, account: str | None) -> None:
    """The demo registry with the brand's trendyol partnership declaring ``account`` (None: omitted)."""
    data = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    tenant = next(t for t in data["tenants"] if t["tenant_id"] == BRAND)
    r = next(r for r in tenant["cpas_retailers"] if r["retailer"] == "trendyol")
    r.pop("dedicated_ad_account_id")
    if account:
        r["dedicated_ad_account_id"] = account
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("KOBI_CPAS_TENANTS", str(path))


def _accounts_state(analyst: Path, tenant: str) -> set[tuple]:
    with Warehouse(analyst, schema=SCHEMA).connect() as con:
        rows = con.execute(
            "SELECT retailer, ad_account_id, partner_business_id FROM cpas_state.ad_accounts WHERE tenant_id = ?",
            [tenant],
        ).fetchall()
    return set(rows)


def test_the_registry_may_omit_the_ad_account_the_daily_run_records_the_one_meta_shows(
    restored, tmp_path, monkeypatch
):
    analyst, admin = restored.env.analyst_path, restored.env.sandbox.admin
    _trendyol(tmp_path, monkeypatch, None)
    _run_cpas(restored)
    row = _partnership(analyst, BRAND, "trendyol")
    assert (row["dedicated_ad_account_id"], row["ad_account_id_source"], row["observed_ad_account_ids"]) == (
        TY_ACCOUNT,
        "observed",
        TY_ACCOUNT,
    )
    assert not {"ad_account_mismatch", "ad_account_unknown", "ad_account_missing"} & set(
        row["drift"].split(",")
    )
    assert ("trendyol", TY_ACCOUNT, TY_BIZ) in _accounts_state(analyst, BRAND)
    # the other CPAS assets read the recorded account: the account's campaigns are in the manifest
    with duckdb.connect(str(analyst), read_only=True) as con:
        accounts = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT ad_account_id FROM execution_manifest WHERE tenant_id = ? AND retailer = 'trendyol'",
                [BRAND],
            ).fetchall()
        }
    assert accounts == {TY_ACCOUNT}

    # The brand moves the partnership to a new dedicated account in Collaboration Center: recorded on the next run.
    admin.cpas.dedicate_ad_account(TY_ACCOUNT, BRAND_BIZ, None)
    admin.cpas.dedicate_ad_account("act_4000000000000099", BRAND_BIZ, TY_BIZ)
    _run_cpas(restored)
    row = _partnership(analyst, BRAND, "trendyol")
    assert (row["dedicated_ad_account_id"], row["ad_account_id_source"]) == (
        "act_4000000000000099",
        "observed",
    )
    assert {a for r, a, _ in _accounts_state(analyst, BRAND) if r == "trendyol"} == {"act_4000000000000099"}

    # No account anywhere for an accepted partnership: a finding with what to do.
    admin.cpas.dedicate_ad_account("act_4000000000000099", BRAND_BIZ, None)
    _run_cpas(restored)
    row = _partnership(analyst, BRAND, "trendyol")
    assert row["dedicated_ad_account_id"] is None and row["ad_account_id_source"] is None
    assert "ad_account_unknown" in row["drift"] and "Collaboration Center" in row["next_action"]
    assert not {a for r, a, _ in _accounts_state(analyst, BRAND) if r == "trendyol"}


def test_a_declared_ad_account_wins_and_a_different_one_at_meta_is_a_finding(restored, tmp_path, monkeypatch):
    analyst, admin = restored.env.analyst_path, restored.env.sandbox.admin
    _trendyol(tmp_path, monkeypatch, TY_ACCOUNT)
    _run_cpas(restored)
    row = _partnership(analyst, BRAND, "trendyol")
    assert (row["ad_account_id_source"], row["observed_ad_account_ids"]) == ("registry", TY_ACCOUNT)
    assert "ad_account_mismatch" not in row["drift"]

    admin.cpas.dedicate_ad_account(TY_ACCOUNT, BRAND_BIZ, None)
    admin.cpas.dedicate_ad_account("act_4000000000000098", BRAND_BIZ, TY_BIZ)
    result = _run_cpas(restored)
    row = _partnership(analyst, BRAND, "trendyol")
    assert (row["dedicated_ad_account_id"], row["ad_account_id_source"], row["observed_ad_account_ids"]) == (
        TY_ACCOUNT,
        "registry",
        "act_4000000000000098",
    )
    assert "ad_account_mismatch" in row["drift"].split(",")
    assert "act_4000000000000098" in row["next_action"] and "dedicated_ad_account_id" in row["next_action"]
    drift = next(e for e in result.get_asset_check_evaluations() if e.check_name == PARTNERSHIP_DRIFT)
    assert not drift.passed and "ad_account_mismatch" in (drift.description or "")
    # recorded as observed; the declared one is still what every CPAS asset uses
    assert ("trendyol", "act_4000000000000098", TY_BIZ) in _accounts_state(analyst, BRAND)


ISTANBUL_7AM = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)  # the brand's sync.timezone is Europe/Istanbul


def _insights_tick(restored, registry: Path) -> list[str]:
    """The tenants the insights schedule asks a pull for at 07:00 in Istanbul (it reads the published file)."""
    from kobi_cpas.defs.insights.schedules import shared_item_metrics_schedule

    if BRAND not in restored.instance.get_dynamic_partitions("tenant"):
        restored.instance.add_dynamic_partitions("tenant", [BRAND])
    out = tick_schedule(
        shared_item_metrics_schedule,
        restored.instance,
        restored.env.resources(registry),
        scheduled_execution_time=ISTANBUL_7AM,
    )
    return [] if isinstance(out, dg.SkipReason) else [r.tags["kobi/tenant"] for r in out]


def test_an_observed_ad_account_gets_its_metrics_pulled(restored, tmp_path, monkeypatch):
    """The registry omits trendyol's dedicated account: the insights schedule and the pull use the one the daily
    reconciliation observed at Meta, as the CPAS assets do."""
    analyst = restored.env.analyst_path
    _trendyol(tmp_path, monkeypatch, None)
    registry = tmp_path / "tenants.yaml"
    assert BRAND not in _insights_tick(restored, registry)  # no account known yet: nothing to pull
    _run_cpas(restored)  # records TY_ACCOUNT, the account Meta shows dedicated to trendyol
    assert BRAND in _insights_tick(restored, registry)

    defs = restored.env.defs()
    job = dg.define_asset_job(
        "pull", selection=dg.AssetSelection.assets("shared_item_metrics").required_multi_asset_neighbors()
    )
    pull = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("pull")
    res = pull.execute_in_process(
        instance=restored.instance, tags=range_tags(BRAND, "2026-11-10", "2026-11-12"), raise_on_error=False
    )
    assert res.success, [e.message for e in res.all_events if e.is_failure]
    with duckdb.connect(str(analyst), read_only=True) as con:
        pulled = con.execute(
            """SELECT ad_account_id, count(*), count(DISTINCT date) FROM shared_item_metrics
               WHERE tenant_id = ? AND retailer = 'trendyol' GROUP BY ALL""",
            [BRAND],
        ).fetchall()
        accounts = con.execute(
            "SELECT ad_account_id FROM meta_ad_accounts WHERE tenant_id = ?", [BRAND]
        ).fetchall()
    assert len(pulled) == 1 and pulled[0][0] == TY_ACCOUNT and pulled[0][1] > 0 and pulled[0][2] == 3
    assert (TY_ACCOUNT,) in accounts
