"""Per (ad, day) numbers: delivery from a per-ad profile, conversions as events of the retailer's products,
restated for days younger than ``restatement_days`` (see the package docstring)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from meta_sandbox.insights_model.constants import (
    ADD_TO_CART,
    APP_PURCHASE,
    CLASSES,
    PURCHASE,
    VIEW_CONTENT,
    WEB_PURCHASE,
)
from meta_sandbox.insights_model.knobs import (
    account_segment,
    state,
)
from meta_sandbox.retailer_items import list_product, retailer_catalog
from meta_sandbox.state import Ad, AdAccount, World

_CACHE_LIMIT = 400_000


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
        segment = account_segment(world, account) or account.id
        size = int(st["config"]["product_pool_size"])
        pool = []
        for i in range(size):
            fallback = world.seeded_graph_id(f"cpas-product:{segment}:{i}", "8")
            cents = world.seeded_int(f"cpas-price:{segment}:{i}", 50, 1500) * 100 + 90
            fields = {"price": f"{cents / 100:.2f} TRY"}
            pool.append((listed(f"{segment}:seeded:{i}", None, fields, fallback), cents))
    st["pools"][key] = pool
    return pool


def account_today(world: World, account: AdAccount, now: datetime) -> tuple[date, float]:
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
    today, frac = account_today(world, account, now)
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
