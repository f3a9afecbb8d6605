"""The generated fleet of a fleet benchmark: tenants (sizes, cadences, retailers), their registry, their feeds and
the per-cycle feed changes (volatile, new and removed items), and what each change must look like at Meta.

Also the benchmark's code location (``defs``): the product's definitions without schedules and sensors, so that
only the runs the benchmark submits are launched (a schedule tick or a sensor during the run would add runs the
figures do not account for)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from kobi_cpas.feeds.generator import change_feed, generate_feed, mutation_predicate_sql

RETAILERS = ("trendyol", "hepsiburada", "n11", "amazon_tr")
VOLATILE_SHARE, NEW_SHARE, REMOVED_SHARE = 0.01, 0.002, 0.002


@dataclass(frozen=True)
class FleetTenant:
    tenant_id: str
    items: int
    replace_cadence: str  # daily | hourly
    batch_cron: str
    retailers: tuple[str, ...]
    index: int

    @property
    def catalog_id(self) -> str:
        return f"21{self.index:014d}"

    @property
    def business_id(self) -> str:
        return f"11{self.index:014d}"


def plan_fleet(
    n: int, min_items: int, max_items: int, large_items: tuple[int, ...] = (), seed: int = 7
) -> list[FleetTenant]:
    """n tenants: the first len(large_items) get those sizes, the rest log-uniform in [min_items, max_items];
    one in five replaces hourly, one in four batches every 30 minutes, 2-3 retailers each."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i < len(large_items):
            items = large_items[i]
        else:
            items = int(math.exp(rnd.uniform(math.log(min_items), math.log(max(min_items, max_items)))))
        out.append(
            FleetTenant(
                tenant_id=f"fleet_{i:04d}",
                items=items,
                replace_cadence="hourly" if i % 5 == 4 else "daily",
                batch_cron="*/30 * * * *" if i % 4 == 3 else "*/15 * * * *",
                retailers=tuple(rnd.sample(RETAILERS, 2 + (i % 2))),
                index=i + 1,
            )
        )
    return out


def write_registry(tenants: list[FleetTenant], workdir: Path) -> Path:
    entries = []
    for t in tenants:
        entries.append(
            {
                "tenant_id": t.tenant_id,
                "name": f"Fleet {t.index} ({t.items} items)",
                "business_id": t.business_id,
                "catalog_id": t.catalog_id,
                "feed": {"source": f"feeds/{t.tenant_id}.csv", "format": "csv"},
                "sync": {"replace_cadence": t.replace_cadence, "batch_cron": t.batch_cron},
                "cpas_retailers": [
                    {
                        "retailer": r,
                        "retailer_business_id": f"90{RETAILERS.index(r):014d}",
                        "parent_catalog_id": f"91{RETAILERS.index(r):014d}",
                        "catalog_segment_id": f"31{t.index:010d}{RETAILERS.index(r):04d}",
                        "dedicated_ad_account_id": f"act_41{t.index:010d}{RETAILERS.index(r):04d}",
                        "partnership_status": "accepted",
                        "onboarding_mode": "api",
                        "segment_filter": {"brand": {"i_contains": t.tenant_id}},
                    }
                    for r in t.retailers
                ],
            }
        )
    path = workdir / "tenants.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "tenants": entries}, sort_keys=False))
    return path


def feed_path(workdir: Path, tenant_id: str) -> Path:
    return workdir / "feeds" / f"{tenant_id}.csv"


def write_base_feed(workdir: Path, t: FleetTenant, cycle: int = 0) -> Path:
    return generate_feed(feed_path(workdir, t.tenant_id), t.items, seed=1000 + t.index, threads=1)


def write_changed_feed(workdir: Path, t: FleetTenant, cycle: int) -> None:
    """The tenant's feed with VOLATILE_SHARE of items changed, NEW_SHARE new and REMOVED_SHARE removed (each
    a pure function of (tenant, cycle, id)), replacing the file in one rename as an exporter would."""
    path = feed_path(workdir, t.tenant_id)
    seed = t.index * 100 + cycle
    volatile = path.with_name(f".{t.tenant_id}.volatile.csv")
    tmp = path.with_name(f".{t.tenant_id}.next.csv")
    change_feed(
        path,
        tmp,
        volatile,
        seeds=(seed, seed + 50_000, seed + 90_000),
        new_id_sql=f"id || '-c{cycle}'",
        new_group_sql=f"item_group_id || '-c{cycle}'",
        shares=(VOLATILE_SHARE, REMOVED_SHARE, NEW_SHARE),
        threads=1,
    )
    volatile.unlink()
    tmp.replace(path)


def expected_changes(workdir: Path, t: FleetTenant, cycle: int) -> dict[str, dict[str, tuple[str, str]]]:
    """What the cycle changed in the tenant's current feed: ``new`` and ``volatile`` ids with their
    (price, availability), and ``all`` items (id -> (price, availability))."""
    seed = t.index * 100 + cycle
    path = feed_path(workdir, t.tenant_id)
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"""SELECT id, price, availability, id LIKE '%-c{cycle}' AS is_new, {mutation_predicate_sql(seed, VOLATILE_SHARE)}
                FROM read_csv('{path}', header=true, all_varchar=true, delim=',', quote='"', escape='"')"""
        ).fetchall()
    finally:
        con.close()
    out: dict[str, dict[str, tuple[str, str]]] = {"new": {}, "volatile": {}, "all": {}}
    for rid, price, availability, is_new, changed in rows:
        value = (price, availability)
        out["all"][rid] = value
        if is_new:
            out["new"][rid] = value
        elif changed:
            out["volatile"][rid] = value
    return out


@dg.definitions
def defs() -> dg.Definitions:
    from kobi_cpas.definitions import defs as product_defs

    product = product_defs()
    return dg.Definitions(
        assets=product.assets,
        asset_checks=product.asset_checks,
        jobs=product.jobs,
        resources=product.resources,
        executor=product.executor,
        loggers=product.loggers,
    )
