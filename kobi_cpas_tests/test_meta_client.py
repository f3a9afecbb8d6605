"""MetaGraphClient against the real sandbox over HTTP: paging, retries, pacing, fail-fast errors, secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from kobi_cpas.meta import (
    MetaAPIError,
    MetaAuthError,
    MetaConnectionError,
    MetaGraphClient,
    MetaInvalidRequestError,
    MetaMalformedResponseError,
    MetaPagingError,
    MetaPermissionError,
    MetaRetryBudgetExceeded,
    MetaSegmentNotCompliantError,
    MetaThrottledError,
    MetaTooMuchDataError,
    MetaTransientError,
    strip_query_params,
)
from kobi_cpas.meta.client import REQUEST_LOGGER
from kobi_cpas.meta.errors import AUTH_HINT, INVALID_REQUEST_HINT, SEGMENT_NOT_COMPLIANT_HINT

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

CATALOG = "2000000000000001"  # anatolia_home: first tenant, ONSITE_CHECKOUT, has a pixel
CATALOG_2 = "2000000000000002"  # bosphorus_outdoor: OFFSITE_LINK
CATALOG_NO_PIXEL = "2000000000000003"  # cappadocia_ceramics
RETAILER_BUSINESS = "9000000000000001"  # trendyol: parent catalog + 3 segments
AD_ACCOUNT = "act_4000000000000001"

ClientFactory = Callable[..., MetaGraphClient]


def graph_calls(sandbox: SandboxHandle) -> list[dict]:
    return sandbox.admin.requests()


# -- reads and shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields", ["commerce_merchant_settings.fields(id,cta)", "commerce_merchant_settings{id,cta}"]
)
def test_catalog_commerce_merchant_settings_has_reference_shape(
    meta_client: MetaGraphClient, fields: str
) -> None:
    from meta_sandbox import load_fixture

    reference = load_fixture("commerce_merchant_settings")
    got = meta_client.get(CATALOG, {"fields": fields})
    assert list(got) == list(reference)  # same keys, same order: commerce_merchant_settings, then id
    assert list(got["commerce_merchant_settings"]) == list(reference["commerce_merchant_settings"])
    assert got["id"] == CATALOG
    assert got["commerce_merchant_settings"]["cta"] == reference["commerce_merchant_settings"]["cta"]
    assert got["commerce_merchant_settings"]["id"].isdigit()
    other = meta_client.get(CATALOG_2, {"fields": fields})
    assert other["commerce_merchant_settings"]["cta"] == "OFFSITE_LINK"


def test_catalog_fields(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    got = meta_client.get(
        CATALOG,
        {
            "fields": [
                "id",
                "name",
                "vertical",
                "product_count",
                "is_catalog_segment",
                "business",
                "feed_count",
            ]
        },
    )
    catalog = sandbox.world.catalogs[CATALOG]
    assert got == {
        "id": CATALOG,
        "name": catalog.name,
        "vertical": "commerce",
        "product_count": 0,
        "is_catalog_segment": False,
        "business": {"id": "1000000000000001", "name": sandbox.world.businesses["1000000000000001"].name},
        "feed_count": 0,
    }
    assert meta_client.get(CATALOG) == {"id": CATALOG, "name": catalog.name}  # Meta's defaults


def test_segment_and_ad_account(meta_client: MetaGraphClient) -> None:
    seg = meta_client.get("3000000000000001", {"fields": "id,name,is_catalog_segment,product_count"})
    assert seg["is_catalog_segment"] is True
    assert seg["name"] == "Trendyol x Anatolia Home (home textiles)"
    assert seg["product_count"] > 0
    acct = meta_client.get(AD_ACCOUNT, {"fields": "id,account_id,name,currency,timezone_name,account_status"})
    assert acct["id"] == AD_ACCOUNT and acct["account_id"] == "4000000000000001"
    assert (acct["currency"], acct["timezone_name"], acct["account_status"]) == ("TRY", "Europe/Istanbul", 1)


def test_external_event_sources(meta_client: MetaGraphClient) -> None:
    pixels = list(meta_client.paginate(f"{CATALOG}/external_event_sources"))
    assert len(pixels) == 1
    assert pixels[0]["source_type"] == "pixel" and pixels[0]["id"].isdigit() and pixels[0]["name"]
    assert list(meta_client.paginate(f"{CATALOG_NO_PIXEL}/external_event_sources")) == []


def test_unknown_id_is_error_100(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    with pytest.raises(MetaInvalidRequestError) as info:
        meta_client.get("1234567890")
    exc = info.value
    assert (exc.code, exc.error_subcode, exc.http_status) == (100, 33, 400)
    assert "Object with ID '1234567890' does not exist" in exc.message
    assert INVALID_REQUEST_HINT in exc.hint
    assert len(graph_calls(sandbox)) == 1


def test_unknown_field_is_error_100(meta_client: MetaGraphClient) -> None:
    with pytest.raises(
        MetaInvalidRequestError, match=r"nonexisting field \(nope\) on node type \(ProductCatalog\)"
    ):
        meta_client.get(CATALOG, {"fields": "id,nope"})


# -- paging ----------------------------------------------------------------------------------------------


def test_paging_over_several_pages(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    expected = sorted(c.id for c in sandbox.world.catalogs.values() if c.business_id == RETAILER_BUSINESS)
    assert len(expected) == 4
    pages = list(meta_client.pages(f"{RETAILER_BUSINESS}/owned_product_catalogs", {"limit": 1}))
    assert len(pages) == 4
    assert [item["id"] for page in pages for item in page["data"]] == expected
    assert "next" not in pages[-1].get("paging", {})
    items = list(meta_client.paginate(f"{RETAILER_BUSINESS}/owned_product_catalogs", {"limit": 3}))
    assert [i["id"] for i in items] == expected
    calls = graph_calls(sandbox)
    assert len(calls) == 4 + 2
    assert all(c["query"].get("limit") in ("1", "3") for c in calls)


def test_empty_page_with_next_is_not_the_end(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    sandbox.admin.add_fault("empty_page", route="business.owned_product_catalogs", times=2)
    pages = list(meta_client.pages(f"{RETAILER_BUSINESS}/owned_product_catalogs", {"limit": 2}))
    assert [len(p["data"]) for p in pages] == [0, 0, 2, 2]
    ids = [i["id"] for p in pages for i in p["data"]]
    assert len(ids) == 4 and len(set(ids)) == 4


def test_paging_loop_is_bounded(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    sandbox.admin.add_fault("paging_loop", route="business.owned_product_catalogs", rate=1.0)
    seen = []
    with pytest.raises(MetaPagingError, match="repeats a link"):
        for page in meta_client.pages(f"{RETAILER_BUSINESS}/owned_product_catalogs", {"limit": 2}):
            seen.append(page)
    assert len(seen) == 1
    assert len(graph_calls(sandbox)) == 1


def test_paging_loop_on_a_later_page_is_bounded(meta_client: MetaGraphClient, sandbox: SandboxHandle) -> None:
    sandbox.admin.script_faults(
        [{"kind": "high_usage", "pct": 1}, {"kind": "paging_loop"}], route="business.owned_product_catalogs"
    )
    with pytest.raises(MetaPagingError):
        list(meta_client.paginate(f"{RETAILER_BUSINESS}/owned_product_catalogs", {"limit": 1}))
    assert len(graph_calls(sandbox)) == 2


def test_next_links_have_no_token_and_tokens_are_stripped(sandbox: SandboxHandle, sandbox_token: str) -> None:
    import requests

    resp = requests.get(
        f"{sandbox.graph_url}/{RETAILER_BUSINESS}/owned_product_catalogs",
        params={"limit": 1, "access_token": sandbox_token},
        timeout=5,
    )
    assert resp.status_code == 200
    assert sandbox_token not in resp.text
    assert sandbox_token not in json.dumps(sandbox.admin.requests())
    assert "access_token" not in resp.json()["paging"]["next"]
    url = "https://graph.facebook.com/v26.0/1/x?limit=2&access_token=SECRET&after=QVF%3D&appsecret_proof=ab"
    assert strip_query_params(url) == "https://graph.facebook.com/v26.0/1/x?limit=2&after=QVF%3D"


def test_refuses_to_send_the_token_to_another_host(
    meta_client: MetaGraphClient, sandbox: SandboxHandle
) -> None:
    with pytest.raises(MetaPagingError, match="another host"):
        meta_client.get("http://example.invalid/v26.0/1")
    assert graph_calls(sandbox) == []


# -- retries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"),
    [("http_500", {}), ("http_500", {"code": 2}), ("http_503", {}), ("malformed_json", {})],
)
def test_transient_faults_are_retried_until_success(
    meta_client: MetaGraphClient,
    sandbox: SandboxHandle,
    recorded_sleeps: list[float],
    kind: str,
    params: dict,
) -> None:
    sandbox.admin.add_fault(kind, route="catalog.get", times=3, **params)
    assert meta_client.get(CATALOG)["id"] == CATALOG
    calls = graph_calls(sandbox)
    assert [c["fault"] for c in calls] == [kind, kind, kind, None]
    assert len(recorded_sleeps) == 3
    # Jittered exponential backoff: each wait within [d/2, d] of 1, 2, 4 s.
    for wait, d in zip(recorded_sleeps, (1, 2, 4), strict=True):
        assert d / 2 <= wait <= d
    assert meta_client.stats.requests == 4 and meta_client.stats.retries == 3


def test_timeouts_are_retried(make_meta_client: ClientFactory, sandbox: SandboxHandle) -> None:
    client = make_meta_client(timeout=0.5)
    sandbox.admin.add_fault("timeout", route="catalog.get", times=2, seconds=1.5)
    assert client.get(CATALOG)["id"] == CATALOG
    assert len(graph_calls(sandbox)) == 3


def test_retries_stop_at_max_retries(make_meta_client: ClientFactory, sandbox: SandboxHandle) -> None:
    client = make_meta_client(timeout=0.5, max_retries=2)
    sandbox.admin.add_fault("timeout", route="catalog.get", times=5, seconds=1.5)
    with pytest.raises(MetaRetryBudgetExceeded) as info:
        client.get(CATALOG)
    exc = info.value
    assert exc.reason == "max_retries" and exc.attempts == 3
    assert isinstance(exc.last_error, MetaConnectionError) and exc.last_error.timeout
    assert "max_retries=2 reached" in str(exc)
    assert len(graph_calls(sandbox)) == 3


def test_malformed_json_exhausting_retries(
    make_meta_client: ClientFactory, sandbox: SandboxHandle, recorded_sleeps: list[float]
) -> None:
    client = make_meta_client(max_retries=1)
    sandbox.admin.add_fault("malformed_json", route="catalog.get", times=2)
    with pytest.raises(MetaRetryBudgetExceeded) as info:
        client.get(CATALOG)
    assert isinstance(info.value.last_error, MetaMalformedResponseError)
    assert len(recorded_sleeps) == 1


def test_throttle_waits_estimated_time_to_regain_access(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, recorded_sleeps: list[float]
) -> None:
    sandbox.admin.add_fault(
        "throttle", route="catalog.get", times=1, code=80009, estimated_time_to_regain_access=3
    )
    assert meta_client.get(CATALOG)["id"] == CATALOG
    assert len(recorded_sleeps) == 1
    assert 180 <= recorded_sleeps[0] <= 185
    assert meta_client.stats.throttled == 1
    assert len(graph_calls(sandbox)) == 2


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80000, 80004, 80009, 80014])
def test_every_throttle_code_is_retried(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, recorded_sleeps: list[float], code: int
) -> None:
    sandbox.admin.add_fault("throttle", route="catalog.get", times=1, code=code)
    assert meta_client.get(CATALOG)["id"] == CATALOG
    # No estimate in the headers: throttling backs off longer than transient errors (15-30 s first).
    assert len(recorded_sleeps) == 1 and 15 <= recorded_sleeps[0] <= 30


def test_high_usage_paces_the_next_request(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, recorded_sleeps: list[float]
) -> None:
    sandbox.admin.add_fault("high_usage", route="catalog.get", times=1, pct=90)
    meta_client.get(CATALOG)
    assert recorded_sleeps == []
    assert meta_client.last_usage is not None and meta_client.last_usage.max_pct == 90
    meta_client.get(CATALOG)
    # 90 % is 15 points over the 75 % threshold out of 25: 60 % of the 30 s maximum pacing sleep.
    assert recorded_sleeps == [pytest.approx(18.0)]
    assert meta_client.stats.paced == 1
    meta_client.get(CATALOG)  # usage back to normal: no more pacing
    assert len(recorded_sleeps) == 1


def test_wait_beyond_budget_raises_without_sleeping(
    make_meta_client: ClientFactory, sandbox: SandboxHandle, recorded_sleeps: list[float]
) -> None:
    client = make_meta_client(max_total_wait=900)
    sandbox.admin.add_fault(
        "throttle", route="catalog.get", times=1, code=80004, estimated_time_to_regain_access=20
    )
    with pytest.raises(MetaRetryBudgetExceeded) as info:
        client.get(CATALOG)
    assert recorded_sleeps == []
    exc = info.value
    assert exc.reason == "max_total_wait" and exc.waited_seconds == 0
    assert isinstance(exc.last_error, MetaThrottledError) and exc.code == 80004
    assert "would exceed max_total_wait=900 s" in str(exc)
    assert len(graph_calls(sandbox)) == 1


def test_sum_of_waits_is_bounded(
    make_meta_client: ClientFactory, sandbox: SandboxHandle, recorded_sleeps: list[float]
) -> None:
    client = make_meta_client(max_total_wait=250, backoff_base=100, backoff_max=1000)
    sandbox.admin.add_fault("http_500", route="catalog.get", times=10)
    with pytest.raises(MetaRetryBudgetExceeded) as info:
        client.get(CATALOG)
    assert info.value.reason == "max_total_wait"
    assert 0 < sum(recorded_sleeps) <= 250
    assert info.value.waited_seconds == pytest.approx(sum(recorded_sleeps))
    assert isinstance(info.value.last_error, MetaTransientError)


# -- fail fast -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params", "cls", "message", "hint"),
    [
        ("auth_error", {}, MetaAuthError, "Session has expired", AUTH_HINT),
        (
            "permission_error",
            {},
            MetaPermissionError,
            "Requires business_management permission",
            "business_management",
        ),
        (
            "bad_request",
            {"message": "(#100) Param limit must be an integer"},
            MetaInvalidRequestError,
            "Param limit",
            INVALID_REQUEST_HINT,
        ),
        (
            "error",
            {
                "code": 2310068,
                "message": "Cannot create a catalog segment from a non CPAS compliant parent catalog",
            },
            MetaSegmentNotCompliantError,
            "non CPAS compliant",
            SEGMENT_NOT_COMPLIANT_HINT,
        ),
    ],
)
def test_fail_fast_after_one_request(
    meta_client: MetaGraphClient,
    sandbox: SandboxHandle,
    recorded_sleeps: list[float],
    kind: str,
    params: dict,
    cls: type[MetaAPIError],
    message: str,
    hint: str,
) -> None:
    sandbox.admin.add_fault(kind, route="catalog.get", rate=1.0, **params)
    with pytest.raises(cls) as info:
        meta_client.get(CATALOG)
    exc = info.value
    assert message in exc.message and hint in exc.hint
    assert f"Fix: {exc.hint}" in str(exc) and exc.fbtrace_id
    assert len(graph_calls(sandbox)) == 1
    assert recorded_sleeps == []


@pytest.mark.parametrize(
    ("token", "cls", "code", "subcode"),
    [
        ("EXPIRED-token-123456", MetaAuthError, 190, 463),
        ("INVALID-token-123456", MetaAuthError, 190, None),
        ("NOPERM-token-123456", MetaPermissionError, 200, None),
    ],
)
def test_token_problems_fail_fast(
    make_meta_client: ClientFactory,
    sandbox: SandboxHandle,
    token: str,
    cls: type,
    code: int,
    subcode: int | None,
) -> None:
    client = make_meta_client(access_token=token)
    with pytest.raises(cls) as info:
        client.get(CATALOG)
    assert (info.value.code, info.value.error_subcode) == (code, subcode)
    assert len(graph_calls(sandbox)) == 1


def test_missing_token_is_190(sandbox: SandboxHandle) -> None:
    import requests

    resp = requests.get(f"{sandbox.graph_url}/{CATALOG}", timeout=5)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == 190 and err["type"] == "OAuthException"
    assert (
        err["message"] == "An active access token must be used to query information about the current user."
    )


@pytest.mark.parametrize(
    "params",
    [
        {"code": 100, "subcode": 1487534, "message": "(#100) Please reduce the amount of data"},
        {
            "code": 1,
            "status": 500,
            "is_transient": True,
            "message": "Please reduce the amount of data you're asking for, then retry your request",
        },
    ],
)
def test_too_much_data_is_not_retried(
    meta_client: MetaGraphClient, sandbox: SandboxHandle, recorded_sleeps: list[float], params: dict
) -> None:
    sandbox.admin.add_fault("error", route="ad_account.get", rate=1.0, **params)
    with pytest.raises(MetaTooMuchDataError) as info:
        meta_client.get(AD_ACCOUNT)
    assert "split the request" in str(info.value)
    assert len(graph_calls(sandbox)) == 1 and recorded_sleeps == []


# -- secrets ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_request_lines_go_to_their_own_logger_and_the_stats_sum_them_up(
    make_meta_client: ClientFactory, sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    step_log = logging.getLogger("kobi_cpas_tests.step_log")
    client = make_meta_client(max_retries=2, logger=step_log)
    sandbox.admin.add_fault("http_500", route="catalog.get", times=1)
    client.get(CATALOG)  # a 500, retried, then a 200
    client.get(CATALOG)
    per_request = [r.getMessage() for r in caplog.records if r.name == REQUEST_LOGGER]
    assert len(per_request) == 3 and all(
        r.levelno == logging.DEBUG for r in caplog.records if r.name == REQUEST_LOGGER
    )
    assert [m.split(" -> ")[1][:3] for m in per_request] == ["500", "200", "200"]
    # the step's logger gets the retry warning only
    assert [r.levelname for r in caplog.records if r.name == step_log.name] == ["WARNING"]
    stats = client.stats
    assert stats.statuses == {500: 1, 200: 2} and stats.requests == 3
    assert stats.peak_usage_pct > 0 and stats.peak_usage.startswith(f"usage {stats.peak_usage_pct:.0f}% (")
    other = make_meta_client()
    other.get(CATALOG)
    line = stats.summary(other.stats)
    assert line.startswith("Meta: 4 requests (200 x 3, 500 x 1); errors 1, retries 1; peak usage "), line
    assert line.endswith("; peak " + max((stats, other.stats), key=lambda s: s.peak_usage_pct).peak_usage)


def test_token_never_appears_anywhere(
    make_meta_client: ClientFactory,
    sandbox: SandboxHandle,
    sandbox_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_meta_client(timeout=0.5, max_retries=4, app_secret="app-secret-for-test")
    errors: list[BaseException] = []
    admin = sandbox.admin
    admin.add_fault("http_500", route="catalog.get", times=1)
    admin.add_fault("malformed_json", route="catalog.get", times=1)
    admin.add_fault("timeout", route="catalog.get", times=1, seconds=1.0)
    admin.add_fault("throttle", route="catalog.get", times=1, code=80009, estimated_time_to_regain_access=1)
    client.get(CATALOG)
    list(client.paginate(f"{RETAILER_BUSINESS}/owned_product_catalogs", {"limit": 1}))
    # Meta echoes a token in some error messages; the client must scrub it.
    admin.add_fault(
        "error", route="catalog.get", times=1, code=190, message=f"Malformed access token {sandbox_token}"
    )
    admin.add_fault("bad_request", route="catalog.get", times=1, message=f"(#100) bad {sandbox_token}")
    admin.add_fault("http_500", route="catalog.get", times=5)
    for _ in range(3):
        try:
            client.get(CATALOG)
        except MetaAPIError as exc:
            errors.append(exc)
    echoing = make_meta_client(access_token="MALFORMED-" + sandbox_token)
    with pytest.raises(MetaAuthError) as info:
        echoing.get(CATALOG)
    errors.append(info.value)
    dead = make_meta_client(base_url=f"http://127.0.0.1:{_free_port()}", max_retries=0)
    with pytest.raises(MetaRetryBudgetExceeded) as info2:
        dead.get(CATALOG)
    errors.append(info2.value)
    assert isinstance(info2.value.last_error, MetaConnectionError)
    assert len(errors) == 5

    texts = [caplog.text, json.dumps(admin.requests())]
    texts += [t for e in errors for t in (str(e), repr(e), e.message, str(e.__cause__ or ""))]
    texts += [repr(client), repr(client.last_usage)]
    for text in texts:
        assert sandbox_token not in text
    assert "Malformed access token [REDACTED]" in caplog.text + str(errors)
    assert "retrying in" in caplog.text  # the WARNING per retry was captured
    assert client.appsecret_proof and client.appsecret_proof not in caplog.text


def test_appsecret_proof_is_sent_and_correct(
    make_meta_client: ClientFactory, sandbox: SandboxHandle, sandbox_token: str
) -> None:
    secret = "kobi-app-secret-77"
    sandbox.admin.configure(app_secret=secret, require_appsecret_proof=True)
    client = make_meta_client(app_secret=secret)
    assert client.get(CATALOG)["id"] == CATALOG
    expected = hmac.new(secret.encode(), sandbox_token.encode(), hashlib.sha256).hexdigest()
    assert client.appsecret_proof == expected
    calls = graph_calls(sandbox)
    assert calls[-1]["appsecret_proof"] == "valid"
    assert calls[-1]["query"]["appsecret_proof"] == "[present]"  # the log never stores the value

    wrong = make_meta_client(app_secret="not-the-secret")
    with pytest.raises(MetaInvalidRequestError, match="Invalid appsecret_proof"):
        wrong.get(CATALOG)
    without = make_meta_client()
    with pytest.raises(MetaInvalidRequestError, match="require an appsecret_proof"):
        without.get(CATALOG)
    assert len(graph_calls(sandbox)) == 3


def test_post_and_delete_go_through_the_same_machinery(
    meta_client: MetaGraphClient, sandbox: SandboxHandle
) -> None:
    # No POST/DELETE route exists yet on catalogs: Meta's "Unsupported post request" comes back typed.
    with pytest.raises(MetaInvalidRequestError, match="Unsupported post request"):
        meta_client.post(CATALOG, data={"name": "x", "flag": True, "rule": {"a": 1}})
    with pytest.raises(MetaInvalidRequestError, match="Unsupported delete request"):
        meta_client.delete(CATALOG)
    calls = graph_calls(sandbox)
    assert [c["method"] for c in calls] == ["POST", "DELETE"]
