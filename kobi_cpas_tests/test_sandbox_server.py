"""Sandbox server: routing, field selection, paging, admin API, request log, extension and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox import GraphError, Router, SandboxAdmin, SandboxServer, World, default_router
from meta_sandbox.fields import FieldSpec, parse_fields, select_fields

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

CATALOG = "2000000000000001"
RETAILER_BUSINESS = "9000000000000001"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _get(sandbox: SandboxHandle, token: str, path: str, **params: Any) -> requests.Response:
    return requests.get(
        f"{sandbox.graph_url}/{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )


# -- fields ------------------------------------------------------------------------------------------


def test_parse_fields_forms() -> None:
    assert parse_fields(None) is None and parse_fields("  ") is None
    specs = parse_fields(
        "id, name,commerce_merchant_settings.fields(id,cta),business{id},products.limit(5){id}"
    )
    assert specs is not None
    assert [s.name for s in specs] == ["id", "name", "commerce_merchant_settings", "business", "products"]
    assert [s.name for s in specs[2].subfields or []] == ["id", "cta"]
    assert [s.name for s in specs[3].subfields or []] == ["id"]
    assert specs[4].modifiers == {"limit": "5"} and [s.name for s in specs[4].subfields or []] == ["id"]


@pytest.mark.parametrize("bad", ["id,,name", "a{b", "a.fields(b", "a b", "a.fields b"])
def test_parse_fields_syntax_errors(bad: str) -> None:
    with pytest.raises(GraphError) as info:
        parse_fields(bad)
    assert info.value.code == 100 and "Syntax error" in info.value.message


def test_select_fields() -> None:
    available = {
        "id": "1",
        "name": "n",
        "nested": {"id": "2", "name": "m", "x": 1},
        "none": None,
        "lazy": lambda: 5,
    }
    assert select_fields(available, None, node_type="T") == {"id": "1", "name": "n"}
    got = select_fields(available, parse_fields("nested,none,lazy"), node_type="T")
    assert got == {"nested": {"id": "2", "name": "m"}, "lazy": 5, "id": "1"}
    assert select_fields(available, [FieldSpec("nested", [FieldSpec("x")])], node_type="T")["nested"] == {
        "x": 1
    }
    with pytest.raises(GraphError, match=r"nonexisting field \(y\) on node type \(nested\)"):
        select_fields(available, parse_fields("nested{y}"), node_type="T")


# -- routing and errors ------------------------------------------------------------------------------


def test_routing_errors(sandbox: SandboxHandle, sandbox_token: str) -> None:
    resp = _get(sandbox, sandbox_token, f"{CATALOG}/nope")
    assert resp.status_code == 400
    assert (
        resp.json()["error"]["message"]
        == "(#100) Tried accessing nonexisting field (nope) on node type (ProductCatalog)"
    )
    resp = _get(sandbox, sandbox_token, f"{CATALOG}/a/b")
    assert resp.json()["error"]["code"] == 2500
    resp = requests.get(
        f"{sandbox.url}/vX/{CATALOG}", headers={"Authorization": f"Bearer {sandbox_token}"}, timeout=5
    )
    assert resp.json()["error"]["code"] == 2500
    resp = _get(sandbox, sandbox_token, "999")
    err = resp.json()["error"]
    assert (err["code"], err["error_subcode"], err["type"]) == (100, 33, "GraphMethodException")
    # Any vN.M version Meta still serves is accepted; a retired one answers Meta's error 2635.
    resp = requests.get(
        f"{sandbox.url}/v25.0/{CATALOG}", headers={"Authorization": f"Bearer {sandbox_token}"}, timeout=5
    )
    assert resp.status_code == 200 and resp.headers["facebook-api-version"] == "v25.0"
    resp = requests.get(
        f"{sandbox.url}/v19.0/{CATALOG}", headers={"Authorization": f"Bearer {sandbox_token}"}, timeout=5
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 2635


def test_token_checks(sandbox: SandboxHandle, sandbox_token: str) -> None:
    assert _get(sandbox, "EXPIRED-abc", CATALOG).json()["error"]["error_subcode"] == 463
    resp = _get(sandbox, "NOPERM-abc", CATALOG)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == 200
    resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", params={"access_token": sandbox_token}, timeout=5)
    assert resp.status_code == 200  # Meta also accepts the token as a parameter
    resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", timeout=5)
    assert resp.status_code == 400 and "WWW-Authenticate" in resp.headers


def test_paging_params(sandbox: SandboxHandle, sandbox_token: str) -> None:
    path = f"{RETAILER_BUSINESS}/owned_product_catalogs"
    first = _get(sandbox, sandbox_token, path, limit=2, fields="id,is_catalog_segment").json()
    assert len(first["data"]) == 2 and set(first["data"][0]) == {"id", "is_catalog_segment"}
    assert "previous" not in first["paging"]
    second = requests.get(
        first["paging"]["next"], headers={"Authorization": f"Bearer {sandbox_token}"}, timeout=5
    ).json()
    assert "fields=id%2Cis_catalog_segment" in first["paging"]["next"]
    assert len(second["data"]) == 2 and "next" not in second["paging"]
    assert second["paging"]["cursors"]["before"] == first["paging"]["cursors"]["after"]
    back = _get(
        sandbox,
        sandbox_token,
        path,
        limit=2,
        fields="id,is_catalog_segment",
        before=second["paging"]["cursors"]["before"],
    ).json()
    assert back["data"] == first["data"]
    assert _get(sandbox, sandbox_token, path, limit=0).json()["error"]["code"] == 100
    assert _get(sandbox, sandbox_token, path, after="garbage!").json()["error"]["code"] == 100
    assert _get(sandbox, sandbox_token, "2000000000000003/external_event_sources").json() == {"data": []}


# -- admin and request log ---------------------------------------------------------------------------


def test_admin_state_clock_and_log(sandbox: SandboxHandle, sandbox_token: str) -> None:
    admin = sandbox.admin
    assert admin.health()["ok"] is True
    summary = admin.state()
    assert summary["seed"] == 42 and summary["counts"]["catalogs"] == len(sandbox.world.catalogs)
    catalogs = admin.state("catalogs")
    assert catalogs[CATALOG]["product_count"] == 0
    assert admin.state("ad_accounts", "act_4000000000000001")["currency"] == "TRY"
    with pytest.raises(Exception, match="404"):
        admin.state("nope")
    before = admin.now()
    after = admin.advance_clock(125)
    assert (after - before).total_seconds() >= 125
    _get(sandbox, sandbox_token, CATALOG, fields="id")
    (entry,) = admin.requests(route="catalog.get")
    assert entry["method"] == "GET" and entry["path"] == f"/v26.0/{CATALOG}" and entry["status"] == 200
    assert entry["query"] == {"fields": "id"}
    assert sandbox_token not in json.dumps(admin.requests())
    assert admin.count_requests(path_regex="external") == 0
    admin.clear_requests()
    assert admin.requests() == []


def test_reset_restores_world_and_config(sandbox: SandboxHandle, sandbox_token: str) -> None:
    sandbox.world.catalogs[CATALOG].name = "mutated"
    sandbox.admin.configure(app_secret="xyz-secret", require_appsecret_proof=True)
    assert _get(sandbox, sandbox_token, CATALOG).status_code == 400
    sandbox.admin.reset()
    resp = _get(sandbox, sandbox_token, CATALOG)
    assert resp.status_code == 200 and resp.json()["name"] != "mutated"


# -- extension: a later issue's route module ---------------------------------------------------------


def test_later_issue_adds_a_route_module() -> None:
    def register(router: Router) -> None:
        @router.edge("catalog", "product_feeds", name="catalog.product_feeds", methods=("GET", "POST"))
        def feeds(ctx: Any) -> dict:
            if ctx.method == "POST":
                feed_id = ctx.world.new_id()
                ctx.node.feed_ids.append(feed_id)
                return {"id": feed_id}
            return ctx.paginate([{"id": f} for f in ctx.node.feed_ids])

        @router.path("/catalog_all_errors", name="catalog_all_errors")
        def all_errors(ctx: Any) -> dict:
            from meta_sandbox import load_fixture

            return load_fixture("catalog_all_errors")

    module = types.ModuleType("routes_feeds_demo")
    module.register = register  # type: ignore[attr-defined]
    world = World.from_registry(load_registry(DEFAULT_REGISTRY))
    with SandboxServer(world, router=default_router([module])) as server:
        headers = {"Authorization": "Bearer test-token-abcdef"}
        base = f"{server.url}/v26.0"
        created = requests.post(
            f"{base}/{CATALOG}/product_feeds", data={"name": "f"}, headers=headers, timeout=5
        )
        assert created.status_code == 200
        listed = requests.get(f"{base}/{CATALOG}/product_feeds", headers=headers, timeout=5).json()
        assert listed["data"] == [created.json()]
        got = requests.get(
            f"{base}/{CATALOG}", params={"fields": "feed_count"}, headers=headers, timeout=5
        ).json()
        assert got["feed_count"] == 1
        assert "all" in requests.get(f"{base}/catalog_all_errors", headers=headers, timeout=5).json()
        assert SandboxAdmin(server.url).requests(route="catalog.product_feeds")[0]["method"] == "POST"
    with pytest.raises(ValueError, match="twice"):
        default_router([module, module])


# -- the CLI -------------------------------------------------------------------------------------------


def test_cli_runs_logs_requests_and_stops_on_sigterm(sandbox_token: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kobi_cpas.devenv.cli",
            "sandbox",
            "--port",
            "0",
            "--registry",
            str(DEFAULT_REGISTRY),
            "--seed",
            "42",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert "Meta sandbox on http://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        assert SandboxAdmin(url).health()["seed"] == 42
        resp = requests.get(
            f"{url}/v26.0/{CATALOG}", headers={"Authorization": f"Bearer {sandbox_token}"}, timeout=5
        )
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0
    assert f"GET /v26.0/{CATALOG} -> 200 (catalog.get)" in err
    assert sandbox_token not in err and "Authorization" not in err
