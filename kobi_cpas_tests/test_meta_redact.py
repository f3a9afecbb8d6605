"""Redaction helpers: the token and appsecret_proof never reach a log line."""

from __future__ import annotations

import logging

from kobi_cpas.meta import SecretRedactingFilter, redact
from kobi_cpas.meta.redact import REDACTED, install_redaction

TOKEN = "EAAGm0PX4ZCpsBAKtesttoken42"


def test_redact_replaces_secrets_and_token_shapes() -> None:
    assert redact(f"bad token {TOKEN}!", [TOKEN]) == f"bad token {REDACTED}!"
    assert redact("GET /v1?access_token=abc123&x=1", []) == f"GET /v1?access_token={REDACTED}&x=1"
    assert redact("u?appsecret_proof=deadbeef", []) == f"u?appsecret_proof={REDACTED}"
    assert redact("Authorization: Bearer abc.def-ghi", []) == f"Authorization: Bearer {REDACTED}"
    assert redact('{"access_token": "abc"}', []) == f'{{"access_token": "{REDACTED}"}}'
    # Short "secrets" are ignored rather than mangling every message.
    assert redact("an id", ["id"]) == "an id"
    assert redact("", [TOKEN]) == ""


def test_redact_longest_secret_first() -> None:
    assert TOKEN not in redact(f"x {TOKEN}suffix", [TOKEN, TOKEN + "suffix"])


def _record(msg: str, args: tuple = ()) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)


def test_filter_scrubs_message_and_args() -> None:
    flt = SecretRedactingFilter([TOKEN])
    rec = _record("calling with %s and %r", (TOKEN, {"t": TOKEN}))
    assert flt.filter(rec) is True
    assert TOKEN not in rec.getMessage()
    assert rec.args is None
    assert REDACTED in rec.getMessage()


def test_filter_scrubs_exception_text() -> None:
    flt = SecretRedactingFilter([TOKEN])
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    flt.filter(rec)
    formatted = logging.Formatter().format(rec)
    assert "boom" in formatted
    assert TOKEN not in formatted


def test_install_redaction_reuses_one_filter(caplog) -> None:
    logger = logging.getLogger("kobi_cpas_tests.redact")
    first = install_redaction(logger, [TOKEN])
    second = install_redaction(logger, ["another-secret-value"])
    try:
        assert first is second
        assert sum(isinstance(f, SecretRedactingFilter) for f in logger.filters) == 1
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("token=%s other=%s", TOKEN, "another-secret-value")
        assert TOKEN not in caplog.text
        assert "another-secret-value" not in caplog.text
    finally:
        logger.removeFilter(first)
