"""Declared product sets: plan, apply (create / update / delete, live refusal) against the sandbox."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from kobi_cpas.cpas import (
    DeclaredProductSet,
    TemplateOptions,
    apply_product_set_actions,
    build_campaign_plan,
    create_campaign,
    plan_product_sets,
    product_set_targets,
    read_existing_product_sets,
)
from kobi_cpas.meta import MetaGraphClient, MetaInvalidRequestError
from kobi_cpas.registry import Tenant, load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox.admin import CpasAdmin

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle


@pytest.fixture(scope="module")
def tenant() -> Tenant:
    return load_registry(DEFAULT_REGISTRY).registry.tenant("bosphorus_outdoor")


def declared(filter_value: str = "jacket") -> list[DeclaredProductSet]:
    return [
        DeclaredProductSet(
            name="Jackets",
            filter={"title": {"i_contains": filter_value}},
            metadata={"cover_image_url": "https://cdn.example/j.jpg", "description": "Our jackets"},
        ),
        DeclaredProductSet(
            name="Trendyol in stock", filter={"availability": {"eq": "in stock"}}, target="trendyol"
        ),
        DeclaredProductSet(name="Hepsiburada all", target="hepsiburada"),  # no segment yet: skipped
    ]


def sync(client: MetaGraphClient, tenant: Tenant, sets: list[DeclaredProductSet]):
    targets = product_set_targets(tenant)
    actions = plan_product_sets(sets, read_existing_product_sets(client, targets), targets=targets)
    return actions, apply_product_set_actions(client, actions)


def test_create_keep_update_delete(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, cpas_admin: CpasAdmin, tenant: Tenant
) -> None:
    cpas_admin.load_items(
        tenant.catalog_id,
        [
            {"id": f"J{i}", "title": "Trail Jacket" if i < 4 else "Cap", "availability": "in stock"}
            for i in range(10)
        ],
    )
    # A set made by a person in Commerce Manager is never touched.
    manual = meta_client.post(f"{tenant.catalog_id}/product_sets", data={"name": "Summer picks"})["id"]

    actions, results = sync(meta_client, tenant, declared())
    assert sorted((a.kind, a.target) for a in actions) == [
        ("create", "catalog"),
        ("create", "trendyol"),
        ("skip", "hepsiburada"),
    ]
    assert [r.status for r in results if r.action.kind == "create"] == ["done", "done"]
    jackets = next(r for r in results if r.action.target == "catalog").product_set_id
    node = meta_client.get(jackets, {"fields": "name,filter,product_count,latest_metadata"})
    assert node["name"] == "Kobi | Jackets" and node["product_count"] == 4
    assert node["filter"] == '{"title":{"i_contains":"jacket"}}'
    assert node["latest_metadata"]["description"] == "Our jackets"

    actions, _ = sync(meta_client, tenant, declared())
    assert sorted(a.kind for a in actions) == ["keep", "keep", "skip"]

    actions, results = sync(meta_client, tenant, declared("cap"))
    assert [a.kind for a in actions if a.target == "catalog"] == ["update"]
    assert meta_client.get(jackets, {"fields": "product_count"})["product_count"] == 6

    actions, results = sync(meta_client, tenant, declared()[1:])
    deletes = [r for r in results if r.action.kind == "delete"]
    assert [(r.action.name, r.status) for r in deletes] == [("Kobi | Jackets", "done")]
    remaining = {p["name"] for p in meta_client.paginate(f"{tenant.catalog_id}/product_sets")}
    assert remaining == {"Summer picks"} and manual


def test_live_set_is_refused_unless_allowed(
    meta_client: MetaGraphClient, cpas_admin: CpasAdmin, tenant: Tenant
) -> None:
    sets = [DeclaredProductSet(name="Live one", filter={"brand": {"eq": "Bosphorus Outdoor"}})]
    _, results = sync(meta_client, tenant, sets)
    set_id = results[0].product_set_id
    cpas_admin.set_product_set_live(set_id, True)

    _, results = sync(meta_client, tenant, [])
    refused = [r for r in results if r.action.kind == "delete"]
    assert [r.status for r in refused] == ["refused"]
    assert "allow_live_deletion: true" in refused[0].message
    assert meta_client.get(set_id, {"fields": "id"})["id"] == set_id  # still there

    with pytest.raises(MetaInvalidRequestError, match="allow_live_product_set_deletion"):
        meta_client.delete(set_id)
    gone = [DeclaredProductSet(name="Live one", absent=True, allow_live_deletion=True)]
    actions, results = sync(meta_client, tenant, gone)
    assert [(a.kind, a.allow_live_deletion, a.reason) for a in actions] == [
        ("delete", True, "declared absent")
    ]
    assert [r.status for r in results] == ["done"]
    assert all(p["id"] != set_id for p in meta_client.paginate(f"{tenant.catalog_id}/product_sets"))


def test_set_used_by_an_ad_set_is_live(sandbox: SandboxHandle, meta_client: MetaGraphClient) -> None:
    anatolia = load_registry(DEFAULT_REGISTRY).registry.tenant("anatolia_home")
    ids = create_campaign(
        meta_client,
        build_campaign_plan(anatolia, anatolia.retailer("trendyol"), TemplateOptions(page_id="555")),
    )
    with pytest.raises(MetaInvalidRequestError, match="in use"):
        meta_client.delete(ids.product_set_id)
    meta_client.delete(ids.product_set_id, {"allow_live_product_set_deletion": True})


def test_declared_sets_are_validated() -> None:
    with pytest.raises(ValidationError, match=r"availability: unknown operator 'is_anyy'"):
        DeclaredProductSet(name="x", filter={"availability": {"is_anyy": ["in stock"]}})
    with pytest.raises(ValidationError):
        DeclaredProductSet(name="x", metadata={"cover": "nope"})
    with pytest.raises(ValueError, match="declared twice"):
        plan_product_sets(
            [DeclaredProductSet(name="a"), DeclaredProductSet(name="a")], {}, targets={"catalog": "1"}
        )


def test_a_timed_out_create_is_not_retried_into_a_second_set(
    sandbox: SandboxHandle, make_meta_client, tenant: Tenant
) -> None:
    client = make_meta_client(timeout=0.2, max_retries=5)
    sets = declared()[:1]
    sandbox.admin.add_fault("timeout", route="cpas.catalog.product_sets.create", times=1, seconds=0.6)
    _, results = sync(client, tenant, sets)
    assert [(r.action.kind, r.status) for r in results] == [("create", "failed")]
    assert (
        sandbox.admin.count_requests(route="cpas.catalog.product_sets.create") == 1
    )  # sent once, never retried
    name = results[0].action.name
    # Meta applies the call after the client gave up. No time bound here: pytest-timeout ends a hung test.
    while not any(ps.name == name for ps in list(sandbox.world.product_sets.values())):
        time.sleep(0.05)
    actions, again = sync(client, tenant, sets)
    assert [a.kind for a in actions] == ["keep"] and [r.status for r in again] == ["skipped"]
    assert sandbox.admin.count_requests(route="cpas.catalog.product_sets.create") == 1
    assert sum(ps.name == name for ps in sandbox.world.product_sets.values()) == 1


def test_a_set_is_published_to_the_declared_shops_and_kept_there(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, tenant: Tenant
) -> None:
    """Catalog Integration, product set collections step 2: publish_to_shops from the declared shop ids."""
    shop, other_shop = "5550000000000001", "5550000000000002"
    sets = [DeclaredProductSet(name="Shop picks", publish_to_shops=(shop,))]
    _, results = sync(meta_client, tenant, sets)
    (created,) = [r for r in results if r.action.kind == "create"]
    node = meta_client.get(str(created.product_set_id), {"fields": "publish_to_shops"})
    assert node["publish_to_shops"] == [{"shop_id": shop}]

    actions, _ = sync(meta_client, tenant, sets)
    assert [a.kind for a in actions if a.name == "Kobi | Shop picks"] == ["keep"]

    # a second shop declared: the set is updated, not created again
    actions, results = sync(
        meta_client, tenant, [DeclaredProductSet(name="Shop picks", publish_to_shops=(shop, other_shop))]
    )
    (update,) = [a for a in actions if a.name == "Kobi | Shop picks"]
    assert update.kind == "update" and "publish_to_shops" in update.reason
    node = meta_client.get(str(created.product_set_id), {"fields": "publish_to_shops"})
    assert {s["shop_id"] for s in node["publish_to_shops"]} == {shop, other_shop}
    # no shops declared: the set's shops are left as they are
    actions, _ = sync(meta_client, tenant, [DeclaredProductSet(name="Shop picks")])
    assert [a.kind for a in actions if a.name == "Kobi | Shop picks"] == ["keep"]


def test_a_shop_id_must_be_a_graph_id() -> None:
    with pytest.raises(ValidationError, match="publish_to_shops"):
        DeclaredProductSet(name="Shop picks", publish_to_shops=("my-shop",))
