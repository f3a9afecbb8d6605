"""Retailer ids of product items Meta reports without one (pure: no Dagster).

Meta's own samples of item errors (``GET /{catalog_id}/products?fields=id,errors`` and ``GET /{item_id}?fields=
errors`` on the Catalog Integration page) carry only the product item id. Catalog problems are keyed by the
feed's retailer id, so such an item is mapped from earlier polls, else with ``GET /{product_item_id}?fields=
retailer_id`` (once per id per run); an item that stays unknown is staged as an ``unmapped_item`` row and never
lets the merge resolve an open problem it may be (``meta_checks.stage_item_errors``, ``lifecycle.merge_problems``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import duckdb

from kobi_cpas.diagnostics.meta_checks import ItemErrorsFetch
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.meta.errors import MetaAPIError

DEFAULT_MAX_LOOKUPS = 200


def ids_without_retailer_id(fetch: ItemErrorsFetch) -> list[str]:
    """Product item ids of the fetch whose entry has no ``retailer_id``, in first-seen order."""
    return list(
        dict.fromkeys(
            str(p["id"]) for p in fetch.products if p.get("id") and p.get("retailer_id") in (None, "")
        )
    )


def known_retailer_ids(
    con: duckdb.DuckDBPyConnection, tenant_id: str, catalog_id: str, product_item_ids: Sequence[str]
) -> dict[str, str]:
    """Retailer ids of product items already named in ``catalog_diagnostics`` (a product item id never changes
    its retailer id, so earlier polls answer for it without asking Meta)."""
    if not product_item_ids:
        return {}
    rows = con.execute(
        """SELECT product_item_id, any_value(retailer_id) FROM main.catalog_diagnostics
           WHERE tenant_id = ? AND catalog_id = ? AND retailer_id <> ''
             AND product_item_id IN (SELECT unnest(?::VARCHAR[]))
           GROUP BY 1""",
        [tenant_id, catalog_id, list(product_item_ids)],
    ).fetchall()
    return {str(pid): str(rid) for pid, rid in rows}


@dataclass
class RetailerIdLookup:
    """``GET /{product_item_id}?fields=retailer_id``, once per id for one run (an item appears in the listing
    of each priority and in the item view). ``failed`` keeps why an id could not be mapped. At most
    ``max_requests`` per run: should Meta stop sending retailer ids altogether, the poll must not turn into one
    request per item; the ids beyond stay unmapped (and their problems open) until a later run."""

    client: MetaGraphClient
    max_requests: int = DEFAULT_MAX_LOOKUPS
    found: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    def __call__(self, product_item_id: str) -> str | None:
        pid = str(product_item_id)
        if pid in self.found or pid in self.failed:
            return self.found.get(pid)
        if self.requests >= self.max_requests:
            self.failed[pid] = f"not looked up: this run's limit of {self.max_requests} lookups was reached"
            return None
        self.requests += 1
        try:
            node = self.client.get(pid, params={"fields": "retailer_id"})
        except MetaAPIError as exc:
            self.failed[pid] = f"looking up GET /{pid}?fields=retailer_id failed: {exc}"[:500]
            return None
        rid = node.get("retailer_id")
        if rid in (None, ""):
            self.failed[pid] = f"GET /{pid}?fields=retailer_id answered without a retailer_id"
            return None
        self.found[pid] = str(rid)
        return self.found[pid]


def map_retailer_ids(fetch: ItemErrorsFetch, known: Mapping[str, str], lookup: RetailerIdLookup) -> None:
    """Give every product of the fetch that Meta listed without ``retailer_id`` its retailer id: from ``known``
    (earlier polls), else from ``lookup``. The entries are completed in place (and an item poll's scope
    extended); ids that stay unknown go to ``fetch.unmapped``, where staging keeps them as unmapped rows."""
    for pid in ids_without_retailer_id(fetch):
        rid = known.get(pid) or lookup(pid)
        if rid is None:
            fetch.unmapped[pid] = lookup.failed.get(pid, "no lookup was made")
            continue
        fetch.retailer_ids[pid] = rid
        fetch.unmapped.pop(pid, None)
        if fetch.retailer_scope is not None and rid not in fetch.retailer_scope:
            fetch.retailer_scope.append(rid)
    for p in fetch.products:
        if p.get("retailer_id") in (None, "") and str(p.get("id")) in fetch.retailer_ids:
            p["retailer_id"] = fetch.retailer_ids[str(p["id"])]
