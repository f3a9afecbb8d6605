"""DuckDB's ``preserve_insertion_order`` is one setting for the whole instance the process's connections share:
the publish copies analysts' tables without it (cheaper), while an ingest numbers a feed's rows from the order it
inserted them. Each runs with the setting it needs, gives the previous one back, and never sees another
thread's."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from kobi_cpas.sync.snapshot_step import take_snapshot
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas.warehouse.sql import insertion_order
from kobi_cpas_tests.test_sync_desired import T0, Harness, item
from kobi_cpas_tests.warehouse_template import seed_work_database


def _preserved(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0])  # type: ignore[index]


def test_the_setting_is_the_bodys_and_the_previous_one_comes_back_even_after_an_error_or_in_an_aborted_transaction() -> (
    None
):
    con = duckdb.connect()
    assert _preserved(con)
    with insertion_order(con, False):
        assert not _preserved(con)
        with insertion_order(con, True):  # nested: the inner body's, then the outer's again
            assert _preserved(con)
        assert not _preserved(con)
    assert _preserved(con)
    with pytest.raises(ZeroDivisionError), insertion_order(con, False):
        1 / 0  # noqa: B018
    assert _preserved(con)
    # A failed statement leaves the body's transaction aborted (it refuses any SET until rolled back).
    con.execute("BEGIN")
    with pytest.raises(duckdb.CatalogException), insertion_order(con, False):
        con.execute("SELECT * FROM no_such_table")
    con.execute("ROLLBACK")
    assert _preserved(con)


def test_a_thread_that_wants_the_other_setting_waits_for_the_body_holding_it() -> None:
    host = duckdb.connect()
    ingest, publish = host.cursor(), host.cursor()
    inside, publish_started, publish_entered = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def publisher() -> None:
        publish_started.set()
        with insertion_order(publish, False):
            publish_entered.set()

    with insertion_order(ingest, True):
        inside.set()
        t = threading.Thread(target=publisher)
        t.start()
        assert publish_started.wait(10)
        # Without the lock the publisher would have switched the setting off under this body by now.
        publish_entered.wait(0.5)
        seen.append(_preserved(ingest))
        entered_early = publish_entered.is_set()
    t.join(10)
    assert seen == [True] and not entered_early
    assert publish_entered.is_set() and _preserved(ingest)


class _Recording:
    """A connection that records, for each statement starting with one of ``prefixes``, the setting it ran with."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *prefixes: str) -> None:
        self._con = con
        self._prefixes = prefixes
        self.copies: list[tuple[str, bool]] = []

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().startswith(self._prefixes):
            self.copies.append((sql.split("SELECT", 1)[0].strip(), _preserved(self._con)))
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def test_the_publish_copies_without_insertion_order_and_leaves_the_setting_as_it_was(tmp_path: Path) -> None:
    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        con.execute(
            "INSERT INTO tenant_registry (tenant_id, business_id, catalog_id, registry_hash) "
            "SELECT 't' || i, 'b', 'c', 'h' FROM range(20) r(i)"
        )
        rec = _Recording(con, "INSERT INTO kobi_publish_")
        wh.publish(rec)  # type: ignore[arg-type]
        assert rec.copies and all(not preserved for _, preserved in rec.copies), rec.copies
        assert _preserved(con)
    reader = duckdb.connect(str(wh.analyst_path), read_only=True)
    assert reader.execute("SELECT count(*) FROM tenant_registry").fetchone()[0] == 20  # type: ignore[index]


def test_a_snapshot_numbers_the_feed_in_file_order_and_writes_the_sync_state_and_analyst_tables_without_it(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.write([item("a", "Coat"), item("b", "Pants")])
    writes = (
        "INSERT INTO sync_state.desired_state",
        "INSERT INTO main.feed_items",
        "INSERT INTO main.catalog_item_state",
    )
    ingest = "EXPLAIN (ANALYZE, FORMAT JSON) CREATE OR REPLACE TABLE"
    with h.wh.connect() as con:
        rec = _Recording(con, ingest, *writes)
        out = take_snapshot(rec, registry=h.reg, tenant=h.tenant, workdir=h.work, now=T0)  # type: ignore[arg-type]
        assert out.status == "ok"
        assert _preserved(con)
    seen: dict[str, set[bool]] = {}
    for sql, preserved in rec.copies:
        seen.setdefault(next(p for p in (ingest, *writes) if sql.startswith(p)), set()).add(preserved)
    assert seen == {ingest: {True}, **{w: {False} for w in writes}}
