"""Converted products -> the retailer's product items on Meta -> the brand's feed items.

``action_converted_product_id`` in Collaborative Ads insights names a product item of the RETAILER's catalog
segment, not of the brand's catalog. Meta's Collaborative Ads page: "The API only returns Product IDs — see
/{product-item-id}". So:

1. ``lookup_product_items``: every converted product id not yet cached in ``retailer_product_items`` is looked up
   once with ``GET /{product-item-id}?fields=retailer_id,name,brand,gtin,manufacturer_part_number`` (the
   ProductItem fields of Meta's SDK). One request per id: Meta's multi-id ``GET /?ids=a,b`` is a legacy feature
   that new use cases may not adopt since 2026-11-04 (Graph API v27.0 announcement, all versions) and that v26.0
   calls no longer support, so it is not used. An id Meta does not know (error 100, subcode 33) is cached as
   ``not_found`` and never asked again; other failures are cached as ``failed`` and asked again next run.
2. ``match_to_feed``: each found item is matched to the brand's ``feed_items`` by retailer id (the retailer's SKU
   equals the brand's feed id), else GTIN, else MPN. GTIN and MPN take part only when ``feed_items`` has such a
   column (Kobi's feed fields have neither today): the others stay ``unmatched``. Then the product metrics rows
   get the brand feed item (retailer_id, title, brand) and the match method.
3. ``match_rates``: per tenant and retailer, items found / not found / matched by method and the match rate,
   by items and by converted value (``MATCH_RATES_SQL``, also the analyst view ``retailer_product_match_rates``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kobi_cpas.insights.schema import PRODUCT_VALUE_WINDOW, ensure_schema
from kobi_cpas.insights.stage import opener
from kobi_cpas.meta import (
    MetaAPIError,
    MetaAuthError,
    MetaGraphClient,
    MetaInvalidRequestError,
    MetaPermissionError,
)
from kobi_cpas.meta.errors import UNKNOWN_OBJECT_SUBCODE

# ProductItem fields asked for (each exists in facebook_business.adobjects.productitem.ProductItem.Field; the
# SDK has no "mpn": Meta's name is manufacturer_part_number).
LOOKUP_FIELDS: tuple[str, ...] = ("retailer_id", "name", "brand", "gtin", "manufacturer_part_number")
FOUND, NOT_FOUND, FAILED = "found", "not_found", "failed"
# (match method, column of retailer_product_items, column of feed_items), in order of preference.
MATCH_KEYS: tuple[tuple[str, str, str], ...] = (
    ("retailer_id", "retailer_id", "retailer_id"),
    ("gtin", "gtin", "gtin"),
    ("mpn", "mpn", "mpn"),
)
UNMATCHED = "unmatched"
MATCHED_METHODS = tuple(m for m, _, _ in MATCH_KEYS)

_COLUMNS = (
    "tenant_id",
    "retailer",
    "product_item_id",
    "retailer_id",
    "name",
    "brand",
    "gtin",
    "mpn",
    "lookup_status",
    "lookup_error",
    "looked_up_at",
    "feed_retailer_id",
    "match_method",
    "matched_at",
)


class ProductLookupError(Exception):
    """A lookup error a person must fix (token, permission or a bad request of ours)."""


@dataclass
class LookupReport:
    tenant_id: str
    requested: int = 0  # ids asked from Meta this run (one GET each)
    found: int = 0
    not_found: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pending_product_items(con: Any, tenant_id: str) -> list[tuple[str, str]]:
    """(retailer, product item id) of the tenant's converted products not cached as found or not_found."""
    rows = con.execute(
        f"""SELECT DISTINCT p.retailer, p.action_converted_product_id
            FROM shared_item_product_metrics p
            WHERE p.tenant_id = ? AND NOT EXISTS (
                SELECT 1 FROM retailer_product_items m
                WHERE m.tenant_id = p.tenant_id AND m.retailer = p.retailer
                  AND m.product_item_id = p.action_converted_product_id
                  AND m.lookup_status IN ('{FOUND}', '{NOT_FOUND}'))
            ORDER BY 1, 2""",
        [tenant_id],
    ).fetchall()
    return [(str(r), str(p)) for r, p in rows]


def _is_unknown_object(exc: MetaAPIError) -> bool:
    return exc.code == 100 and exc.error_subcode == UNKNOWN_OBJECT_SUBCODE


def lookup_product_items(
    client: MetaGraphClient,
    con: Any,
    *,
    tenant_id: str,
    now: datetime | None = None,
) -> LookupReport:
    """Look up the tenant's converted product ids Meta was never asked about (one GET each) and cache them.

    Stops at the first failure that is not "unknown object" (after the client's own retries): the rest wait for
    the next run. Token, permission and invalid-request errors raise ``ProductLookupError`` (after caching what
    was looked up), naming the tenant, retailer and product item. ``con``: a connection or a callable opening
    one: it is opened to read what is pending and again to store the answers, never during the GETs."""
    connect = opener(con)
    with connect() as db:
        ensure_schema(db)
        pending = pending_product_items(db, tenant_id)
    now = now or datetime.now(UTC)
    report = LookupReport(tenant_id)
    rows: list[tuple[Any, ...]] = []
    fields = ",".join(LOOKUP_FIELDS)
    fatal: ProductLookupError | None = None
    for retailer, pid in pending:
        report.requested += 1
        try:
            node = client.get(pid, {"fields": fields})
        except MetaAPIError as exc:
            if _is_unknown_object(exc):
                report.not_found += 1
                rows.append(_row(tenant_id, retailer, pid, {}, NOT_FOUND, exc.message, now))
                continue
            report.failed += 1
            where = (
                f"tenant {tenant_id}, retailer {retailer}, product item {pid} (GET /{pid}?fields={fields})"
            )
            report.errors.append(f"{where}: {exc}")
            rows.append(_row(tenant_id, retailer, pid, {}, FAILED, str(exc), now))
            if isinstance(exc, MetaAuthError | MetaPermissionError | MetaInvalidRequestError):
                fatal = ProductLookupError(f"product item lookup failed for {where}: {exc}")
            break  # more requests would fail the same way or burn the rate budget
        report.found += 1
        rows.append(_row(tenant_id, retailer, pid, node, FOUND, None, now))
    if rows:
        with connect() as db:
            _store(db, rows)
    if fatal is not None:
        raise fatal
    return report


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def _row(
    tenant_id: str,
    retailer: str,
    pid: str,
    node: dict[str, Any],
    status: str,
    error: str | None,
    now: datetime,
) -> tuple[Any, ...]:
    return (
        tenant_id,
        retailer,
        pid,
        _text(node.get("retailer_id")),
        _text(node.get("name")),
        _text(node.get("brand")),
        _text(node.get("gtin")),
        _text(node.get("manufacturer_part_number")),
        status,
        error,
        now,
        None,
        UNMATCHED,
        now,
    )


def _store(con: Any, rows: list[tuple[Any, ...]]) -> None:
    """Replace the cached rows of these ids (a failed one may now be found) in one transaction."""
    if not rows:
        return
    marks = ", ".join("?" * len(_COLUMNS))
    cols = ", ".join(_COLUMNS)
    con.execute("CREATE OR REPLACE TEMP TABLE _looked_up AS SELECT * FROM retailer_product_items WHERE false")
    try:
        con.executemany(f"INSERT INTO _looked_up ({cols}) VALUES ({marks})", rows)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                """DELETE FROM retailer_product_items m USING _looked_up n
                   WHERE m.tenant_id = n.tenant_id AND m.retailer = n.retailer
                     AND m.product_item_id = n.product_item_id"""
            )
            con.execute(f"INSERT INTO retailer_product_items ({cols}) SELECT {cols} FROM _looked_up")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DROP TABLE IF EXISTS _looked_up")


# -- matching ------------------------------------------------------------------------------------------


def _columns(con: Any, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ?", [table]
    ).fetchall()
    return {r[0] for r in rows}


def match_keys(con: Any) -> list[tuple[str, str, str]]:
    """The match keys usable on this database: those whose column exists in feed_items (none without it)."""
    feed = _columns(con, "feed_items")
    return [k for k in MATCH_KEYS if k[2] in feed]


def match_to_feed(con: Any, tenant_id: str, now: datetime | None = None) -> None:
    """Match the tenant's cached product items to its feed items (set-based), then copy the brand feed item and
    the method onto its product metrics rows."""
    ensure_schema(con)
    now = now or datetime.now(UTC)
    keys = match_keys(con)
    if keys:
        candidates = "\n UNION ALL ".join(
            f"""SELECT m.retailer, m.product_item_id, f.retailer_id AS feed_retailer_id, '{method}' AS method,
                  {rank} AS rank
           FROM retailer_product_items m JOIN feed_items f
             ON f.tenant_id = m.tenant_id AND f.{feed_col} = m.{own_col}
           WHERE m.tenant_id = $tenant AND m.lookup_status = '{FOUND}' AND nullif(trim(m.{own_col}), '') IS NOT NULL"""
            for rank, (method, own_col, feed_col) in enumerate(keys)
        )
        best = f"""SELECT retailer, product_item_id,
                      arg_min(feed_retailer_id, (rank, feed_retailer_id)) AS feed_retailer_id,
                      arg_min(method, (rank, feed_retailer_id)) AS method
               FROM ({candidates}) GROUP BY ALL"""
    else:
        best = "SELECT NULL::VARCHAR AS retailer, NULL::VARCHAR AS product_item_id, NULL::VARCHAR AS feed_retailer_id, NULL::VARCHAR AS method WHERE false"
    con.execute(
        f"""UPDATE retailer_product_items m
            SET feed_retailer_id = b.feed_retailer_id, match_method = coalesce(b.method, '{UNMATCHED}'),
                matched_at = $now
            FROM (SELECT r.retailer, r.product_item_id, x.feed_retailer_id, x.method
                  FROM retailer_product_items r LEFT JOIN ({best}) x USING (retailer, product_item_id)
                  WHERE r.tenant_id = $tenant) b
            WHERE m.tenant_id = $tenant AND m.retailer = b.retailer AND m.product_item_id = b.product_item_id""",
        {"tenant": tenant_id, "now": now},
    )
    feed = "feed_items" if _columns(con, "feed_items") else _EMPTY_FEED
    con.execute(
        f"""UPDATE shared_item_product_metrics p
            SET retailer_id = m.feed_retailer_id, product_title = f.title, product_brand = f.brand,
                match_method = m.match_method
            FROM retailer_product_items m LEFT JOIN {feed} f
              ON f.tenant_id = m.tenant_id AND f.retailer_id = m.feed_retailer_id
            WHERE p.tenant_id = $tenant AND m.tenant_id = p.tenant_id AND m.retailer = p.retailer
              AND m.product_item_id = p.action_converted_product_id""",
        {"tenant": tenant_id},
    )


_EMPTY_FEED = (
    "(SELECT NULL::VARCHAR AS tenant_id, NULL::VARCHAR AS retailer_id, NULL::VARCHAR AS title, "
    "NULL::VARCHAR AS brand WHERE false)"
)

# Per tenant and retailer: every converted product id seen (pending = never looked up, or failed), what Meta
# said, how many map to a brand feed item by each method, and the match rate by items and by converted value
# (campaign level, one attribution window, so nothing is counted twice).
MATCH_RATES_SQL = f"""
WITH ids AS (
    SELECT tenant_id, retailer, action_converted_product_id AS product_item_id,
           sum(value) FILTER (WHERE level = 'campaign' AND metric = 'converted_product_value'
                              AND attribution_window = '{PRODUCT_VALUE_WINDOW}') AS converted_value
    FROM shared_item_product_metrics GROUP BY ALL
), j AS (
    SELECT ids.tenant_id, ids.retailer, ids.converted_value, m.lookup_status,
           coalesce(m.match_method, '{UNMATCHED}') AS match_method,
           coalesce(m.match_method, '{UNMATCHED}') <> '{UNMATCHED}' AS matched
    FROM ids LEFT JOIN retailer_product_items m
      ON m.tenant_id = ids.tenant_id AND m.retailer = ids.retailer AND m.product_item_id = ids.product_item_id
)
SELECT tenant_id, retailer,
       count(*) AS product_items,
       count(*) FILTER (WHERE lookup_status = '{FOUND}') AS found,
       count(*) FILTER (WHERE lookup_status = '{NOT_FOUND}') AS not_found,
       count(*) FILTER (WHERE lookup_status IS NULL OR lookup_status = '{FAILED}') AS pending,
       count(*) FILTER (WHERE matched) AS matched,
       count(*) FILTER (WHERE match_method = 'retailer_id') AS matched_by_retailer_id,
       count(*) FILTER (WHERE match_method = 'gtin') AS matched_by_gtin,
       count(*) FILTER (WHERE match_method = 'mpn') AS matched_by_mpn,
       count(*) FILTER (WHERE NOT matched) AS unmatched,
       round(count(*) FILTER (WHERE matched) / count(*), 4) AS match_rate,
       coalesce(sum(converted_value), 0) AS converted_value,
       coalesce(sum(converted_value) FILTER (WHERE matched), 0) AS matched_value,
       round(CAST(coalesce(sum(converted_value) FILTER (WHERE matched), 0) AS DOUBLE)
             / nullif(CAST(sum(converted_value) AS DOUBLE), 0), 4) AS value_match_rate
FROM j GROUP BY tenant_id, retailer
"""


def match_rates(con: Any, tenant_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The match rates per tenant and retailer (all tenants, or those given), ordered by tenant and retailer."""
    ensure_schema(con)
    cur = con.execute(f"SELECT * FROM ({MATCH_RATES_SQL}) ORDER BY tenant_id, retailer")
    names = [d[0] for d in cur.description]
    wanted = set(tenant_ids) if tenant_ids is not None else None
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall() if wanted is None or r[0] in wanted]
