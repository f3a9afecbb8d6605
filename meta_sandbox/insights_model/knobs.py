"""The insights knobs (``/__sandbox/insights/...``): config, per-account drift, scripted job outcomes, the
request log, extra ads for benchmarks."""

from __future__ import annotations

import json
import math
from collections import deque
from datetime import date, timedelta
from typing import Any

from meta_sandbox.insights_model.constants import (
    DEFAULT_CONFIG,
    DRIFT_KEYS,
    JOB_OUTCOMES,
    LEVELS,
)
from meta_sandbox.state import Ad, AdAccount, AdSet, Campaign, World


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
    segment = account_segment(world, account)
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


def account_segment(world: World, account: AdAccount) -> str | None:
    for tenant in world.registry.tenants:
        for rel in tenant.cpas_retailers:
            if rel.dedicated_ad_account_id == account.id:
                return rel.catalog_segment_id
    return None
