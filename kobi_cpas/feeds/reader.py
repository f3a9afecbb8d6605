"""Fetch a feed source (local path or http(s) URL) to a local file, streaming.

HTTP fetches are conditional: pass the ETag / Last-Modified of the previous fetch and a ``304 Not
Modified`` comes back as ``FetchResult(not_modified=True)`` without a body. Bodies are streamed to
``<dest>.partial`` in 1 MiB chunks (sha256 and size computed on the way) and renamed over ``dest`` only
when complete, so a feed of several GB never sits in memory and a failed download never leaves a
half-written ``dest``. Error messages show the URL without its query string or credentials (feed URLs
often carry access keys).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from kobi_cpas.feeds.errors import FeedFetchError

CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT = (10.0, 300.0)  # connect, read (between bytes)


@dataclass(frozen=True)
class FetchResult:
    """Outcome of :func:`fetch_feed`.

    ``path`` is the local file (None when ``not_modified``); ``etag`` / ``last_modified`` are the
    validators to pass next time (the previous ones are echoed back on 304 when the server omits them).
    """

    source: str
    path: Path | None
    not_modified: bool
    etag: str | None
    last_modified: str | None
    sha256: str | None
    size_bytes: int | None
    status_code: int | None = None


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_url(source: str) -> bool:
    return urlsplit(str(source)).scheme.lower() in ("http", "https")


def file_sha256(path: str | Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, streaming."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


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
) -> FetchResult:
    """Fetch ``source`` to ``dest``.

    Local paths (or ``file://`` URLs) are not copied unless ``copy_local`` (then ``dest`` is required):
    the result points at the file itself, with its sha256 and size, ``last_modified`` = its mtime as an
    HTTP date, and ``not_modified`` when that equals the ``last_modified`` passed in.
    For http(s), ``dest`` is required.
    """
    src = str(source)
    if src.lower().startswith("file://"):
        src = urlsplit(src).path
    if not is_url(src):
        return _fetch_local(Path(src), dest, last_modified, copy_local)
    if dest is None:
        raise ValueError("fetch_feed: dest is required for http(s) sources")
    return _fetch_http(src, Path(dest), etag, last_modified, session, timeout, headers or {})


def _fetch_local(path: Path, dest: str | Path | None, last_modified: str | None, copy: bool) -> FetchResult:
    if not path.is_file():
        raise FeedFetchError(f"feed file {path} not found")
    mtime = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
    if last_modified is not None and last_modified == mtime:
        return FetchResult(str(path), None, True, None, mtime, None, None)
    if copy:
        if dest is None:
            raise ValueError("fetch_feed: dest is required with copy_local=True")
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)
    else:
        target = path
    digest, size = file_sha256(target)
    return FetchResult(str(path), target, False, None, mtime, digest, size)


def _fetch_http(
    url: str,
    dest: Path,
    etag: str | None,
    last_modified: str | None,
    session: requests.Session | None,
    timeout: float | tuple[float, float],
    extra_headers: dict[str, str],
) -> FetchResult:
    shown = redact_url(url)
    req_headers = dict(extra_headers)
    if etag:
        req_headers["If-None-Match"] = etag
    if last_modified:
        req_headers["If-Modified-Since"] = last_modified
    http = session or requests.Session()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    try:
        with http.get(url, headers=req_headers, stream=True, timeout=timeout) as resp:
            new_etag = resp.headers.get("ETag")
            new_lm = resp.headers.get("Last-Modified")
            if resp.status_code == 304:
                return FetchResult(
                    url, None, True, new_etag or etag, new_lm or last_modified, None, None, 304
                )
            if resp.status_code >= 400:
                raise FeedFetchError(f"feed download {shown} failed: HTTP {resp.status_code} {resp.reason}")
            expected = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
            h = hashlib.sha256()
            size = 0
            with partial.open("wb") as out:
                # iter_content decodes gzip/deflate transfer encodings on the fly.
                for chunk in resp.iter_content(chunk_size=CHUNK_SIZE):
                    if chunk:
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
            if expected is not None and not encoded and size != int(expected):
                raise FeedFetchError(
                    f"feed download {shown} truncated: got {size:,} of {int(expected):,} bytes"
                )
            os.replace(partial, dest)
            return FetchResult(url, dest, False, new_etag, new_lm, h.hexdigest(), size, resp.status_code)
    except requests.RequestException as exc:
        # The exception text can contain the full URL (with its query): show only its type.
        raise FeedFetchError(f"feed download {shown} failed: {type(exc).__name__}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
