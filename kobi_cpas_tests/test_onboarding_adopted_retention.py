"""Items adopted from a brand's existing catalog follow the tenant's retention, through Dagster against the sandbox:
out of stock from their adoption day, deleted at Meta with a Batch API DELETE once ``sync.retention_days`` has
passed (never on the adoption day, once; too many are held by the deletion guard while Kobi's own replace goes on,
until a person confirms), an adopted id the feed sends again is Kobi's own item, and ``sync.adopted_items: keep``
keeps them forever.

Time passing is simulated by moving the recorded adoption back, as if the confirmed first sync had run that many
days ago."""

from __future__ import annotations

import duckdb
import pytest

from kobi_cpas.registry.loader import load_registry
from kobi_cpas_tests.sync_harness import CATALOG, TENANT, SyncHarness
from kobi_cpas_tests.test_onboarding_existing_catalog import (
    CONFIRM,
    _failure,
    _feed_rows,
    _other_tools_feed,
)

OVERRIDE = {"kobi/override_deletion_guard": "true"}
SHOP = [f"SHOP-{i:04d}" for i in range(20)]


@pytest.fixture
def harness(kobi_env, pg_instance, tmp_path, monkeypatch) -> SyncHarness:
    return SyncHarness(kobi_env, pg_instance, tmp_path, monkeypatch)


def _adopt(h: SyncHarness, meta_client) -> list[dict[str, str]]:
    """A catalog holding 10 of the feed's ids and 20 products the feed does not have; the confirmed first sync."""
    h.write_feed(40)
    rows = _feed_rows(h)
    kept = sorted(r["id"] for r in rows)[:10]
    _other_tools_feed(h, meta_client, [{**rows[0], "id": i, "availability": "in stock"} for i in kept + SHOP])
    assert h.run("catalog_replace_job", tags=CONFIRM).success
    h.admin.advance_clock(130)  # Meta applies a batch after ~2 minutes
    assert {h.meta_items()[i]["availability"] for i in SHOP} == {"out of stock"}
    return rows


def _days_ago(h: SyncHarness, days: int) -> None:
    with h.wh.connect() as con:
        con.execute(
            "UPDATE sync_state.adopted_items SET adopted_at = adopted_at - to_days(?) WHERE tenant_id = ?",
            [days, TENANT],
        )


def _adopted(h: SyncHarness) -> dict[str, tuple]:
    with h.wh.connect() as con:
        rows = con.execute(
            """SELECT retailer_id, claimed_at IS NOT NULL, deleted_at IS NOT NULL, delete_handle
               FROM sync_state.adopted_items WHERE tenant_id = ?""",
            [TENANT],
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _item_state(h: SyncHarness) -> dict[str, tuple]:
    with h.wh.connect() as con:
        rows = con.execute(
            """SELECT retailer_id, desired_status, availability, drop_after - removed_at, deleted_at IS NOT NULL
               FROM catalog_item_state WHERE tenant_id = ? AND retailer_id LIKE 'SHOP-%'""",
            [TENANT],
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _guard_problems(h: SyncHarness) -> list[dict]:
    with h.wh.connect() as con:
        cur = con.execute(
            "SELECT * FROM main.catalog_diagnostics WHERE tenant_id = ? AND source = 'kobi_sync_guard'",
            [TENANT],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def test_adopted_items_are_deleted_once_their_retention_has_passed(harness, meta_client):
    h = harness
    rows = _adopt(h, meta_client)
    batches = h.requests("catalog.items_batch")  # the adoption's out-of-stock batch
    assert set(_adopted(h)) == set(SHOP)

    # Never on the adoption day, whatever the retention.
    h.set_sync(retention_days=0)
    assert h.run("catalog_replace_job", tags=OVERRIDE).success
    assert h.requests("catalog.items_batch") == batches
    h.set_sync()

    # Inside the retention: out of stock, with the day Kobi deletes them.
    _days_ago(h, 89)
    assert h.run("catalog_replace_job").success
    assert h.requests("catalog.items_batch") == batches
    state = _item_state(h)
    assert {rid: s[:2] for rid, s in state.items()} == dict.fromkeys(
        SHOP, ("adopted_retained", "out of stock")
    )
    assert {s[2].days for s in state.values()} == {90}

    # The feed sends one adopted id again: Kobi's own item from now on, never deleted as adopted.
    h.write_feed(
        40, f"INSERT INTO f SELECT * REPLACE ('{SHOP[0]}' AS id) FROM f WHERE id = '{rows[1]['id']}'"
    )
    _days_ago(h, 2)  # 91 days since the adoption
    uploads = h.requests("product_feed.uploads.create")
    held = h.run("catalog_replace_job")
    # 19 adopted deletions exceed the deletion guard: held, not sent, while Kobi's own replace goes out as usual.
    assert held.success, _failure(held)
    evals = {e.check_name: e for e in held.get_asset_check_evaluations()}
    assert evals["replace_deletion_guard"].passed
    text = evals["adopted_deletion_guard"].description or ""
    assert not evals["adopted_deletion_guard"].passed and text.startswith("HELD")
    assert f"tenant '{TENANT}'" in text and "deleting 19 of the 19 items adopted" in text
    assert "kobi/override_deletion_guard=true" in text
    assert h.requests("product_feed.uploads.create") == uploads + 1
    assert h.requests("catalog.items_batch") == batches  # no DELETE sent
    h.admin.advance_clock(130)
    at_meta = h.meta_items()
    assert set(SHOP) <= set(at_meta)
    assert at_meta[SHOP[0]]["availability"] == "in stock" and at_meta[SHOP[0]]["title"] == rows[1]["title"]
    assert _adopted(h)[SHOP[0]][:2] == (True, False)  # claimed by the snapshot that sent it
    state = _item_state(h)
    assert {rid: s[:2] for rid, s in state.items() if rid != SHOP[0]} == dict.fromkeys(
        SHOP[1:], ("adopted_held", "out of stock")
    )
    (problem,) = _guard_problems(h)
    assert problem["error_type"] == "ADOPTED_DELETIONS_HELD" and problem["is_open"]
    assert problem["reported_count"] == 19 and f"Tenant '{TENANT}'" in problem["description"]
    assert "kobi/override_deletion_guard=true" in problem["call_to_action"]
    # held again by the next plain run: still nothing sent, the same one problem
    assert h.run("catalog_replace_job").success
    assert h.requests("catalog.items_batch") == batches
    assert [p["is_open"] for p in _guard_problems(h)] == [True]

    # A person confirms: one Batch API DELETE of the 19; the claimed one stays, with the feed's values.
    assert h.run("catalog_replace_job", tags=OVERRIDE).success
    assert h.requests("catalog.items_batch") == batches + 1
    h.admin.advance_clock(130)
    at_meta = h.meta_items()
    assert not set(SHOP[1:]) & set(at_meta)
    assert at_meta[SHOP[0]]["availability"] == "in stock" and at_meta[SHOP[0]]["title"] == rows[1]["title"]
    adopted = _adopted(h)
    assert {rid: a[1] for rid, a in adopted.items()} == {SHOP[0]: False, **dict.fromkeys(SHOP[1:], True)}
    assert len({a[2] for rid, a in adopted.items() if rid != SHOP[0]}) == 1  # one handle
    state = _item_state(h)
    assert {rid: (s[0], s[3]) for rid, s in state.items() if rid != SHOP[0]} == dict.fromkeys(
        SHOP[1:], ("adopted_deleted", True)
    )
    assert state[SHOP[0]][0] == "active"
    assert [p["is_open"] for p in _guard_problems(h)] == [False]  # resolved by the deletion
    # the other feed is never deleted by Kobi
    assert len(meta_client.get(f"{CATALOG}/product_feeds", params={"fields": "id"})["data"]) == 2

    # Idempotent: a re-run sends nothing and records nothing new.
    assert h.run("catalog_replace_job", tags=OVERRIDE).success
    assert h.requests("catalog.items_batch") == batches + 1
    assert _adopted(h) == adopted


def test_a_tenant_that_keeps_adopted_items_never_deletes_them(harness, meta_client):
    h = harness
    h.set_sync(adopted_items="keep")
    _adopt(h, meta_client)
    batches = h.requests("catalog.items_batch")
    _days_ago(h, 400)
    assert h.run("catalog_replace_job", tags=OVERRIDE).success
    assert h.requests("catalog.items_batch") == batches
    assert {h.meta_items()[i]["availability"] for i in SHOP} == {"out of stock"}
    state = _item_state(h)
    assert {rid: (s[0], s[2]) for rid, s in state.items()} == dict.fromkeys(SHOP, ("adopted_kept", None))
    with duckdb.connect(str(h.env.analyst_path), read_only=True) as con:
        (n,) = con.execute(
            "SELECT count(*) FROM catalog_item_state WHERE desired_status = 'adopted_kept'"
        ).fetchone()
    assert n == len(SHOP)  # published for analysts


def test_the_registry_names_the_adopted_items_modes(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  - tenant_id: t1\n    business_id: '1'\n    catalog_id: '2'\n    feed: {source: f.csv}\n"
        "    sync: {adopted_items: delete}\n"
    )
    loaded = load_registry(path)
    assert not loaded.registry.tenants
    (problem,) = loaded.problems
    text = str(problem)
    assert "t1" in text and "adopted_items" in text and "'retain'" in text and "'keep'" in text
