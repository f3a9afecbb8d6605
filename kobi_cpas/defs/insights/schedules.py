"""Daily pull of the trailing restatement window, in each ad account's time zone.

The time zone comes from meta_ad_accounts, which the pull writes when it fetches the account: the schedule never
calls Meta from the daemon. An account not pulled yet has no row; its tenant's ``sync.timezone`` stands in until
the first pull records the account's own zone, and the tick says so. A partnership whose dedicated ad account the
registry omits uses the one the daily CPAS reconciliation observed at Meta, read from the published file (the pull
reads the recorded state), through the same fill as every CPAS asset."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from kobi_cpas.defs.cpas.state import tenants_with_published_accounts
from kobi_cpas.defs.insights.partitions import RESTATEMENT_DAYS, range_tags
from kobi_cpas.defs.tenants.evaluation import (
    evaluate_tenant,
    log_tenant_problems,
    read_registry,
    registry_notes,
)
from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME
from kobi_cpas.insights.accounts import META_AD_ACCOUNTS, account_timezones
from kobi_cpas.registry import Tenant
from kobi_cpas.resources import TenantRegistryResource, WarehouseResource

PULL_HOUR = 7  # local time: yesterday is complete enough, and restated days get re-pulled for 28 days anyway
TIMEZONE_TAG = "kobi/account_timezone"
TIMEZONE_SOURCE_TAG = "kobi/account_timezone_source"
FALLBACK_SOURCE = f"tenant sync.timezone (no {META_AD_ACCOUNTS.name} row yet)"

shared_item_metrics_job = dg.define_asset_job(
    "shared_item_metrics_job",
    executor_def=dg.in_process_executor,  # one step: no second process to load the code location
    selection=dg.AssetSelection.assets("shared_item_metrics").required_multi_asset_neighbors(),
    description="Pull shared-item metrics for a tenant's date range in one run (the restatement window daily, "
    "any range as a backfill).",
)


def pulled_accounts(tenant: Tenant) -> list[str]:
    """The tenant's dedicated ad accounts the pull covers (accepted or revoked partnerships), in registry order;
    ``tenant`` is completed with the observed accounts first (:mod:`kobi_cpas.defs.cpas.state`)."""
    return [
        r.dedicated_ad_account_id
        for r in tenant.cpas_retailers
        if r.dedicated_ad_account_id and r.partnership_status.value != "pending"
    ]


def fallback_note(tenant: Tenant, act: str) -> str:
    return (
        f"{tenant.tenant_id}: {act} has no row in {META_AD_ACCOUNTS.name} yet (the first pull records its time "
        f"zone); using the tenant's sync.timezone {tenant.sync.timezone}"
    )


@dg.schedule(
    job=shared_item_metrics_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Hourly tick; at {PULL_HOUR}:00 in a tenant's ad account time zone (from "
    f"{META_AD_ACCOUNTS.name}), re-pull the trailing {RESTATEMENT_DAYS} days (Meta restates them) and replace "
    "those partitions; older days stay frozen.",
)
def shared_item_metrics_schedule(
    context: dg.ScheduleEvaluationContext, registry: TenantRegistryResource, warehouse: WarehouseResource
):
    reg = read_registry(registry, "registry invalid")
    if isinstance(reg, dg.SkipReason):
        return reg
    known = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    tick = context.scheduled_execution_time
    tenants = tenants_with_published_accounts(reg, warehouse)
    zones = account_timezones(warehouse.read_published, [a for t in tenants for a in pulled_accounts(t)])
    runs, waiting, fallbacks, errors = [], [], [], []
    not_started: list[str] = []

    def evaluate(t: Tenant) -> None:
        accounts = pulled_accounts(t)
        if not accounts or t.tenant_id not in known:
            return
        act = accounts[0]
        tz = zones.get(act)
        source = META_AD_ACCOUNTS.name
        if tz is None:
            tz, source = t.sync.timezone, FALLBACK_SOURCE
            fallbacks.append(fallback_note(t, act))
        local = tick.astimezone(ZoneInfo(tz))
        if local.hour != PULL_HOUR:
            waiting.append(f"{t.tenant_id}: {local:%H:%M} in {tz}")
            return
        until = local.date() - timedelta(days=1)
        since = until - timedelta(days=RESTATEMENT_DAYS - 1)
        start = t.insights.start_date  # the date partitions are shared: the tenant's own start applies here
        if start is not None and until < start:
            not_started.append(
                f"{t.tenant_id}: nothing to pull before its insights.start_date {start} (yesterday was {until})"
            )
            return
        since = max(since, start) if start is not None else since
        runs.append(
            dg.RunRequest(
                run_key=f"insights:{t.tenant_id}:{local.date()}",
                tags={
                    **range_tags(t.tenant_id, since.isoformat(), until.isoformat()),
                    "kobi/tenant": t.tenant_id,
                    TIMEZONE_TAG: tz,
                    TIMEZONE_SOURCE_TAG: source,
                },
            )
        )

    for t in tenants:
        evaluate_tenant(t, "insights schedule", evaluate, errors)
    not_evaluated = errors + registry_notes(reg)
    if not_started:
        context.log.info("before their insights.start_date: " + "; ".join(not_started))
    if fallbacks:
        context.log.info("time zone fallback: " + "; ".join(fallbacks))
    log_tenant_problems(context.log, "shared_item_metrics_schedule", not_evaluated)
    if not runs:
        reason = (
            f"no account is at {PULL_HOUR}:00 local time (" + "; ".join(waiting) + ")"
            if waiting
            else "no tenant to pull"
            if not_started
            else "no tenant with an accepted CPAS ad account"
        )
        return dg.SkipReason("; ".join([reason, *not_started, *fallbacks, *not_evaluated]))
    return runs
