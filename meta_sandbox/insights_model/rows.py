"""Insights rows: ad-day numbers summed per (level object, time bucket) and rendered in Meta's shapes."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from meta_sandbox import errors as gerr
from meta_sandbox.insights_model.constants import (
    ATTRIBUTE_FIELDS,
    CLASS_WINDOWS,
    KIND_LEVEL,
    LEVEL_RANK,
    PRODUCT_FIELDS,
    PURCHASE,
    ROAS_FIELDS,
    SEGMENT_ACTION_TYPES,
    WINDOW_CLASSES,
)
from meta_sandbox.insights_model.data import (
    Cells,
    account_today,
    ad_day,
)
from meta_sandbox.insights_model.knobs import (
    account_segment,
    state,
)
from meta_sandbox.insights_model.query import (
    Query,
    check_too_much_data,
    level_key,
    parse_query,
    scoped_ads,
)
from meta_sandbox.state import Ad, AdAccount, World


def _copy(cells: Cells) -> Cells:
    out = Cells()
    out.add(cells)
    return out


def _buckets(query: Query) -> list[tuple[date, date]]:
    if query.increment is None:
        return [(query.since, query.until)]
    out = []
    start = query.since
    while start <= query.until:
        stop = min(query.until, start + timedelta(days=query.increment - 1))
        out.append((start, stop))
        start = stop + timedelta(days=1)
    return out


def _money(cents: int) -> str:
    return f"{cents / 100:.2f}"


def _skew_factor(drift: dict[str, Any], key: str, level: str, days: tuple[date, date]) -> float:
    spec = drift.get(key)
    if not spec or level not in spec["levels"]:
        return 1.0
    if spec["days"] and not any(days[0].isoformat() <= d <= days[1].isoformat() for d in spec["days"]):
        return 1.0
    return float(spec["factor"])


def run_query(
    world: World, kind: str, node: Any, params: dict[str, Any]
) -> tuple[Query, list[dict[str, Any]]]:
    """Validate ``params`` and compute the insights rows Meta would answer for ``node`` (sorted by day, id)."""
    account = node if kind == "ad_account" else world.ad_accounts.get(node.account_id)
    if account is None:
        raise gerr.unknown_object(getattr(node, "id", "?"))
    now = world.now()
    today, _ = account_today(world, account, now)
    query = parse_query(params, KIND_LEVEL[kind], today)
    ads = scoped_ads(world, kind, node, query)
    check_too_much_data(world, account, query, ads)
    drift = state(world)["drift"].get(account.id, {})
    groups: dict[tuple[str, date], Cells] = {}
    shared: set[tuple[str, date]] = set()
    owners: dict[str, Ad] = {}
    buckets = _buckets(query)
    for ad in ads:
        key_id = level_key(ad, query.level, account)
        owners.setdefault(key_id, ad)
        for start, stop in buckets:
            day = start
            while day <= stop:
                cells = ad_day(world, account, ad, day, now)
                if cells is not None:
                    key = (key_id, start)
                    agg = groups.get(key)
                    if agg is None:
                        groups[key] = cells  # cached, shared: copied before the first add
                        shared.add(key)
                    else:
                        if key in shared:
                            agg = groups[key] = _copy(agg)
                            shared.discard(key)
                        agg.add(cells)
                day += timedelta(days=1)
    stops = dict(buckets)
    rows = []
    for (key_id, start), cells in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        span = (start, stops[start])
        factor = _skew_factor(drift, "total_skew", query.level, span) * _skew_factor(
            drift, "rollup_skew", query.level, span
        )
        cells = cells.scaled(factor)
        if cells.empty:
            continue
        rows.append(_row(world, account, owners[key_id], query, cells, span, drift))
    return query, rows


def _row(
    world: World,
    account: AdAccount,
    ad: Ad,
    query: Query,
    cells: Cells,
    span: tuple[date, date],
    drift: dict[str, Any],
) -> dict[str, Any]:
    level_rank = LEVEL_RANK[query.level]
    campaign = world.campaigns.get(ad.campaign_id)
    adset = world.adsets.get(ad.adset_id)
    attrs = {
        "account_id": account.account_id,
        "account_name": account.name,
        "account_currency": account.currency,
        "campaign_id": ad.campaign_id,
        "campaign_name": campaign.name if campaign else "",
        "objective": campaign.objective if campaign else "",
        "adset_id": ad.adset_id,
        "adset_name": adset.name if adset else "",
        "ad_id": ad.id,
        "ad_name": ad.name,
    }
    windows = [w for w in dict.fromkeys(query.windows) if w in WINDOW_CLASSES]
    keys = ["value", *windows]
    extra: dict[str, str] = {}
    segment = account_segment(world, account) or ""
    if "action_target_id" in query.action_breakdowns:
        extra["action_target_id"] = segment
    if "action_destination" in query.action_breakdowns:
        extra["action_destination"] = segment
    acts = _window_totals(cells.acts)
    prods: dict[str, dict[str, list[int]]] | None = None
    row: dict[str, Any] = {}
    for f in query.fields:
        if f in ("date_start", "date_stop"):
            continue
        if f in attrs:
            if LEVEL_RANK[ATTRIBUTE_FIELDS[f]] <= level_rank:
                row[f] = attrs[f]
        elif f == "spend":
            row[f] = _money(cells.spend)
        elif f == "impressions":
            row[f] = str(cells.impressions)
        elif f == "clicks":
            row[f] = str(cells.clicks)
        elif f in ("catalog_segment_value", "catalog_segment_actions"):
            idx = 1 if f == "catalog_segment_value" else 0
            entries = _action_entries(acts, idx, keys, extra)
            if entries:
                row[f] = entries
        elif f in ROAS_FIELDS:
            entries = _roas_entries(acts, cells.spend, ROAS_FIELDS[f], keys, drift)
            if entries:
                row[f] = entries
        elif f in PRODUCT_FIELDS:
            if "action_converted_product_id" not in query.action_breakdowns or drift.get(
                "omit_converted_products"
            ):
                continue
            if prods is None:
                prods = _window_totals(cells.prods)
            entries = _product_entries(prods, 1 if f == "converted_product_value" else 0, windows, query)
            if entries:
                row[f] = entries
    row["date_start"] = span[0].isoformat()
    row["date_stop"] = span[1].isoformat()
    return row


def _window_totals(table: dict[tuple[str, str], list[int]]) -> dict[str, dict[str, list[int]]]:
    """name -> window -> [count, cents], summing each class into every window that contains it."""
    out: dict[str, dict[str, list[int]]] = {}
    for (name, cls), (n, cents) in table.items():
        per = out.get(name)
        if per is None:
            per = out[name] = {}
        for window in CLASS_WINDOWS[cls]:
            cell = per.get(window)
            if cell is None:
                per[window] = [n, cents]
            else:
                cell[0] += n
                cell[1] += cents
    return out


_ZERO = (0, 0)


def _action_entries(
    totals: dict[str, dict[str, list[int]]], idx: int, keys: list[str], extra: dict[str, str]
) -> list[dict[str, str]]:
    out = []
    fmt = _money if idx == 1 else str
    for action in SEGMENT_ACTION_TYPES:
        per = totals.get(action)
        if not per:
            continue
        sums = {k: per.get(k, _ZERO)[idx] for k in keys}
        if not any(sums.values()):
            continue
        entry: dict[str, str] = {"action_type": action, **extra}
        for k, v in sums.items():
            if k == "value" or v:  # Meta leaves out windows without conversions
                entry[k] = fmt(v)
        out.append(entry)
    return out


def _roas_entries(
    totals: dict[str, dict[str, list[int]]], spend: int, action: str, keys: list[str], drift: dict[str, Any]
) -> list[dict[str, str]]:
    per = totals.get(action)
    if spend <= 0 or not per:
        return []
    factor = float(drift["roas_skew"]["factor"]) if drift.get("roas_skew") else 1.0
    sums = {k: per.get(k, _ZERO)[1] for k in keys}
    if not any(sums.values()):
        return []
    entry = {"action_type": action}
    for k, v in sums.items():
        if k == "value" or v:
            entry[k] = f"{v / spend * factor:.6f}"
    return [entry]


def _product_entries(
    totals: dict[str, dict[str, list[int]]], idx: int, windows: list[str], query: Query
) -> list[dict[str, str]]:
    keys = windows or ["value"]  # with windows requested Meta sends only the window keys
    fmt = _money if idx == 1 else str
    with_type = "action_type" in query.action_breakdowns
    out = []
    for pid in sorted(totals):
        per = totals[pid]
        sums = {k: per.get(k, _ZERO)[idx] for k in keys}
        if not any(sums.values()):
            continue
        entry: dict[str, str] = {"action_converted_product_id": pid}
        if with_type:
            entry["action_type"] = PURCHASE
        for k, v in sums.items():
            if v:
                entry[k] = fmt(v)
        out.append(entry)
    return out
