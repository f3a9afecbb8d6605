"""Meta Graph API client on plain requests: bearer auth, appsecret_proof, cursor paging, typed errors,
bounded jittered retries (tenacity), usage-header pacing and secret redaction.

Retry budget: each request (one ``get``/``post``/``delete`` call, or one page of ``pages``) may retry at most
``max_retries`` times and sleep at most ``max_total_wait`` seconds in total (backoff plus pacing). When the
next wait would break the budget the client raises ``MetaRetryBudgetExceeded`` at once instead of sleeping.
All sleeping goes through the injected ``sleep`` so tests and benchmarks can record the waits.

POSTs are retried like GETs: Meta's throttling and 5xx answers mean the call was not applied, but a timeout
after the request was sent could have been; callers with non-idempotent POSTs should use ``max_retries=0``
on a dedicated client or make the POST idempotent (Meta's items_batch upserts are).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import requests
import tenacity
from requests_toolbelt import MultipartEncoder

from kobi_cpas.meta.errors import (
    ErrorKind,
    MetaAPIError,
    MetaConnectionError,
    MetaMalformedResponseError,
    MetaPagingError,
    MetaRetryBudgetExceeded,
    error_from_response,
)
from kobi_cpas.meta.redact import install_redaction
from kobi_cpas.meta.stats import ClientStats
from kobi_cpas.meta.usage import UsageSnapshot, parse_usage

USER_AGENT = "kobi-cpas/0.1 (+requests)"
_API_VERSION_RE = re.compile(r"^v\d+\.\d+$")
# Query parameters never carried over from a paging.next link: the token travels in the header only and
# appsecret_proof is recomputed by the client.
_STRIPPED_NEXT_PARAMS = frozenset({"access_token", "appsecret_proof"})
# The Python logger of the request lines (DEBUG): route it to a run's log with Dagster's managed_python_loggers.
REQUEST_LOGGER = "kobi_cpas.meta.requests"


@dataclass
class _CallState:
    waited: float = 0.0
    skip_pace: bool = False
    reason: str = "max_retries"


def encode_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Graph API parameter encoding: lists/dicts as compact JSON (``fields`` lists comma-joined),
    booleans as true/false, None dropped."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if key == "fields" and isinstance(value, list | tuple):
            out[key] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, dict | list | tuple):
            out[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            out[key] = str(value)
    return out


def strip_query_params(url: str, names: frozenset[str] = _STRIPPED_NEXT_PARAMS) -> str:
    """Remove the named query parameters from ``url`` and leave every other byte of it as it was."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [seg for seg in parts.query.split("&") if seg and unquote_plus(seg.split("=", 1)[0]) not in names]
    query = "&".join(kept)
    base = url.split("?", 1)[0]
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{base}?{query}{fragment}" if query else f"{base}{fragment}"


class MetaGraphClient:
    """Graph API client. ``path`` arguments are relative (``"2000000000000001"``, ``"act_4/insights"``)."""

    def __init__(
        self,
        base_url: str,
        api_version: str,
        access_token: str,
        app_secret: str | None = None,
        timeout: float = 60,
        max_retries: int = 8,
        max_total_wait: float = 900,
        pace_threshold_pct: float = 75,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
        session: requests.Session | None = None,
        *,
        pace_max_sleep: float = 30.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        throttle_backoff_base: float = 30.0,
        throttle_backoff_max: float = 300.0,
        max_empty_pages: int = 200,
        rng: random.Random | None = None,
    ) -> None:
        if not access_token or not str(access_token).strip():
            raise ValueError("access_token is empty: set META_ACCESS_TOKEN")
        if not _API_VERSION_RE.match(api_version or ""):
            raise ValueError(f"api_version must look like 'v26.0', got {api_version!r}")
        base_url = (base_url or "").strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url
        self.api_version = api_version
        self._token = str(access_token).strip()
        self._app_secret = app_secret or None
        self._appsecret_proof = (
            hmac.new(self._app_secret.encode(), self._token.encode(), hashlib.sha256).hexdigest()
            if self._app_secret
            else None
        )
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.max_total_wait = float(max_total_wait)
        self.pace_threshold_pct = float(pace_threshold_pct)
        self.pace_max_sleep = float(pace_max_sleep)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.throttle_backoff_base = float(throttle_backoff_base)
        self.throttle_backoff_max = float(throttle_backoff_max)
        self.max_empty_pages = int(max_empty_pages)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._own_session = session is None
        self._session = session or requests.Session()
        self.logger = logger or logging.getLogger("kobi_cpas.meta")
        install_redaction(self.logger, self._secrets)
        # One line per request goes here, not to ``logger`` (a run's Dagster log would store each as an event):
        # the run's log gets warnings and one summary (``ClientStats.summary``).
        self.request_logger = logging.getLogger(REQUEST_LOGGER)
        install_redaction(self.request_logger, self._secrets)
        # urllib3 logs request lines (with the query string, so appsecret_proof) at DEBUG.
        install_redaction(logging.getLogger("urllib3.connectionpool"), self._secrets)
        self._origin = self._origin_of(self.base_url)
        self._lock = threading.Lock()
        self.last_usage: UsageSnapshot | None = None
        self.stats = ClientStats()

    # -- public API ---------------------------------------------------------------------------------

    @property
    def appsecret_proof(self) -> str | None:
        return self._appsecret_proof

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(
        self,
        path: str,
        data: Mapping[str, Any] | None = None,
        json_body: Any = None,
        files: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self.request("POST", path, data=data, json_body=json_body, files=files)

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.request("DELETE", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json_body: Any = None,
        files: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = self._url(path)
        return self._call(
            method.upper(),
            url,
            params=encode_params(params),
            data=encode_params(data) if data is not None else None,
            json_body=json_body,
            files=files,
        )

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Raw pages of a list edge, following ``paging.next`` until it is absent.

        An empty ``data`` page that still has ``next`` is not the end. A ``next`` link seen before (a loop) or
        more than ``max_empty_pages`` empty pages in a row raise ``MetaPagingError``. Cursors live only here.
        """
        url = self._url(path)
        query: dict[str, str] | None = encode_params(params)
        seen = {self._fingerprint(requests.Request("GET", url, params=query).prepare().url or url)}
        empty_streak = 0
        while True:
            page = self._call("GET", url, params=query)
            yield page
            paging = page.get("paging")
            nxt = paging.get("next") if isinstance(paging, dict) else None
            if not nxt:
                return
            data = page.get("data")
            empty_streak = empty_streak + 1 if isinstance(data, list) and not data else 0
            nxt = self._follow_url(str(nxt))
            fingerprint = self._fingerprint(nxt)
            path_only = urlsplit(nxt).path
            if fingerprint in seen:
                raise MetaPagingError(
                    f"paging.next repeats a link already followed ({len(seen)} pages read); stopping to avoid "
                    "an endless loop",
                    method="GET",
                    path=path_only,
                    secrets=self._secrets,
                )
            if empty_streak > self.max_empty_pages:
                raise MetaPagingError(
                    f"{empty_streak} empty pages in a row that still link to a next page",
                    method="GET",
                    path=path_only,
                    secrets=self._secrets,
                )
            seen.add(fingerprint)
            url, query = nxt, None

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The items of ``data`` across all pages."""
        for page in self.pages(path, params):
            data = page.get("data")
            if isinstance(data, list):
                yield from data

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> MetaGraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MetaGraphClient(base_url={self.base_url!r}, api_version={self.api_version!r}, token=[REDACTED])"
        )

    # -- URLs ---------------------------------------------------------------------------------------

    @property
    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._token, self._appsecret_proof, self._app_secret) if s)

    @staticmethod
    def _origin_of(url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        return parts.scheme.lower(), parts.netloc.lower()

    @staticmethod
    def _fingerprint(url: str) -> bytes:
        return hashlib.sha1(url.encode("utf-8")).digest()

    def _url(self, path: str) -> str:
        path = str(path)
        if path.startswith(("http://", "https://")):
            return self._follow_url(path)
        return f"{self.base_url}/{self.api_version}/{path.lstrip('/')}"

    def _follow_url(self, url: str) -> str:
        """An absolute URL from Meta (paging.next), minus token parameters; only ever on the API's host."""
        clean = strip_query_params(url)
        if self._origin_of(clean) != self._origin:
            raise MetaPagingError(
                f"refusing to follow a link to another host ({urlsplit(clean).netloc}): the access token is only "
                f"sent to {self._origin[1]}",
                method="GET",
                path=urlsplit(clean).path,
                secrets=self._secrets,
            )
        return clean

    # -- the retry loop -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        json_body: Any = None,
        files: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        call = _CallState()
        path = urlsplit(url).path
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, MetaAPIError) and e.retryable),
            wait=self._wait,
            stop=lambda rs: self._should_stop(rs, call),
            sleep=lambda seconds: self._retry_sleep(seconds, call),
            before_sleep=lambda rs: self._log_retry(rs, method, path),
            retry_error_callback=lambda rs: self._give_up(rs, call),
        )
        return retrying(self._send_once, method, url, path, params, data, json_body, files, call)

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, MetaAPIError) and exc.kind is ErrorKind.THROTTLED:
            if exc.retry_after:
                # Meta told us when access comes back: wait that long plus a little jitter.
                return exc.retry_after + self._rng.uniform(0.0, min(5.0, 0.05 * exc.retry_after))
            base, cap = self.throttle_backoff_base, self.throttle_backoff_max
        else:
            base, cap = self.backoff_base, self.backoff_max
        delay = min(cap, base * 2 ** max(0, rs.attempt_number - 1))
        # "Equal jitter": at least half the exponential delay, so waits still grow.
        return delay / 2 + self._rng.uniform(0.0, delay / 2)

    def _should_stop(self, rs: tenacity.RetryCallState, call: _CallState) -> bool:
        if rs.attempt_number > self.max_retries:
            call.reason = "max_retries"
            return True
        if call.waited + rs.upcoming_sleep > self.max_total_wait:
            call.reason = "max_total_wait"
            return True
        return False

    def _give_up(self, rs: tenacity.RetryCallState, call: _CallState) -> Any:
        exc = rs.outcome.exception() if rs.outcome else None
        assert isinstance(exc, MetaAPIError)
        raise MetaRetryBudgetExceeded(
            last_error=exc,
            attempts=rs.attempt_number,
            waited_seconds=call.waited,
            next_wait=rs.upcoming_sleep,
            reason=call.reason,
            max_retries=self.max_retries,
            max_total_wait=self.max_total_wait,
        ) from exc

    def _log_retry(self, rs: tenacity.RetryCallState, method: str, path: str) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        with self._lock:
            self.stats.retries += 1
        kind = exc.kind.value if isinstance(exc, MetaAPIError) else type(exc).__name__
        self.logger.warning(
            "Meta %s %s: %s, retrying in %.1f s (retry %d of at most %d): %s",
            method,
            path,
            kind,
            rs.upcoming_sleep,
            rs.attempt_number,
            self.max_retries,
            exc,
        )

    def _retry_sleep(self, seconds: float, call: _CallState) -> None:
        self._do_sleep(seconds)
        call.waited += seconds
        call.skip_pace = True  # the backoff already waited; do not pace on top of it

    def _do_sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self.stats.slept_seconds += seconds
        self._sleep(seconds)

    def _pace(self, method: str, path: str, call: _CallState) -> None:
        """Sleep before a request when the last usage headers were above the threshold (proportionally)."""
        if call.skip_pace:
            call.skip_pace = False
            return
        usage = self.last_usage
        if usage is None:
            return
        pct = usage.max_pct
        if pct <= self.pace_threshold_pct:
            return
        span = max(1e-9, 100.0 - self.pace_threshold_pct)
        delay = self.pace_max_sleep * min(1.0, (pct - self.pace_threshold_pct) / span)
        delay = min(delay, max(0.0, self.max_total_wait - call.waited))
        if delay <= 0:
            return
        self.logger.info(
            "Meta %s %s: %s is over %.0f%%, pacing %.1f s before the request",
            method,
            path,
            usage.describe(),
            self.pace_threshold_pct,
            delay,
        )
        with self._lock:
            self.stats.paced += 1
            self.stats.paced_seconds += delay
        self._do_sleep(delay)
        call.waited += delay

    # -- one HTTP request ---------------------------------------------------------------------------

    def _send_once(
        self,
        method: str,
        url: str,
        path: str,
        params: dict[str, str] | None,
        data: dict[str, str] | None,
        json_body: Any,
        files: Mapping[str, Any] | None,
        call: _CallState,
    ) -> dict[str, Any]:
        self._pace(method, path, call)
        query = dict(params or {})
        if self._appsecret_proof:
            query["appsecret_proof"] = self._appsecret_proof
        if files:
            for f in files.values():
                fobj = f[1] if isinstance(f, tuple) and len(f) > 1 else f
                if hasattr(fobj, "seek"):
                    fobj.seek(0)  # a retry must send the whole file again
        headers = {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        body: Any = data
        if files:
            # Streamed from the file handles in chunks: requests' own `files=` builds the whole multipart body in
            # memory, twice a million-item feed file.
            body = MultipartEncoder(fields={**(data or {}), **files})
            headers["Content-Type"] = body.content_type
        with self._lock:
            self.stats.requests += 1
        started = time.monotonic()
        try:
            resp = self._session.request(
                method,
                url,
                params=query or None,
                data=body,
                json=json_body,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.Timeout as exc:
            self._count_error()
            raise MetaConnectionError(
                f"no response within {self.timeout:g} s ({type(exc).__name__})",
                timeout=True,
                method=method,
                path=path,
                secrets=self._secrets,
            ) from None
        except requests.RequestException as exc:
            self._count_error()
            raise MetaConnectionError(
                f"{type(exc).__name__}: {exc}", method=method, path=path, secrets=self._secrets
            ) from None
        elapsed_ms = (time.monotonic() - started) * 1000
        usage = parse_usage(resp.headers)
        with self._lock:
            self.stats.statuses[resp.status_code] = self.stats.statuses.get(resp.status_code, 0) + 1
            if usage is not None and usage.max_pct >= self.stats.peak_usage_pct:
                self.stats.peak_usage_pct, self.stats.peak_usage = usage.max_pct, usage.describe()
        if usage is not None:
            self.last_usage = usage
        self.request_logger.debug(
            "Meta %s %s -> %s in %.0f ms (%s)",
            method,
            path,
            resp.status_code,
            elapsed_ms,
            usage.describe() if usage else "no usage headers",
        )
        return self._handle_response(resp, method, path, usage)

    def _count_error(self, throttled: bool = False) -> None:
        with self._lock:
            self.stats.errors += 1
            if throttled:
                self.stats.throttled += 1

    def _handle_response(
        self, resp: requests.Response, method: str, path: str, usage: UsageSnapshot | None
    ) -> dict[str, Any]:
        status = resp.status_code
        try:
            body: Any = resp.json()
            parsed = True
        except ValueError:
            body, parsed = None, False

        error: dict[str, Any] | None = None
        if parsed and isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
        elif status >= 400:
            snippet = " ".join(resp.text[:120].split()) if not parsed else json.dumps(body)[:120]
            error = {
                "message": f"HTTP {status} {resp.reason or ''}".strip() + (f": {snippet}" if snippet else "")
            }
        elif not parsed:
            self._count_error()
            snippet = " ".join(resp.text[:80].split())
            raise MetaMalformedResponseError(
                f"HTTP {status} body is not valid JSON ({len(resp.content)} bytes, starts {snippet!r})",
                http_status=status,
                method=method,
                path=path,
                secrets=self._secrets,
            )

        if error is not None:
            retry_after = usage.regain_seconds if usage else None
            if retry_after is None:
                retry_after = _retry_after_header(resp.headers.get("Retry-After"))
            exc = error_from_response(
                status, error, method=method, path=path, retry_after=retry_after, secrets=self._secrets
            )
            self._count_error(throttled=exc.kind is ErrorKind.THROTTLED)
            raise exc

        if isinstance(body, dict):
            return body
        if isinstance(body, bool):
            return {"success": body}
        return {"data": body}


def _retry_after_header(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds and seconds > 0 else None
