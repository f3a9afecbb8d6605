"""catalog_item_state and the delta counts built from one evaluation of the delta are those built separately,
and a refresh rewrites only the rows that differ."""

from __future__ import annotations

from types import SimpleNamespace

import duckdb

from kobi_cpas.sync.delta import DeltaCounts, delta_counts
from kobi_cpas.sync.item_state import refresh_item_state, refresh_item_state_and_delta
from kobi_cpas.sync.state import DDL
from kobi_cpas.sync.tables import CATALOG_ITEM_STATE


def _state() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for ddl in DDL:
        con.execute(ddl)
    con.execute(CATALOG_ITEM_STATE.ddl("main.catalog_item_state"))
    # id -> (desired status or None, desired hashes, Meta's hashes or None, in flight with the desired hashes)
    items = {
        "new": ("active", (1, 1), None, False),
        "changed": ("active", (2, 2), (9, 2), False),
        "volatile": ("active", (3, 3), (3, 9), True),
        "same": ("active", (4, 4), (4, 4), False),
        "kept": ("invalid_kept", (5, 5), (5, 5), False),
        "flip": ("removed_retained", (6, 6), (6, 9), False),
        "gone": (None, None, (7, 7), False),
    }
    for tenant in ("t1", "t2"):
        for i, (id_, (status, want, held, flying)) in enumerate(items.items()):
            if status:
                con.execute(
                    "INSERT INTO sync_state.desired_state (tenant_id, shard, id, item_group_id, availability, price, "
                    "content_hash, volatile_hash, status, removed_at) VALUES (?, ?, ?, 'g', 'in stock', '1.00 TRY', "
                    "?, ?, ?, CASE WHEN ? = 'removed_retained' THEN now() END)",
                    [tenant, i % 2, id_, *want, status, status],
                )
            if held:
                con.execute(
                    "INSERT INTO sync_state.meta_items VALUES (?, ?, ?, ?, ?, 'replace', 's0', now())",
                    [tenant, id_, i % 2, *held],
                )
            if flying:
                con.execute(
                    "INSERT INTO sync_state.inflight_items VALUES ('b1', ?, ?, 0, 'batch', NULL, ?, ?)",
                    [tenant, id_, *want],
                )
        # Items adopted from the brand's existing catalog: one held out of stock, one deleted, one the feed sends
        # again (in the sync state: listed once, as Kobi's own item).
        con.execute(
            """INSERT INTO sync_state.adopted_items (tenant_id, retailer_id, adopted_at, deleted_at) VALUES
               (?, 'shop-1', now(), NULL), (?, 'shop-2', now() - INTERVAL 100 DAY, now()), (?, 'same', now(), NULL)""",
            [tenant] * 3,
        )
    return con


def _rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT * FROM main.catalog_item_state ORDER BY ALL").fetchall()


def test_item_state_and_delta_in_one_pass_equal_the_separate_ones():
    tenant = SimpleNamespace(tenant_id="t1", sync=SimpleNamespace(retention_days=7, adopted_items="retain"))
    con = _state()
    refresh_item_state(con, tenant)
    separate, counts = _rows(con), delta_counts(con, "t1")
    con.execute("DELETE FROM main.catalog_item_state")
    assert refresh_item_state_and_delta(con, tenant) == counts
    assert _rows(con) == separate
    assert counts == DeltaCounts(
        new=1, changed=1, volatile_only=2, unchanged=2, dropped=1, in_flight=1, retention_flips=1
    )
    assert len(separate) == 9 and {r[0] for r in separate} == {"t1"}
    adopted = {
        r[1]: (r[4], r[7], (r[14] - r[13]).days, r[15] is not None)
        for r in separate
        if r[1].startswith("shop")
    }
    assert adopted == {
        "shop-1": ("adopted_retained", "out of stock", 7, False),
        "shop-2": ("adopted_deleted", None, 7, True),
    }
    # the temp table is gone and a second call (in a transaction) gives the same
    con.execute("BEGIN")
    assert refresh_item_state_and_delta(con, tenant) == counts
    con.execute("COMMIT")
    assert _rows(con) == separate
    assert con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_kobi_state%'"
    ).fetchone() == (0,)


def test_a_refresh_rewrites_only_the_rows_that_differ_and_equals_one_from_scratch():
    tenant = SimpleNamespace(tenant_id="t1", sync=SimpleNamespace(retention_days=7, adopted_items="retain"))
    con = _state()
    refresh_item_state(con, tenant)
    before = dict(con.execute("SELECT retailer_id, rowid FROM main.catalog_item_state").fetchall())
    # Meta confirms the changed item, and the item that was gone leaves Meta.
    con.execute("UPDATE sync_state.meta_items SET content_hash = 2 WHERE tenant_id = 't1' AND id = 'changed'")
    con.execute("DELETE FROM sync_state.meta_items WHERE tenant_id = 't1' AND id = 'gone'")
    counts = refresh_item_state_and_delta(con, tenant)
    after = dict(con.execute("SELECT retailer_id, rowid FROM main.catalog_item_state").fetchall())
    assert set(after) == set(before) - {"gone"}
    # The rows of the items whose state did not change stay where they were; the changed one is new.
    assert {k for k in after if after[k] != before[k]} == {"changed"}
    incremental = _rows(con)
    con.execute("DELETE FROM main.catalog_item_state")
    assert refresh_item_state_and_delta(con, tenant) == counts
    assert _rows(con) == incremental
    assert counts == DeltaCounts(
        new=1, changed=0, volatile_only=2, unchanged=3, in_flight=1, retention_flips=1
    )
