"""The sandbox's Ads Insights model: deterministic delivery and shared-item conversions per (ad, day), rolled
up the way Meta rolls them up, plus the knobs tests use to make the API misbehave.

Data. Every ad delivers every day from its created day up to the world's "now" (in the ad account's time zone;
today is partial). Spend, impressions and clicks come from a per-ad profile; conversions are generated as
*events* (view content, add to cart, purchases of catalog products), each in one attribution class:

    c1  = clicked, converted within 1 day      -> in 1d_click, 7d_click, 28d_click and the default value
    c7  = clicked, converted within 2-7 days   -> in 7d_click, 28d_click and the default value
    c28 = clicked, converted within 8-28 days  -> in 28d_click only
    v1  = viewed, converted within 1 day       -> in 1d_view and the default value

so windows nest as on Meta, the default ``value`` is "7-day click or 1-day view", 7d_view / 28d_view return
nothing (Meta stopped them on 2026-01-12) and converted products add up exactly to the segment's purchases.
Everything is integer cents and counts, so ad-level rows add up to ad set, campaign and account rows exactly.
Converted products are the RETAILER's product items (``retailer_items``: their own ids and the retailer's SKUs,
some delisted since), as Meta reports them, never the brand catalog's items.

Restatement. Days younger than ``restatement_days`` (28) are recomputed for every *version* of the data, a
version being ``floor(now / restatement_period_seconds)`` of the world clock: some purchase events drop out,
late ones appear (converted products come and go), counts wobble, and the last two days' spend moves. Older days
are frozen at their base values.

Knobs (``/__sandbox/insights/...``, see routes_insights): per-account drift (rollup vs ad-level disagreement,
different totals on re-pull, ROAS skew, converted products omitted), too-much-data thresholds, scripted async job
outcomes, global config (polls to complete, restatement period), extra ads for benchmarks, and a request log
that records every insights call's parameters (POST bodies included).
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kobi_cpas.sandbox import errors as gerr
from kobi_cpas.sandbox.errors import GraphError
from kobi_cpas.sandbox.retailer_items import list_product, retailer_catalog
from kobi_cpas.sandbox.state import Ad, AdAccount, AdSet, Campaign, ReportRun, World

LEVELS = ("account", "campaign", "adset", "ad")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
KIND_LEVEL = {"ad_account": "account", "campaign": "campaign", "adset": "adset", "ad": "ad"}

VIEW_CONTENT = "omni_view_content"
ADD_TO_CART = "omni_add_to_cart"
PURCHASE = "omni_purchase"
WEB_PURCHASE = "offsite_conversion.fb_pixel_purchase"
APP_PURCHASE = "app_custom_event.fb_mobile_purchase"
SEGMENT_ACTION_TYPES = (VIEW_CONTENT, ADD_TO_CART, PURCHASE, WEB_PURCHASE, APP_PURCHASE)

CLASSES = ("c1", "c7", "c28", "v1")
# Meta's "value" key is the default attribution (7-day click or 1-day view); window keys as requested.
WINDOW_CLASSES: dict[str, tuple[str, ...]] = {
    "value": ("c1", "c7", "v1"),
    "1d_click": ("c1",),
    "7d_click": ("c1", "c7"),
    "28d_click": ("c1", "c7", "c28"),
    "1d_view": ("v1",),
}
CLASS_WINDOWS: dict[str, tuple[str, ...]] = {
    cls: tuple(w for w, classes in WINDOW_CLASSES.items() if cls in classes) for cls in CLASSES
}
# Accepted in action_attribution_windows; those without data (7d_view, 28d_view since 2026-01-12) are omitted.
KNOWN_WINDOWS = frozenset({"1d_click", "7d_click", "28d_click", "1d_view", "7d_view", "28d_view", "1d_ev"})

ROAS_FIELDS = {
    "catalog_segment_value_omni_purchase_roas": PURCHASE,
    "catalog_segment_value_website_purchase_roas": WEB_PURCHASE,
    "catalog_segment_value_mobile_purchase_roas": APP_PURCHASE,
}
PRODUCT_FIELDS = ("converted_product_value", "converted_product_quantity")
SEGMENT_FIELDS = ("catalog_segment_value", "catalog_segment_actions", *ROAS_FIELDS)
DELIVERY_FIELDS = ("spend", "impressions", "clicks")
METRIC_FIELDS = frozenset({*DELIVERY_FIELDS, *SEGMENT_FIELDS, *PRODUCT_FIELDS})
# Attribute fields and the shallowest level at which Meta fills them.
ATTRIBUTE_FIELDS: dict[str, str] = {
    "account_id": "account",
    "account_name": "account",
    "account_currency": "account",
    "campaign_id": "campaign",
    "campaign_name": "campaign",
    "objective": "campaign",
    "adset_id": "adset",
    "adset_name": "adset",
    "ad_id": "ad",
    "ad_name": "ad",
    "date_start": "account",
    "date_stop": "account",
}
ACTION_BREAKDOWNS = frozenset(
    {
        "action_type",
        "action_converted_product_id",
        "action_target_id",
        "action_destination",
        "action_device",
        "action_reaction",
        "action_video_type",
        "action_carousel_card_id",
        "action_canvas_component_name",
    }
)
FILTER_FIELDS = frozenset(
    {
        "ad.effective_status",
        "adset.effective_status",
        "campaign.effective_status",
        "campaign.id",
        "adset.id",
        "ad.id",
    }
)
# What Meta leaves out of every rollup unless filtering on ad.effective_status asks for them.
HIDDEN_BY_DEFAULT = frozenset({"DELETED", "ARCHIVED"})

JOB_NOT_STARTED = "Job Not Started"
JOB_STARTED = "Job Started"
JOB_RUNNING = "Job Running"
JOB_COMPLETED = "Job Completed"
JOB_FAILED = "Job Failed"
JOB_SKIPPED = "Job Skipped"
JOB_OUTCOMES = frozenset({"completed", "failed", "skipped", "running_at_100", "slow", "not_started"})
REPORT_RUN_TTL = timedelta(days=30)

TOO_MUCH_DATA_MESSAGE = "Please reduce the amount of data you're asking for, then retry your request"
TOO_MUCH_DATA_SUBCODE = 1487534

DEFAULT_CONFIG: dict[str, Any] = {
    "polls_to_complete": 2,  # status polls until "Job Completed" (1 = the first poll sees it done)
    "restatement_period_seconds": 3600.0,  # a new data version every hour of world time
    "restatement_days": 28,  # days younger than this keep changing
    "product_pool_size": 60,  # converted products per segment when the brand catalog holds no items
}
DRIFT_KEYS = frozenset(
    {"rollup_skew", "total_skew", "roas_skew", "omit_converted_products", "too_much_data", "jobs", "clear"}
)

_CACHE_LIMIT = 400_000


# -- knobs -----------------------------------------------------------------------------------------------


def state(world: World) -> dict[str, Any]:
    """The insights part of the world (created lazily; ``World.reset`` drops it)."""
    st = world._insights
    if not st:
        st.update(
            config=dict(DEFAULT_CONFIG),
            drift={},
            job_scripts={},
            log=deque(maxlen=20_000),
            log_seq=0,
            cache={},
            pools={},
            tmd_count=0,
        )
    return st


def configure(world: World, body: dict[str, Any]) -> dict[str, Any]:
    cfg = state(world)["config"]
    unknown = set(body) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown insights config keys {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    for key, value in body.items():
        number = float(value)
        if number <= 0:
            raise ValueError(f"{key} must be > 0")
        cfg[key] = number if key == "restatement_period_seconds" else int(number)
    state(world)["cache"].clear()
    return dict(cfg)


def set_drift(world: World, body: dict[str, Any]) -> dict[str, Any]:
    """Merge drift knobs for one ad account (``account_id`` = "act_..."); ``jobs`` appends to the job script."""
    act = str(body.get("account_id") or "")
    if not act.startswith("act_"):
        act = f"act_{act}" if act else ""
    if act not in world.ad_accounts:
        raise KeyError(f"no ad account {body.get('account_id')!r}")
    unknown = set(body) - DRIFT_KEYS - {"account_id"}
    if unknown:
        raise ValueError(f"unknown drift keys {sorted(unknown)}; known: {sorted(DRIFT_KEYS)}")
    st = state(world)
    drift = st["drift"].setdefault(act, {})
    if body.get("clear"):
        drift.clear()
        st["job_scripts"].pop(act, None)
    for key in ("rollup_skew", "total_skew", "roas_skew"):
        if key in body:
            spec = body[key]
            if spec is None:
                drift.pop(key, None)
                continue
            if not isinstance(spec, dict):
                spec = {"factor": spec}
            factor = float(spec.get("factor", 1.0))
            if factor <= 0:
                raise ValueError(f"{key}.factor must be > 0")
            levels = spec.get("levels") or (["campaign"] if key == "rollup_skew" else list(LEVELS))
            bad = set(levels) - set(LEVELS)
            if bad:
                raise ValueError(f"{key}.levels: unknown levels {sorted(bad)}")
            days = spec.get("days")
            drift[key] = {
                "factor": factor,
                "levels": list(levels),
                "days": [date.fromisoformat(str(d)).isoformat() for d in days] if days else None,
            }
    if "omit_converted_products" in body:
        drift["omit_converted_products"] = bool(body["omit_converted_products"])
    if "too_much_data" in body:
        spec = body["too_much_data"]
        if spec is None:
            drift.pop("too_much_data", None)
        else:
            variant = spec.get("variant", "subcode")
            if variant not in ("subcode", "http_500", "alternate"):
                raise ValueError("too_much_data.variant must be subcode, http_500 or alternate")
            drift["too_much_data"] = {
                key: int(spec[key]) if spec.get(key) is not None else None
                for key in ("max_days", "max_ids", "max_fields")
            } | {"variant": variant}
    if "jobs" in body:
        jobs = body["jobs"]
        if not isinstance(jobs, list):
            raise ValueError("jobs must be a list of {outcome, polls} objects")
        queue = st["job_scripts"].setdefault(act, [])
        for spec in jobs:
            spec = {"outcome": spec} if isinstance(spec, str) else dict(spec)
            if spec.get("outcome") not in JOB_OUTCOMES:
                raise ValueError(
                    f"job outcome must be one of {sorted(JOB_OUTCOMES)}, got {spec.get('outcome')!r}"
                )
            queue.append(spec)
    return describe_drift(world)


def describe_drift(world: World) -> dict[str, Any]:
    st = state(world)
    return {
        "config": dict(st["config"]),
        "drift": {k: dict(v) for k, v in st["drift"].items()},
        "job_scripts": {k: list(v) for k, v in st["job_scripts"].items()},
    }


def clear_drift(world: World) -> None:
    st = state(world)
    st["drift"].clear()
    st["job_scripts"].clear()


def log_call(world: World, method: str, object_id: str, kind: str, params: dict[str, Any]) -> None:
    st = state(world)
    st["log_seq"] += 1
    st["log"].append(
        {
            "seq": st["log_seq"],
            "at": world.now().isoformat(),
            "method": method,
            "object_id": object_id,
            "kind": kind,  # "insights" (sync GET or async POST), "report_run" (poll), "report_run.insights"
            "params": {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()},
        }
    )


def logged_calls(world: World) -> list[dict[str, Any]]:
    return [dict(e) for e in state(world)["log"]]


# -- extra ads (benchmarks) ----------------------------------------------------------------------------------


def seed_extra_ads(
    world: World,
    account_id: str,
    n_ads: int,
    *,
    ads_per_adset: int = 10,
    adsets_per_campaign: int = 5,
    created_days_ago: int = 60,
) -> dict[str, int]:
    """Add ``n_ads`` active ads (with their campaigns and ad sets) to an ad account, deterministically."""
    account = world.ad_accounts.get(account_id)
    if account is None:
        raise KeyError(f"no ad account {account_id!r}")
    if n_ads < 1 or ads_per_adset < 1 or adsets_per_campaign < 1:
        raise ValueError("n_ads, ads_per_adset and adsets_per_campaign must be >= 1")
    segment = _account_segment(world, account)
    created = world.clock.start - timedelta(days=created_days_ago)
    base = sum(1 for c in world.campaigns.values() if c.account_id == account_id)
    n_adsets = math.ceil(n_ads / ads_per_adset)
    n_campaigns = math.ceil(n_adsets / adsets_per_campaign)
    made = 0
    for c in range(n_campaigns):
        key = f"extra:{account_id}:{base + c}"
        cid = world.seeded_graph_id(f"campaign:{key}", "24")
        world.campaigns[cid] = Campaign(
            id=cid,
            account_id=account_id,
            name=f"Bench campaign {base + c + 1}",
            promoted_object={"product_catalog_id": segment} if segment else {},
            created_time=created,
            tenant_id=account.tenant_id,
            retailer=account.retailer,
        )
        for a in range(adsets_per_campaign):
            if made >= n_ads:
                break
            asid = world.seeded_graph_id(f"adset:{key}:{a}", "24")
            world.adsets[asid] = AdSet(
                id=asid,
                account_id=account_id,
                campaign_id=cid,
                name=f"Bench ad set {base + c + 1}.{a + 1}",
                promoted_object={"product_catalog_id": segment} if segment else {},
                created_time=created,
            )
            for n in range(ads_per_adset):
                if made >= n_ads:
                    break
                adid = world.seeded_graph_id(f"ad:{key}:{a}:{n}", "24")
                world.ads[adid] = Ad(
                    id=adid,
                    account_id=account_id,
                    campaign_id=cid,
                    adset_id=asid,
                    name=f"Bench ad {base + c + 1}.{a + 1}.{n + 1}",
                    created_time=created,
                )
                made += 1
    return {"campaigns": n_campaigns, "adsets": n_adsets, "ads": made}


# -- per (ad, day) data ----------------------------------------------------------------------------------------


@dataclass
class Cells:
    """Additive numbers of one object over some days: delivery, actions and converted products by class."""

    spend: int = 0  # cents
    impressions: int = 0
    clicks: int = 0
    acts: dict[tuple[str, str], list[int]] = field(
        default_factory=dict
    )  # (action_type, cls) -> [count, cents]
    prods: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (product_id, cls) -> [qty, cents]

    def add(self, other: Cells) -> None:
        self.spend += other.spend
        self.impressions += other.impressions
        self.clicks += other.clicks
        for src, dst in ((other.acts, self.acts), (other.prods, self.prods)):
            for key, (n, cents) in src.items():
                cell = dst.get(key)
                if cell is None:
                    dst[key] = [n, cents]
                else:
                    cell[0] += n
                    cell[1] += cents

    def scaled(self, factor: float) -> Cells:
        if factor == 1.0:
            return self
        return Cells(
            spend=round(self.spend * factor),
            impressions=round(self.impressions * factor),
            clicks=round(self.clicks * factor),
            acts={k: [round(n * factor), round(c * factor)] for k, (n, c) in self.acts.items()},
            prods={k: [round(n * factor), round(c * factor)] for k, (n, c) in self.prods.items()},
        )

    @property
    def empty(self) -> bool:
        return (
            self.spend == 0
            and self.impressions == 0
            and not any(n or c for n, c in self.acts.values())
            and not any(n or c for n, c in self.prods.values())
        )


@dataclass(frozen=True)
class _Profile:
    budget: float  # TRY per day
    cpm: float
    ctr: float
    vc_rate: float
    cvr: float


def _profile(world: World, ad_id: str) -> _Profile:
    rng = random.Random(f"{world.seed}:profile:{ad_id}")
    return _Profile(
        budget=rng.uniform(60, 450),
        cpm=rng.uniform(25, 70),
        ctr=rng.uniform(0.006, 0.02),
        vc_rate=rng.uniform(0.4, 0.8),
        cvr=rng.uniform(0.01, 0.04),
    )


def _parse_price(raw: Any) -> int | None:
    if raw is None:
        return None
    text = str(raw).strip().split(" ")[0].replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        return None
    return round(value * 100) if value > 0 else None


def _account_segment(world: World, account: AdAccount) -> str | None:
    for tenant in world.registry.tenants:
        for rel in tenant.cpas_retailers:
            if rel.dedicated_ad_account_id == account.id:
                return rel.catalog_segment_id
    return None


def product_pool(world: World, account: AdAccount) -> list[tuple[str, int]]:
    """(product item id, unit price in cents) the account's conversions draw from. The ids are the *retailer's*
    product items (``retailer_items``), as on Meta: one per brand catalog item when feeds were uploaded, else one
    per seeded product of the catalog segment; never the brand catalog's own product item ids."""
    catalog_id = world.registry.tenant(account.tenant_id).catalog_id if account.tenant_id else None
    index = world.product_item_index.get(catalog_id or "", {})
    st = state(world)
    key = (account.id, catalog_id, len(index))
    pool = st["pools"].get(key)
    if pool is not None:
        return pool
    holder = retailer_catalog(world, account)
    retailer = account.retailer or (holder.retailer if holder else None) or "retailer"
    owners = st.setdefault("retailer_skus", {})

    def listed(brand_key: str, brand_sku: str | None, fields: dict[str, Any], fallback_id: str) -> str:
        if holder is None:  # no retailer catalog modelled for this account: ids Meta does not know
            return fallback_id
        return list_product(world, holder, retailer, brand_key, brand_sku, fields, owners)

    if index:
        catalog = world.catalogs.get(catalog_id or "")
        pool = []
        for retailer_id in sorted(index)[:500]:
            item = catalog.items.get(retailer_id, {}) if catalog else {}
            price = _parse_price(item.get("sale_price")) or _parse_price(item.get("price"))
            price = price or world.seeded_int(f"price:{catalog_id}:{retailer_id}", 50, 1500) * 100
            pid = listed(f"{catalog_id}:{retailer_id}", retailer_id, item, index[retailer_id])
            pool.append((pid, price))
    else:
        segment = _account_segment(world, account) or account.id
        size = int(st["config"]["product_pool_size"])
        pool = []
        for i in range(size):
            fallback = world.seeded_graph_id(f"cpas-product:{segment}:{i}", "8")
            cents = world.seeded_int(f"cpas-price:{segment}:{i}", 50, 1500) * 100 + 90
            fields = {"price": f"{cents / 100:.2f} TRY"}
            pool.append((listed(f"{segment}:seeded:{i}", None, fields, fallback), cents))
    st["pools"][key] = pool
    return pool


def _account_today(world: World, account: AdAccount, now: datetime) -> tuple[date, float]:
    local = now.astimezone(ZoneInfo(account.timezone_name))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    frac = (local - midnight).total_seconds() / 86400.0
    return local.date(), frac


def data_version(world: World, now: datetime) -> int:
    period = float(state(world)["config"]["restatement_period_seconds"])
    return int(now.timestamp() // period)


def _created_day(ad: Ad, tz: ZoneInfo) -> date | None:
    return ad.created_time.astimezone(tz).date() if ad.created_time else None


def ad_day(world: World, account: AdAccount, ad: Ad, day: date, now: datetime) -> Cells | None:
    """One ad's numbers for one day in the account's time zone, as of ``now``; None when it did not run."""
    today, frac = _account_today(world, account, now)
    created = _created_day(ad, ZoneInfo(account.timezone_name))
    if day > today or (created is not None and day < created):
        return None
    st = state(world)
    restate_days = int(st["config"]["restatement_days"])
    age = (today - day).days
    version = data_version(world, now) if age < restate_days else -1
    frac = min(1.0, round(frac, 3)) if day == today else 1.0
    pool = product_pool(world, account)
    key = (ad.id, day, version, frac, len(pool), pool[0][0] if pool else "")
    cache = st["cache"]
    hit = cache.get(key)
    if hit is not None:
        return hit
    cells = _generate(world, ad.id, day, age, version, frac, pool)
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    cache[key] = cells
    return cells


def _split_classes(rng: random.Random, n: float, shares: tuple[float, ...]) -> list[int]:
    return [max(0, int(n * s * rng.uniform(0.85, 1.15) + 0.5)) for s in shares]


def _generate(
    world: World,
    ad_id: str,
    day: date,
    age: int,
    version: int,
    frac: float,
    pool: list[tuple[str, int]],
) -> Cells:
    p = _profile(world, ad_id)
    rb = random.Random(f"{world.seed}:ins:{ad_id}:{day.isoformat()}")
    rv = random.Random(f"{world.seed}:ins:{ad_id}:{day.isoformat()}:v{version}") if version >= 0 else None
    dow = (1.0, 0.95, 0.97, 1.0, 1.08, 1.18, 1.12)[day.weekday()]
    spend_try = p.budget * dow * rb.uniform(0.75, 1.25)
    if rv is not None and age < 2:
        spend_try *= rv.uniform(0.96, 1.04)  # the last two days' delivery still settles
    spend_try *= frac
    impressions = int(spend_try * 1000 / p.cpm)
    clicks = int(impressions * p.ctr)
    cells = Cells(spend=round(spend_try * 100), impressions=impressions, clicks=clicks)
    avg_price = sum(price for _, price in pool) / len(pool) if pool else 25_000

    def wobble(n: int) -> int:
        return max(0, int(n * rv.uniform(0.93, 1.07) + 0.5)) if rv is not None else n

    # View content and add to cart: counts by class, value at around the average product price.
    n_vc = clicks * p.vc_rate * rb.uniform(0.8, 1.2)
    for action, n_total, price_factor in (
        (VIEW_CONTENT, n_vc, 1.0),
        (ADD_TO_CART, n_vc * rb.uniform(0.08, 0.2), 1.15),
    ):
        counts = _split_classes(rb, n_total, (0.55, 0.15, 0.1, 0.2))
        for cls, n in zip(CLASSES, counts, strict=True):
            n = wobble(n)
            if n:
                cents = int(n * avg_price * price_factor * rb.uniform(0.9, 1.1))
                cells.acts[(action, cls)] = [n, cents]

    # Purchases: events of products, each in one class and one channel (web pixel or app).
    lam = clicks * p.cvr * rb.uniform(0.6, 1.4)
    events = [_event(rb, pool) for _ in range(int(lam + 0.5))]
    if rv is not None:
        events = [e for e in events if rv.random() >= 0.15]  # restated away
        events += [_event(rv, pool) for _ in range(rv.randint(0, 2))]  # late conversions
    if frac < 1.0:
        events = events[: int(len(events) * frac)]
    for product_id, qty, cents, cls, web in events:
        for action in (PURCHASE, WEB_PURCHASE if web else APP_PURCHASE):
            cell = cells.acts.setdefault((action, cls), [0, 0])
            cell[0] += 1
            cell[1] += cents
        pcell = cells.prods.setdefault((product_id, cls), [0, 0])
        pcell[0] += qty
        pcell[1] += cents
    return cells


def _event(rng: random.Random, pool: list[tuple[str, int]]) -> tuple[str, int, int, str, bool]:
    r = rng.random()
    cls = "c1" if r < 0.5 else "c7" if r < 0.7 else "c28" if r < 0.8 else "v1"
    idx = min(len(pool) - 1, int(len(pool) * rng.random() ** 2))  # a few best sellers
    product_id, price = pool[idx]
    q = rng.random()
    qty = 1 if q < 0.75 else 2 if q < 0.93 else 3
    return product_id, qty, qty * price, cls, rng.random() < 0.72


# -- queries ---------------------------------------------------------------------------------------------------


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


def _level_key(ad: Ad, level: str, account: AdAccount) -> str:
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
    n_ids = len({_level_key(a, query.level, account) for a in ads})
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
    today, _ = _account_today(world, account, now)
    query = parse_query(params, KIND_LEVEL[kind], today)
    ads = scoped_ads(world, kind, node, query)
    check_too_much_data(world, account, query, ads)
    drift = state(world)["drift"].get(account.id, {})
    groups: dict[tuple[str, date], Cells] = {}
    shared: set[tuple[str, date]] = set()
    owners: dict[str, Ad] = {}
    buckets = _buckets(query)
    for ad in ads:
        key_id = _level_key(ad, query.level, account)
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
    segment = _account_segment(world, account) or ""
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


# -- async report runs -------------------------------------------------------------------------------------


def _job_script(spec: dict[str, Any], default_polls: int) -> list[tuple[str, int]]:
    outcome = spec.get("outcome", "completed")
    # polls: until completion (completed: the configured default), before failing / skipping, at 100 %
    # (running_at_100), of slow progress (slow: 5), before starting (not_started).
    fallback = {"completed": default_polls, "slow": 5}.get(outcome, 1)
    polls = max(1, int(spec.get("polls", fallback)))

    def completing(n: int) -> list[tuple[str, int]]:
        steps = [(JOB_STARTED if i == 0 else JOB_RUNNING, int(100 * (i + 1) / (n + 1))) for i in range(n - 1)]
        return [*steps, (JOB_COMPLETED, 100)]

    if outcome == "completed":
        return completing(polls)
    if outcome == "failed":
        return [*[(JOB_RUNNING, 20 * (i + 1) % 100) for i in range(polls - 1)], (JOB_FAILED, 0)]
    if outcome == "skipped":
        return [*[(JOB_NOT_STARTED, 0)] * (polls - 1), (JOB_SKIPPED, 0)]
    if outcome == "running_at_100":
        return [*[(JOB_RUNNING, 100)] * polls, (JOB_COMPLETED, 100)]
    if outcome == "slow":
        return [
            *[(JOB_RUNNING, max(1, int(50 * (i + 1) / polls))) for i in range(polls)],
            (JOB_COMPLETED, 100),
        ]
    # not_started
    return [*[(JOB_NOT_STARTED, 0)] * polls, *completing(default_polls)]


def create_report_run(world: World, kind: str, node: Any, params: dict[str, Any]) -> ReportRun:
    query, rows = run_query(world, kind, node, params)
    account = node if kind == "ad_account" else world.ad_accounts[node.account_id]
    st = state(world)
    queue = st["job_scripts"].get(account.id) or []
    spec = queue.pop(0) if queue else {"outcome": "completed"}
    run = ReportRun(
        id=world.new_id(),
        account_id=account.id,
        object_id=node.id,
        params=dict(params),
        date_start=query.since.isoformat(),
        date_stop=query.until.isoformat(),
        created_time=world.now(),
        business_id=account.business_id,
        script=_job_script(spec, int(st["config"]["polls_to_complete"])),
        rows=rows,
    )
    world.report_runs[run.id] = run
    return run


def poll_report_run(world: World, run: ReportRun) -> None:
    """One status read moves the job one step along its script."""
    if run.async_status in (JOB_COMPLETED, JOB_FAILED, JOB_SKIPPED) and run.polls >= len(run.script):
        return
    run.polls += 1
    status, pct = run.script[min(run.polls, len(run.script)) - 1]
    run.async_status, run.async_percent_completion = status, pct
    if status == JOB_COMPLETED and run.time_completed is None:
        run.time_completed = world.now()


def report_run_fields(run: ReportRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "report_run_id": run.id,
        "account_id": run.account_id.removeprefix("act_"),
        "async_status": run.async_status,
        "async_percent_completion": run.async_percent_completion,
        "date_start": run.date_start,
        "date_stop": run.date_stop,
        "time_ref": int(run.created_time.timestamp()),
        "time_completed": int(run.time_completed.timestamp()) if run.time_completed else 0,
        "is_running": run.async_status in (JOB_NOT_STARTED, JOB_STARTED, JOB_RUNNING),
        "emails": [],
        "friendly_name": "",
        "is_bookmarked": False,
        "schedule_id": "",
    }


def check_readable(world: World, run: ReportRun) -> None:
    """Reading results is only allowed once the job reported "Job Completed" at 100 %."""
    if run.async_status == JOB_COMPLETED and run.async_percent_completion == 100:
        return
    if run.async_status in (JOB_FAILED, JOB_SKIPPED):
        raise gerr.invalid_parameter(f"Report run {run.id} has async_status {run.async_status}: no results")
    run.early_reads += 1
    raise GraphError(
        2601,
        "(#2601) Error accessing adreport job: the report is not ready yet "
        f"(async_status {run.async_status}, {run.async_percent_completion} %)",
        subcode=1815107,
        is_transient=True,
    )


def expired(world: World, run: ReportRun) -> bool:
    return world.now() - run.created_time > REPORT_RUN_TTL
