"""The replace view keeps an active item's values once, in its feed_items row: what it stores itself, what an
older work database (every value copied) becomes, the check that refuses a replace view without values, and
that a snapshot never applied (failed, or its run killed) is never the base of the next one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kobi_cpas.feeds.snapshot import ingest_feed
from kobi_cpas.sync import snapshot_step
from kobi_cpas.sync.snapshot_step import take_snapshot
from kobi_cpas.sync.state import DESIRED_STATE_COLUMNS, FEED_ITEMS_FIELDS, ITEM_COLUMNS, STATE_FIELDS
from kobi_cpas_tests.test_sync_desired import T0, Harness, item

_FEED_VALUES = ", ".join(f'"{c}"' for c in FEED_ITEMS_FIELDS)


def _feed_items(h: Harness) -> dict[str, tuple]:
    with h.wh.connect() as con:
        rows = con.execute(f"SELECT retailer_id, {_FEED_VALUES} FROM main.feed_items WHERE tenant_id = 't1'")
        return {r[0]: r[1:] for r in rows.fetchall()}


def _stored(h: Harness) -> dict[str, tuple]:
    """id -> (in_feed_items, title stored in kept_values); kept_values has a row for exactly the others."""
    with h.wh.connect() as con:
        kept = con.execute(
            "SELECT id FROM sync_state.kept_values WHERE tenant_id = 't1' ORDER BY id"
        ).fetchall()
        own = con.execute(
            "SELECT id FROM sync_state.desired_state WHERE tenant_id = 't1' AND NOT in_feed_items ORDER BY id"
        ).fetchall()
        assert kept == own
        rows = con.execute(
            "SELECT d.id, d.in_feed_items, k.title FROM sync_state.desired_state d "
            "LEFT JOIN sync_state.kept_values k USING (tenant_id, id) WHERE d.tenant_id = 't1'"
        )
        return {r[0]: r[1:] for r in rows.fetchall()}


def test_an_active_item_keeps_its_values_in_feed_items_and_a_kept_one_its_last_version(tmp_path):
    h = Harness(tmp_path)
    h.snapshot([item("a", "Coat"), item("b", "Pants"), item("c", "Hat")], T0)
    # Active items store no values of their own; the replace view shows their feed_items rows.
    assert _stored(h) == {"a": (True, None), "b": (True, None), "c": (True, None)}
    desired = h.desired()
    assert {k: tuple(v[c] for c in FEED_ITEMS_FIELDS) for k, v in desired.items()} == _feed_items(h)
    assert desired["b"]["title"] == "Pants" and desired["b"]["description"] == "Pants — warm and waterproof"

    # b turns invalid and c leaves the feed: feed_items no longer has them, the replace view keeps their last
    # valid version (c out of stock), stored with them.
    h.snapshot([item("a", "Coat (new cut)"), item("b", "Pants (new)", price="$5")], T0 + timedelta(hours=1))
    assert set(_feed_items(h)) == {"a"}
    assert _stored(h) == {"a": (True, None), "b": (False, "Pants"), "c": (False, "Hat")}
    desired = h.desired()
    assert {k: (v["status"], v["title"], v["availability"]) for k, v in desired.items()} == {
        "a": ("active", "Coat (new cut)", "in stock"),
        "b": ("invalid_kept", "Pants", "in stock"),
        "c": ("removed_retained", "Hat", "out of stock"),
    }
    assert desired["b"]["description"] == "Pants — warm and waterproof"

    # b is valid again: its values are the feed's once more, and stored there only.
    h.snapshot([item("a", "Coat (new cut)"), item("b", "Pants (new)")], T0 + timedelta(hours=2))
    assert _stored(h)["b"] == (True, None)
    assert h.desired()["b"]["title"] == "Pants (new)"


def test_a_work_database_with_every_value_copied_keeps_its_replace_view(tmp_path):
    h = Harness(tmp_path)
    h.snapshot([item("a", "Coat"), item("b", "Pants"), item("c", "Hat"), item("d", "Scarf")], T0)
    h.snapshot(
        [item("a", "Coat"), item("b", "Pants", price="$5"), item("d", "Scarf")], T0 + timedelta(hours=1)
    )
    with h.wh.connect() as con:
        # The older layout: desired_items a table holding every value of every item.
        con.execute("CREATE TEMP TABLE legacy AS SELECT * FROM sync_state.desired_items")
        con.execute("DROP VIEW sync_state.desired_items")
        con.execute("DELETE FROM sync_state.desired_state")
        con.execute("DELETE FROM sync_state.kept_values")
        con.execute("CREATE TABLE sync_state.desired_items AS SELECT * FROM legacy")
        # A stored value that is not its feed_items row's stays the item's own.
        con.execute("UPDATE sync_state.desired_items SET color = 'navy' WHERE id = 'a'")
        before = con.execute("SELECT * FROM sync_state.desired_items ORDER BY id").fetchall()
        con.execute("DELETE FROM kobi_internal.schema_meta")  # the next connection migrates
    with h.wh.connect() as con:
        kind = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = 'sync_state' "
            "AND table_name = 'desired_items'"
        ).fetchall()
        after = con.execute("SELECT * FROM sync_state.desired_items ORDER BY id").fetchall()
        cols = [d[0] for d in con.execute("SELECT * FROM sync_state.desired_items LIMIT 0").description]
    assert kind == [("VIEW",)]
    assert cols[2 : 2 + len(ITEM_COLUMNS)] == list(ITEM_COLUMNS)
    assert after == before
    # Only the active item whose values its feed_items row holds gave them up.
    assert _stored(h) == {"a": (False, "Coat"), "b": (False, "Pants"), "c": (False, "Hat"), "d": (True, None)}
    # The next snapshot writes rows of the new layout for what changes (b); a is unchanged by its hashes.
    assert (
        h.snapshot(
            [item("a", "Coat"), item("b", "Pants"), item("d", "Scarf")], T0 + timedelta(hours=2)
        ).status
        == "ok"
    )
    assert _stored(h) == {"a": (False, "Coat"), "b": (True, None), "c": (False, "Hat"), "d": (True, None)}


def test_a_work_database_with_a_column_per_field_in_desired_state_keeps_its_replace_view(tmp_path):
    h = Harness(tmp_path)
    h.snapshot([item("a", "Coat"), item("b", "Pants"), item("c", "Hat")], T0)
    h.snapshot([item("a", "Coat"), item("b", "Pants", price="$5")], T0 + timedelta(hours=1))
    before = h.desired()
    with h.wh.connect() as con:
        # The previous layout: desired_state with a column per field, the values of the rows not in feed_items
        # stored there.
        con.execute("DROP VIEW sync_state.desired_items")
        con.execute(
            f"""CREATE TABLE sync_state.wide AS
            SELECT d.tenant_id, d.shard, {", ".join(f'k."{c}"' if c in FEED_ITEMS_FIELDS else f'd."{c}"' for c in ITEM_COLUMNS)},
                   d.* EXCLUDE (tenant_id, shard, {", ".join(f'"{c}"' for c in STATE_FIELDS)})
            FROM sync_state.desired_state d LEFT JOIN sync_state.kept_values k USING (tenant_id, id)"""
        )
        con.execute("DROP TABLE sync_state.desired_state")
        con.execute("ALTER TABLE sync_state.wide RENAME TO desired_state")
        con.execute("DELETE FROM sync_state.kept_values")
        con.execute("DELETE FROM kobi_internal.schema_meta")  # the next connection migrates
    with h.wh.connect() as con:
        cols = [r[0] for r in con.execute("DESCRIBE sync_state.desired_state").fetchall()]
    assert cols == list(DESIRED_STATE_COLUMNS)
    assert h.desired() == before
    assert _stored(h) == {"a": (True, None), "b": (False, "Pants"), "c": (False, "Hat")}
    # Snapshots go on from the migrated rows: b is valid again, c comes back changed.
    h.snapshot([item("a", "Coat"), item("b", "Pants"), item("c", "Hat (new)")], T0 + timedelta(hours=2))
    assert _stored(h) == {"a": (True, None), "b": (True, None), "c": (True, None)}
    assert h.desired()["c"]["title"] == "Hat (new)"


def test_a_replace_view_without_the_values_of_an_item_is_not_applied(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    h.snapshot([item("a", "Coat"), item("b", "Pants")], T0)
    before = h.desired()
    # A snapshot whose feed_items step writes nothing: the new item d would reach Meta without values.
    monkeypatch.setattr(snapshot_step, "_apply_feed_items", lambda con, tenant_id, items_table: None)
    with pytest.raises(
        RuntimeError, match=r"tenant 't1': 1 item\(s\) of the replace view have no row in feed_items"
    ):
        h.snapshot([item("a", "Coat"), item("b", "Pants"), item("d", "Scarf")], T0 + timedelta(hours=1))
    assert h.desired() == before
    assert set(_feed_items(h)) == {"a", "b"}


def test_a_snapshot_that_drops_the_values_of_an_item_it_left_alone_is_not_applied(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    h.snapshot([item("a", "Coat"), item("b", "Pants")], T0)
    before = h.desired()
    apply = snapshot_step._apply_feed_items

    def losing_a(con, tenant_id, items_table):
        # feed_items loses the row of a, an item whose replace-view row this snapshot does not rewrite
        gone = apply(con, tenant_id, items_table)
        con.execute(f"INSERT INTO {gone} VALUES ('a')")
        con.execute("DELETE FROM main.feed_items WHERE retailer_id = 'a'")
        return gone

    monkeypatch.setattr(snapshot_step, "_apply_feed_items", losing_a)
    with pytest.raises(RuntimeError, match=r"1 item\(s\) of the replace view .* \(e\.g\. retailer_id 'a'\)"):
        h.snapshot([item("a", "Coat"), item("b", "Pants (new)")], T0 + timedelta(hours=1))
    assert h.desired() == before


def test_a_field_added_to_the_canonical_list_reaches_an_existing_work_database(tmp_path):
    h = Harness(tmp_path)
    h.snapshot([item("a", "Coat", color="navy"), item("b", "Pants", color="red")], T0)
    h.snapshot([item("a", "Coat", color="navy"), item("b", "Pants", price="$5")], T0 + timedelta(hours=1))
    before = h.desired()
    with h.wh.connect() as con:
        # A work database from before "color" was a field: its desired rows have no such column.
        con.execute('ALTER TABLE sync_state.kept_values DROP COLUMN "color"')
        con.execute("DELETE FROM kobi_internal.schema_meta")
    after = h.desired()
    assert after["a"] == before["a"]  # the active item's value is its feed_items row's
    # b, kept in its last version, stores its own values: a database from before the field has none of it
    assert before["b"]["color"] == "red" and after["b"] == {**before["b"], "color": None}


def _applied_again(h: Harness, applied: list[dict[str, str]], now):
    """Take a snapshot of the applied file (its sha256 is the applied snapshot's) as a scheduled run does."""
    h.write(applied)
    with h.wh.connect() as con:
        return take_snapshot(con, registry=h.reg, tenant=h.tenant, workdir=h.work, now=now)


def test_a_snapshot_whose_apply_failed_is_not_the_base_of_the_next_one(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    applied = [item("a", "Coat"), item("b", "Pants")]
    h.snapshot(applied, T0)
    before = h.desired()
    monkeypatch.setattr(snapshot_step, "_apply_feed_items", lambda con, tenant_id, items_table: None)
    with pytest.raises(RuntimeError):
        h.snapshot([*applied, item("d", "Scarf")], T0 + timedelta(hours=1))
    monkeypatch.undo()
    # The file is back to the applied content: the run reads it again rather than take it as not modified over
    # the stage the failed snapshot left.
    out = _applied_again(h, applied, T0 + timedelta(hours=2))
    assert out.status == "ok"
    assert h.desired() == before


def test_a_run_killed_after_its_ingest_is_not_the_base_of_the_next_one(tmp_path):
    h = Harness(tmp_path)
    applied = [item("a", "Coat"), item("b", "Pants")]
    h.snapshot(applied, T0)
    before = h.desired()
    # What a run killed between its ingest and its apply leaves: the stage holds a snapshot never applied.
    h.write([item("a", "Coat (new)"), item("d", "Scarf")])
    with h.wh.connect() as con:
        ingest_feed(con, tenant_id="t1", snapshot_id="t1:killed", path=h.feed, fmt="csv", source_label="feed")
    out = _applied_again(h, applied, T0 + timedelta(hours=1))
    assert out.status == "ok"
    assert h.desired() == before
    with h.wh.connect() as con:
        titles = con.execute("SELECT retailer_id, title FROM main.feed_items ORDER BY 1").fetchall()
    assert titles == [("a", "Coat"), ("b", "Pants")]
