"""Unit tests of the Meta error classifier and the typed exceptions (no HTTP)."""

from __future__ import annotations

import pickle

import pytest

from kobi_cpas.meta import (
    ErrorKind,
    MetaAPIError,
    MetaAuthError,
    MetaInvalidRequestError,
    MetaPermissionError,
    MetaRetryBudgetExceeded,
    MetaSegmentNotCompliantError,
    MetaThrottledError,
    MetaTooMuchDataError,
    MetaTransientError,
    classify,
    error_from_response,
)
from kobi_cpas.meta.errors import AUTH_HINT, RETRYABLE_KINDS

T, TR = ErrorKind.THROTTLED, ErrorKind.TRANSIENT

# (http_status, error body, expected kind)
CODE_TABLE = [
    (500, {"code": 1, "message": "An unknown error occurred"}, TR),
    (500, {"code": 2, "message": "An unexpected error has occurred."}, TR),
    (400, {"code": 1, "message": "An unknown error occurred"}, TR),
    (403, {"code": 4, "message": "(#4) Application request limit reached"}, T),
    (400, {"code": 4, "error_subcode": 1504022}, T),
    (400, {"code": 4, "error_subcode": 1504039}, T),
    (400, {"code": 1, "error_subcode": 1504022}, T),
    (403, {"code": 17, "message": "(#17) User request limit reached"}, T),
    (403, {"code": 32}, T),
    (400, {"code": 341}, T),
    (400, {"code": 613}, T),
    (400, {"code": 80000}, T),
    (400, {"code": 80004}, T),
    (400, {"code": 80008}, T),
    (400, {"code": 80009, "message": "too many calls to this Catalog account"}, T),
    (400, {"code": 80014, "message": "too many calls for the batch uploads"}, T),
    (429, {}, T),
    (400, {"code": 2601, "error_subcode": 1815107}, TR),
    (400, {"code": 100, "error_subcode": 1815107}, TR),
    (400, {"code": 9999, "is_transient": True}, TR),
    (502, {}, TR),
    (503, {"code": 2}, TR),
    (504, None, TR),
    (400, {"code": 190, "error_subcode": 463}, ErrorKind.AUTH),
    (400, {"code": 190, "error_subcode": 460}, ErrorKind.AUTH),
    (401, {"code": 190}, ErrorKind.AUTH),
    (400, {"code": 102}, ErrorKind.AUTH),
    (403, {"code": 10}, ErrorKind.PERMISSION),
    (403, {"code": 200}, ErrorKind.PERMISSION),
    (403, {"code": 294}, ErrorKind.PERMISSION),
    (403, {"code": 299}, ErrorKind.PERMISSION),
    (400, {"code": 100}, ErrorKind.INVALID_REQUEST),
    (400, {"code": 100, "error_subcode": 33}, ErrorKind.INVALID_REQUEST),
    (400, {"code": 100, "error_subcode": 1487534}, ErrorKind.TOO_MUCH_DATA),
    (
        500,
        {"code": 1, "message": "Please reduce the amount of data you're asking for, then retry your request"},
        ErrorKind.TOO_MUCH_DATA,
    ),
    (
        500,
        {"code": 1, "is_transient": True, "message": "Please reduce the amount of data you're asking for"},
        ErrorKind.TOO_MUCH_DATA,
    ),
    (400, {"code": 2310068}, ErrorKind.SEGMENT_NOT_COMPLIANT),
    (500, {"code": 2310068, "is_transient": True}, ErrorKind.SEGMENT_NOT_COMPLIANT),
    (400, {"code": 368}, ErrorKind.FATAL),
    (404, {}, ErrorKind.FATAL),
    (400, {"code": "80009"}, T),  # codes as strings still classify
]


@pytest.mark.parametrize(("status", "error", "kind"), CODE_TABLE)
def test_classify_code_table(status: int, error: dict | None, kind: ErrorKind) -> None:
    assert classify(status, error) is kind


def test_only_throttled_and_transient_are_retryable() -> None:
    assert {ErrorKind.THROTTLED, ErrorKind.TRANSIENT} == RETRYABLE_KINDS
    for _status, _error, kind in CODE_TABLE:
        retryable = kind in (T, TR)
        assert (kind in RETRYABLE_KINDS) is retryable


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (400, {"code": 190, "error_subcode": 463}, MetaAuthError),
        (
            403,
            {"code": 200, "message": "(#200) Requires business_management permission"},
            MetaPermissionError,
        ),
        (400, {"code": 100}, MetaInvalidRequestError),
        (400, {"code": 100, "error_subcode": 1487534}, MetaTooMuchDataError),
        (400, {"code": 2310068}, MetaSegmentNotCompliantError),
        (400, {"code": 80009}, MetaThrottledError),
        (500, {"code": 2}, MetaTransientError),
        (400, {"code": 368}, MetaAPIError),
    ],
)
def test_error_from_response_builds_typed_exception(status: int, error: dict, cls: type) -> None:
    exc = error_from_response(status, error, method="GET", path="/v26.0/1?x=1")
    assert type(exc) is cls
    assert isinstance(exc, MetaAPIError)
    assert exc.path == "/v26.0/1"  # never the query string
    assert exc.http_status == status


def test_str_is_one_readable_line_with_hint_and_trace() -> None:
    exc = error_from_response(
        400,
        {
            "message": "Error validating access token: Session has expired.\nSecond line",
            "type": "OAuthException",
            "code": 190,
            "fbtrace_id": "AbCdEf123",
        },
        method="GET",
        path="/v26.0/123",
    )
    text = str(exc)
    assert "\n" not in text
    assert text.startswith(
        "Meta API error 190 (OAuthException) on GET /v26.0/123: Error validating access token"
    )
    assert f"Fix: {AUTH_HINT}" in text
    assert text.endswith("[fbtrace_id=AbCdEf123]")
    assert exc.code == 190 and exc.type == "OAuthException" and exc.fbtrace_id == "AbCdEf123"


def test_subcode_and_user_message_appear() -> None:
    exc = error_from_response(
        400,
        {
            "message": "Invalid parameter",
            "type": "OAuthException",
            "code": 100,
            "error_subcode": 1487534,
            "error_user_title": "Too much data",
            "error_user_msg": "Ask for fewer days",
        },
        method="GET",
        path="/v26.0/act_1/insights",
    )
    assert isinstance(exc, MetaTooMuchDataError)
    assert "subcode 1487534" in str(exc)
    assert "Too much data: Ask for fewer days" in str(exc)
    assert exc.user_title == "Too much data" and exc.user_msg == "Ask for fewer days"


def test_permission_hint_names_the_permission_and_asset() -> None:
    exc = error_from_response(
        403,
        {"message": "(#200) Requires catalog_management permission to manage the object", "code": 200},
        method="GET",
        path="/v26.0/2000000000000001/products",
    )
    assert "catalog_management" in exc.hint
    assert "2000000000000001" in exc.hint
    generic = error_from_response(403, {"message": "(#10) Application does not have permission", "code": 10})
    assert "Assign assets" in generic.hint


def test_segment_not_compliant_message() -> None:
    exc = error_from_response(400, {"code": 2310068, "message": "Cannot create a catalog segment"})
    assert "parent catalog is not Collaborative Ads compliant — check its status in Commerce Manager" in str(
        exc
    )


def test_messages_are_scrubbed_of_secrets() -> None:
    token = "EAAsecretTOKEN123456"
    exc = error_from_response(
        400,
        {"message": f"Malformed access token {token}", "code": 190, "error_user_msg": f"token {token}"},
        secrets=[token],
    )
    assert token not in str(exc)
    assert token not in repr(exc)
    assert token not in (exc.user_msg or "")


def test_exceptions_pickle() -> None:
    exc = error_from_response(400, {"code": 80009, "message": "slow down"}, method="GET", path="/v26.0/1")
    budget = MetaRetryBudgetExceeded(
        last_error=exc,
        attempts=3,
        waited_seconds=12.5,
        next_wait=900.0,
        reason="max_total_wait",
        max_retries=8,
        max_total_wait=900,
    )
    for e in (exc, budget):
        clone = pickle.loads(pickle.dumps(e))
        assert type(clone) is type(e)
        assert str(clone) == str(e)


def test_budget_exceeded_says_how_long_and_last_error() -> None:
    last = error_from_response(400, {"code": 80009, "message": "slow down"}, method="GET", path="/v26.0/1")
    exc = MetaRetryBudgetExceeded(
        last_error=last,
        attempts=2,
        waited_seconds=42.0,
        next_wait=1800.0,
        reason="max_total_wait",
        max_retries=8,
        max_total_wait=900,
    )
    text = str(exc)
    assert "after 2 attempt(s) and 42.0 s of waiting" in text
    assert "1800 s would exceed max_total_wait=900 s" in text
    assert "last error: Meta API error 80009" in text
    assert exc.last_error is last and exc.code == 80009
