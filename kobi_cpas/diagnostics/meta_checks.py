"""Meta's own checks of a tenant catalog, staged for ``lifecycle.merge_problems`` like every other source
(see ``collect``): the async item errors (``meta_item_check``: ``GET /{catalog_id}/products?fields=id,retailer_id,
errors&error_priority=P`` through every page, or ``GET /{item_id}?fields=errors`` for a few items) and the
catalog-level diagnostics (``meta_catalog_diagnostics``: ``GET /{catalog_id}/diagnostics``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from kobi_cpas.diagnostics._sql import run
from kobi_cpas.diagnostics.collect import (
    _STAGE_COLUMNS,
    DEFAULT_PAGE_LIMIT,
    _mark_polled,
    clear_stage,
)
from kobi_cpas.diagnostics.dictionary import PRIORITIES, priority_sql
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.errors import UNKNOWN_OBJECT_SUBCODE, MetaInvalidRequestError

ITEM_ERROR_FIELDS = "id,retailer_id,errors"
# Named, not Meta's unspecified defaults: the ProductCatalogDiagnosticGroup fields the summary reads.
CATALOG_DIAGNOSTIC_FIELDS = (
    "title,subtitle,type,severity,error_code,number_of_affected_items,affected_entity,affected_channels,"
    "affected_features,diagnostics"
)


# -- (d) Meta's async item errors ------------------------------------------------------------------------------


@dataclass
class ItemErrorsFetch:
    """Items with errors as Meta listed them (one entry per item per priority poll), and the paging stats.

    Meta's own samples list items without ``retailer_id``; ``item_ids.map_retailer_ids`` fills it in where it
    can (``retailer_ids``) and records the rest in ``unmapped`` (product item id -> why)."""

    products: list[dict[str, Any]]
    priorities: tuple[str, ...]
    pages: int = 0
    retailer_scope: list[str] | None = None  # a partial (item) poll: only these items were checked
    retailer_ids: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)


def fetch_item_errors(
    client: MetaGraphClient,
    catalog_id: str,
    priorities: Sequence[str] = PRIORITIES,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    error_type: str | None = None,
) -> ItemErrorsFetch:
    """``GET /{catalog_id}/products?fields=id,retailer_id,errors&error_priority=P`` for each priority, through
    every page (the client follows ``paging.next`` and retries throttling)."""
    out = ItemErrorsFetch([], tuple(priorities))
    for priority in priorities:
        params: dict[str, Any] = {
            "fields": ITEM_ERROR_FIELDS,
            "error_priority": priority,
            "limit": page_limit,
        }
        if error_type:
            params["error_type"] = error_type
        for page in client.pages(f"{catalog_id}/products", params=params):
            out.pages += 1
            out.products.extend(p for p in page.get("data") or [] if isinstance(p, dict))
    return out


def fetch_item_nodes(
    client: MetaGraphClient, product_item_ids: Iterable[str]
) -> tuple[ItemErrorsFetch, list[str]]:
    """The item view: ``GET /{product_item_id}?fields=id,retailer_id,errors`` per item. Returns the fetch (a
    partial poll scoped to the items read) and the ids Meta no longer knows (deleted items)."""
    out = ItemErrorsFetch([], PRIORITIES, retailer_scope=[])
    gone: list[str] = []
    for pid in dict.fromkeys(str(p) for p in product_item_ids):
        try:
            node = client.get(pid, params={"fields": ITEM_ERROR_FIELDS})
        except MetaInvalidRequestError as exc:
            if exc.error_subcode == UNKNOWN_OBJECT_SUBCODE:
                gone.append(pid)
                continue
            raise
        out.pages += 1
        out.products.append(node)
        if node.get("retailer_id"):
            assert out.retailer_scope is not None
            out.retailer_scope.append(str(node["retailer_id"]))
    return out, gone


_ITEMS_JSON_TYPE = json.dumps(
    [
        {
            "id": "VARCHAR",
            "retailer_id": "VARCHAR",
            "errors": [
                {
                    "error_type": "VARCHAR",
                    "error_priority": "VARCHAR",
                    "title": "VARCHAR",
                    "description": "VARCHAR",
                    "call_to_action": "VARCHAR",
                }
            ],
        }
    ]
)


def stage_item_errors(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    fetch: ItemErrorsFetch,
    now: datetime,
    gone_product_item_ids: Sequence[str] = (),
    *,
    clear: bool = True,
) -> int:
    """Stage Meta's item errors (``meta_item_check``), one row per item and error type, set-based from the raw
    pages. A partial fetch (some priorities, or some items) only lets the merge resolve within its scope.

    An item still without a retailer id (see ``item_ids.map_retailer_ids``) is staged as an ``unmapped_item``
    row naming its product item id (retailer_id ''), never dropped: dropping it would let the merge resolve the
    item's open problem although Meta still reports it (``lifecycle.merge_problems`` holds those open).
    ``clear=False``: the caller has just cleared the whole stage (``clear_stage``)."""
    if clear:
        clear_stage(con, tenant_id, catalog_id, "meta_item_check")
    unmapped = [{"pid": k, "why": v} for k, v in fetch.unmapped.items()]
    inserted = run(
        con,
        f"""INSERT INTO diag_state.staged_problems ({_STAGE_COLUMNS})
        WITH raw AS (SELECT unnest(from_json($j::JSON, '{_ITEMS_JSON_TYPE}')) AS p),
        why AS (SELECT unnest(from_json($u::JSON, '[{{"pid": "VARCHAR", "why": "VARCHAR"}}]'), recursive := true)),
        errs AS (SELECT p.id AS pid, coalesce(nullif(p.retailer_id, ''), '') AS rid,
                        CASE WHEN nullif(p.retailer_id, '') IS NULL THEN p.id ELSE '' END AS kp, e
                 FROM raw, unnest(p.errors) AS u(e)
                 WHERE coalesce(nullif(p.retailer_id, ''), p.id) IS NOT NULL AND e.error_type IS NOT NULL)
        SELECT $t, $c, rid, any_value(errs.pid), CASE WHEN rid = '' THEN 'unmapped_item' ELSE 'item' END,
               'meta_item_check', e.error_type, '', kp,
               any_value(e.error_priority),
               CASE WHEN {priority_sql("any_value(e.error_priority)")} = 'HIGH' THEN 'MUST_FIX' ELSE 'OPPORTUNITY' END,
               any_value(e.title), any_value(e.description), any_value(e.call_to_action),
               CASE WHEN rid = '' THEN 'Meta reported this problem on product item ' || kp || ' without its '
                 || 'retailer_id (' || coalesce(any_value(why.why), 'no lookup was made') || '). Find the item by '
                 || 'this id in Commerce Manager; the problem is matched to its feed item once Meta names it.' END,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, $now
        FROM errs LEFT JOIN why ON why.pid = errs.kp
        GROUP BY rid, kp, e.error_type""",
        {
            "t": tenant_id,
            "c": catalog_id,
            "now": now,
            "j": json.dumps(fetch.products),
            "u": json.dumps(unmapped),
        },
    ).fetchone()
    scope: list[str] | None = None
    if fetch.retailer_scope is not None:
        scope = list(fetch.retailer_scope)
        if gone_product_item_ids:
            scope += [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT retailer_id FROM main.catalog_diagnostics WHERE tenant_id = ? AND catalog_id = ? "
                    "AND product_item_id IN (SELECT unnest(?::VARCHAR[]))",
                    [tenant_id, catalog_id, list(gone_product_item_ids)],
                ).fetchall()
            ]
    _mark_polled(con, tenant_id, catalog_id, "meta_item_check", now, fetch.priorities, scope)
    # The source's staged rows were cleared first: the rows inserted are all of them.
    return int(inserted[0]) if inserted else 0


# -- (e) catalog-level diagnostics ------------------------------------------------------------------------------


@dataclass
class CatalogObservation:
    """``GET /{catalog_id}?fields=product_count`` and the ``/{catalog_id}/diagnostics`` groups."""

    product_count: int | None
    groups: list[dict[str, Any]]


def fetch_catalog_observation(client: MetaGraphClient, catalog_id: str) -> CatalogObservation:
    node = client.get(catalog_id, params={"fields": "id,product_count"})
    groups = [
        g
        for g in client.paginate(f"{catalog_id}/diagnostics", {"fields": CATALOG_DIAGNOSTIC_FIELDS})
        if isinstance(g, dict)
    ]
    pc = node.get("product_count")
    return CatalogObservation(int(pc) if pc is not None else None, groups)


def compact_groups(groups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The diagnostic groups without their sample items: what ``catalog_health.diagnostic_groups`` holds."""
    return [
        {
            "type": g.get("type"),
            "title": g.get("title"),
            "severity": g.get("severity"),
            "number_of_affected_items": g.get("number_of_affected_items"),
            "affected_entity": g.get("affected_entity"),
            "error_types": [d.get("error_type") for d in g.get("diagnostics") or [] if isinstance(d, dict)],
        }
        for g in groups
    ]


def store_catalog_observation(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, obs: CatalogObservation, now: datetime
) -> None:
    """Keep the latest observation per tenant catalog (``catalog_health`` reads it)."""
    con.execute(
        "DELETE FROM diag_state.catalog_observations WHERE tenant_id = ? AND catalog_id = ?",
        [tenant_id, catalog_id],
    )
    con.execute(
        "INSERT INTO diag_state.catalog_observations VALUES (?, ?, ?, ?, ?)",
        [tenant_id, catalog_id, now, obs.product_count, json.dumps(compact_groups(obs.groups))],
    )


def stage_catalog_diagnostics(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    catalog_id: str,
    obs: CatalogObservation,
    now: datetime,
    *,
    clear: bool = True,
) -> int:
    """Stage the catalog-level entries of the diagnostics groups (``affected_entity = product_catalog``) as
    ``meta_catalog_diagnostics`` problems of the catalog (retailer_id ''). Item-level groups summarise the item
    errors, which ``meta_item_check`` already holds item by item. ``clear=False``: the caller has just cleared
    the whole stage (``clear_stage``)."""
    if clear:
        clear_stage(con, tenant_id, catalog_id, "meta_catalog_diagnostics")
    rows = [
        [
            tenant_id,
            catalog_id,
            str(d.get("error_type") or g.get("type") or "CATALOG_DIAGNOSTIC"),
            d.get("error_priority"),
            g.get("severity"),
            d.get("title") or g.get("title"),
            d.get("description") or g.get("subtitle"),
            d.get("call_to_action"),
            g.get("title"),
            d.get("number_of_affected_items", g.get("number_of_affected_items")),
            now,
        ]
        for g in obs.groups
        if g.get("affected_entity") == "product_catalog"
        for d in (g.get("diagnostics") or [{}])
    ]
    if rows:
        con.executemany(
            f"""INSERT INTO diag_state.staged_problems ({_STAGE_COLUMNS})
            VALUES (?, ?, '', NULL, 'catalog', 'meta_catalog_diagnostics', ?, '', '', ?, ?, ?, ?, ?, ?, NULL, NULL,
                    NULL, NULL, NULL, NULL, ?, ?)""",
            rows,
        )
    _mark_polled(con, tenant_id, catalog_id, "meta_catalog_diagnostics", now)
    return len(rows)
