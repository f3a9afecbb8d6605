"""Per-tenant evaluation for schedules and sensors: a broken registry entry, or one tenant's exception while a
tick is evaluated, is reported (SkipReason and tick log) and never stops the other tenants."""

import logging
from collections.abc import Callable
from typing import TypeVar

from kobi_cpas.registry import LoadedRegistry, Tenant
from kobi_cpas.registry.loader import scrub

T = TypeVar("T")


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
