"""Fault injection: make chosen Graph calls fail the way Meta fails.

A rule matches calls by HTTP method (optional) and by route name (``"catalog.get"``) or a regex searched in
the path (``"/external_event_sources$"``); with neither it matches every Graph call (never admin calls).
It fires either by ``rate`` (probability per matching call, drawn from an RNG seeded by the world seed and the
rule's number, so a run is reproducible) or by script: ``times`` (the next N matching calls get ``kind``) or
``script`` (a list of fault specs, one per matching call), after which the rule is spent.

Kinds and their parameters:
- ``http_500``: Meta error ``code`` 1 (default) or 2, is_transient, HTTP ``status`` (500).
- ``http_503``: Meta error code 2 "An unexpected error has occurred...", HTTP 503.
- ``throttle``: ``code`` in 4/17/32/613/80000/80004/80009/80014 (default 80009) with Meta's message, HTTP 400/403
  as Meta does (``status`` overrides), usage headers at 100 % and ``estimated_time_to_regain_access`` minutes.
- ``high_usage``: a normal answer whose usage headers read ``pct`` (default 90).
- ``slow``: wait ``seconds`` (default 1) then answer normally.
- ``timeout``: wait ``seconds`` (default 5, longer than the client's timeout) before answering.
- ``malformed_json``: HTTP 200 whose body is the real answer cut in half.
- ``auth_error`` (190, ``subcode`` 463 by default), ``permission_error`` (200; ``permission``),
  ``bad_request`` (100; ``message``, ``subcode``).
- ``error``: anything: ``code``, ``subcode``, ``status``, ``message``, ``type``, ``is_transient``,
  ``error_user_title``, ``error_user_msg`` (e.g. code 100 subcode 1487534, or 2310068).
- ``empty_page``: a list edge answers an empty ``data`` page whose ``next`` leads on to the real page.
- ``paging_loop``: a list edge answers a page whose ``next`` is the very URL just requested.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from meta_sandbox.errors import GraphError, permission_error, unknown_error

FAULT_KINDS = frozenset(
    {
        "pass",  # in a script: let this call through untouched
        "http_500",
        "http_503",
        "throttle",
        "high_usage",
        "slow",
        "timeout",
        "malformed_json",
        "auth_error",
        "permission_error",
        "bad_request",
        "error",
        "empty_page",
        "paging_loop",
    }
)
# Kinds the server applies around a normal answer instead of replacing it.
PAGE_KINDS = frozenset({"empty_page", "paging_loop"})
DELAY_KINDS = frozenset({"slow", "timeout"})

THROTTLE_MESSAGES: dict[int, tuple[str, int]] = {
    4: ("(#4) Application request limit reached", 403),
    17: ("(#17) User request limit reached", 403),
    32: ("(#32) Page request limit reached", 403),
    613: ("(#613) Calls to this api have exceeded the rate limit.", 400),
    80000: (
        "(#80000) There have been too many calls from this ad-account. Wait a bit and try again. For more info, "
        "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting#ads-insights.",
        400,
    ),
    80004: (
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again. For more info, "
        "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting#ads-management.",
        400,
    ),
    80009: (
        "(#80009) There have been too many calls to this Catalog account. Wait a bit and try again. For more "
        "info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
        400,
    ),
    80014: (
        "(#80014) There have been too many calls for the batch uploads to this catalog account. Wait a bit and "
        "try again. For more info, please refer to "
        "https://developers.facebook.com/docs/graph-api/overview/rate-limiting#catalog.",
        400,
    ),
}


class FaultSpecError(ValueError):
    """An invalid fault rule (the admin API answers 400 with this message)."""


def _check_kind(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
    if kind == "throttle":
        code = int(spec.get("code", 80009))
        if code not in THROTTLE_MESSAGES and not spec.get("message"):
            raise FaultSpecError(
                f"throttle code {code} needs a 'message' (known: {sorted(THROTTLE_MESSAGES)})"
            )
    if kind == "error" and "code" not in spec:
        raise FaultSpecError("fault kind 'error' needs a 'code'")
    return spec


@dataclass
class FaultRule:
    id: int
    route: str | None = None
    path_regex: str | None = None
    method: str | None = None
    rate: float | None = None
    kind: str | None = None  # rate rules
    params: dict[str, Any] = field(default_factory=dict)  # rate rules
    script: list[dict[str, Any]] = field(default_factory=list)  # remaining scripted faults
    fired: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    @property
    def spent(self) -> bool:
        return self.rate is None and not self.script

    def matches(self, method: str, path: str, route: str | None) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.route and self.route != route:
            return False
        return not (self._regex and not self._regex.search(path))

    def draw(self) -> dict[str, Any] | None:
        if self.rate is not None:
            if self.rng.random() < self.rate:
                self.fired += 1
                return {"kind": self.kind, **self.params}
            return None
        if self.script:
            spec = self.script.pop(0)
            if spec.get("kind") == "pass":
                return None
            self.fired += 1
            return spec
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "path_regex": self.path_regex,
            "method": self.method,
            "rate": self.rate,
            "kind": self.kind,
            "params": self.params,
            "remaining": list(self.script),
            "fired": self.fired,
            "spent": self.spent,
        }


class FaultInjector:
    """The active fault rules; thread-safe. ``pick`` returns the fault for one call, or None."""

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 0

    def add(self, spec: dict[str, Any]) -> FaultRule:
        spec = dict(spec)
        route, path_regex = spec.pop("route", None), spec.pop("path_regex", None)
        method = spec.pop("method", None)
        rate, times, script = spec.pop("rate", None), spec.pop("times", None), spec.pop("script", None)
        seed = spec.pop("seed", None)
        if sum(x is not None for x in (rate, times, script)) > 1:
            raise FaultSpecError("give only one of 'rate', 'times' or 'script'")
        regex = None
        if path_regex:
            try:
                regex = re.compile(path_regex)
            except re.error as exc:
                raise FaultSpecError(f"path_regex {path_regex!r} is not a valid regex: {exc}") from None
        with self._lock:
            self._next_id += 1
            rule = FaultRule(
                id=self._next_id,
                route=route,
                path_regex=path_regex,
                method=method.upper() if method else None,
                _regex=regex,
            )
            rule.rng = random.Random(f"{self.seed}:{rule.id}" if seed is None else f"{seed}")
            if script is not None:
                if not isinstance(script, list) or not script:
                    raise FaultSpecError("'script' must be a non-empty list of fault specs")
                rule.script = [_check_kind(dict(s)) for s in script]
            elif rate is not None:
                rate = float(rate)
                if not 0.0 <= rate <= 1.0:
                    raise FaultSpecError("'rate' must be between 0 and 1")
                _check_kind(spec)
                rule.rate, rule.kind = rate, spec.pop("kind")
                rule.params = spec
            else:
                n = 1 if times is None else int(times)
                if n < 1:
                    raise FaultSpecError("'times' must be at least 1")
                _check_kind(spec)
                rule.script = [dict(spec) for _ in range(n)]
            self._rules.append(rule)
            return rule

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) < before

    def clear(self, seed: int | None = None) -> None:
        with self._lock:
            self._rules.clear()
            self._next_id = 0
            if seed is not None:
                self.seed = seed

    def pick(self, method: str, path: str, route: str | None) -> dict[str, Any] | None:
        with self._lock:
            for rule in self._rules:
                if rule.spent or not rule.matches(method, path, route):
                    continue
                fault = rule.draw()
                if fault is not None:
                    return fault
            return None

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.describe() for r in self._rules]


def fault_error(fault: dict[str, Any]) -> GraphError | None:
    """The Meta error a fault answers with, or None for kinds that do not replace the answer."""
    kind = fault["kind"]
    if kind == "http_500":
        err = unknown_error(int(fault.get("code", 1)), int(fault.get("status", 500)))
        return err
    if kind == "http_503":
        return unknown_error(2, int(fault.get("status", 503)))
    if kind == "throttle":
        code = int(fault.get("code", 80009))
        message, status = THROTTLE_MESSAGES.get(code, (fault.get("message", ""), 400))
        return GraphError(
            code,
            fault.get("message", message),
            subcode=fault.get("subcode"),
            status=int(fault.get("status", status)),
            is_transient=bool(fault.get("is_transient", True)),
            usage_pct=float(fault.get("pct", 100)),
            regain_minutes=float(fault.get("estimated_time_to_regain_access", 0)),
        )
    if kind == "auth_error":
        return GraphError(
            190,
            fault.get("message", "Error validating access token: Session has expired"),
            subcode=fault.get("subcode", 463),
            status=int(fault.get("status", 400)),
        )
    if kind == "permission_error":
        err = permission_error(fault.get("permission", "business_management"))
        if "message" in fault:
            err.message = fault["message"]
        err.status = int(fault.get("status", err.status))
        return err
    if kind == "bad_request":
        return GraphError(
            100,
            fault.get("message", "(#100) Invalid parameter"),
            subcode=fault.get("subcode"),
            status=int(fault.get("status", 400)),
            user_title=fault.get("error_user_title"),
            user_msg=fault.get("error_user_msg"),
        )
    if kind == "error":
        return GraphError(
            int(fault["code"]),
            fault.get("message", "An error occurred"),
            type=fault.get("type", "OAuthException"),
            subcode=fault.get("subcode", fault.get("error_subcode")),
            status=int(fault.get("status", 400)),
            is_transient=bool(fault.get("is_transient", False)),
            user_title=fault.get("error_user_title"),
            user_msg=fault.get("error_user_msg"),
            usage_pct=fault.get("pct"),
            regain_minutes=fault.get("estimated_time_to_regain_access"),
        )
    return None
