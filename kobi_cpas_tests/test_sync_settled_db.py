"""The work connection a sync plans in (``pending.settled_db``): the one that found nothing pending, else a new
one opened after the pending requests were settled, which wait on Meta with no connection open."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb
import pytest

from kobi_cpas.sync import pending
from kobi_cpas.sync.context import SyncRecord


class _Ctx:
    """The part of a SyncContext settled_db uses, counting the work connections it opens."""

    tenant_id = "t1"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.opened = 0
        self.open_now = 0

    @contextlib.contextmanager
    def db(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.opened += 1
        self.open_now += 1
        try:
            yield self.con
        finally:
            self.open_now -= 1


@pytest.fixture
def ctx() -> Iterator[_Ctx]:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE main.catalog_syncs (sync_id VARCHAR, tenant_id VARCHAR, method VARCHAR, shard INTEGER, "
        "items_sent INTEGER, status VARCHAR, upload_session_id VARCHAR, handle VARCHAR, errors_count INTEGER, "
        "started_at TIMESTAMPTZ)"
    )
    con.execute(
        "INSERT INTO main.catalog_syncs VALUES ('b-done', 't1', 'batch', -1, 5, 'finished', NULL, 'h0', 0, now()), "
        "('other', 't2', 'batch', -1, 5, 'processing', NULL, 'h9', 0, now())"
    )
    yield _Ctx(con)
    con.close()


def test_nothing_pending_plans_in_the_connection_that_found_it(ctx, monkeypatch):
    def must_not_settle(*args, **kwargs):
        raise AssertionError("nothing is pending: nothing to settle")

    monkeypatch.setattr(pending, "resolve_pending", must_not_settle)
    with pending.settled_db(ctx, wait=False, after_settling=must_not_settle) as (con, resolved):
        assert ctx.open_now == 1
        assert con.execute("SELECT count(*) FROM main.catalog_syncs").fetchone() == (2,)
    assert resolved == [] and ctx.opened == 1 and ctx.open_now == 0


def test_pending_requests_are_settled_with_no_connection_open(ctx, monkeypatch):
    ctx.con.execute(
        "INSERT INTO main.catalog_syncs VALUES ('b-1', 't1', 'batch', -1, 3, 'processing', NULL, 'h1', 0, now())"
    )
    seen: list[tuple[str, int]] = []

    def settle(c, only_method=None, wait=True, pending=None):
        seen.append(("settle", c.open_now))
        assert [r.sync_id for r in pending] == ["b-1"] and only_method == "batch" and wait is False
        return [SyncRecord("b-1", "batch", -1, 3, "finished")]

    monkeypatch.setattr(pending, "resolve_pending", settle)
    with pending.settled_db(
        ctx, "batch", wait=False, after_settling=lambda resolved: seen.append(("after", ctx.open_now))
    ) as (con, resolved):
        assert ctx.open_now == 1 and con is ctx.con
    assert seen == [("settle", 0), ("after", 0)]  # Meta is asked with the work database closed
    assert [r.sync_id for r in resolved] == ["b-1"] and ctx.opened == 2 and ctx.open_now == 0
