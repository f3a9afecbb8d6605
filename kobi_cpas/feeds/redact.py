"""Keep secrets of feed URLs (user info, access keys in the query) out of tables, logs and Dagster events.

:func:`redact_source` is the one form a feed source is stored or shown in; :func:`redact_text` scrubs free text
(urllib3 logs each request line with its query at DEBUG: a filter on its logger applies it).
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "REDACTED"
_SECRET_PARAM_PARTS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "signature",
    "sig",
    "auth",
    "credential",
    "session",
)


def _is_secret_param(name: str) -> bool:
    n = name.lower().replace("-", "").replace("_", "")
    return any(part in n for part in _SECRET_PARAM_PARTS)


def redact_source(source: str | Path | None) -> str:
    """A feed source safe to store and show: for a URL, user info and fragment removed and the values of
    secret-looking query parameters (key, token, secret, password, signature, sig, auth, access_key,
    apikey, ...) replaced by ``REDACTED``; other parameters kept. A local path is returned as it is."""
    if source is None:
        return ""
    text = str(source)
    parts = urlsplit(text)
    if not parts.scheme or len(parts.scheme) == 1 or not parts.netloc:
        return text  # a path (or a Windows drive letter)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with contextlib.suppress(ValueError):
        if parts.port:
            host = f"{host}:{parts.port}"
    query = "&".join(
        f"{quote(k, safe='')}={REDACTED if _is_secret_param(k) else quote(v, safe='/:,')}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_QUERY_SECRET_RE = re.compile(r"([?&;][^=&\s\"'#]*=)([^&\s\"'#]*)")
_USERINFO_RE = re.compile(r"(?i)(https?://)[^/@\s\"']+@")


def redact_text(text: str) -> str:
    """Scrub URL user info and secret-looking query values inside free text (log lines, messages)."""

    def _param(m: re.Match[str]) -> str:
        name = m.group(1)[1:-1]
        return m.group(1) + (REDACTED if _is_secret_param(name) else m.group(2))

    return _QUERY_SECRET_RE.sub(_param, _USERINFO_RE.sub(r"\1", text))


class _RedactingFilter(logging.Filter):
    """urllib3 logs each request line (path and query) at DEBUG: scrub feed secrets from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):
            msg = record.getMessage()
            clean = redact_text(msg)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


_urllib3_log = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _RedactingFilter) for f in _urllib3_log.filters):
    _urllib3_log.addFilter(_RedactingFilter())
