"""The stored item hashes survive a change of hash definition (DuckDB upgrade, new field, the older md5
hex hashes): items in sync with Meta stay in sync, pending items stay pending, in-flight items stay in flight."""

from __future__ import annotations

from kobi_cpas.feeds.hashing import hash_scheme
from kobi_cpas_tests.test_sync_desired import T0, Harness, item

_TABLES = ("desired_state", "meta_items", "inflight_items")


def _state(tmp_path) -> Harness:
    h = Harness(tmp_path)
    h.snapshot([item("A", "Coat"), item("B", "Pants"), item("C", "Hat"), item("D", "Scarf")], T0)
    h.confirm_all()
    with h.wh.connect() as con:
        # B: Meta holds older content, and an update carrying the current B is in flight.
        con.execute(
            "UPDATE sync_state.meta_items SET content_hash = xor(content_hash, 1::UBIGINT) WHERE id = 'B'"
        )
        con.execute(
            "INSERT INTO sync_state.inflight_items SELECT 'u1', tenant_id, id, shard, 'update', 2, content_hash, "
            "volatile_hash FROM sync_state.desired_items WHERE id = 'B'"
        )
        # C: only the price differs at Meta. D: Meta has never confirmed it.
        con.execute(
            "UPDATE sync_state.meta_items SET volatile_hash = xor(volatile_hash, 2::UBIGINT) WHERE id = 'C'"
        )
        con.execute("DELETE FROM sync_state.meta_items WHERE id = 'D'")
    return h


def _force_migration(con, old_scheme: str) -> None:
    con.execute("DELETE FROM sync_state.hash_scheme")
    con.execute("INSERT INTO sync_state.hash_scheme VALUES (?)", [old_scheme])
    # What a DuckDB upgrade does: the scheme in the schema fingerprint no longer matches.
    con.execute("DELETE FROM kobi_internal.schema_meta")


def test_a_new_hash_function_keeps_every_item_where_it_was(tmp_path):
    h = _state(tmp_path)
    before = h.delta()
    assert (before.new, before.changed, before.volatile_only, before.unchanged, before.in_flight) == (
        1,
        1,
        1,
        1,
        1,
    )
    with h.wh.connect() as con:
        # Every stored hash as another hash function would have produced it (same equalities, other values).
        for t in _TABLES:
            con.execute(
                f"UPDATE sync_state.{t} SET content_hash = xor(content_hash, 123456789::UBIGINT), "
                "volatile_hash = xor(volatile_hash, 987654321::UBIGINT)"
            )
        _force_migration(con, "v1:some-older-duckdb")
    assert h.delta() == before  # connecting migrated the state
    with h.wh.connect() as con:
        assert con.execute("SELECT scheme FROM sync_state.hash_scheme").fetchall() == [(hash_scheme(con),)]
    # The next snapshot of the same feed computes hashes the current way: nothing moves.
    h.snapshot(
        [item("A", "Coat"), item("B", "Pants"), item("C", "Hat"), item("D", "Scarf")], T0.replace(hour=10)
    )
    assert h.delta() == before


def test_legacy_md5_hex_hashes_are_converted(tmp_path):
    h = _state(tmp_path)
    before = h.delta()
    with h.wh.connect() as con:
        # The layout before hashes became UBIGINT: VARCHAR md5 hex strings.
        for t in _TABLES:
            con.execute(
                f"CREATE OR REPLACE TABLE sync_state.{t} AS SELECT * REPLACE (md5(content_hash::VARCHAR) AS content_hash, "
                f"md5(volatile_hash::VARCHAR) AS volatile_hash) FROM sync_state.{t}"
            )
        con.execute("ALTER TABLE main.feed_items ALTER COLUMN content_hash SET DATA TYPE VARCHAR")
        con.execute("UPDATE main.feed_items SET content_hash = md5(content_hash)")
        _force_migration(con, "v1:md5")
    assert h.delta() == before
    with h.wh.connect() as con:
        types = con.execute(
            "SELECT DISTINCT table_name, data_type FROM duckdb_columns() WHERE schema_name IN ('sync_state', 'main') "
            "AND column_name IN ('content_hash', 'volatile_hash') ORDER BY 1"
        ).fetchall()
        migrated = con.execute(
            "SELECT retailer_id, content_hash, volatile_hash FROM main.feed_items ORDER BY 1"
        ).fetchall()
    # the replace view's columns too
    assert types == [(t, "UBIGINT") for t in sorted(("feed_items", "desired_items", *_TABLES))]
    h.snapshot(
        [item("A", "Coat"), item("B", "Pants"), item("C", "Hat"), item("D", "Scarf")], T0.replace(hour=10)
    )
    assert h.delta() == before
    # the analyst copy of the snapshot got the hashes a fresh snapshot computes
    with h.wh.connect() as con:
        fresh = con.execute(
            "SELECT retailer_id, content_hash, volatile_hash FROM main.feed_items ORDER BY 1"
        ).fetchall()
    assert len(migrated) == 4 and migrated == fresh
