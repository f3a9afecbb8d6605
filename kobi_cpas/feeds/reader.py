"""Fetch a feed source (local path or http(s) URL) to a local file, streaming, within hard limits.

HTTP fetches are conditional: pass the ETag / Last-Modified of the previous fetch and a ``304 Not
Modified`` comes back as ``FetchResult(not_modified=True)`` without a body. Bodies are streamed to a
``.partial`` file next to ``dest`` in 1 MiB chunks (sha256 and size computed on the way) and renamed over
``dest`` only when complete, so a feed of several GB never sits in memory and a failed download never
leaves a half-written ``dest``.

Limits (:class:`FetchLimits`): a TOTAL deadline for the whole exchange (redirects, headers and body; a
server trickling one byte at a time cannot keep a download alive past it), a size cap, and a bounded
number of redirects followed by hand: each hop must stay http(s) and, unless the tenant allows it, must
not lead to a loopback / private / link-local host (the first URL may: feeds are served on 127.0.0.1 in
tests and in the sandbox). Local files must lie under a feeds root when one is given.

Local change detection never trusts a 1-second timestamp: the validator of a local file is its size,
nanosecond mtime, inode and ctime, and a file modified in the last few seconds (or one that changes while it is read) is
hashed / refused rather than trusted.

Sources are shown through :func:`redact_source` everywhere (user info removed, secret-looking query
values replaced): feed URLs often carry access keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from kobi_cpas.feeds.errors import FeedFetchError
from kobi_cpas.feeds.redact import redact_source, redact_url

__all__ = ["FetchLimits", "FetchResult", "fetch_feed", "head_fingerprint", "redact_source", "redact_url"]

CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT = (10.0, 300.0)  # connect, read (between bytes)
DEFAULT_DEADLINE_SECONDS = 600.0
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB
DEFAULT_MAX_REDIRECTS = 5
# A local file modified this recently may still be being written, or rewritten within the filesystem's
# timestamp granularity: its stat is not trusted, its content is hashed.
RECENT_MTIME_SECONDS = 5.0
_REDIRECT_CODES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchLimits:
    """Hard limits of one fetch (per tenant: ``FeedSource.download_deadline_seconds`` etc.)."""

    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    allow_private_redirects: bool = False


@dataclass(frozen=True)
class FetchResult:
    """Outcome of :func:`fetch_feed`.

    ``path`` is the local file (None when ``not_modified``); ``etag`` / ``last_modified`` are the
    validators to pass next time (the previous ones are echoed back on 304 when the server omits them).
    For a local file ``last_modified`` is its exact validator (nanosecond mtime and size), not an HTTP date.
    ``source`` is redacted.
    """

    source: str
    path: Path | None
    not_modified: bool
    etag: str | None
    last_modified: str | None
    sha256: str | None
    size_bytes: int | None
    status_code: int | None = None


def is_url(source: str) -> bool:
    return urlsplit(str(source)).scheme.lower() in ("http", "https")


def source_scheme(source: str) -> str:
    """The URL scheme of a source ('' for a path; a one-letter scheme is a Windows drive)."""
    scheme = urlsplit(str(source)).scheme.lower()
    return "" if len(scheme) <= 1 else scheme


def file_sha256(path: str | Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, streaming."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def local_validator(st: os.stat_result) -> str:
    """Exact change validator of a local file: nanosecond mtime, size, inode and ctime. The ctime catches a
    rewrite whose mtime was preserved or set back (``cp -p``, ``rsync -t``): no tool can set it."""
    ts = datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return (
        f"{ts}.{st.st_mtime_ns % 1_000_000_000:09d}Z; {st.st_size} bytes; inode {st.st_ino}; "
        f"ctime_ns {st.st_ctime_ns}"
    )


def fetch_feed(
    source: str | Path,
    dest: str | Path | None = None,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    headers: dict[str, str] | None = None,
    copy_local: bool = False,
    limits: FetchLimits | None = None,
    feeds_root: str | Path | None = None,
) -> FetchResult:
    """Fetch ``source`` to ``dest``.

    Local paths (or ``file://`` URLs) are not copied unless ``copy_local`` (then ``dest`` is required):
    the result points at the file itself, with its sha256 and size, ``last_modified`` = its exact
    validator, and ``not_modified`` when that equals the ``last_modified`` passed in and the file was
    not modified in the last few seconds. With ``feeds_root``, a local file must resolve under it.
    For http(s), ``dest`` is required. Any other scheme is refused.
    """
    lim = limits or FetchLimits()
    src = str(source)
    scheme = source_scheme(src)
    if scheme == "file":
        src = urlsplit(src).path
    elif scheme and scheme not in ("http", "https"):
        raise FeedFetchError(
            f"feed source {redact_source(src)}: the scheme '{scheme}' is not allowed; use an http(s) URL or "
            "a local path"
        )
    if not is_url(src):
        return _fetch_local(Path(src), dest, last_modified, copy_local, lim, feeds_root)
    if dest is None:
        raise ValueError("fetch_feed: dest is required for http(s) sources")
    return _HttpDownload(src, Path(dest), etag, last_modified, session, timeout, headers or {}, lim).run()


def _fetch_local(
    path: Path,
    dest: str | Path | None,
    last_modified: str | None,
    copy: bool,
    limits: FetchLimits,
    feeds_root: str | Path | None,
) -> FetchResult:
    if feeds_root is not None:
        root = Path(feeds_root).resolve()
        if not path.resolve().is_relative_to(root):
            raise FeedFetchError(
                f"feed file {path} is outside the feeds root {root}: local feeds must lie under it "
                "(set feed.feeds_root in the registry to allow another folder)"
            )
    if not path.is_file():
        raise FeedFetchError(f"feed file {path} not found")
    st = path.stat()
    if st.st_size > limits.max_bytes:
        raise FeedFetchError(
            f"feed file {path} is {st.st_size:,} bytes, over the size cap of {limits.max_bytes:,} bytes "
            "(feed.max_bytes)"
        )
    validator = local_validator(st)
    recent = abs(time.time() - st.st_mtime) < RECENT_MTIME_SECONDS
    if last_modified is not None and last_modified == validator and not recent:
        return FetchResult(str(path), None, True, None, validator, None, None)
    target = path
    if copy:
        if dest is None:
            raise ValueError("fetch_feed: dest is required with copy_local=True")
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            shutil.copyfile(path, partial)
            _check_stable(path, st)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    digest, size = file_sha256(target)
    if not copy:
        _check_stable(path, st)
    if size != st.st_size:
        raise _busy(path)
    return FetchResult(str(path), target, False, None, validator, digest, size)


def _busy(path: Path) -> FeedFetchError:
    return FeedFetchError(
        f"feed file {path} is being written (it changed while it was read); the previous snapshot stays, "
        "retried next run"
    )


def _check_stable(path: Path, before: os.stat_result) -> None:
    """Raise when the file changed (size, mtime or inode) since ``before``: a writer is at work."""
    try:
        after = path.stat()
    except FileNotFoundError:
        raise _busy(path) from None
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    ):
        raise _busy(path)


def _private_address(host: str, port: int) -> str | None:
    """The first loopback / private / link-local / reserved address ``host`` resolves to, or None."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return None  # unresolvable: the request itself fails with a clear message
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
            return str(ip)
        if ip.is_multicast:
            return str(ip)
    return None


def check_redirect(target: str, shown_from: str, *, allow_private: bool) -> None:
    """Refuse a redirect to a non-http(s) scheme, or to a private / loopback host unless allowed."""
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FeedFetchError(
            f"feed download {shown_from} refused: it redirects to a {scheme or 'relative'}:// location "
            f"({redact_url(target) if parts.netloc else scheme + ':'}); only http(s) redirects are followed"
        )
    if allow_private:
        return
    host = parts.hostname or ""
    addr = _private_address(host, parts.port or (443 if scheme == "https" else 80))
    if addr is not None:
        raise FeedFetchError(
            f"feed download {shown_from} refused: it redirects to {redact_url(target)}, a private or loopback "
            f"address ({addr}); set feed.allow_private_redirects: true for this tenant if that is intended"
        )


def _request_error(exc: requests.RequestException) -> str:
    # The exception text can contain the full URL (with its query): describe it by its type only.
    if isinstance(exc, requests.ConnectTimeout):
        return "could not connect in time (connect timeout)"
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        if "refused" in str(exc).lower():
            return "connection refused"
        return f"connection failed ({type(exc).__name__})"
    if isinstance(exc, requests.Timeout):
        return "the server stopped sending data (read timeout)"
    return type(exc).__name__


class _HttpDownload:
    """One HTTP fetch run in a worker thread, so the caller can stop waiting at the deadline whatever the
    server does (a recv blocked on a trickling server is woken by shutting the socket down)."""

    def __init__(
        self,
        url: str,
        dest: Path,
        etag: str | None,
        last_modified: str | None,
        session: requests.Session | None,
        timeout: float | tuple[float, float],
        headers: dict[str, str],
        limits: FetchLimits,
    ) -> None:
        self.url, self.dest, self.limits = url, dest, limits
        self.etag, self.last_modified = etag, last_modified
        self.session, self.headers = session, headers
        self.connect_timeout, self.read_timeout = (
            timeout if isinstance(timeout, tuple) else (timeout, timeout)
        )
        self.shown = redact_source(url)
        self.received = 0
        self.result: FetchResult | None = None
        self.error: FeedFetchError | None = None
        self._lock = threading.Lock()
        self._cancelled = False
        self._response: requests.Response | None = None

    def run(self) -> FetchResult:
        started = time.monotonic()
        self.deadline = started + self.limits.deadline_seconds
        worker = threading.Thread(target=self._work, name="feed-download", daemon=True)
        worker.start()
        worker.join(self.limits.deadline_seconds)
        if worker.is_alive():
            self._cancel()
            worker.join(0.5)  # usually enough for it to remove its partial file; never waited on longer
            raise FeedFetchError(
                f"feed download {self.shown} stopped: not complete after the {self.limits.deadline_seconds:g} s "
                f"deadline ({self.received:,} bytes received); the server is too slow or never finishes "
                "(feed.download_deadline_seconds)"
            )
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def _cancel(self) -> None:
        """Stop the worker without waiting for it: closing the response here would block on the reader's lock
        while the worker sits in recv, so the socket is shut down instead (best effort), which wakes it."""
        with self._lock:
            self._cancelled = True
            resp = self._response
        if resp is None:
            return
        conn = getattr(resp.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is None:
            # http.client hands the socket to the response when the server closes after it (HTTP/1.0).
            fp = getattr(getattr(resp.raw, "_fp", None), "fp", None)
            sock = getattr(getattr(fp, "raw", None), "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _work(self) -> None:
        try:
            self.result = self._fetch()
        except FeedFetchError as exc:
            self.error = exc
        except requests.RequestException as exc:
            self.error = FeedFetchError(f"feed download {self.shown} failed: {_request_error(exc)}")
        except Exception as exc:  # a socket shut down under a read surfaces as anything; never unhandled
            self.error = FeedFetchError(f"feed download {self.shown} failed: {type(exc).__name__}")

    def _fetch(self) -> FetchResult:
        req_headers = dict(self.headers)
        if self.etag:
            req_headers["If-None-Match"] = self.etag
        if self.last_modified:
            req_headers["If-Modified-Since"] = self.last_modified
        http = self.session or requests.Session()
        try:
            return self._follow(http, req_headers)
        finally:
            if self.session is None:
                http.close()

    def _follow(self, http: requests.Session, req_headers: dict[str, str]) -> FetchResult:
        current = self.url
        for _hop in range(self.limits.max_redirects + 1):
            remaining = max(0.1, self.deadline - time.monotonic())
            resp = http.get(
                current,
                headers=req_headers,
                stream=True,
                allow_redirects=False,
                timeout=(min(self.connect_timeout, remaining), min(self.read_timeout, remaining)),
            )
            with self._lock:
                if self._cancelled:
                    resp.close()
                    raise FeedFetchError(f"feed download {self.shown} cancelled")
                self._response = resp
            with resp:
                location = resp.headers.get("Location")
                if resp.status_code in _REDIRECT_CODES and location:
                    target = urljoin(current, location)
                    check_redirect(target, self.shown, allow_private=self.limits.allow_private_redirects)
                    current = target
                    continue
                return self._body(resp)
        raise FeedFetchError(
            f"feed download {self.shown} refused: more than {self.limits.max_redirects} redirects"
        )

    def _body(self, resp: requests.Response) -> FetchResult:
        new_etag = resp.headers.get("ETag")
        new_lm = resp.headers.get("Last-Modified")
        if resp.status_code == 304:
            return FetchResult(
                self.shown, None, True, new_etag or self.etag, new_lm or self.last_modified, None, None, 304
            )
        if resp.status_code >= 400:
            raise FeedFetchError(f"feed download {self.shown} failed: HTTP {resp.status_code} {resp.reason}")
        if resp.status_code != 200:
            raise FeedFetchError(
                f"feed download {self.shown} failed: unexpected HTTP {resp.status_code} {resp.reason}"
            )
        cap = self.limits.max_bytes
        expected = resp.headers.get("Content-Length")
        encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if expected is not None and expected.isdigit() and not encoded and int(expected) > cap:
            raise self._too_big(int(expected))
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        partial = self.dest.with_name(f"{self.dest.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            h = hashlib.sha256()
            with partial.open("wb") as out:
                # iter_content decodes gzip/deflate transfer encodings on the fly.
                for chunk in resp.iter_content(chunk_size=CHUNK_SIZE):
                    if self._cancelled:
                        raise FeedFetchError(f"feed download {self.shown} cancelled")
                    if chunk:
                        self.received += len(chunk)
                        if self.received > cap:
                            raise self._too_big(None)
                        out.write(chunk)
                        h.update(chunk)
            size = self.received
            if expected is not None and expected.isdigit() and not encoded and size != int(expected):
                raise FeedFetchError(
                    f"feed download {self.shown} truncated: got {size:,} of {int(expected):,} bytes"
                )
            with self._lock:
                if self._cancelled:
                    raise FeedFetchError(f"feed download {self.shown} cancelled")
                os.replace(partial, self.dest)
        finally:
            partial.unlink(missing_ok=True)
        return FetchResult(
            self.shown, self.dest, False, new_etag, new_lm, h.hexdigest(), size, resp.status_code
        )

    def _too_big(self, announced: int | None) -> FeedFetchError:
        what = (
            f"announces {announced:,} bytes"
            if announced is not None
            else f"sent more than {self.limits.max_bytes:,} bytes"
        )
        return FeedFetchError(
            f"feed download {self.shown} stopped: the file {what}, over the size cap of "
            f"{self.limits.max_bytes:,} bytes (feed.max_bytes)"
        )


def head_fingerprint(
    url: str, *, timeout: float = 10.0, allow_private_redirects: bool = False, max_redirects: int = 5
) -> str | None:
    """A cheap change fingerprint of a URL (ETag / Last-Modified / Content-Length of a HEAD), following
    redirects by hand under the same policy as :func:`fetch_feed`; None when unreachable or refused."""
    current = url
    shown = redact_source(url)
    try:
        for _ in range(max_redirects + 1):
            r = requests.head(current, timeout=timeout, allow_redirects=False)
            location = r.headers.get("Location")
            if r.status_code in _REDIRECT_CODES and location:
                target = urljoin(current, location)
                check_redirect(target, shown, allow_private=allow_private_redirects)
                current = target
                continue
            if r.status_code >= 400:
                return None
            parts = [r.headers.get(h, "") for h in ("ETag", "Last-Modified", "Content-Length")]
            return "|".join(parts) if any(parts) else None
    except (requests.RequestException, FeedFetchError):
        return None
    return None
