"""Daily pull of the trailing restatement window, in each ad account's time zone."""

import os
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from kobi_cpas.defs.insights.partitions import RESTATEMENT_DAYS, range_tags
from kobi_cpas.defs.tenants.evaluation import evaluate_tenant, log_tenant_problems, registry_notes
from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME
from kobi_cpas.registry import RegistryError, Tenant, load_registry

PULL_HOUR = 7  # local time: yesterday is complete enough, and restated days get re-pulled for 28 days anyway
_TZ_CACHE: dict[str, tuple[float, str]] = {}

shared_item_metrics_job = dg.define_asset_job(
    "shared_item_metrics_job",
    selection=dg.AssetSelection.assets("shared_item_metrics"),
    description="Pull shared-item metrics for a tenant's date range in one run (the restatement window daily, "
    "any range as a backfill).",
)


def account_tz(act: str) -> str:
    """The ad account's time zone from Meta, cached for a day in the daemon process."""
    hit = _TZ_CACHE.get(act)
    if hit and time.time() - hit[0] < 86400:
        return hit[1]
    from kobi_cpas.insights.pull import account_timezone
    from kobi_cpas.meta.config import MetaClientConfig

    try:
        with MetaClientConfig.from_env().client() as client:
            tz = account_timezone(client, act)
    except Exception:
        tz = os.environ.get("KOBI_CPAS_DEFAULT_TZ", "Europe/Istanbul")
    _TZ_CACHE[act] = (time.time(), tz)
    return tz


@dg.schedule(
    job=shared_item_metrics_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Hourly tick; at {PULL_HOUR}:00 in a tenant's ad account time zone, re-pull the trailing "
    f"{RESTATEMENT_DAYS} days (Meta restates them) and replace those partitions; older days stay frozen.",
)
def shared_item_metrics_schedule(context: dg.ScheduleEvaluationContext):
    try:
        reg = load_registry()
    except RegistryError as exc:
        return dg.SkipReason(f"registry invalid: {exc}")
    known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    tick = context.scheduled_execution_time
    runs, waiting, errors = [], [], []

    def evaluate(t: Tenant) -> None:
        accounts = [
            r.dedicated_ad_account_id
            for r in t.cpas_retailers
            if r.dedicated_ad_account_id and r.partnership_status.value != "pending"
        ]
        if not accounts or t.tenant_id not in known:
            return
        tz = account_tz(accounts[0])
        local = tick.astimezone(ZoneInfo(tz))
        if local.hour != PULL_HOUR:
            waiting.append(f"{t.tenant_id}: {local:%H:%M} in {tz}")
            return
        until = local.date() - timedelta(days=1)
        since = until - timedelta(days=RESTATEMENT_DAYS - 1)
        runs.append(
            dg.RunRequest(
                run_key=f"insights:{t.tenant_id}:{local.date()}",
                tags={
                    **range_tags(t.tenant_id, since.isoformat(), until.isoformat()),
                    "kobi/tenant": t.tenant_id,
                },
            )
        )

    for t in reg.tenants:
        evaluate_tenant(t, "insights schedule", evaluate, errors)
    not_evaluated = errors + registry_notes(reg)
    log_tenant_problems(context.log, "shared_item_metrics_schedule", not_evaluated)
    if not runs:
        reason = (
            f"no account is at {PULL_HOUR}:00 local time (" + "; ".join(waiting) + ")"
            if waiting
            else "no tenant with an accepted CPAS ad account"
        )
        return dg.SkipReason("; ".join([reason, *not_evaluated]))
    return runs
