"""The brand's people on its accepted catalog segments (Collaborative Ads brand onboarding step 1: "your brand
can add people to the catalog segment using the /{product-catalog-id}/assigned_users endpoint").

Meta lists a catalog's assigned users per business (``business`` is required) with their id, name and type, but
not their tasks, so only users missing from the list are assigned: a user already there is never posted again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kobi_cpas.cpas.graph import GraphClient

# ProductCatalog.Tasks in Meta's Business SDK
CATALOG_TASKS = ("AA_ANALYZE", "ADVERTISE", "MANAGE", "MANAGE_AR")


@dataclass(frozen=True)
class AssignedUsers:
    catalog_id: str
    assigned: tuple[str, ...]  # posted now
    already: tuple[str, ...]  # listed by Meta before: nothing sent


def assigned_user_ids(client: GraphClient, catalog_id: str, business_id: str) -> set[str]:
    """The ids of the users of ``business_id`` assigned to the catalog."""
    return {
        str(u["id"])
        for u in client.paginate(
            f"{catalog_id}/assigned_users",
            {"business": business_id, "fields": "id,name,user_type", "limit": 100},
        )
    }


def check_catalog_tasks(tasks: Iterable[str]) -> list[str]:
    """The tasks, each once; ValueError naming the allowed ones when one is unknown or none is given."""
    wanted = list(dict.fromkeys(tasks))
    bad = [t for t in wanted if t not in CATALOG_TASKS]
    if bad or not wanted:
        raise ValueError(f"each one of {', '.join(CATALOG_TASKS)} (got {bad or 'none'})")
    return wanted


def assign_catalog_users(
    client: GraphClient, catalog_id: str, business_id: str, user_ids: Iterable[str], tasks: Iterable[str]
) -> AssignedUsers:
    """Assign each of ``user_ids`` (business or system users of ``business_id``) to the catalog with ``tasks``,
    unless Meta already lists it."""
    wanted_tasks = check_catalog_tasks(tasks)
    present = assigned_user_ids(client, catalog_id, business_id)
    wanted = list(dict.fromkeys(str(u) for u in user_ids))
    new = [u for u in wanted if u not in present]
    for user in new:
        client.post(f"{catalog_id}/assigned_users", data={"user": user, "tasks": wanted_tasks})
    return AssignedUsers(catalog_id, tuple(new), tuple(u for u in wanted if u in present))
