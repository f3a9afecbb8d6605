"""The replace view and the delta: retention of removed items, last valid version of invalid items, variants
(Catalog Integration scenario 3, the Winter Coat / Snow Pants examples), and delta classification."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from kobi_cpas.feeds.hashing import content_hash_sql, volatile_hash_sql
from kobi_cpas.registry import load_registry
from kobi_cpas.sync.delta import delta_counts
from kobi_cpas.sync.desired import variant_prefixes_sql
from kobi_cpas.sync.snapshot_step import take_snapshot
from kobi_cpas.sync.state import shard_sql
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.warehouse_template import seed_work_database

HEADER = [
    "id",
    "title",
    "description",
    "availability",
    "condition",
    "price",
    "link",
    "image_link",
    "brand",
    "item_group_id",
    "size",
    "color",
    "quantity_to_sell_on_facebook",
    "previous_id",
]
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def item(
    id_: str,
    title: str,
    price: str = "299.00 TRY",
    group: str = "",
    size: str = "",
    color: str = "",
    qty: str = "4",
    previous_id: str = "",
    availability: str = "in stock",
) -> dict[str, str]:
    return {
        "id": id_,
        "title": title,
        "description": f"{title} — warm and waterproof",
        "availability": availability,
        "condition": "new",
        "price": price,
        "link": f"https://shop.example.com/p/{id_}",
        "image_link": f"https://cdn.example.com/{id_}.jpg",
        "brand": "Bosphorus Outdoor",
        "item_group_id": group,
        "size": size,
        "color": color,
        "quantity_to_sell_on_facebook": qty,
        "previous_id": previous_id,
    }


class Harness:
    def __init__(self, tmp_path: Path, retention_days: int = 90, shards: int = 1):
        self.feed = tmp_path / "feed.csv"
        data = {
            "tenants": [
                {
                    "tenant_id": "t1",
                    "business_id": "1",
                    "catalog_id": "2",
                    "feed": {"source": str(self.feed), "format": "csv"},
                    "sync": {"retention_days": retention_days, "shards": shards},
                }
            ]
        }
        reg_path = tmp_path / "tenants.yaml"
        reg_path.write_text(yaml.safe_dump(data))
        self.reg = load_registry(reg_path)
        self.tenant = self.reg.tenant("t1")
        self.wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
        self.work = tmp_path / "work"

    def write(self, rows: list[dict[str, str]]) -> None:
        with self.feed.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, HEADER)
            w.writeheader()
            w.writerows(rows)

    def snapshot(self, rows: list[dict[str, str]], now: datetime):
        self.write(rows)
        with self.wh.connect() as con:
            return take_snapshot(
                con, registry=self.reg, tenant=self.tenant, workdir=self.work, now=now, force=True
            )

    def confirm_all(self) -> None:
        """Pretend Meta confirmed the whole replace view (what a finished replace upload does)."""
        with self.wh.connect() as con:
            con.execute("DELETE FROM sync_state.meta_items WHERE tenant_id = 't1'")
            con.execute(
                "INSERT INTO sync_state.meta_items SELECT tenant_id, id, shard, content_hash, volatile_hash, 'replace', "
                "'s', now() FROM sync_state.desired_items WHERE tenant_id = 't1'"
            )

    def desired(self) -> dict[str, dict]:
        with self.wh.connect() as con:
            cur = con.execute("SELECT * FROM sync_state.desired_items WHERE tenant_id = 't1' ORDER BY id")
            cols = [d[0] for d in cur.description]
            return {r[cols.index("id")]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}

    def delta(self):
        with self.wh.connect() as con:
            return delta_counts(con, "t1")

    def issues(self) -> list[tuple]:
        with self.wh.connect() as con:
            return con.execute(
                "SELECT retailer_id, field, severity, code, message FROM feed_item_issues WHERE tenant_id='t1' ORDER BY 1, 4"
            ).fetchall()


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path)


def test_delta_classifies_new_changed_volatile_unchanged_removed(h):
    h.snapshot([item("a", "Coat"), item("b", "Pants"), item("c", "Hat"), item("d", "Scarf")], T0)
    assert h.delta().new == 4
    h.confirm_all()
    rows = [
        item("a", "Coat"),
        item("b", "Pants (new cut)"),
        item("c", "Hat", price="199.00 TRY"),
        item("e", "Gloves"),
    ]
    out = h.snapshot(rows, T0 + timedelta(hours=1))
    d = out.delta
    # d left the source: retained as out of stock, so Meta gets a volatile-only change, not a delete; it is
    # counted as removed from the feed all the same.
    assert (d.new, d.changed, d.volatile_only, d.unchanged, d.removed, d.dropped) == (1, 1, 2, 1, 1, 0)


def test_feed_items_rewrite_only_what_changed_and_equal_the_valid_items(h):
    first = h.snapshot([item("a", "Coat"), item("b", "Pants"), item("c", "Hat"), item("d", "Scarf")], T0)
    rows = [
        item("a", "Coat"),  # unchanged
        item("b", "Pants (new cut)"),  # content changed
        item("c", "Hat", price="199.00 TRY"),  # price changed
        item("d", "Scarf", price="$5"),  # turned invalid: not a feed item any more
        item("e", "Gloves"),  # new
    ]
    second = h.snapshot(rows, T0 + timedelta(hours=1))
    with h.wh.connect() as con:
        got = dict(
            con.execute(
                "SELECT retailer_id, snapshot_id || '|' || title || '|' || price FROM main.feed_items "
                "WHERE tenant_id = 't1'"
            ).fetchall()
        )
    s1, s2 = first.snapshot_id, second.snapshot_id
    assert got == {
        "a": f"{s1}|Coat|299.00 TRY",  # the unchanged row was not rewritten
        "b": f"{s2}|Pants (new cut)|299.00 TRY",
        "c": f"{s2}|Hat|199.00 TRY",
        "e": f"{s2}|Gloves|299.00 TRY",
    }


def test_a_snapshot_rewrites_only_the_replace_view_rows_that_change(tmp_path):
    h = Harness(tmp_path, shards=2)
    first = h.snapshot([item(x, x.upper(), group="g" + x) for x in "abcdf"], T0)
    rows = [
        item("a", "A", group="ga"),  # unchanged
        item("b", "B (new cut)", group="gb"),  # content changed
        item("c", "C", group="gc", price="199.00 TRY"),  # price changed
        item("f", "F", group="gf", price="$5"),  # turned invalid: kept in its last valid version
        item("e", "E", group="ge"),  # new; d left the feed
    ]
    second = h.snapshot(rows, T0 + timedelta(hours=1))
    s1, s2 = first.snapshot_id, second.snapshot_id
    got = {k: (v["status"], v["snapshot_id"], v["last_seen_at"]) for k, v in h.desired().items()}
    assert got == {
        "a": ("active", s1, None),  # its row was not rewritten
        "b": ("active", s2, None),
        "c": ("active", s2, None),
        "d": ("removed_retained", s1, T0),  # last in the feed at the first snapshot
        "e": ("active", s2, None),
        "f": ("invalid_kept", s1, None),
    }
    # The tenant's shard count changes: every row moves to its new shard, changed or not.
    with h.wh.connect() as con:
        moving = con.execute(f"SELECT count(*) FROM sync_state.desired_items WHERE shard <> {shard_sql(3)}")
        assert moving.fetchone()[0] >= 2  # type: ignore[index]
    h.tenant = h.tenant.model_copy(update={"sync": h.tenant.sync.model_copy(update={"shards": 3})})
    h.snapshot(rows, T0 + timedelta(hours=2))
    with h.wh.connect() as con:
        # Every stored hash and shard is that of the row's own values, whichever way the row was written.
        assert con.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE content_hash <> {content_hash_sql()}
                  OR volatile_hash <> {volatile_hash_sql()} OR shard <> {shard_sql(3)})
                FROM sync_state.desired_items"""
        ).fetchone() == (6, 0)


def test_removed_item_retained_out_of_stock_then_dropped(tmp_path):
    h = Harness(tmp_path, retention_days=90)
    h.snapshot([item("a", "Coat"), item("b", "Pants", qty="7")], T0)
    h.confirm_all()
    h.snapshot([item("a", "Coat")], T0 + timedelta(days=1))
    b = h.desired()["b"]
    assert b["status"] == "removed_retained"
    assert b["availability"] == "out of stock" and b["quantity_to_sell_on_facebook"] == "0"
    assert b["title"] == "Pants"  # last known content is kept
    assert b["removed_at"] == T0 + timedelta(days=1)
    # still retained after 89 days, gone after 90
    h.snapshot([item("a", "Coat")], T0 + timedelta(days=90))
    assert "b" in h.desired()
    h.snapshot([item("a", "Coat")], T0 + timedelta(days=91, hours=1))
    assert "b" not in h.desired()
    assert h.delta().dropped == 1  # the next replace feed deletes it from Meta


def test_item_turning_invalid_keeps_last_valid_version_and_is_flagged(h):
    h.snapshot([item("a", "Coat", price="299.00 TRY"), item("b", "Pants")], T0)
    out = h.snapshot([item("a", "Coat", price="$299"), item("b", "Pants")], T0 + timedelta(hours=1))
    a = h.desired()["a"]
    assert a["status"] == "invalid_kept" and a["price"] == "299.00 TRY"
    assert out.desired.invalid_kept == 1
    assert any(i[0] == "a" and i[1] == "price" and i[2] == "error" for i in h.issues())
    # the valid item is unaffected
    assert h.desired()["b"]["status"] == "active"


WITHOUT_VARIANTS = [
    item("10024", "Winter Coat", group="WinterCoats", qty="40"),
    item("10025", "Winter Pants", price="159.00 TRY", group="SnowCoats", qty="10"),
]
WITH_VARIANTS = [
    item("10024_1_000", "Winter Coat", group="WinterCoats", size="S", color="Black", qty="4"),
    item("10024_2_000", "Winter Coat", group="WinterCoats", size="M", color="Black", qty="12"),
    item("10024_3_000", "Winter Coat", group="WinterCoats", size="L", color="Black", qty="0"),
    item("10024_1_00F", "Winter Coat", group="WinterCoats", size="S", color="Blue", qty="6"),
    item("10024_2_00F", "Winter Coat", group="WinterCoats", size="M", color="Blue", qty="17"),
    item("10024_3_00F", "Winter Coat", group="WinterCoats", size="L", color="Blue", qty="0"),
    item("10025_1_F00", "Snow Pants", price="159.00 TRY", group="SnowPants", size="S", color="Red", qty="2"),
    item("10025_2_F00", "Snow Pants", price="159.00 TRY", group="SnowPants", size="M", color="Red", qty="5"),
    item("10025_3_F00", "Snow Pants", price="159.00 TRY", group="SnowPants", size="L", color="Red", qty="3"),
]


def test_feed_gaining_variants_with_previous_id_from_feed(h):
    h.snapshot(WITHOUT_VARIANTS, T0)
    h.confirm_all()
    rows = [dict(r, previous_id=r["id"].split("_")[0]) for r in WITH_VARIANTS]
    out = h.snapshot(rows, T0 + timedelta(days=1))
    desired = h.desired()
    assert "10024" not in desired and "10025" not in desired  # replaced, linked by previous_id
    assert {desired[r["id"]]["previous_id"] for r in rows} == {"10024", "10025"}
    assert {desired[r["id"]]["previous_id_source"] for r in rows} == {"feed"}
    assert out.desired.replaced_by_variants == 2 and out.desired.previous_id_inferred == 0
    assert sum(1 for i in h.issues() if i[3] == "previous_id_from_feed") == 9


def test_feed_gaining_variants_without_previous_id_infers_it_and_reports(h):
    h.snapshot(WITHOUT_VARIANTS, T0)
    h.confirm_all()
    out = h.snapshot(WITH_VARIANTS, T0 + timedelta(days=1))
    desired = h.desired()
    assert desired["10024_2_00F"]["previous_id"] == "10024"
    assert desired["10025_3_F00"]["previous_id"] == "10025"
    assert {d["previous_id_source"] for k, d in desired.items()} == {"inferred"}
    assert "10024" not in desired
    assert out.desired.previous_id_inferred == 9
    inferred = [i for i in h.issues() if i[3] == "previous_id_inferred"]
    assert len(inferred) == 9 and all(i[2] == "info" for i in inferred)
    assert "previous_id inferred as 10024" in next(i[4] for i in inferred if i[0] == "10024_1_000")


def test_an_inferred_link_stays_with_the_variant_until_the_original_returns(h):
    h.snapshot(WITHOUT_VARIANTS, T0)
    h.confirm_all()
    h.snapshot(WITH_VARIANTS, T0 + timedelta(days=1))
    h.confirm_all()
    # the next snapshot has nothing left to infer from (the originals are gone): the links stay, nothing is re-sent
    h.snapshot([*WITH_VARIANTS, item("zz", "New thing")], T0 + timedelta(days=2))
    desired = h.desired()
    assert (
        desired["10024_2_00F"]["previous_id"] == "10024" and desired["10025_3_F00"]["previous_id"] == "10025"
    )
    assert {d["previous_id_source"] for k, d in desired.items() if k != "zz"} == {"inferred"}
    delta = h.delta()
    assert (delta.new, delta.changed, delta.unchanged) == (1, 0, 9)
    # an original back in the feed is an item of its own again: its variants no longer point at it
    back = next(r for r in WITHOUT_VARIANTS if r["id"] == "10024")
    h.snapshot([*WITH_VARIANTS, back], T0 + timedelta(days=3))
    desired = h.desired()
    assert desired["10024"]["status"] == "active"
    assert desired["10024_2_00F"]["previous_id"] is None and desired["10025_3_F00"]["previous_id"] == "10025"


def test_original_never_deleted_without_a_previous_id_link(h):
    h.snapshot(WITHOUT_VARIANTS, T0)
    h.confirm_all()
    unrelated = [
        dict(r, id="WC-" + r["id"][-5:]) for r in WITH_VARIANTS
    ]  # new ids that do not start with 10024
    h.snapshot(unrelated, T0 + timedelta(days=1))
    desired = h.desired()
    assert desired["10024"]["status"] == "removed_retained"  # kept as out of stock, not deleted
    assert desired["10025"]["availability"] == "out of stock"
    assert h.delta().removed == 0


def test_without_variants_feed_needs_no_variant_handling(h):
    out = h.snapshot(WITHOUT_VARIANTS, T0)
    assert out.desired.active == 2 and out.desired.previous_id_inferred == 0
    assert {d["previous_id"] for d in h.desired().values()} == {None}


def test_snapshot_of_unchanged_source_is_not_reparsed(h):
    rows = [item("a", "Coat")]
    h.snapshot(rows, T0)
    with h.wh.connect() as con:
        again = take_snapshot(
            con, registry=h.reg, tenant=h.tenant, workdir=h.work, now=T0 + timedelta(hours=1)
        )
    assert again.status == "not_modified" and again.ingest is None


def test_broken_feed_keeps_previous_state(h):
    h.snapshot([item("a", "Coat"), item("b", "Pants")], T0)
    before = h.desired()
    h.feed.write_text("id;title;price\na;Coat;1\n", encoding="utf-8")  # wrong delimiter, columns missing
    with h.wh.connect() as con:
        out = take_snapshot(
            con, registry=h.reg, tenant=h.tenant, workdir=h.work, now=T0 + timedelta(hours=1), force=True
        )
        failed = con.execute("SELECT status, message FROM feed_snapshots WHERE status = 'failed'").fetchall()
    assert out.status == "failed"
    assert str(h.feed) in out.message and "t1" in out.message
    assert failed and str(h.feed) in failed[0][1]
    assert h.desired() == before  # nothing lost, nothing wiped


def test_the_variant_rule_gives_each_id_the_ids_it_extends_and_joins_them_by_equality():
    """``10024_1_000`` is a variant of ``10024`` and of ``10024_1`` (an id, then ``_`` or ``-``). The rule is an
    equi-join on those prefixes: testing every new id against every old one would cost their product (a brand
    renaming a million SKUs would never finish its snapshot)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE new_ids AS SELECT unnest(['10024_1_000', '10024-2', 'A', 'B_', 'kırmızı-xl']) AS id"
    )
    prefixes = con.execute(
        f"SELECT id, list_sort(list(prefix)) FROM ({variant_prefixes_sql('SELECT id FROM new_ids')}) GROUP BY id"
    ).fetchall()
    assert dict(prefixes) == {
        "10024_1_000": ["10024", "10024_1"],
        "10024-2": ["10024"],
        "B_": ["B"],
        "kırmızı-xl": ["kırmızı"],
    }
    con.execute("CREATE TABLE old_ids AS SELECT 'SKU' || i AS id FROM range(20000) r(i)")
    con.execute(
        "CREATE TABLE variants AS SELECT 'SKU' || i || '_' || j AS id FROM range(20000) r(i), range(2) s(j)"
    )
    prefixes_of_variants = variant_prefixes_sql("SELECT id FROM variants")
    join = f"SELECT o.id, p.id FROM ({prefixes_of_variants}) p JOIN old_ids o ON o.id = p.prefix"
    plan = " ".join(str(r[1]) for r in con.execute(f"EXPLAIN {join}").fetchall())
    assert "Hash Join" in plan and not any(op in plan for op in ("Nested Loop", "Blockwise Nl", "Piecewise"))
    # every variant found its original
    found = con.execute(f"SELECT count(*), count(DISTINCT old) FROM ({join}) AS j(old, new)").fetchone()
    assert found == (40000, 20000)


def test_items_kept_in_their_last_version_take_their_own_tenants_values(tmp_path):
    # Two tenants of one work database sell items under the same ids with different values.
    feeds = {t: tmp_path / f"{t}.csv" for t in ("t1", "t2")}
    reg_path = tmp_path / "tenants.yaml"
    reg_path.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {
                        "tenant_id": t,
                        "business_id": "1",
                        "catalog_id": str(i + 2),
                        "feed": {"source": str(feeds[t]), "format": "csv"},
                    }
                    for i, t in enumerate(feeds)
                ]
            }
        )
    )
    reg = load_registry(reg_path)
    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)

    def snapshot(tenant: str, rows: list[dict[str, str]], now: datetime) -> None:
        with feeds[tenant].open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, HEADER)
            w.writeheader()
            w.writerows(rows)
        with wh.connect() as con:
            take_snapshot(con, registry=reg, tenant=reg.tenant(tenant), workdir=tmp_path / tenant, now=now)

    for t in feeds:
        snapshot(t, [item("a", f"{t} Coat"), item("b", f"{t} Pants"), item("c", f"{t} Hat")], T0)
    # t1's a leaves its feed (kept out of stock) and its b turns invalid (kept as it was)
    snapshot("t1", [item("b", "t1 Pants", price="$5"), item("c", "t1 Hat")], T0 + timedelta(hours=1))
    with wh.connect() as con:
        rows = con.execute(
            "SELECT tenant_id, id, title, status, availability FROM sync_state.desired_items ORDER BY 1, 2"
        ).fetchall()
    assert rows == [
        ("t1", "a", "t1 Coat", "removed_retained", "out of stock"),
        ("t1", "b", "t1 Pants", "invalid_kept", "in stock"),
        ("t1", "c", "t1 Hat", "active", "in stock"),
        ("t2", "a", "t2 Coat", "active", "in stock"),
        ("t2", "b", "t2 Pants", "active", "in stock"),
        ("t2", "c", "t2 Hat", "active", "in stock"),
    ]
