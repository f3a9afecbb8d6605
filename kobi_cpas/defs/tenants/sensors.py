import json

import dagster as dg

from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME, tenant_partitions
from kobi_cpas.registry import RegistryError, load_registry, registry_path

tenant_registry_job = dg.define_asset_job(
    "tenant_registry_job", selection=dg.AssetSelection.assets("tenant_registry")
)


def plan_partition_changes(wanted: list[str], existing: list[str]) -> tuple[list[str], list[str]]:
    """Tenants to add and to remove so the partitions equal the registry."""
    add = sorted(set(wanted) - set(existing))
    remove = sorted(set(existing) - set(wanted))
    return add, remove


@dg.sensor(
    job_name="tenant_registry_job",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the tenant partitions equal to the registry and reloads tenant_registry when it changes.",
)
def tenant_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    try:
        reg = load_registry(registry_path())
    except RegistryError as exc:
        # Never drop partitions because of a typo in the registry: skip, saying why.
        return dg.SkipReason(f"registry invalid, tenant partitions left unchanged: {exc}")
    wanted = reg.registry.tenant_ids
    existing = list(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    add, remove = plan_partition_changes(wanted, existing)
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = previous.get("hash") != reg.content_hash
    if not add and not remove and not changed:
        return dg.SkipReason(f"registry unchanged ({len(wanted)} tenants, sha256 {reg.content_hash[:12]})")
    requests: list[dg.DynamicPartitionsRequest] = []
    if add:
        requests.append(tenant_partitions.build_add_request(add))
    if remove:
        requests.append(tenant_partitions.build_delete_request(remove))
    context.log.info(f"tenant partitions: add {add or '-'}, remove {remove or '-'}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"registry-{reg.content_hash}")] if changed else [],
        dynamic_partitions_requests=requests,
        cursor=json.dumps({"hash": reg.content_hash, "tenants": wanted}),
    )
