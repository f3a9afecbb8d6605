"""Keep the Meta access token (and the appsecret_proof derived from it) out of logs and exception messages.

The client never puts the token in a URL, but Meta sometimes echoes it in error messages ("Malformed access
token EAAB...") and other code may log a URL written by hand, so every text that leaves the client is scrubbed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Secrets shorter than this are not replaced verbatim: scrubbing "ab" would mangle every message.
_MIN_SECRET_LEN = 6

# Token-shaped values that must be scrubbed even when the caller did not name them as secrets.
_PATTERNS = [
    (re.compile(r"(?i)(access_token=)[^&\s\"'#]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(appsecret_proof=)[^&\s\"'#]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\"access_token\"\s*:\s*\")[^\"]*"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bOAuth\s+)(?=[A-Za-z0-9._~+/=-]{20,})[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with every secret (and anything shaped like a token parameter or header) replaced."""
    if not text:
        return text
    out = str(text)
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


class SecretRedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from a record's message, args and exception text.

    It formats the message once (``record.getMessage()``), scrubs it and drops the args, so handlers
    downstream only ever see the scrubbed text. Secrets can be added later (one filter per logger is enough).
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = {s for s in secrets if s}

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def add_secrets(self, secrets: Iterable[str | None]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def install_redaction(logger: logging.Logger, secrets: Iterable[str | None]) -> SecretRedactingFilter:
    """Add ``secrets`` to the logger's SecretRedactingFilter, creating and installing it if needed."""
    for existing in logger.filters:
        if isinstance(existing, SecretRedactingFilter):
            existing.add_secrets(secrets)
            return existing
    flt = SecretRedactingFilter(secrets)
    logger.addFilter(flt)
    return flt
