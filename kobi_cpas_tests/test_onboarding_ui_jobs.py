"""The onboarding steps people launch from the UI, through Dagster against the sandbox: the collaboration request
(from a suggested partner read by id, never sent twice, never duplicated by a retry) and the on-demand item check
writing into catalog_diagnostics."""

from __future__ import annotations

import contextlib
import time

import dagster as dg
import duckdb

from kobi_cpas.cpas import send_collaboration_request
from kobi_cpas.meta.errors import MetaConnectionError
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas_tests.sync_harness import CATALOG, TENANT, synced_world_fixtures

pytest_plugins = ["kobi_cpas_tests.world_snapshot"]

BRAND_BIZ = "1000000000000001"  # anatolia_home
CREATE_ROUTE = "cpas.business.collaboration_requests.create"
CONTACT = {
    "contact_email": "ops@anatolia.example",
    "contact_first_name": "Ayse",
    "contact_last_name": "Yilmaz",
    "phone_number": "+905550001122",
}

world, synced = synced_world_fixtures(60)


def _merchant_without_open_request(world_) -> str:
    """A directory retailer the brand has not asked yet (the sandbox refuses receivers outside the directory)."""
    asked = {
        r.receiver_business_id for r in world_.collab_requests.values() if r.sender_business_id == BRAND_BIZ
    }
    return next(b for b in sorted(world_.collab_merchants) if b not in asked)


def _request_config(**config: object) -> dict:
    return {"ops": {"send_collaboration_request_op": {"config": {"tenant_id": TENANT, **CONTACT, **config}}}}


def test_a_collaboration_request_from_a_suggested_partner_is_sent_once(kobi_env, pg_instance):
    world_ = kobi_env.sandbox.world
    rec = next(r for r in world_.partner_recommendations.values() if r.brand_business_id == BRAND_BIZ)
    job = kobi_env.defs().resolve_job_def("send_collaboration_request_job")
    kobi_env.sandbox.admin.clear_requests()

    first = job.execute_in_process(run_config=_request_config(recommendation_id=rec.id), instance=pg_instance)
    out = first.output_for_node("send_collaboration_request_op")
    assert first.success and out["sent"] is True
    sent = [r for r in world_.collab_requests.values() if r.id == out["request_id"]]
    assert [(r.receiver_business_id, list(r.brands)) for r in sent] == [
        (rec.merchant_business_id, list(rec.brands))
    ]
    # the recommendation was read by id (the one-recommendation read of Meta's guide)
    assert kobi_env.sandbox.admin.count_requests(route="cpas.partner_recommendation.get") == 1

    again = job.execute_in_process(run_config=_request_config(recommendation_id=rec.id), instance=pg_instance)
    assert again.output_for_node("send_collaboration_request_op") == {
        "request_id": out["request_id"],
        "sent": False,
    }
    assert kobi_env.sandbox.admin.count_requests(route=CREATE_ROUTE) == 1
    # the contact details stay on Meta: not in the run's events
    events = " ".join(str(e) for e in pg_instance.all_logs(again.run_id))
    assert CONTACT["contact_email"] not in events and CONTACT["phone_number"] not in events


def test_a_bad_requester_is_named_and_nothing_is_sent(kobi_env, pg_instance):
    job = kobi_env.defs().resolve_job_def("send_collaboration_request_job")
    kobi_env.sandbox.admin.clear_requests()
    res = job.execute_in_process(
        run_config=_request_config(
            receiver_business_id=_merchant_without_open_request(kobi_env.sandbox.world),
            requester_agency_or_brand="BRANDS",
        ),
        instance=pg_instance,
        raise_on_error=False,
    )
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure).event_specific_data
    assert "requester_agency_or_brand" in str(failure.user_failure_data.description)
    assert kobi_env.sandbox.admin.count_requests(route=CREATE_ROUTE) == 0


def test_a_timed_out_request_is_not_retried_into_a_second_one(sandbox, make_meta_client):
    tenant = load_registry(DEFAULT_REGISTRY).registry.tenant(TENANT)
    client = make_meta_client(timeout=0.2, max_retries=5)
    sandbox.admin.add_fault("timeout", route=CREATE_ROUTE, times=1, seconds=0.6)
    receiver = _merchant_without_open_request(sandbox.world)
    kwargs = {"receiver_business_id": receiver, "brands": ["Anatolia Home"], **CONTACT}
    with contextlib.suppress(MetaConnectionError):  # applied by Meta after the client gave up
        send_collaboration_request(client, tenant, **kwargs)
    assert sandbox.admin.count_requests(route=CREATE_ROUTE) == 1  # the POST was not retried
    # Meta applies the call after the client gave up. No time bound here: pytest-timeout ends a hung test.
    while not any(r.receiver_business_id == receiver for r in list(sandbox.world.collab_requests.values())):
        time.sleep(0.05)
    request_id, sent = send_collaboration_request(client, tenant, **kwargs)
    assert not sent and sandbox.admin.count_requests(route=CREATE_ROUTE) == 1
    assert [r.id for r in sandbox.world.collab_requests.values() if r.receiver_business_id == receiver] == [
        request_id
    ]


def test_the_item_check_job_reads_chosen_items_and_updates_catalog_diagnostics(synced):
    h = synced()  # 60 items replaced
    items = sorted(h.meta_items())
    flagged, clean = items[0], items[1]
    h.admin.force_item_error(CATALOG, flagged, "IMAGE_RESOLUTION_LOW")
    h.admin.clear_requests()
    job = h.defs.resolve_job_def("check_catalog_items_job")
    config = {"tenant_id": TENANT, "retailer_ids": [flagged, clean, "NOT-IN-CATALOG"]}
    res = job.execute_in_process(
        run_config={"ops": {"check_catalog_items": {"config": config}}}, instance=h.instance
    )
    assert res.success
    out = res.output_for_node("check_catalog_items")
    assert out == {"checked": 2, "not_in_catalog": ["NOT-IN-CATALOG"], "open_problems": 1}
    assert h.admin.count_requests(route="product_item.get") == 2  # only the chosen items were read
    con = duckdb.connect(str(h.env.analyst_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT retailer_id, error_type, is_open FROM catalog_diagnostics WHERE tenant_id = ? AND source = "
            "'meta_item_check'",
            [TENANT],
        ).fetchall()
    finally:
        con.close()
    assert rows == [(flagged, "IMAGE_RESOLUTION_LOW", True)]

    # fixed at Meta: the next check resolves it
    h.admin.clear_item_errors(CATALOG, flagged)
    h.admin.suppress_item_error(CATALOG, flagged, "IMAGE_RESOLUTION_LOW")
    again = job.execute_in_process(
        run_config={"ops": {"check_catalog_items": {"config": config}}}, instance=h.instance
    )
    assert again.output_for_node("check_catalog_items")["open_problems"] == 0
    assert isinstance(again, dg.ExecuteInProcessResult)


def _users_config(**config: object) -> dict:
    return {"ops": {"assign_catalog_users_op": {"config": {"tenant_id": TENANT, **config}}}}


def test_the_brands_people_are_assigned_to_its_segments_once(kobi_env, pg_instance):
    tenant = load_registry(DEFAULT_REGISTRY).registry.tenant(TENANT)
    segments = {r.retailer: r.catalog_segment_id for r in tenant.cpas_retailers if r.catalog_segment_id}
    assert segments, "the demo tenant has an accepted segment"
    job = kobi_env.defs().resolve_job_def("assign_catalog_users_job")
    people = ["100000000000777", "100000000000778"]
    kobi_env.sandbox.admin.clear_requests()

    first = job.execute_in_process(run_config=_users_config(user_ids=people), instance=pg_instance)
    assert first.success
    assigned = kobi_env.sandbox.world.catalog_assigned_users
    for segment_id in segments.values():
        assert {u: list(t) for u, t in assigned[segment_id].items() if u in people} == {
            u: ["ADVERTISE"] for u in people
        }
    assert kobi_env.sandbox.admin.count_requests(route="cpas.catalog.assigned_users.add") == 2 * len(segments)

    again = job.execute_in_process(
        run_config=_users_config(user_ids=[*people, "100000000000779"], tasks=["ADVERTISE", "AA_ANALYZE"]),
        instance=pg_instance,
    )
    out = again.output_for_node("assign_catalog_users_op")
    assert {r: v["already"] for r, v in out.items()} == {r: people for r in segments}
    assert {r: v["assigned"] for r, v in out.items()} == {r: ["100000000000779"] for r in segments}
    assert kobi_env.sandbox.admin.count_requests(route="cpas.catalog.assigned_users.add") == 3 * len(segments)

    bad = job.execute_in_process(
        run_config=_users_config(user_ids=people, tasks=["OWN"]), instance=pg_instance, raise_on_error=False
    )
    assert not bad.success
    failure = next(e for e in bad.all_events if e.is_step_failure).event_specific_data
    assert "'tasks'" in str(failure.user_failure_data.description) and TENANT in str(
        failure.user_failure_data.description
    )
    assert kobi_env.sandbox.admin.count_requests(route="cpas.catalog.assigned_users.add") == 3 * len(segments)
