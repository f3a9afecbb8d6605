"""Parse Meta's rate-limit usage headers into one snapshot the client paces itself with.

Headers (values are percentages of the limit):
- ``X-App-Usage``: ``{"call_count", "total_cputime", "total_time"}``
- ``X-Business-Use-Case-Usage``: ``{"<business_id>": [{"type", "call_count", "total_cputime", "total_time",
  "estimated_time_to_regain_access" (minutes)}]}``
- ``x-fb-ads-insights-throttle``: ``{"app_id_util_pct", "acc_id_util_pct", "ads_api_access_tier"}``
- ``X-Ad-Account-Usage``: ``{"acc_id_util_pct", "reset_time_duration", "ads_api_access_tier"}``
Unparseable headers are ignored: usage is advice, never a reason to fail a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

APP_USAGE = "X-App-Usage"
BUSINESS_USAGE = "X-Business-Use-Case-Usage"
INSIGHTS_THROTTLE = "x-fb-ads-insights-throttle"
AD_ACCOUNT_USAGE = "X-Ad-Account-Usage"

_PCT_KEYS = ("call_count", "total_cputime", "total_time")
_INSIGHTS_KEYS = ("app_id_util_pct", "acc_id_util_pct")


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = None
    for key, value in headers.items():
        if key.lower() == name.lower():
            raw = value
            break
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class UsageSnapshot:
    app: dict[str, float] = field(default_factory=dict)
    business: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    insights: dict[str, Any] = field(default_factory=dict)
    ad_account: dict[str, Any] = field(default_factory=dict)

    def percentages(self) -> dict[str, float]:
        """Every percentage found, keyed like ``app.call_count`` or ``business.<id>.catalog_management.total_time``."""
        out: dict[str, float] = {}
        for k in _PCT_KEYS:
            v = _num(self.app.get(k))
            if v is not None:
                out[f"app.{k}"] = v
        for biz, entries in self.business.items():
            for entry in entries:
                for k in _PCT_KEYS:
                    v = _num(entry.get(k))
                    if v is not None:
                        out[f"business.{biz}.{entry.get('type', '?')}.{k}"] = v
        for k in _INSIGHTS_KEYS:
            v = _num(self.insights.get(k))
            if v is not None:
                out[f"insights.{k}"] = v
        v = _num(self.ad_account.get("acc_id_util_pct"))
        if v is not None:
            out["ad_account.acc_id_util_pct"] = v
        return out

    @property
    def max_pct(self) -> float:
        return max(self.percentages().values(), default=0.0)

    @property
    def regain_seconds(self) -> float | None:
        """Longest ``estimated_time_to_regain_access`` (minutes in the header) in seconds, if any is > 0."""
        minutes = [
            m
            for entries in self.business.values()
            for entry in entries
            if (m := _num(entry.get("estimated_time_to_regain_access"))) is not None and m > 0
        ]
        return max(minutes) * 60.0 if minutes else None

    def describe(self) -> str:
        pcts = self.percentages()
        if not pcts:
            return "usage n/a"
        worst = max(pcts, key=lambda k: pcts[k])
        return f"usage {pcts[worst]:.0f}% ({worst})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": dict(self.app),
            "business": {k: [dict(e) for e in v] for k, v in self.business.items()},
            "insights": dict(self.insights),
            "ad_account": dict(self.ad_account),
            "max_pct": self.max_pct,
            "regain_seconds": self.regain_seconds,
        }


def parse_usage(headers: Mapping[str, str]) -> UsageSnapshot | None:
    """The usage snapshot of one response, or None when it carries no usage header."""
    app = _json_header(headers, APP_USAGE)
    business = _json_header(headers, BUSINESS_USAGE)
    insights = _json_header(headers, INSIGHTS_THROTTLE)
    ad_account = _json_header(headers, AD_ACCOUNT_USAGE)
    if app is None and business is None and insights is None and ad_account is None:
        return None
    biz: dict[str, list[dict[str, Any]]] = {}
    if isinstance(business, dict):
        for key, entries in business.items():
            if isinstance(entries, dict):
                entries = [entries]
            if isinstance(entries, list):
                biz[str(key)] = [e for e in entries if isinstance(e, dict)]
    return UsageSnapshot(
        app=app if isinstance(app, dict) else {},
        business=biz,
        insights=insights if isinstance(insights, dict) else {},
        ad_account=ad_account if isinstance(ad_account, dict) else {},
    )
