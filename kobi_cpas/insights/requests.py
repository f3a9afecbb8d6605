"""Insights request plans: which report runs to ask Meta for, with exactly which parameters.

Rules (Kobi's shared-item metrics spec and Meta's notes):
- Two request families, never mixed: ``segment`` (delivery + catalog_segment_* with action_breakdowns=action_type)
  and ``product`` (converted_product_* with action_breakdowns=action_type,action_converted_product_id, never at
  level=account: Meta rejects that breakdown on the ad account level).
- Always ``filtering`` on ad.effective_status with every status incl. DELETED and ARCHIVED: without it Meta drops
  deleted and archived ads from every rollup.
- ``time_increment=1``: one row per object per day (date_start == date_stop) in the account's time zone.
- ``action_attribution_windows`` configurable (default 1d_click, 7d_click, 28d_click, 1d_view); Meta's ``value``
  key is the default attribution and is stored as window 'default'.
- Never the default action breakdowns action_target_id / action_destination (connectors that did lost purchases).

An ``InsightsRequest`` is immutable; the ``with_*`` methods return children that keep every other parameter
(what the job manager uses to split a job by days, ids or fields).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from kobi_cpas.insights.metrics import metrics_for_request_family
from kobi_cpas.meta.statuses import ALL_EFFECTIVE_STATUSES

LEVELS: tuple[str, ...] = ("account", "campaign", "adset", "ad")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
FAMILIES: tuple[str, ...] = ("segment", "product")
DEFAULT_WINDOWS: tuple[str, ...] = ("1d_click", "7d_click", "28d_click", "1d_view")
# 7d_view and 28d_view return no data since 2026-01-12: asking for them only adds noise.
DEAD_WINDOWS = frozenset({"7d_view", "28d_view"})
SEGMENT_ACTION_BREAKDOWNS: tuple[str, ...] = ("action_type",)
PRODUCT_ACTION_BREAKDOWNS: tuple[str, ...] = ("action_type", "action_converted_product_id")
FORBIDDEN_ACTION_BREAKDOWNS = frozenset({"action_target_id", "action_destination"})
STATUS_FILTER_FIELD = "ad.effective_status"
ID_FILTER_FIELDS = {"campaign": "campaign.id", "adset": "adset.id", "ad": "ad.id"}
# Attribute fields asked for at each level (ids of the object and its parents, and the currency).
LEVEL_ID_FIELDS: dict[str, tuple[str, ...]] = {
    "account": ("account_id",),
    "campaign": ("account_id", "campaign_id"),
    "adset": ("account_id", "campaign_id", "adset_id"),
    "ad": ("account_id", "campaign_id", "adset_id", "ad_id"),
}
ATTRIBUTE_FIELDS = frozenset(
    {"account_id", "campaign_id", "adset_id", "ad_id", "account_currency", "date_start", "date_stop"}
)

Filter = tuple[str, str, tuple[str, ...]]  # (field, operator, values)


def normalize_account_id(ad_account_id: str) -> str:
    """``"act_123"`` for ``"123"`` or ``"act_123"``."""
    text = str(ad_account_id).strip()
    if not text:
        raise ValueError("ad_account_id is empty")
    return text if text.startswith("act_") else f"act_{text}"


@dataclass(frozen=True)
class InsightsRequest:
    """One insights query (sync GET or async report run) as Meta receives it."""

    ad_account_id: str  # "act_<digits>": whose data this is
    object_id: str  # the node queried: the act_ id, or a campaign id (product_scope="campaign_nodes")
    level: str
    family: str  # "segment" | "product"
    since: date
    until: date
    fields: tuple[str, ...]
    action_breakdowns: tuple[str, ...]
    windows: tuple[str, ...]
    filtering: tuple[Filter, ...]
    time_increment: int = 1

    def __post_init__(self) -> None:
        if self.level not in LEVEL_RANK:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "product" and self.level == "account":
            raise ValueError(
                "the product family (action_converted_product_id breakdown) is not supported at level=account"
            )
        bad = FORBIDDEN_ACTION_BREAKDOWNS & set(self.action_breakdowns)
        if bad:
            raise ValueError(
                f"never request the default action breakdowns {sorted(bad)}: they lose purchases"
            )
        if self.since > self.until:
            raise ValueError(f"since {self.since} is after until {self.until}")
        if not any(f[0] == STATUS_FILTER_FIELD for f in self.filtering):
            raise ValueError("filtering must include ad.effective_status (deleted and archived ads)")

    # -- Meta parameters -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return f"{self.object_id}/insights"

    def filtering_param(self) -> list[dict[str, Any]]:
        return [{"field": f, "operator": op, "value": list(values)} for f, op, values in self.filtering]

    def params(self) -> dict[str, Any]:
        """Graph parameters (encode with ``kobi_cpas.meta.encode_params``: lists and dicts become JSON)."""
        return {
            "level": self.level,
            "fields": ",".join(self.fields),
            "time_range": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "time_increment": self.time_increment,
            "action_breakdowns": list(self.action_breakdowns),
            "action_attribution_windows": list(self.windows),
            "filtering": self.filtering_param(),
        }

    # -- shape --------------------------------------------------------------------------------------

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range((self.until - self.since).days + 1)]

    @property
    def n_days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def metric_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f not in ATTRIBUTE_FIELDS)

    @property
    def attribute_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f in ATTRIBUTE_FIELDS)

    def id_filters(self) -> dict[str, tuple[str, ...]]:
        return {
            f: values for f, op, values in self.filtering if f in ID_FILTER_FIELDS.values() and op == "IN"
        }

    def describe(self) -> str:
        ids = "; ".join(f"{f} IN {len(v)} id(s)" for f, v in self.id_filters().items())
        return (
            f"{self.object_id} level={self.level} family={self.family} {self.since}..{self.until} "
            f"{len(self.metric_fields)} metric field(s){'; ' + ids if ids else ''}"
        )

    # -- children (keep every other parameter) ------------------------------------------------------

    def with_days(self, since: date, until: date) -> InsightsRequest:
        if since < self.since or until > self.until:
            raise ValueError("a child request may only narrow the day range")
        return dataclasses.replace(self, since=since, until=until)

    def with_id_filter(self, field: str, ids: Sequence[str]) -> InsightsRequest:
        if field not in ID_FILTER_FIELDS.values():
            raise ValueError(f"id filters are on {sorted(ID_FILTER_FIELDS.values())}, not {field!r}")
        if not ids:
            raise ValueError("an id filter needs at least one id")
        kept = tuple(f for f in self.filtering if f[0] != field)
        return dataclasses.replace(self, filtering=(*kept, (field, "IN", tuple(ids))))

    def with_metric_fields(self, metric_fields: Sequence[str]) -> InsightsRequest:
        unknown = set(metric_fields) - set(self.metric_fields)
        if unknown or not metric_fields:
            raise ValueError(
                f"a child request may only keep some of the parent's metric fields: {sorted(unknown)}"
            )
        kept = [f for f in self.metric_fields if f in metric_fields]
        return dataclasses.replace(self, fields=(*self.attribute_fields, *kept))


def status_filter(statuses: Iterable[str] = ALL_EFFECTIVE_STATUSES) -> Filter:
    return (STATUS_FILTER_FIELD, "IN", tuple(statuses))


def family_fields(level: str, family: str) -> tuple[str, ...]:
    metric_names = tuple(m.metric for m in metrics_for_request_family(family))
    return (*LEVEL_ID_FIELDS[level], "account_currency", *metric_names)


def contiguous_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted unique days grouped into [since, until] runs of consecutive days."""
    ordered = sorted(set(days))
    ranges: list[tuple[date, date]] = []
    for d in ordered:
        if ranges and d == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], d)
        else:
            ranges.append((d, d))
    return ranges


def build_request(
    ad_account_id: str,
    level: str,
    family: str,
    since: date,
    until: date,
    *,
    windows: Sequence[str] = DEFAULT_WINDOWS,
    object_id: str | None = None,
    product_action_breakdowns: Sequence[str] = PRODUCT_ACTION_BREAKDOWNS,
    extra_filters: Sequence[Filter] = (),
) -> InsightsRequest:
    act = normalize_account_id(ad_account_id)
    windows = tuple(dict.fromkeys(w for w in windows if w not in DEAD_WINDOWS))
    if family == "product" and "action_converted_product_id" not in product_action_breakdowns:
        raise ValueError("product requests need action_breakdowns including action_converted_product_id")
    return InsightsRequest(
        ad_account_id=act,
        object_id=object_id or act,
        level=level,
        family=family,
        since=since,
        until=until,
        fields=family_fields(level, family),
        action_breakdowns=SEGMENT_ACTION_BREAKDOWNS
        if family == "segment"
        else tuple(product_action_breakdowns),
        windows=windows,
        filtering=(status_filter(), *extra_filters),
    )


def plan_requests(
    ad_account_id: str,
    days: Iterable[date],
    *,
    levels: Sequence[str] = LEVELS,
    families: Sequence[str] = FAMILIES,
    windows: Sequence[str] = DEFAULT_WINDOWS,
    product_scope: str = "account_node",
    campaign_ids: Sequence[str] | None = None,
    product_action_breakdowns: Sequence[str] = PRODUCT_ACTION_BREAKDOWNS,
) -> list[InsightsRequest]:
    """One request per (level, family, run of consecutive days): the minimum Meta needs, which the job manager
    splits only when Meta says so. Product requests skip level=account. ``product_scope``:

    - ``"account_node"`` (default): ``POST /act_{id}/insights?level=campaign|adset|ad`` (one job per level);
    - ``"campaign_nodes"``: ``POST /{campaign_id}/insights`` per campaign in ``campaign_ids``.
    """
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown levels {sorted(unknown)}; expected some of {LEVELS}")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; expected some of {FAMILIES}")
    if product_scope not in ("account_node", "campaign_nodes"):
        raise ValueError("product_scope must be 'account_node' or 'campaign_nodes'")
    if product_scope == "campaign_nodes" and "product" in families and campaign_ids is None:
        raise ValueError("product_scope='campaign_nodes' needs campaign_ids")
    plan: list[InsightsRequest] = []
    for since, until in contiguous_ranges(days):
        for level in sorted(set(levels), key=LEVEL_RANK.__getitem__):
            for family in [f for f in FAMILIES if f in families]:
                if family == "product" and level == "account":
                    continue  # Meta: "not supported on the ad account level"
                if family == "product" and product_scope == "campaign_nodes":
                    for cid in campaign_ids or ():
                        plan.append(
                            build_request(
                                ad_account_id,
                                level,
                                family,
                                since,
                                until,
                                windows=windows,
                                object_id=cid,
                                product_action_breakdowns=product_action_breakdowns,
                            )
                        )
                    continue
                plan.append(
                    build_request(
                        ad_account_id,
                        level,
                        family,
                        since,
                        until,
                        windows=windows,
                        product_action_breakdowns=product_action_breakdowns,
                    )
                )
    return plan
