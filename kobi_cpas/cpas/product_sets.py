"""Declared product sets per tenant: plan the create/update/delete against Meta, then apply.

A tenant declares product sets (:class:`DeclaredProductSet`) on its own catalog (``target: catalog``) or on a
retailer's catalog segment (``target: trendyol`` — brands may create product sets from an accepted segment).
Kobi manages only sets whose name starts with :data:`MANAGED_PREFIX` (``Kobi | ``): a declared set named
``Best sellers`` is ``Kobi | Best sellers`` on Meta, and any other set (made by people in Commerce Manager) is
never touched.

:func:`plan_product_sets` compares declared and existing sets and returns :class:`Action`\\ s (create, update,
delete, keep, skip); :func:`apply_product_set_actions` runs them and reports each outcome. A managed set that
is no longer declared is deleted; declare it ``absent: true`` to delete it with options. Meta refuses to delete a
set used by an active ad, a shop collection or another usage; such a delete is reported as ``refused`` (not
raised) unless the declaration allows live deletion (``allow_live_deletion``), in which case
``allow_live_product_set_deletion=true`` is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from kobi_cpas.cpas.graph import GraphClient, post_once
from kobi_cpas.meta.errors import ErrorKind, MetaAPIError, MetaAuthError
from kobi_cpas.registry.filters import canonical_json
from kobi_cpas.registry.models import Tenant
from kobi_cpas.registry.product_sets import (
    CATALOG_TARGET,
    MANAGED_PREFIX,
    DeclaredProductSet,
)

ActionKind = Literal["create", "update", "delete", "keep", "skip"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    target: str
    name: str  # the name on Meta (with the managed prefix)
    catalog_id: str | None = None
    product_set_id: str | None = None
    filter: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    allow_live_deletion: bool = False
    reason: str = ""
    publish_to_shops: tuple[str, ...] = ()  # shop ids; empty: shops left as they are


@dataclass(frozen=True)
class ActionResult:
    action: Action
    status: Literal["done", "refused", "failed", "skipped"]
    product_set_id: str | None = None
    message: str = ""


def product_set_targets(tenant: Tenant) -> dict[str, str | None]:
    """target -> catalog id: the tenant's catalog, and each retailer's segment (None while there is none)."""
    out: dict[str, str | None] = {CATALOG_TARGET: tenant.catalog_id}
    for r in tenant.cpas_retailers:
        out[r.retailer] = r.catalog_segment_id
    return out


def _existing_filter(raw: Any) -> str | None:
    if raw in (None, ""):
        return None
    try:
        return canonical_json(raw if not isinstance(raw, str) else json.loads(raw))
    except (ValueError, TypeError):
        return str(raw)


def plan_product_sets(
    declared: Iterable[DeclaredProductSet],
    existing: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    targets: Mapping[str, str | None],
) -> list[Action]:
    """Compare declared sets with ``existing`` (target -> the sets Meta lists for that catalog, with id, name,
    filter and latest_metadata) and return the actions, in a stable order.

    Declared sets of a target without a catalog (a retailer with no segment yet, an unknown retailer) get a
    ``skip`` action. Managed sets (name prefix) on Meta that are not declared get ``delete``.
    """
    actions: list[Action] = []
    wanted: dict[tuple[str, str], DeclaredProductSet] = {}
    for d in declared:
        key = (d.target, d.meta_name)
        if key in wanted:
            raise ValueError(f"product set '{d.name}' is declared twice for target '{d.target}'")
        wanted[key] = d
    for (target, meta_name), d in sorted(wanted.items()):
        catalog_id = targets.get(target)
        meta = d.metadata.as_meta() if d.metadata else None
        if catalog_id is None:
            why = (
                "unknown target"
                if target not in targets
                else f"retailer '{target}' has no catalog segment yet"
            )
            actions.append(Action("skip", target, meta_name, filter=d.filter, metadata=meta, reason=why))
            continue
        current = [s for s in existing.get(target, ()) if s.get("name") == meta_name]
        if d.absent:
            for s in current:
                actions.append(
                    Action(
                        "delete",
                        target,
                        meta_name,
                        catalog_id,
                        str(s["id"]),
                        allow_live_deletion=d.allow_live_deletion,
                        reason="declared absent",
                    )
                )
            continue
        if not current:
            actions.append(
                Action(
                    "create",
                    target,
                    meta_name,
                    catalog_id,
                    None,
                    d.filter,
                    meta,
                    d.allow_live_deletion,
                    "new",
                    d.publish_to_shops,
                )
            )
            continue
        first = current[0]
        want_filter = canonical_json(d.filter) if d.filter is not None else None
        changes = []
        if _existing_filter(first.get("filter")) != want_filter:
            changes.append("filter")
        if meta is not None and dict(first.get("latest_metadata") or {}) != meta:
            changes.append("metadata")
        if d.publish_to_shops and _shop_ids(first.get("publish_to_shops")) != set(d.publish_to_shops):
            changes.append("publish_to_shops")
        kind: ActionKind = "update" if changes else "keep"
        actions.append(
            Action(
                kind,
                target,
                meta_name,
                catalog_id,
                str(first["id"]),
                d.filter,
                meta,
                d.allow_live_deletion,
                f"{', '.join(changes)} changed" if changes else "up to date",
                d.publish_to_shops,
            )
        )
        for dup in current[1:]:
            actions.append(
                Action(
                    "delete",
                    target,
                    meta_name,
                    catalog_id,
                    str(dup["id"]),
                    allow_live_deletion=d.allow_live_deletion,
                    reason="duplicate of a declared set",
                )
            )
    for target, sets in sorted(existing.items()):
        catalog_id = targets.get(target)
        for s in sets:
            name = str(s.get("name") or "")
            if name.startswith(MANAGED_PREFIX) and (target, name) not in wanted:
                actions.append(
                    Action("delete", target, name, catalog_id, str(s["id"]), reason="no longer declared")
                )
    return actions


def _shop_ids(raw: Any) -> set[str]:
    """The shop ids of a set's ``publish_to_shops`` as Meta lists it (a list of {"shop_id": ...})."""
    return {str(s.get("shop_id")) for s in raw or () if isinstance(s, Mapping) and s.get("shop_id")}


def read_existing_product_sets(
    client: GraphClient, targets: Mapping[str, str | None]
) -> dict[str, list[dict[str, Any]]]:
    """target -> the product sets Meta lists on its catalog (id, name, filter, latest_metadata, product_count,
    publish_to_shops)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for target, catalog_id in targets.items():
        if catalog_id:
            out[target] = list(
                client.paginate(
                    f"{catalog_id}/product_sets",
                    {"fields": "id,name,filter,latest_metadata,product_count,publish_to_shops", "limit": 200},
                )
            )
    return out


def _find_by_name(client: GraphClient, catalog_id: str, name: str) -> str | None:
    for ps in client.paginate(f"{catalog_id}/product_sets", {"fields": "id,name", "limit": 200}):
        if ps.get("name") == name:
            return str(ps["id"])
    return None


def _create_once(client: GraphClient, a: Action, data: Mapping[str, Any]) -> str:
    """POST the new set once. Meta: "an error doesn't necessarily mean the set was not created", so after an
    error that may have been applied (timeout, 5xx) the set is looked up by its name before the error counts:
    an automatic retry would create a second set, which the next run would delete as a duplicate."""
    try:
        return str(post_once(client, f"{a.catalog_id}/product_sets", data)["id"])
    except MetaAPIError as exc:
        if exc.retryable:
            found = _find_by_name(client, str(a.catalog_id), a.name)
            if found is not None:
                return found
        raise


def _shops_param(a: Action) -> list[dict[str, str]]:
    return [{"shop_id": shop} for shop in a.publish_to_shops]


def apply_product_set_actions(client: GraphClient, actions: Iterable[Action]) -> list[ActionResult]:
    """Run the actions. Meta errors on one action are reported (``failed``; a live set's refused delete is
    ``refused``) and the others still run; only an invalid token (MetaAuthError) stops everything."""
    results: list[ActionResult] = []
    for a in actions:
        if a.kind in ("keep", "skip"):
            results.append(ActionResult(a, "skipped", a.product_set_id, a.reason))
            continue
        try:
            if a.kind == "create":
                data: dict[str, Any] = {"name": a.name}
                if a.filter is not None:
                    data["filter"] = canonical_json(a.filter)
                if a.metadata:
                    data["metadata"] = a.metadata
                if a.publish_to_shops:
                    data["publish_to_shops"] = _shops_param(a)
                new_id = _create_once(client, a, data)
                results.append(ActionResult(replace(a, product_set_id=new_id), "done", new_id, "created"))
            elif a.kind == "update":
                data = {"name": a.name, "filter": canonical_json(a.filter) if a.filter is not None else None}
                if a.metadata:
                    data["metadata"] = a.metadata
                if a.publish_to_shops:
                    data["publish_to_shops"] = _shops_param(a)
                client.post(str(a.product_set_id), data={k: v for k, v in data.items() if v is not None})
                results.append(ActionResult(a, "done", a.product_set_id, a.reason))
            else:  # delete
                params = {"allow_live_product_set_deletion": True} if a.allow_live_deletion else None
                client.delete(str(a.product_set_id), params)
                results.append(ActionResult(a, "done", a.product_set_id, "deleted"))
        except MetaAuthError:
            raise
        except MetaAPIError as exc:
            # Meta refuses deleting a live set with an invalid-request error naming the override parameter.
            live = a.kind == "delete" and (
                "allow_live_product_set_deletion" in exc.message
                or (not a.allow_live_deletion and exc.kind is ErrorKind.INVALID_REQUEST)
            )
            status: Literal["refused", "failed"] = "refused" if live else "failed"
            hint = (
                " — the set is used by an active ad or shop; set allow_live_deletion: true to delete it anyway"
                if live
                else ""
            )
            results.append(ActionResult(a, status, a.product_set_id, f"{exc.message}{hint}"))
    return results
