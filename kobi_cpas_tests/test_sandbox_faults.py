"""Fault injection: determinism by seed, scripts, matching, validation and Meta-shaped answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import requests

from kobi_cpas.meta import MetaAPIError, MetaGraphClient
from meta_sandbox import FaultInjector, SandboxAdminError
from meta_sandbox.faults import FaultSpecError, fault_error

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

CATALOG = "2000000000000001"


def _outcomes(client: MetaGraphClient, n: int = 30) -> str:
    out = []
    for _ in range(n):
        try:
            client.get(CATALOG)
            out.append(".")
        except MetaAPIError:
            out.append("F")
    return "".join(out)


def test_rate_faults_are_deterministic_for_a_seed(
    make_meta_client: Callable[..., MetaGraphClient], sandbox: SandboxHandle
) -> None:
    client = make_meta_client(max_retries=0)
    sandbox.admin.add_fault("http_500", route="catalog.get", rate=0.3)
    first = _outcomes(client)
    logged = [e["fault"] for e in sandbox.admin.requests()]
    assert 0 < first.count("F") < len(first)
    assert logged == ["http_500" if c == "F" else None for c in first]

    sandbox.admin.reset()
    sandbox.admin.add_fault("http_500", route="catalog.get", rate=0.3)
    assert _outcomes(client) == first

    sandbox.admin.reset()
    sandbox.admin.add_fault("http_500", route="catalog.get", rate=0.3, seed=12345)
    assert _outcomes(client) != first


def test_injector_rate_unit_determinism() -> None:
    def run(seed: int) -> list[bool]:
        inj = FaultInjector(seed)
        inj.add({"kind": "http_503", "rate": 0.5})
        return [inj.pick("GET", "/v26.0/1", None) is not None for _ in range(64)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_script_runs_in_order_then_normal(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    sandbox.admin.script_faults(
        [{"kind": "http_503"}, {"kind": "malformed_json"}, {"kind": "throttle", "code": 613}],
        route="catalog.get",
    )
    assert meta_client.get(CATALOG)["id"] == CATALOG
    entries = sandbox.admin.requests()
    assert [(e["fault"], e["status"], e["error_code"]) for e in entries] == [
        ("http_503", 503, 2),
        ("malformed_json", 200, None),
        ("throttle", 400, 613),
        (None, 200, None),
    ]
    (rule,) = sandbox.admin.faults()
    assert rule["spent"] and rule["fired"] == 3


def test_matching_by_method_and_path_regex(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    sandbox.admin.add_fault("http_500", path_regex=r"/external_event_sources$", method="POST", rate=1.0)
    rid = sandbox.admin.add_fault("bad_request", path_regex=r"/owned_product_catalogs$", rate=1.0)
    assert meta_client.get(f"{CATALOG}/external_event_sources")["data"]
    with pytest.raises(MetaAPIError):
        meta_client.get("9000000000000001/owned_product_catalogs")
    sandbox.admin.remove_fault(rid)
    assert meta_client.get("9000000000000001/owned_product_catalogs")["data"]
    sandbox.admin.clear_faults()
    assert sandbox.admin.faults() == []


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "nope"},
        {"kind": "http_500", "rate": 1.5},
        {"kind": "http_500", "rate": 0.5, "times": 2},
        {"kind": "throttle", "code": 12345},
        {"kind": "error"},
        {"kind": "http_500", "path_regex": "("},
        {"script": []},
    ],
)
def test_invalid_specs_are_refused(sandbox: SandboxHandle, spec: dict) -> None:
    resp = requests.post(f"{sandbox.url}/__sandbox/faults", json=spec, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]
    with pytest.raises(FaultSpecError):
        FaultInjector().add(spec)


def test_admin_errors_are_raised(sandbox: SandboxHandle) -> None:
    with pytest.raises(SandboxAdminError, match="unknown fault kind"):
        sandbox.admin.add_fault("nope")


def test_throttle_answer_shape_and_headers(sandbox: SandboxHandle, sandbox_token: str) -> None:
    sandbox.admin.add_fault(
        "throttle", route="catalog.get", times=1, code=80009, estimated_time_to_regain_access=7
    )
    sandbox.admin.add_fault("throttle", route="catalog.get", times=1, code=4, subcode=1504022)
    headers = {"Authorization": f"Bearer {sandbox_token}"}
    resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", headers=headers, timeout=5)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == 80009 and err["type"] == "OAuthException" and err["is_transient"] is True
    assert "too many calls to this Catalog account" in err["message"] and err["fbtrace_id"]
    assert json.loads(resp.headers["X-App-Usage"])["call_count"] == 100
    buc = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    (entry,) = buc["1000000000000001"]
    assert entry["type"] == "catalog_management"
    assert entry["estimated_time_to_regain_access"] == 7 and entry["total_time"] == 100
    resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", headers=headers, timeout=5)
    assert resp.status_code == 403
    assert resp.json()["error"]["error_subcode"] == 1504022


def test_normal_usage_headers_are_low(sandbox: SandboxHandle, sandbox_token: str) -> None:
    headers = {"Authorization": f"Bearer {sandbox_token}"}
    for path, family in ((CATALOG, "catalog_management"), ("act_4000000000000001", "ads_management")):
        resp = requests.get(f"{sandbox.graph_url}/{path}", headers=headers, timeout=5)
        assert resp.status_code == 200
        app = json.loads(resp.headers["X-App-Usage"])
        assert all(0 < v < 20 for v in app.values())
        (entries,) = json.loads(resp.headers["X-Business-Use-Case-Usage"]).values()
        assert entries[0]["type"] == family and entries[0]["call_count"] < 20
    assert json.loads(resp.headers["X-Ad-Account-Usage"])["acc_id_util_pct"] < 20


def test_high_usage_and_slow(sandbox: SandboxHandle, sandbox_token: str) -> None:
    headers = {"Authorization": f"Bearer {sandbox_token}"}
    sandbox.admin.script_faults(
        [{"kind": "high_usage", "pct": 95}, {"kind": "slow", "seconds": 0.3}], route="catalog.get"
    )
    resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", headers=headers, timeout=5)
    assert resp.status_code == 200 and resp.json()["id"] == CATALOG
    assert json.loads(resp.headers["X-App-Usage"])["total_cputime"] == 95
    for _ in range(2):  # the slow call, then a normal one: the script is used up
        resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", headers=headers, timeout=5)
        assert resp.status_code == 200 and resp.json()["id"] == CATALOG
    # The sandbox records which fault each call got (how long a delay lasts is the machine's business).
    assert [r["fault"] for r in sandbox.admin.requests(route="catalog.get")] == ["high_usage", "slow", None]


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ({"kind": "http_500"}, 1, 500),
        ({"kind": "http_500", "code": 2}, 2, 500),
        ({"kind": "http_503"}, 2, 503),
        ({"kind": "auth_error"}, 190, 400),
        ({"kind": "permission_error"}, 200, 403),
        ({"kind": "bad_request"}, 100, 400),
        ({"kind": "error", "code": 100, "subcode": 1487534, "status": 400}, 100, 400),
    ],
)
def test_fault_error_bodies(fault: dict, code: int, status: int) -> None:
    err = fault_error(fault)
    assert err is not None
    body = err.body("trace")["error"]
    assert (body["code"], err.status) == (code, status)
    assert {"message", "type", "code", "is_transient", "fbtrace_id"} <= set(body)
