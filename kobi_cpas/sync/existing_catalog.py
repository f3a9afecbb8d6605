"""A brand's catalog that already holds items is never written by Kobi's first sync without a person's yes.

Most brands arrive with an Ads catalog fed by another tool. Kobi's first upload would overwrite the items with
the same ids (their ad learnings stay, their values become the feed's) and add the rest beside them, while the
other tool's feed keeps uploading on its schedule. So before the tenant's first upload (no Kobi feed recorded
for it yet), the replace and update methods read the catalog's ``product_count`` and feeds; a catalog that is
not empty blocks the sync (``SyncBlocked``) until a run carries ``kobi/confirm_existing_catalog=true``. The
``tenant_onboarding`` asset shows the person what the first replace would keep, link and leave, and which other
feeds to switch off. Kobi never deletes another tool's feed or items: a replace upload deletes only the items of
its own feed.
"""

from __future__ import annotations

from typing import Any

import duckdb

from kobi_cpas.meta.client import MetaGraphClient

CONFIRM_EXISTING_TAG = "kobi/confirm_existing_catalog"


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
