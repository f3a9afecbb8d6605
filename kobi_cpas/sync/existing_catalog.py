"""A brand's catalog that already holds items is never written by Kobi's first sync without a person's yes.

Most brands arrive with an Ads catalog fed by another tool. Kobi's first upload would overwrite the items with
the same ids (their ad learnings stay, their values become the feed's) and add the rest beside them, while the
other tool's feed keeps uploading on its schedule. So before the tenant's first upload (no Kobi feed recorded
for it yet), the replace and update methods read the catalog's ``product_count`` and feeds; a catalog that is
not empty blocks the sync (``SyncBlocked``) until a run carries ``kobi/confirm_existing_catalog=true``. The
``tenant_onboarding`` asset shows the person what the first replace would keep, link and leave, and which other
feeds to switch off. Kobi never deletes another tool's feed or items: a replace upload deletes only the items of
its own feed.

At the confirmed first upload Kobi adopts the existing ids as the history its variant links are drawn from: a
feed item that replaces an existing item by variants (``X`` in the catalog, ``X-S`` and ``X-M`` in the feed) is
sent with ``previous_id`` = ``X``, as for an item that left Kobi's own feed, so the ad learnings carry over. An
existing item the feed does not send at all is what a brand no longer sells: it is marked ``out of stock``
through the Batch API (only its availability: its other values are the other feed's) and, like an item that left
Kobi's own feed, kept so for the tenant's retention and then deleted (``adopted.py``; never on the first day,
never if the registry says ``sync.adopted_items: keep``); ``sync_state.adopted_items`` records which.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from kobi_cpas.feeds.hashing import content_hash_sql
from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.sync.desired import OUT_OF_STOCK, variant_prefixes_sql
from kobi_cpas.warehouse.sql import sql_str

CONFIRM_EXISTING_TAG = "kobi/confirm_existing_catalog"
PAGE = 500


def read_existing_ids(client: MetaGraphClient, catalog_id: str) -> list[str]:
    """Every item id (retailer_id) the catalog holds."""
    return [
        str(p["retailer_id"])
        for p in client.paginate(f"{catalog_id}/products", params={"fields": "retailer_id", "limit": PAGE})
        if p.get("retailer_id") is not None
    ]


def left_existing_batches(
    con: duckdb.DuckDBPyConnection, tenant_id: str, existing_ids: list[str], chunk_size: int
) -> list[tuple[list[str], str]]:
    """The existing ids the tenant's replace view neither sends nor links a variant to (after
    :func:`link_variants_to_existing`), not yet adopted, in chunks of ``chunk_size``: (ids, the items_batch
    ``requests`` marking them out of stock, an UPDATE of the availability only)."""
    rows = con.execute(
        f"""WITH ex AS (SELECT DISTINCT unnest($ids::VARCHAR[]) AS id),
        todo AS (
          SELECT id, (row_number() OVER (ORDER BY id) - 1) // {int(chunk_size)} AS chunk FROM ex
          WHERE id NOT IN (SELECT id FROM sync_state.desired_state WHERE tenant_id = $t)
            AND id NOT IN (SELECT previous_id FROM sync_state.desired_state
                           WHERE tenant_id = $t AND previous_id IS NOT NULL)
            AND id NOT IN (SELECT retailer_id FROM sync_state.adopted_items WHERE tenant_id = $t)
        )
        SELECT list(id ORDER BY id),
               to_json(list({{'method': 'UPDATE', 'data': {{'id': id, 'availability': {sql_str(OUT_OF_STOCK)}}}}}
                             ORDER BY id))::VARCHAR
        FROM todo GROUP BY chunk ORDER BY chunk""",
        {"ids": existing_ids, "t": tenant_id},
    ).fetchall()
    return [([str(i) for i in ids], str(requests)) for ids, requests in rows]


def record_adopted(
    con: duckdb.DuckDBPyConnection, tenant_id: str, ids: list[str], now: datetime, run_id: str, handle: str
) -> None:
    con.execute(
        """INSERT INTO sync_state.adopted_items (tenant_id, retailer_id, adopted_at, run_id, handle)
           SELECT $t, unnest($ids::VARCHAR[]), $now, $run, $handle""",
        {"t": tenant_id, "ids": ids, "now": now, "run": run_id, "handle": handle},
    )


_UNLINKED = "SELECT id FROM sync_state.desired_state WHERE tenant_id = $t AND status = 'active' AND previous_id IS NULL"


def link_variants_to_existing(con: duckdb.DuckDBPyConnection, tenant_id: str, existing_ids: list[str]) -> int:
    """Give ``previous_id`` to the tenant's desired items that replace an existing item by variants: the item's
    id starts with an existing id the feed no longer sends, followed by ``_`` or ``-`` (the longest such id
    wins, as in Kobi's own variant inference). A ``previous_id`` the feed gives is never changed. -> items linked.
    """
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _existing_links AS
        WITH ex AS (SELECT DISTINCT unnest($ids::VARCHAR[]) AS id),
             d AS (SELECT id FROM sync_state.desired_state WHERE tenant_id = $t),
             gone AS (SELECT id FROM ex ANTI JOIN d USING (id))
        SELECT d.id AS new_id, arg_max(g.id, length(g.id)) AS old_id
        FROM ({variant_prefixes_sql(_UNLINKED)}) d JOIN gone g ON g.id = d.prefix
        GROUP BY d.id""",
        {"ids": existing_ids, "t": tenant_id},
    )
    (n,) = con.execute("SELECT count(*) FROM _existing_links").fetchone() or (0,)
    if n:
        con.execute(
            """UPDATE sync_state.desired_state d SET previous_id = l.old_id, previous_id_source = 'inferred'
            FROM _existing_links l WHERE d.tenant_id = $t AND d.id = l.new_id""",
            {"t": tenant_id},
        )
        # the link is part of the item's content: its hash changes with it (over the item's values, which the
        # replace view holds)
        con.execute(
            f"""UPDATE sync_state.desired_state d SET content_hash = h.content_hash
            FROM (SELECT id, {content_hash_sql()} AS content_hash FROM sync_state.desired_items
                  WHERE tenant_id = $t AND id IN (SELECT new_id FROM _existing_links)) h
            WHERE d.tenant_id = $t AND d.id = h.id""",
            {"t": tenant_id},
        )
    con.execute("DROP TABLE _existing_links")
    return int(n)


def kobi_feed_ids(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every feed Kobi's state records, any tenant: feed id -> tenant id."""
    return {
        str(f): str(t) for f, t in con.execute("SELECT feed_id, tenant_id FROM sync_state.feeds").fetchall()
    }


def catalog_feeds(client: MetaGraphClient, catalog_id: str) -> list[dict[str, Any]]:
    """The catalog's product feeds (id, name, product_count, schedule) as Meta lists them."""
    return list(
        client.paginate(
            f"{catalog_id}/product_feeds", params={"fields": "id,name,product_count,schedule", "limit": 100}
        )
    )


def existing_catalog_block(
    client: MetaGraphClient, tenant_id: str, catalog_id: str, kobi_feeds: dict[str, str]
) -> str | None:
    """Why the tenant's first upload must wait for a person (None: the catalog is empty, or holds a feed Kobi's
    state records, which the feed checks of the upload judge with their own, more precise message)."""
    node = client.get(catalog_id, params={"fields": "id,product_count"})
    count = int(node.get("product_count") or 0)
    if count == 0:
        return None
    feeds = catalog_feeds(client, catalog_id)
    if any(str(f["id"]) in kobi_feeds for f in feeds):
        return None
    listed = "; ".join(
        f"feed {f['id']} '{f.get('name', '')}' ({f.get('product_count', '?')} items"
        f"{', scheduled' if f.get('schedule') else ''})"
        for f in feeds
    )
    return (
        f"tenant '{tenant_id}': catalog {catalog_id} already holds {count:,} items that Kobi did not upload "
        f"({listed or 'in no feed: Batch API or Commerce Manager items'}). Kobi's first upload would overwrite "
        "the items with the same ids and add the others beside them. Nothing was sent. Materialize "
        f"tenant_onboarding for {tenant_id} to see what the first replace keeps, links and leaves, switch off the "
        "schedules of feeds Kobi replaces, then re-run with the run tag "
        f"{CONFIRM_EXISTING_TAG}=true. (If the catalog holds Kobi's own feed from a lost work database, adopt it "
        "with the run tag kobi/adopt_feed=<feed id> as well.)"
    )
