"""Contract tests generated from Meta's own SDK definitions (``facebook-business``, test-only), not from our
sandbox: the client and the sandbox were written together and could agree while both are wrong.

The real client flows (catalog reads, feed sync with uploads and batch, diagnostics, product sets, segments and
shares, partnerships, directory and collaboration requests, campaigns and QC, insights) run once against a
sandbox; its request log gives every call's route, parameter names, ``fields`` and the fields it served.
Each must exist in the SDK (kobi_cpas_tests/contract/sdk_contract.py). The enum values the code sends are
checked against the SDK's enum classes.
"""

from __future__ import annotations

import ast
import csv
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
import yaml

import kobi_cpas
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.meta.versions import DEFAULT_API_VERSION
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.contract import sdk_contract as sdk
from kobi_cpas_tests.sandbox_fixtures import SANDBOX_SEED, SANDBOX_TOKEN
from kobi_cpas_tests.warehouse_template import seed_work_database
from meta_sandbox import SandboxAdmin, SandboxServer, World

ANATOLIA_BIZ = "1000000000000001"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONTACT = {
    "contact_email": "partnerships@kobi.example",
    "contact_first_name": "Ada",
    "contact_last_name": "Yilmaz",
    "phone_number": "+905550000000",
}


# -- the SDK is test-only and matches the pinned version ----------------------------------------------------


def test_sdk_is_pinned_to_the_clients_api_version() -> None:
    assert sdk.SDK_API_VERSION == DEFAULT_API_VERSION
    pyproject = (Path(kobi_cpas.__file__).parents[1] / "pyproject.toml").read_text()
    assert f'"facebook-business=={DEFAULT_API_VERSION.removeprefix("v").split(".")[0]}.' in pyproject


def test_kobi_cpas_never_imports_the_sdk() -> None:
    package = Path(kobi_cpas.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(package)}: {n}" for n in names if n.split(".")[0] == "facebook_business"
            ]
    assert offenders == []
    code = (
        "import sys, kobi_cpas.definitions, meta_sandbox, meta_sandbox.server;"
        "print(any(m.split('.')[0] == 'facebook_business' for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"


def test_every_sandbox_graph_route_is_mapped_or_excepted() -> None:
    from meta_sandbox.server import default_router

    routes = {n for n, r in default_router().by_name.items() if r.family != "admin"}
    assert routes - set(sdk.ROUTES) - set(sdk.NO_SDK_ROUTE) == set()
    assert set(sdk.ROUTES) & set(sdk.NO_SDK_ROUTE) == set()
    for name, call in sdk.ROUTES.items():  # each mapping names a real SDK method
        assert sdk.sdk_request(call) is not None, name


# -- the checker can fail -------------------------------------------------------------------------------------


def test_checker_reports_planted_bogus_fields_params_and_enums() -> None:
    assert sdk.check_call("feed_upload.errors", "GET", ["fields", "error_priority"], "id,summary") == []
    assert sdk.check_call(
        "feed_upload.errors", "GET", ["fields"], "id,row_number,samples{row_number,bogus}"
    ) == [
        "feed_upload.errors (ProductFeedUpload.get_errors): field ProductFeedUploadError.row_number",
        "feed_upload.errors (ProductFeedUpload.get_errors): field ProductFeedUploadErrorSample.bogus",
    ]
    assert sdk.check_call("cpas.catalog.agencies.list", "GET", ["fields"], "id,permitted_tasks") == [
        "cpas.catalog.agencies.list (ProductCatalog.get_agencies): field Business.permitted_tasks"
    ]
    assert sdk.check_call("catalog.product_feeds.create", "POST", ["name", "bogus_param"], None) == [
        "catalog.product_feeds.create (ProductCatalog.create_product_feed): param bogus_param"
    ]
    assert sdk.check_call(
        "feed_upload.errors", "GET", ["error_priority"], None, {"error_priority": "URGENT"}
    ) == ["feed_upload.errors (ProductFeedUpload.get_errors): error_priority=URGENT"]
    assert sdk.check_call("no.such.route", "GET", [], None) != []
    # an edge the SDK has no method for, whose object it defines: its fields are still checked
    route = "cpas.ad_account.partner_businesses"
    assert sdk.check_call(route, "GET", ["fields"], "dedicated_partner_business_info{id,name}") == []
    assert sdk.check_call(
        route, "GET", ["fields"], "dedicated_partner_business_info{id,bogus},ad_accounts"
    ) == [
        f"{route}: field Business.bogus",
        f"{route}: field CollaborativeAdsPartnerBusinesses.ad_accounts",
    ]
    assert sdk.check_served(route, "dedicated_partner_business_info{id,name},bogus") == [
        f"{route} served CollaborativeAdsPartnerBusinesses.bogus"
    ]
    assert sdk.check_served("feed_upload.errors", "id,row_number,column_number,samples{row_number}") == []
    assert sdk.check_served("feed_upload.errors", "id,error_code") == [
        "feed_upload.errors served ProductFeedUploadError.error_code"
    ]
    assert sdk.check_get_fields("catalog.products", "GET", None) == [
        "catalog.products: GET without fields gets only ProductItem's default fields (often just the id)"
    ]
    assert sdk.check_get_fields("product_item.get", "GET", "") != []
    assert sdk.check_get_fields("cpas.directory", "GET", None) != []  # no SDK class, no exception
    assert sdk.check_get_fields("catalog.products", "GET", "id,errors") == []
    assert sdk.check_get_fields("catalog.product_feeds.create", "POST", None) == []
    assert sdk.check_get_fields("catalog.check_batch_request_status", "GET", None) == []  # excepted
    assert "ACTIVE" in sdk.enum_values("Campaign", "EffectiveStatus")
    assert "ADSET_PAUSED" not in sdk.enum_values("Campaign", "EffectiveStatus")


def test_fields_parser_reads_nested_and_modifier_forms() -> None:
    sels = sdk.parse_fields("a,b{c,d{e}},f.limit(5){g},h.fields(i)")
    assert [s.name for s in sels] == ["a", "b", "f", "h"]
    assert sels[1].sub and sels[1].sub[1].sub == (sdk.FieldSel("e"),)
    assert sels[2].sub == (sdk.FieldSel("g"),) and sels[3].sub == (sdk.FieldSel("i"),)
    with pytest.raises(ValueError):
        sdk.parse_fields("a{b")


# -- the enum values the code sends ---------------------------------------------------------------------------


def test_effective_status_filters_use_each_levels_values() -> None:
    from kobi_cpas.meta import statuses

    for level, cls in (("campaign", "Campaign"), ("adset", "AdSet"), ("ad", "Ad")):
        allowed = sdk.enum_values(cls, "EffectiveStatus")
        assert set(statuses.effective_statuses(level)) == allowed, level
        assert set(statuses.effective_statuses(level, deleted=False)) == allowed - {"DELETED"}, level


def test_sent_enum_values_are_the_sdks() -> None:
    from kobi_cpas.cpas import qc, segments
    from kobi_cpas.diagnostics.dictionary import PRIORITIES
    from kobi_cpas.sync import methods

    assert set(segments.SHARE_TASKS) <= sdk.enum_values("ProductCatalog", "PermittedTasks")
    assert set(segments.COLLAB_TERMS) <= sdk.enum_values("ProductCatalog", "EnabledCollabTerms")
    objectives = sdk.enum_values("Campaign", "Objective")
    assert {qc.CATALOG_OBJECTIVE, qc.LEGACY_CATALOG_OBJECTIVE} <= objectives
    errors = sdk.ROUTES["feed_upload.errors"]
    assert set(PRIORITIES) <= (sdk.param_enum(errors, "error_priority") or set())
    batch = sdk.ROUTES["catalog.items_batch"]
    source = Path(methods.__file__).read_text()
    # The SDK types item_type as a plain string and each request as a free-form map: the values sent are the
    # ones Meta's Batch API page documents.
    assert sdk.param_types(batch)["item_type"] == "string" and sdk.param_types(batch)["requests"] == "map"
    assert set(re.findall(r'"item_type":\s*"(\w+)"', source)) == {"PRODUCT_ITEM"}
    sent = set(re.findall(r"'method': '(\w+)'", methods.batch_requests_sql(10)))
    assert sent and sent <= {"CREATE", "UPDATE", "DELETE"}


# -- the client's calls and the sandbox's answers, from real flows --------------------------------------------


def _feed(path: Path, n: int, seed: int, blank_category: int = 0, price: str = "1234.50 TRY") -> None:
    from kobi_cpas.feeds.generator import generate_feed

    generate_feed(path, n, seed=seed)
    with path.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    for line in lines[:blank_category]:
        line["google_product_category"] = ""
    for line in lines[: max(1, n // 4)]:
        line["price"] = price  # a change for the delta syncs
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)


def _sync_flows(client: MetaGraphClient, tmp: Path) -> None:
    from kobi_cpas.diagnostics import poll_catalog
    from kobi_cpas.diagnostics.after_sync import fatal_errors_for_sync
    from kobi_cpas.sync.methods import SyncContext, run_batch, run_replace, run_update
    from kobi_cpas.sync.snapshot_step import take_snapshot

    feed = tmp / "feed.csv"
    _feed(feed, 24, seed=7, blank_category=3)  # Meta warns: the upload has errors to read
    demo = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    tenant_doc = demo["tenants"][0]
    tenant_doc["feed"] = {"source": str(feed), "format": "csv"}
    (tmp / "tenants.yaml").write_text(yaml.safe_dump({"tenants": [tenant_doc]}))
    registry = load_registry(tmp / "tenants.yaml")
    tenant = registry.tenants[0]
    wh = Warehouse(seed_work_database(tmp / "k.duckdb"), schema=SCHEMA)
    ctx = SyncContext(tenant=tenant, client=client, warehouse=wh, workdir=tmp / "w", poll_interval=0)
    for step, run in ((0, run_replace), (1, run_update), (2, run_batch)):
        if step:
            _feed(feed, 24, seed=7, blank_category=3, price=f"{1000 + step}.50 TRY")
        with wh.connect() as con:
            assert take_snapshot(con, registry=registry, tenant=tenant, workdir=tmp / "w").status == "ok"
        for record in run(ctx):
            with wh.connect() as con:
                fatal_errors_for_sync(client, con, tenant.tenant_id, tenant.catalog_id, record)
    assert poll_catalog(client, wh, tenant.tenant_id, tenant.catalog_id).ok
    # The lookup for item errors Meta reports without a retailer_id (Meta's samples have none).
    from kobi_cpas.diagnostics.item_ids import RetailerIdLookup

    some = next(client.paginate(f"{tenant.catalog_id}/products", {"fields": "id,retailer_id", "limit": 1}))
    assert RetailerIdLookup(client)(some["id"]) == some["retailer_id"]


def _cpas_flows(client: MetaGraphClient, admin: SandboxAdmin, world: World, url: str) -> None:
    from kobi_cpas.cpas import (
        DeclaredProductSet,
        TemplateOptions,
        apply_product_set_actions,
        build_campaign_plan,
        collaboration_request_rows,
        create_campaign,
        directory_rows,
        find_or_create_segment,
        manifest_rows,
        plan_product_sets,
        product_set_targets,
        read_existing_product_sets,
        read_segment_shares,
        reconcile_partnership,
        send_collaboration_request,
        share_segment,
        unshare_segment,
    )
    from kobi_cpas.cpas.accounts import read_dedicated_accounts

    registry = load_registry(DEFAULT_REGISTRY).registry
    anatolia, bosphorus = registry.tenant("anatolia_home"), registry.tenant("bosphorus_outdoor")
    for tenant in registry.tenants:
        dedicated = read_dedicated_accounts(client, tenant.business_id)
        for retailer in tenant.cpas_retailers:
            reconcile_partnership(client, tenant, retailer, now=NOW, dedicated_accounts=dedicated)

    # A retailer's segment: create, share, read, unshare.
    from kobi_cpas_tests.test_cpas_segments import TRENDYOL_BIZ, TRENDYOL_PARENT

    seg, _ = find_or_create_segment(
        client,
        business_id=TRENDYOL_BIZ,
        parent_catalog_id=TRENDYOL_PARENT,
        name="Kobi CPAS | anatolia_home | trendyol | contract",
        filter={"brand": {"i_contains": "anatolia"}},
    )
    share_segment(
        client,
        seg,
        ANATOLIA_BIZ,
        ["ADVERTISE"],
        {"campaign_source": "facebook", "campaign_medium": "cpas"},
        ["ENFORCE_CREATE_NEW_AD_ACCOUNT"],
    )
    read_segment_shares(client, seg)
    unshare_segment(client, seg, ANATOLIA_BIZ)

    # Product sets of a brand catalog and of its retailer segment.
    SandboxAdmin(url).cpas.load_items(
        bosphorus.catalog_id,
        [{"id": f"J{i}", "title": "Trail Jacket", "availability": "in stock"} for i in range(6)],
    )
    declared = [
        DeclaredProductSet(
            name="Jackets",
            filter={"title": {"i_contains": "jacket"}},
            metadata={"cover_image_url": "https://cdn.example/j.jpg", "description": "Our jackets"},
        ),
        DeclaredProductSet(
            name="Trendyol in stock", filter={"availability": {"eq": "in stock"}}, target="trendyol"
        ),
    ]
    targets = product_set_targets(bosphorus)
    for sets in (declared, declared[:1]):  # create, then delete the one no longer declared
        actions = plan_product_sets(sets, read_existing_product_sets(client, targets), targets=targets)
        apply_product_set_actions(client, actions)

    # Campaign template, QC manifest, account usage (through reconcile above).
    trendyol = anatolia.retailer("trendyol")
    create_campaign(client, build_campaign_plan(anatolia, trendyol, TemplateOptions(page_id="555")))
    manifest_rows(client, anatolia, trendyol)

    # Directory, suggested partners, collaboration requests.
    directory_rows(client, registry.tenants, now=NOW)
    n11 = next(m.business_id for m in world.collab_merchants.values() if m.retailer == "n11")
    send_collaboration_request(
        client, bosphorus, receiver_business_id=n11, brands=["Bosphorus Outdoor"], **CONTACT
    )
    collaboration_request_rows(client, bosphorus)


def _insights_flows(client: MetaGraphClient, admin: SandboxAdmin) -> None:
    from kobi_cpas.insights.pull import account_info, pull_account_days

    act = "act_4000000000000001"
    account_info(client, act)
    today = admin.now().astimezone(ZoneInfo("Europe/Istanbul")).date()
    report = pull_account_days(
        duckdb_client := client,
        duckdb.connect(),
        tenant_id="anatolia_home",
        retailer="trendyol",
        ad_account_id=act,
        days=[today - timedelta(days=2)],
        sleep=lambda s: None,
        poll_interval=0.01,
        page_limit=50,
    )
    assert report.complete and duckdb_client is client


@pytest.fixture(scope="module")
def flow_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Every Graph call of the flows above, from the sandbox's request log."""
    world = World.from_registry(load_registry(DEFAULT_REGISTRY), seed=SANDBOX_SEED)
    with SandboxServer(world) as server:
        admin = SandboxAdmin(server.url)
        admin.freeze_clock(True)
        client = MetaGraphClient(
            base_url=server.url,
            api_version=DEFAULT_API_VERSION,
            access_token=SANDBOX_TOKEN,
            timeout=10.0,
            sleep=lambda s: None,
            rng=random.Random(0),
        )
        from kobi_cpas.catalogs.reads import read_catalog

        for tenant in load_registry(DEFAULT_REGISTRY).registry.tenants:
            read_catalog(client, tenant.tenant_id, tenant.catalog_id, NOW)
        _sync_flows(client, tmp_path_factory.mktemp("contract"))
        _cpas_flows(client, admin, world, server.url)
        _insights_flows(client, admin)
        yield admin.requests()
        client.close()
        admin.close()


def test_flows_cover_every_area(flow_log: list[dict[str, Any]]) -> None:
    routes = {e["route"] for e in flow_log}
    for needed in (
        "catalog.get",
        "catalog.product_feeds.create",
        "product_feed.uploads.create",
        "feed_upload.errors",
        "catalog.items_batch",
        "catalog.check_batch_request_status",
        "catalog.products",
        "catalog.diagnostics",
        "cpas.catalog.product_sets.create",
        "cpas.business.owned_product_catalogs.create",
        "cpas.catalog.agencies.share",
        "cpas.catalog.agencies.list",
        "cpas.catalog.share_settings",
        "cpas.business.collaboration_requests.list",
        "cpas.business.setup_config",
        "cpas.ad_account.partner_businesses",
        "ad_account.campaigns.create",
        "ad_account.campaigns.list",
        "ad_account.adsets.list",
        "ad_account.ads.list",
        "ad_account.insights.async",
        "report_run.insights",
    ):
        assert needed in routes, needed
    assert all("access_token" not in e["params"] and SANDBOX_TOKEN not in json.dumps(e) for e in flow_log)


def test_every_field_and_param_the_client_sends_is_in_the_sdk(flow_log: list[dict[str, Any]]) -> None:
    problems = sorted(
        {
            p
            for e in flow_log
            if e["route"]
            for p in sdk.check_call(e["route"], e["method"], e["params"], e["fields"], e["query"])
        }
    )
    assert problems == [], "\n".join(problems)


def test_every_get_names_its_fields_or_has_a_reason_not_to(flow_log: list[dict[str, Any]]) -> None:
    problems = sorted(
        {
            p
            for e in flow_log
            if e["route"]
            for p in sdk.check_get_fields(e["route"], e["method"], e["fields"])
        }
    )
    assert problems == [], "\n".join(problems)
    # Every exception is still needed: a flow really reads that route without fields.
    bare = {e["route"] for e in flow_log if e["method"] == "GET" and not e["fields"]}
    assert set(sdk.GET_WITHOUT_FIELDS) <= bare, set(sdk.GET_WITHOUT_FIELDS) - bare


def test_every_field_the_sandbox_serves_is_in_the_sdk(flow_log: list[dict[str, Any]]) -> None:
    problems = sorted(
        {p for e in flow_log if e["route"] for p in sdk.check_served(e["route"], e.get("served"))}
    )
    assert problems == [], "\n".join(problems)
