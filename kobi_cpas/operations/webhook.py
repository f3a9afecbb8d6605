"""POST an alert to a Slack-compatible incoming webhook (``{"text": ...}``). Never raises: the outcome says
whether it was accepted, and why not (redacted: a webhook URL is itself a credential)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from kobi_cpas.operations.alerts import scrub


@dataclass(frozen=True)
class Delivery:
    ok: bool
    error: str | None = None


def post_text(url: str, text: str, timeout_seconds: float = 5.0) -> Delivery:
    """One POST of ``{"text": text}``; 2xx is delivered, anything else (HTTP error, refused, timeout) is not."""
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            response.read(4096)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return Delivery(False, f"HTTP {exc.code}")
    except Exception as exc:  # refused, DNS, timeout, TLS: recorded and retried, never raised to the sensor
        return Delivery(False, scrub(f"{type(exc).__name__}: {exc}", [url]))
    return Delivery(True) if 200 <= status < 300 else Delivery(False, f"HTTP {status}")
