"""A catalog that already holds items, compared with the tenant's feed, set-based in DuckDB.

Meta keeps an item's ``retailer_id`` as its identity (and its ad learnings); an item the brand turned into
variants comes back under new ids. For each id already in the catalog the comparison says whether the feed
sends it again (kept: the first replace overwrites its values), sends variants of it instead (linked: by the
feed's ``previous_id`` or a variant id that starts with the old id and ``_`` or ``-``, as Kobi infers variants
elsewhere) or not at all (left: out of stock for the tenant's retention, then deleted, unless the registry keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from kobi_cpas.sync.desired import variant_prefixes_sql


@dataclass(frozen=True)
class ExistingCounts:
    existing: int
    kept: int
    linked: int
    left: int
    new: int


def compare_existing(
    con: duckdb.DuckDBPyConnection, tenant_id: str, existing_ids: list[str]
) -> ExistingCounts:
    """Compare the catalog's ids with the tenant's latest valid snapshot (``main.feed_items``)."""
    row = con.execute(
        f"""WITH ex AS (SELECT DISTINCT unnest($ids::VARCHAR[]) AS id),
        feed AS (SELECT retailer_id AS id, previous_id FROM main.feed_items WHERE tenant_id = $t),
        kept AS (SELECT id FROM ex SEMI JOIN feed USING (id)),
        gone AS (SELECT id FROM ex ANTI JOIN feed USING (id)),
        linked AS (
          SELECT g.id FROM gone g JOIN feed f ON f.previous_id = g.id
          UNION
          SELECT g.id FROM gone g JOIN ({variant_prefixes_sql("SELECT id FROM feed")}) p ON p.prefix = g.id
        )
        SELECT (SELECT count(*) FROM ex), (SELECT count(*) FROM kept), (SELECT count(*) FROM linked),
               (SELECT count(*) FROM gone) - (SELECT count(*) FROM linked),
               (SELECT count(*) FROM feed ANTI JOIN ex USING (id))""",
        {"ids": existing_ids, "t": tenant_id},
    ).fetchone()
    assert row is not None
    return ExistingCounts(*(int(v) for v in row))
