"""Insights query parameters (fields, time range, increments, breakdowns, windows, filtering), the ads a
query covers, and Meta's too-much-data refusal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from meta_sandbox import errors as gerr
from meta_sandbox.errors import GraphError
from meta_sandbox.insights_model.constants import (
    ACTION_BREAKDOWNS,
    ATTRIBUTE_FIELDS,
    FILTER_FIELDS,
    HIDDEN_BY_DEFAULT,
    KNOWN_WINDOWS,
    LEVEL_RANK,
    METRIC_FIELDS,
    TOO_MUCH_DATA_MESSAGE,
    TOO_MUCH_DATA_SUBCODE,
)
from meta_sandbox.insights_model.knobs import (
    state,
)
from meta_sandbox.state import Ad, AdAccount, World


@dataclass
class Query:
    level: str
    fields: list[str]
    since: date
    until: date
    increment: int | None  # days per row bucket; None = all_days
    action_breakdowns: list[str]
    windows: list[str]
    filtering: list[dict[str, Any]]

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1


def _list_param(raw: Any, name: str) -> list[Any]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, list):
        return raw
    text = str(raw).strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise gerr.invalid_parameter(f"Param {name} must be a JSON-encoded array") from None
        if not isinstance(value, list):
            raise gerr.invalid_parameter(f"Param {name} must be an array")
        return value
    return [part.strip().strip("'\"") for part in text.split(",") if part.strip()]


def _parse_day(raw: Any, name: str) -> date:
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise gerr.invalid_parameter(
            f"Param time_range[{name}] must be a date in YYYY-MM-DD format"
        ) from None


_PRESETS = {"last_3d": 3, "last_7d": 7, "last_14d": 14, "last_28d": 28, "last_30d": 30, "last_90d": 90}


def parse_query(params: dict[str, Any], object_level: str, today: date) -> Query:
    level = str(params.get("level") or object_level)
    if level not in LEVEL_RANK:
        raise gerr.invalid_parameter("param level must be one of {ad, adset, campaign, account}")
    if LEVEL_RANK[level] < LEVEL_RANK[object_level]:
        raise gerr.invalid_parameter(f"level {level} is not valid on a {object_level} object")
    fields = [str(f) for f in _list_param(params.get("fields"), "fields")]
    if not fields:
        fields = ["account_id", *([f"{level}_id"] if level != "account" else []), "impressions", "spend"]
    for f in fields:
        if f not in METRIC_FIELDS and f not in ATTRIBUTE_FIELDS:
            raise gerr.invalid_parameter(
                f"{f} is not valid for fields param. please check "
                "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/ for all valid values"
            )
    # time range: JSON object, time_range[since]/time_range[until] form keys, or a preset.
    raw_range = params.get("time_range")
    since_raw = until_raw = None
    if raw_range:
        rng = raw_range
        if isinstance(rng, str):
            try:
                rng = json.loads(rng)
            except ValueError:
                raise gerr.invalid_parameter(
                    "Param time_range must be a JSON object {since, until}"
                ) from None
        if not isinstance(rng, dict):
            raise gerr.invalid_parameter("Param time_range must be a JSON object {since, until}")
        since_raw, until_raw = rng.get("since"), rng.get("until")
    elif params.get("time_range[since]"):
        since_raw, until_raw = params.get("time_range[since]"), params.get("time_range[until]")
    if since_raw is not None or until_raw is not None:
        if not since_raw or not until_raw:
            raise gerr.invalid_parameter("Param time_range needs both since and until")
        since, until = _parse_day(since_raw, "since"), _parse_day(until_raw, "until")
    else:
        preset = str(params.get("date_preset") or "last_30d")
        if preset == "today":
            since = until = today
        elif preset == "yesterday":
            since = until = today - timedelta(days=1)
        elif preset in _PRESETS:
            since, until = today - timedelta(days=_PRESETS[preset]), today - timedelta(days=1)
        else:
            raise gerr.invalid_parameter(f"date_preset {preset} is not supported by the sandbox")
    if since > until:
        raise gerr.invalid_parameter("Param time_range is invalid: since must not be after until")
    if (until - since).days > 37 * 31:
        raise gerr.invalid_parameter("Param time_range covers more than 37 months")
    raw_inc = params.get("time_increment")
    if raw_inc in (None, "", "all_days"):
        increment = None
    else:
        try:
            increment = int(raw_inc)
        except (TypeError, ValueError):
            raise gerr.invalid_parameter("Param time_increment must be all_days or 1-90") from None
        if not 1 <= increment <= 90:
            raise gerr.invalid_parameter("Param time_increment must be all_days or 1-90")
    breakdowns = [str(b) for b in _list_param(params.get("action_breakdowns"), "action_breakdowns")]
    for i, b in enumerate(breakdowns):
        if b not in ACTION_BREAKDOWNS:
            raise gerr.invalid_parameter(
                f"action_breakdowns[{i}] must be one of the following values: {', '.join(sorted(ACTION_BREAKDOWNS))}"
            )
    if "action_converted_product_id" in breakdowns and level == "account":
        raise GraphError(
            100,
            "(#100) The action_converted_product_id breakdown is not supported on the ad account level. Query "
            "level=campaign, adset or ad instead.",
            user_title="Breakdown not supported",
            user_msg="The action_converted_product_id breakdown is not supported on the ad account level.",
        )
    windows = [
        str(w) for w in _list_param(params.get("action_attribution_windows"), "action_attribution_windows")
    ]
    for i, w in enumerate(windows):
        if w not in KNOWN_WINDOWS and w != "default":
            raise gerr.invalid_parameter(
                f"action_attribution_windows[{i}] must be one of the following values: "
                f"{', '.join(sorted(KNOWN_WINDOWS))}, default"
            )
    filtering = _list_param(params.get("filtering"), "filtering")
    for spec in filtering:
        if not isinstance(spec, dict) or "field" not in spec or "operator" not in spec:
            raise gerr.invalid_parameter("Param filtering must be an array of {field, operator, value}")
        if spec["field"] not in FILTER_FIELDS:
            raise gerr.invalid_parameter(f"Filtering field {spec['field']} is invalid")
        if spec["operator"] not in ("IN", "NOT_IN", "EQUAL", "NOT_EQUAL"):
            raise gerr.invalid_parameter(
                f"Filtering field {spec['field']} with operation {spec['operator']} is not supported"
            )
    return Query(level, fields, since, until, increment, breakdowns, windows, filtering)


def _filter_value(spec: dict[str, Any]) -> list[str]:
    value = spec.get("value")
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _ad_attr(world: World, ad: Ad, field_name: str) -> str:
    obj, attr = field_name.split(".")
    if obj == "ad":
        return ad.id if attr == "id" else ad.effective_status
    if obj == "adset":
        adset = world.adsets.get(ad.adset_id)
        return ad.adset_id if attr == "id" else (adset.effective_status if adset else "")
    campaign = world.campaigns.get(ad.campaign_id)
    return ad.campaign_id if attr == "id" else (campaign.effective_status if campaign else "")


def scoped_ads(world: World, kind: str, node: Any, query: Query) -> list[Ad]:
    """The ads a query covers: under the object, through the filters; deleted and archived ads only when an
    ad.effective_status filter asks for them (as on Meta)."""
    if kind == "ad_account":
        ads = [a for a in world.ads.values() if a.account_id == node.id]
    elif kind == "campaign":
        ads = [a for a in world.ads.values() if a.campaign_id == node.id]
    elif kind == "adset":
        ads = [a for a in world.ads.values() if a.adset_id == node.id]
    else:
        ads = [node]
    status_filtered = any(f["field"] == "ad.effective_status" for f in query.filtering)
    if not status_filtered:
        ads = [a for a in ads if a.effective_status not in HIDDEN_BY_DEFAULT]
    for spec in query.filtering:
        values = set(_filter_value(spec))
        op = spec["operator"]
        keep_in = op in ("IN", "EQUAL")
        ads = [a for a in ads if (_ad_attr(world, a, spec["field"]) in values) == keep_in]
    return sorted(ads, key=lambda a: a.id)


def level_key(ad: Ad, level: str, account: AdAccount) -> str:
    if level == "account":
        return account.id
    if level == "campaign":
        return ad.campaign_id
    if level == "adset":
        return ad.adset_id
    return ad.id


def check_too_much_data(world: World, account: AdAccount, query: Query, ads: list[Ad]) -> None:
    """Raise Meta's too-much-data error when the account's thresholds (days in the range, objects at the level,
    metric fields) say so; only for requests asking for metrics (a request for ids alone is small)."""
    spec = state(world)["drift"].get(account.id, {}).get("too_much_data")
    if not spec or not any(f in METRIC_FIELDS for f in query.fields):
        return
    n_ids = len({level_key(a, query.level, account) for a in ads})
    n_fields = sum(1 for f in query.fields if f in METRIC_FIELDS)
    over_days = spec["max_days"] is not None and query.days > spec["max_days"]
    over_ids = spec["max_ids"] is not None and n_ids > spec["max_ids"]
    over_fields = spec["max_fields"] is not None and n_fields > spec["max_fields"]
    if not (over_days or over_ids or over_fields):
        return
    st = state(world)
    st["tmd_count"] += 1
    variant = spec["variant"]
    if variant == "alternate":
        variant = "subcode" if st["tmd_count"] % 2 else "http_500"
    if variant == "http_500":
        raise GraphError(1, TOO_MUCH_DATA_MESSAGE, status=500, is_transient=True)
    raise GraphError(
        100,
        TOO_MUCH_DATA_MESSAGE,
        subcode=TOO_MUCH_DATA_SUBCODE,
        user_title="Reduce the amount of data",
        user_msg="Please reduce the amount of data you're asking for, then retry your request",
    )
