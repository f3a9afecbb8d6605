"""Per-tenant evaluation for schedules and sensors: a broken registry entry, or one tenant's exception while a
tick is evaluated, is reported (SkipReason and tick log) and never stops the other tenants.

Sensors and schedules get the registry as the ``registry`` resource (the one the assets use); they never read
the registry file or the environment themselves."""

import logging
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from kobi_cpas.defs.tenants.partitions import TENANT_PARTITIONS_NAME
from kobi_cpas.registry import LoadedRegistry, RegistryError, Tenant
from kobi_cpas.registry.loader import scrub
from kobi_cpas.resources import TenantRegistryResource

T = TypeVar("T")


def read_registry(registry: TenantRegistryResource, unreadable: str) -> LoadedRegistry | dg.SkipReason:
    """The registry, or a SkipReason ``"<unreadable>: <problem>"`` when the file itself cannot be used."""
    try:
        return registry.read()
    except RegistryError as exc:
        return dg.SkipReason(f"{unreadable}: {exc}")


def registry_notes(reg: LoadedRegistry) -> list[str]:
    """One note per broken tenant entry, naming the file, the tenant and the field."""
    return [f"{p} (tenant left out until fixed)" for p in reg.problems]


def tenant_error_note(tenant_id: str, what: str, exc: BaseException) -> str:
    detail = scrub(str(exc))[:300]
    return f"{tenant_id}: {what} failed for this tenant only ({type(exc).__name__}: {detail})"


def evaluate_tenant(
    tenant: Tenant, what: str, fn: Callable[[Tenant], T], errors: list[str]
) -> tuple[bool, T | None]:
    """``(True, fn(tenant))``, or ``(False, None)`` with a note in ``errors`` when ``fn`` raised."""
    try:
        return True, fn(tenant)
    except Exception as exc:  # one tenant's failure must not stop the tick for the others
        errors.append(tenant_error_note(tenant.tenant_id, what, exc))
        return False, None


def log_tenant_problems(log: logging.Logger, what: str, notes: list[str]) -> None:
    """Warn in the tick's log (shown in the UI even when the tick launched runs for the other tenants)."""
    if notes:
        log.warning(f"{what}: {len(notes)} tenant(s) not evaluated:\n  - " + "\n  - ".join(notes))


def every_tenant(
    context: dg.ScheduleEvaluationContext,
    registry: TenantRegistryResource,
    run_key_prefix: str,
    period_format: str,
) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per tenant partition per period (e.g. day or hour), idempotent through the run key.

    Tenants whose registry entry is broken keep their partition but get no run (it could only fail); they are
    named in the skip reason or the tick log. An unreadable registry file skips the tick."""
    reg = read_registry(registry, f"registry invalid, no {run_key_prefix} run launched")
    if isinstance(reg, dg.SkipReason):
        return reg
    broken = set(reg.broken_tenant_ids)
    notes = registry_notes(reg)
    log_tenant_problems(context.log, f"{run_key_prefix} schedule", notes)
    partitions = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    tenants = sorted(partitions - broken)
    if not tenants:
        why = (
            "every tenant partition belongs to a broken registry entry"
            if partitions
            else "no tenant partitions yet (tenant_partitions_sensor adds them from the registry)"
        )
        return dg.SkipReason("; ".join([why, *notes]))
    period = context.scheduled_execution_time.strftime(period_format)
    return [dg.RunRequest(run_key=f"{run_key_prefix}:{t}:{period}", partition_key=t) for t in tenants]
