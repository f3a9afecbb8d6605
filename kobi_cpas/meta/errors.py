"""Typed Meta Graph API errors and the classifier that decides which ones are retried.

Meta's error body is ``{"error": {message, type, code, error_subcode, is_transient, error_user_title,
error_user_msg, fbtrace_id}}``. ``classify`` maps it to an ``ErrorKind``; ``error_from_response`` builds the
matching exception. Throttled and transient kinds are retried by the client; everything else fails fast
with Meta's message plus a hint that says what a person should do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from kobi_cpas.meta.redact import redact
from kobi_cpas.meta.versions import VERSION_RETIRED_CODE, retired_message


class ErrorKind(StrEnum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    AUTH = "auth"
    PERMISSION = "permission"
    INVALID_REQUEST = "invalid_request"
    TOO_MUCH_DATA = "too_much_data"
    SEGMENT_NOT_COMPLIANT = "segment_not_compliant"
    VERSION_RETIRED = "version_retired"
    FATAL = "fatal"  # any other error: not retried


RETRYABLE_KINDS = frozenset({ErrorKind.THROTTLED, ErrorKind.TRANSIENT})

# Rate limiting: app (4), user (17), page (32), application limit (341), ad account (613),
# business use case 80000-80014 (ads insights 80000, ads management 80004, catalog 80009, catalog batch 80014).
THROTTLE_CODES = frozenset({4, 17, 32, 341, 613, *range(80000, 80015)})
THROTTLE_SUBCODES = frozenset({1504022, 1504039})
TRANSIENT_CODES = frozenset({1, 2, 2601})
TRANSIENT_SUBCODES = frozenset({1815107})  # async report read before it finished
AUTH_CODES = frozenset({190, 102})
PERMISSION_CODES = frozenset({10, *range(200, 300)})
TOO_MUCH_DATA_SUBCODE = 1487534
# "Object with ID ... does not exist, cannot be loaded due to missing permissions"
UNKNOWN_OBJECT_SUBCODE = 33
SEGMENT_NOT_COMPLIANT_CODE = 2310068

AUTH_HINT = (
    "the access token is invalid or expired: generate a new system-user token with ads_management, "
    "business_management, catalog_management and set META_ACCESS_TOKEN"
)
INVALID_REQUEST_HINT = "fix the request parameters"
TOO_MUCH_DATA_HINT = (
    "ask for less data in one call: split the request by date range, then by object ids, then by fields"
)
SEGMENT_NOT_COMPLIANT_HINT = (
    "parent catalog is not Collaborative Ads compliant — check its status in Commerce Manager"
)
THROTTLED_HINT = "Meta is rate-limiting these calls: wait for the usage to drop and make fewer calls"
TRANSIENT_HINT = "a temporary problem on Meta's side or on the network: retry later"
FATAL_HINT = "read Meta's message; check the object id, the API version and the request"

_PERMISSION_RE = re.compile(
    r"\b(ads_management|ads_read|business_management|catalog_management|read_insights|"
    r"pages_[a-z_]+|instagram_[a-z_]+|commerce_[a-z_]+)\b"
)
_TOO_MUCH_DATA_RE = re.compile(r"reduce the amount of data", re.IGNORECASE)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def classify(http_status: int | None, error: Mapping[str, Any] | None) -> ErrorKind:
    """Decide what an error response means. ``error`` is the inner ``error`` object (or None/{})."""
    error = error or {}
    code = _int(error.get("code"))
    subcode = _int(error.get("error_subcode"))
    message = str(error.get("message") or "")
    status = http_status or 0

    # Order matters: the "needs splitting" and the never-retry cases win over generic 5xx / is_transient.
    if (code == 100 and subcode == TOO_MUCH_DATA_SUBCODE) or (
        code == 1 and _TOO_MUCH_DATA_RE.search(message)
    ):
        return ErrorKind.TOO_MUCH_DATA
    if SEGMENT_NOT_COMPLIANT_CODE in (code, subcode):
        return ErrorKind.SEGMENT_NOT_COMPLIANT
    if code == VERSION_RETIRED_CODE:
        return ErrorKind.VERSION_RETIRED
    if code in AUTH_CODES:
        return ErrorKind.AUTH
    if code in PERMISSION_CODES:
        return ErrorKind.PERMISSION
    if code in THROTTLE_CODES or subcode in THROTTLE_SUBCODES or status == 429:
        return ErrorKind.THROTTLED
    if (
        code in TRANSIENT_CODES
        or subcode in TRANSIENT_SUBCODES
        or error.get("is_transient") is True
        or status >= 500
    ):
        return ErrorKind.TRANSIENT
    if code == 100:
        return ErrorKind.INVALID_REQUEST
    return ErrorKind.FATAL


def permission_hint(message: str, path: str | None = None) -> str:
    asset = ""
    if path:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2:
            asset = f" ({parts[1]})"
    perm = _PERMISSION_RE.search(message or "")
    if perm:
        return (
            f"grant the {perm.group(1)} permission to the system user behind META_ACCESS_TOKEN (then generate "
            f"a new token) and assign the system user to the asset{asset} in Business Settings"
        )
    return (
        f"give the system user behind META_ACCESS_TOKEN access to the asset{asset} (catalog, ad account or "
        "business) in Business Settings > System users > Assign assets, with a token that has "
        "ads_management, business_management and catalog_management"
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class MetaAPIError(Exception):
    """A Meta Graph API call that failed. ``str(exc)`` is one readable line with Meta's message and a fix."""

    kind: ErrorKind = ErrorKind.FATAL
    default_hint: str = FATAL_HINT

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        error_subcode: int | None = None,
        type: str | None = None,
        is_transient: bool | None = None,
        fbtrace_id: str | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        hint: str | None = None,
        method: str | None = None,
        path: str | None = None,
        kind: ErrorKind | None = None,
        retry_after: float | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        secrets = tuple(secrets)
        self.message = redact(_one_line(message or ""), secrets)
        self.http_status = http_status
        self.code = code
        self.error_subcode = error_subcode
        self.type = type
        self.is_transient = is_transient
        self.fbtrace_id = fbtrace_id
        self.user_title = redact(_one_line(user_title), secrets) if user_title else None
        self.user_msg = redact(_one_line(user_msg), secrets) if user_msg else None
        self.hint = hint or self.default_hint
        self.method = method
        self.path = path.split("?", 1)[0] if path else path
        if kind is not None:
            self.kind = kind
        # Seconds Meta asked us to wait (estimated_time_to_regain_access), when it said so.
        self.retry_after = retry_after
        super().__init__(self._line())

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def _head(self) -> str:
        code = "" if self.code is None else f" {self.code}"
        extra = [p for p in (self.type, f"subcode {self.error_subcode}" if self.error_subcode else None) if p]
        if self.code is None and self.http_status is not None:
            extra.insert(0, f"HTTP {self.http_status}")
        detail = f" ({', '.join(extra)})" if extra else ""
        where = f" on {self.method} {self.path}" if self.method and self.path else ""
        return f"Meta API error{code}{detail}{where}"

    def _line(self) -> str:
        msg = self.message.rstrip(". ") or "no message"
        if self.user_msg and self.user_msg not in msg:
            title = f"{self.user_title.rstrip('.: ')}: " if self.user_title else ""
            msg = f"{msg} ({title}{self.user_msg.rstrip('. ')})"
        trace = f" [fbtrace_id={self.fbtrace_id}]" if self.fbtrace_id else ""
        return f"{self._head()}: {msg}. Fix: {self.hint}{trace}"

    def __str__(self) -> str:
        return self._line()

    def __reduce__(self) -> Any:
        # Keyword-only __init__ would break pickling (Dagster and multiprocessing pickle errors).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[MetaAPIError], state: dict[str, Any]) -> MetaAPIError:
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    Exception.__init__(exc, exc._line())
    return exc


class MetaThrottledError(MetaAPIError):
    kind = ErrorKind.THROTTLED
    default_hint = THROTTLED_HINT


class MetaTransientError(MetaAPIError):
    kind = ErrorKind.TRANSIENT
    default_hint = TRANSIENT_HINT


class MetaAuthError(MetaAPIError):
    kind = ErrorKind.AUTH
    default_hint = AUTH_HINT


class MetaPermissionError(MetaAPIError):
    kind = ErrorKind.PERMISSION
    default_hint = "grant the system user access to the asset and the needed permission"


class MetaInvalidRequestError(MetaAPIError):
    kind = ErrorKind.INVALID_REQUEST
    default_hint = INVALID_REQUEST_HINT


class MetaTooMuchDataError(MetaAPIError):
    """Retryable only by splitting the request, so the client never retries it as is."""

    kind = ErrorKind.TOO_MUCH_DATA
    default_hint = TOO_MUCH_DATA_HINT


class MetaSegmentNotCompliantError(MetaAPIError):
    kind = ErrorKind.SEGMENT_NOT_COMPLIANT
    default_hint = SEGMENT_NOT_COMPLIANT_HINT


class MetaVersionRetiredError(MetaAPIError):
    """Error 2635: the pinned API version is no longer served. Never retried: every call would fail the same."""

    kind = ErrorKind.VERSION_RETIRED
    default_hint = retired_message(None)


class MetaConnectionError(MetaTransientError):
    """Timeouts and connection failures (no HTTP response)."""

    default_hint = "Meta could not be reached in time: check the network and META_GRAPH_API_URL, then retry"

    def __init__(self, message: str, *, timeout: bool = False, **kwargs: Any) -> None:
        self.timeout = timeout
        super().__init__(message, **kwargs)


class MetaMalformedResponseError(MetaTransientError):
    """A body that is not the JSON Meta promises (truncated, HTML from a proxy, ...). Retried as transient."""

    default_hint = "Meta sent a body that is not valid JSON (often a truncated response): retry later"


class MetaPagingError(MetaAPIError):
    """Cursor paging that does not end (a ``next`` link seen before). Not retried: re-running loops again."""

    default_hint = "Meta's paging.next links loop: re-run later; if it persists, narrow the request"


class MetaRetryBudgetExceeded(MetaAPIError):
    """The client gave up retrying: max_retries reached or the next wait would exceed max_total_wait."""

    def __init__(
        self,
        *,
        last_error: MetaAPIError,
        attempts: int,
        waited_seconds: float,
        next_wait: float | None,
        reason: str,
        max_retries: int,
        max_total_wait: float,
    ) -> None:
        self.last_error = last_error
        self.attempts = attempts
        self.waited_seconds = waited_seconds
        self.next_wait = next_wait
        self.reason = reason  # "max_retries" or "max_total_wait"
        self.max_retries = max_retries
        self.max_total_wait = max_total_wait
        super().__init__(
            last_error.message,
            http_status=last_error.http_status,
            code=last_error.code,
            error_subcode=last_error.error_subcode,
            type=last_error.type,
            is_transient=last_error.is_transient,
            fbtrace_id=last_error.fbtrace_id,
            user_title=last_error.user_title,
            user_msg=last_error.user_msg,
            hint=last_error.hint,
            method=last_error.method,
            path=last_error.path,
            kind=last_error.kind,
            retry_after=last_error.retry_after,
        )

    def _line(self) -> str:
        if self.reason == "max_total_wait":
            why = f"the next wait of {self.next_wait:.0f} s would exceed max_total_wait={self.max_total_wait:g} s"
        else:
            why = f"max_retries={self.max_retries} reached"
        where = f" on {self.method} {self.path}" if self.method and self.path else ""
        return (
            f"Meta API retry budget exceeded{where} after {self.attempts} attempt(s) and "
            f"{self.waited_seconds:.1f} s of waiting ({why}); last error: {self.last_error}"
        )


_KIND_TO_CLASS: dict[ErrorKind, type[MetaAPIError]] = {
    ErrorKind.THROTTLED: MetaThrottledError,
    ErrorKind.TRANSIENT: MetaTransientError,
    ErrorKind.AUTH: MetaAuthError,
    ErrorKind.PERMISSION: MetaPermissionError,
    ErrorKind.INVALID_REQUEST: MetaInvalidRequestError,
    ErrorKind.TOO_MUCH_DATA: MetaTooMuchDataError,
    ErrorKind.SEGMENT_NOT_COMPLIANT: MetaSegmentNotCompliantError,
    ErrorKind.VERSION_RETIRED: MetaVersionRetiredError,
    ErrorKind.FATAL: MetaAPIError,
}


def error_class(kind: ErrorKind) -> type[MetaAPIError]:
    return _KIND_TO_CLASS[kind]


def error_from_response(
    http_status: int | None,
    error: Mapping[str, Any] | None,
    *,
    method: str | None = None,
    path: str | None = None,
    retry_after: float | None = None,
    secrets: Iterable[str | None] = (),
) -> MetaAPIError:
    """Build the typed exception for an error body (``error`` is the inner object, may be empty)."""
    error = error or {}
    kind = classify(http_status, error)
    cls = error_class(kind)
    message = str(error.get("message") or (f"HTTP {http_status}" if http_status else "unknown error"))
    hint: str | None = None
    if kind is ErrorKind.PERMISSION:
        hint = permission_hint(message, path)
    elif kind is ErrorKind.INVALID_REQUEST and _int(error.get("error_subcode")) == UNKNOWN_OBJECT_SUBCODE:
        hint = (
            f"{INVALID_REQUEST_HINT}: check the object id, and that the system user behind META_ACCESS_TOKEN "
            "is assigned to that asset"
        )
    elif kind is ErrorKind.VERSION_RETIRED:
        parts = [p for p in (path or "").split("/") if p]
        hint = retired_message(parts[0] if parts and re.match(r"^v\d+\.\d+$", parts[0]) else None)
    is_transient = error.get("is_transient")
    return cls(
        message,
        http_status=http_status,
        code=_int(error.get("code")),
        error_subcode=_int(error.get("error_subcode")),
        type=error.get("type"),
        is_transient=is_transient if isinstance(is_transient, bool) else None,
        fbtrace_id=error.get("fbtrace_id"),
        user_title=error.get("error_user_title"),
        user_msg=error.get("error_user_msg"),
        hint=hint,
        method=method,
        path=path,
        retry_after=retry_after if kind is ErrorKind.THROTTLED else None,
        secrets=secrets,
    )
