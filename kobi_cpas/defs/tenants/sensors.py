import json
from collections.abc import Sequence

import dagster as dg

from kobi_cpas.defs.onboarding.assets import tenant_onboarding_job
from kobi_cpas.defs.tenants.evaluation import log_tenant_problems, read_registry, registry_notes
from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME, tenant_partitions
from kobi_cpas.resources import TenantRegistryResource

tenant_registry_job = dg.define_asset_job(
    "tenant_registry_job", selection=dg.AssetSelection.assets("tenant_registry")
)


def plan_partition_changes(
    wanted: list[str], existing: list[str], keep: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Tenants to add and to remove so the partitions equal the registry; ``keep`` (broken tenants whose id is
    still known) are never removed, nor added."""
    add = sorted(set(wanted) - set(existing))
    remove = sorted(set(existing) - set(wanted) - set(keep))
    return add, remove


@dg.sensor(
    jobs=[tenant_registry_job, tenant_onboarding_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the tenant partitions equal to the registry, reloads tenant_registry when it changes, and "
    "runs the preflight (tenant_onboarding) of each tenant that joins.",
)
def tenant_partitions_sensor(
    context: dg.SensorEvaluationContext, registry: TenantRegistryResource
) -> dg.SensorResult | dg.SkipReason:
    # Never drop partitions because of a typo in the registry: skip, saying why.
    reg = read_registry(registry, "registry invalid, tenant partitions left unchanged")
    if isinstance(reg, dg.SkipReason):
        return reg
    broken = registry_notes(reg)
    if broken and not reg.tenants:
        # Nothing valid at all: as good as an invalid file (and reloading would empty tenant_registry).
        return dg.SkipReason("no valid tenant, tenant partitions left unchanged: " + "; ".join(broken))
    wanted = reg.registry.tenant_ids
    existing = list(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    # A broken tenant keeps its partition (its history and its runs once fixed); a broken entry without a
    # readable id could be any tenant, so then nothing is removed at all.
    add, remove = plan_partition_changes(wanted, existing, reg.broken_tenant_ids)
    held_back = remove if reg.has_unnamed_problems else []
    remove = [] if held_back else remove
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = previous.get("hash") != reg.content_hash
    log_tenant_problems(context.log, "tenant partitions", broken)
    if held_back:
        context.log.warning(
            f"tenant partitions {held_back} not removed: an entry without a valid tenant_id may be one of them"
        )
    if not add and not remove and not changed:
        return dg.SkipReason(
            "; ".join(
                [f"registry unchanged ({len(wanted)} tenants, sha256 {reg.content_hash[:12]})", *broken]
            )
        )
    requests: list[dg.DynamicPartitionsRequest] = []
    if add:
        requests.append(tenant_partitions.build_add_request(add))
    if remove:
        requests.append(tenant_partitions.build_delete_request(remove))
    context.log.info(f"tenant partitions: add {add or '-'}, remove {remove or '-'}")
    runs = (
        [dg.RunRequest(run_key=f"registry-{reg.content_hash}", job_name=tenant_registry_job.name)]
        if changed
        else []
    )
    # A new tenant's preflight right away: what blocks it, and whether its catalog already holds items, is known
    # before its first sync is due.
    runs += [
        dg.RunRequest(run_key=f"onboarding-{t}", job_name=tenant_onboarding_job.name, partition_key=t)
        for t in add
    ]
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=requests,
        cursor=json.dumps({"hash": reg.content_hash, "tenants": wanted}),
    )
