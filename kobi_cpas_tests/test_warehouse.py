"""Warehouse: idempotent migration with comments, and atomic publishing that analysts can read during writes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse

TABLES = SCHEMA.tables


def test_migration_is_idempotent_and_documents_every_column(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb", schema=SCHEMA)
    for _ in range(2):
        with wh.connect() as con:
            con.execute("SELECT 1")
    wh.publish()
    con = duckdb.connect(str(wh.analyst_path), read_only=True)
    try:
        tables = dict(
            con.execute("SELECT table_name, comment FROM duckdb_tables() WHERE schema_name='main'").fetchall()
        )
        assert set(tables) == set(TABLES)
        assert all(tables.values())
        undocumented = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name='main' AND NOT internal "
            "AND (comment IS NULL OR comment = '')"
        ).fetchall()
        assert undocumented == []
        # internal schemas are not published
        schemas = {
            r[0]
            for r in con.execute("SELECT schema_name FROM duckdb_schemas() WHERE NOT internal").fetchall()
        }
        assert "kobi_internal" not in schemas
    finally:
        con.close()


def test_migration_adds_new_columns_to_existing_tables(tmp_path, monkeypatch):
    from dataclasses import replace

    from kobi_cpas.warehouse.specs import col

    wh = Warehouse(tmp_path / "a.duckdb", schema=SCHEMA)
    with wh.connect() as con:
        con.execute("INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES ('t', '1', now())")
    spec = TABLES["meta_catalogs"]
    monkeypatch.setitem(
        TABLES, "meta_catalogs", replace(spec, columns=(*spec.columns, col("extra", "INTEGER", "x")))
    )
    with wh.connect() as con:
        assert con.execute("SELECT tenant_id, extra FROM meta_catalogs").fetchall() == [("t", None)]


def _comments(con, table: str) -> tuple[str, dict[str, str]]:
    (table_comment,) = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
        [table],
    ).fetchone()
    cols = con.execute(
        "SELECT column_name, comment FROM duckdb_columns() WHERE database_name = current_database() "
        "AND table_name = ?",
        [table],
    ).fetchall()
    return table_comment, dict(cols)


def test_migration_converts_types_and_updates_only_changed_comments(tmp_path, monkeypatch):
    from dataclasses import replace

    wh = Warehouse(tmp_path / "a.duckdb", schema=SCHEMA)
    with wh.connect() as con:
        con.execute(
            "INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at, pixel_count) VALUES ('t', '1', now(), 7)"
        )
    spec = TABLES["meta_catalogs"]
    cols = tuple(
        replace(c, type="BIGINT", comment="pixels, now BIGINT") if c.name == "pixel_count" else c
        for c in spec.columns
    )
    monkeypatch.setitem(TABLES, "meta_catalogs", replace(spec, comment="new table comment", columns=cols))
    with wh.connect() as con:
        assert con.execute("SELECT typeof(pixel_count), pixel_count FROM meta_catalogs").fetchall() == [
            ("BIGINT", 7)
        ]
        table_comment, col_comments = _comments(con, "meta_catalogs")
    assert table_comment == "new table comment"
    assert col_comments == {c.name: c.comment for c in cols}


def test_a_file_migrated_elsewhere_is_migrated_again(tmp_path):
    """Another process (e.g. an older version during a deploy) changed the file: the stored fingerprint no longer
    matches, so the next connection migrates it back, although this process migrated it before."""
    wh = Warehouse(tmp_path / "a.duckdb", schema=SCHEMA)
    with wh.connect() as con:
        pass
    with wh.connect() as con:  # what the other process did
        con.execute("DROP TABLE meta_catalogs")
        con.execute("COMMENT ON TABLE tenant_registry IS 'older'")
        con.execute("COMMENT ON COLUMN tenant_registry.tenant_id IS 'older'")
        con.execute("UPDATE kobi_internal.schema_meta SET value = 'older' WHERE key = 'fingerprint'")
    with wh.connect() as con:
        assert con.execute("SELECT count(*) FROM meta_catalogs").fetchone() == (0,)
        table_comment, col_comments = _comments(con, "tenant_registry")
        assert _comments(con, "meta_catalogs")[0] == TABLES["meta_catalogs"].comment
    assert table_comment == TABLES["tenant_registry"].comment
    assert col_comments == {c.name: c.comment for c in TABLES["tenant_registry"].columns}


def test_publish_with_nothing_changed_keeps_the_analyst_file(tmp_path: Path):
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    _write_generation(wh, 1)
    before = wh.analyst_path.stat()
    with wh.connect() as con:
        r = wh.publish(con)
        assert (r.incremental, r.rewritten, r.row_counts["tenant_registry"]) == (True, [], 5000)
        after = wh.analyst_path.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        con.execute("DELETE FROM tenant_registry WHERE tenant_id = 't1'")
        r = wh.publish(con)
    assert (r.rewritten, r.row_counts["tenant_registry"]) == (["tenant_registry"], 4999)
    assert wh.analyst_path.stat().st_ino != before.st_ino
    assert _analyst_rows(wh, "SELECT count(*) FROM tenant_registry") == [(4999,)]


def test_connection_closed_when_body_raises(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb", lock_timeout=1, schema=SCHEMA)
    with pytest.raises(RuntimeError), wh.connect() as con:
        con.execute("SELECT 1")
        raise RuntimeError("boom")
    # Another process can now take the write lock immediately.
    code = f"import duckdb; duckdb.connect({str(wh.work_path)!r}).execute('select 1').close()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_writer_waits_for_lock_then_fails_clearly(tmp_path, monkeypatch):
    from kobi_cpas.warehouse import warehouse as wmod

    wh = Warehouse(tmp_path / "a.duckdb", lock_timeout=1.5, schema=SCHEMA)
    tries: list[str] = []

    def counting_attach(path: str, timeout: float) -> duckdb.DuckDBPyConnection:
        tries.append(path)
        return wmod_attach(path, timeout)

    wmod_attach = wmod.attach
    monkeypatch.setattr(wmod, "attach", counting_attach)
    with wh.connect():
        pass
    # The holder keeps the lock until told to let go, however long the writer takes on a busy machine.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,sys; c=duckdb.connect({str(wh.work_path)!r}); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        tries.clear()
        with pytest.raises(duckdb.IOException, match="lock"), wh.connect():
            pass
        assert len(tries) > 1  # it waited and tried again before giving up (the budget: the fake-clock test)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with wh.connect() as con:  # and succeeds once the holder is gone
        assert con.execute("SELECT 1").fetchone() == (1,)


class _FakeClock:
    """time.monotonic/time.sleep for the warehouse module: each try at the lock costs ``try_cost`` seconds."""

    def __init__(self, try_cost: float) -> None:
        self.now, self.try_cost, self.sleeps, self.tries = 0.0, try_cost, [], []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def attach(self, path: str, timeout: float) -> duckdb.DuckDBPyConnection:
        assert timeout == pytest.approx(1.5 - self.now)  # the writers' lock gets what is left of the budget
        self.tries.append(self.now)
        self.now += self.try_cost
        raise duckdb.IOException(f'IO Error: Could not set lock on file "{path}": Conflicting lock is held')


@pytest.mark.parametrize("try_cost", [0.0, 0.25])
def test_lock_wait_uses_the_whole_budget(tmp_path, monkeypatch, try_cost):
    from kobi_cpas.warehouse import warehouse as wmod

    clock = _FakeClock(try_cost)
    monkeypatch.setattr(wmod, "time", clock)
    monkeypatch.setattr(wmod, "attach", clock.attach)
    wh = Warehouse(tmp_path / "a.duckdb", lock_timeout=1.5, schema=SCHEMA)
    with pytest.raises(duckdb.IOException, match="lock"):
        wh._open()
    # Back-off doubles, and the last sleep is cut to what is left: the last try is at the deadline.
    assert clock.tries[-1] == pytest.approx(1.5)
    assert clock.sleeps[0] == pytest.approx(0.2) and all(s > 0 for s in clock.sleeps)
    if try_cost == 0.0:
        assert clock.sleeps == pytest.approx([0.2, 0.4, 0.8, 0.1])


def test_lock_released_after_each_connection_and_shared_by_nested_ones(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb", schema=SCHEMA)
    code = f"import duckdb; duckdb.connect({str(wh.work_path)!r}).execute('CREATE TABLE IF NOT EXISTS x (i INT)')"
    with wh.connect() as outer:
        with wh.connect() as inner:  # a second connection of the same process shares the open file
            inner.execute(
                "INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES ('t', '1', now())"
            )
        assert outer.execute("SELECT count(*) FROM meta_catalogs").fetchone() == (1,)
        held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert held.returncode != 0 and "lock" in held.stderr.lower()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # released: another writer gets in
    with wh.connect() as con:
        assert con.execute("SELECT count(*) FROM x").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM meta_catalogs").fetchone() == (1,)


HOLDER = textwrap.dedent(
    """
    import sys
    from kobi_cpas.tables import SCHEMA
    from kobi_cpas.warehouse import Warehouse
    with Warehouse(sys.argv[1], schema=SCHEMA).connect() as con:
        con.execute("INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES ('holder', '1', now())")
        print("held", flush=True)
        sys.stdin.read()
    """
)


@contextlib.contextmanager
def _held_by_another_process(wh: Warehouse) -> Iterator[None]:
    """Another process writes ``wh`` (holding its writers' lock) until the block ends."""
    with wh.connect():  # the file and its schema exist before the holder starts
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(wh.analyst_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_writers_of_two_processes_take_turns_asleep(tmp_path):
    """A process that wants the work database while another writes it waits on the writers' lock, using (almost)
    no CPU, gets in as soon as the other lets go, and counts how long it waited and held it."""
    from kobi_cpas.warehouse.host import writer_lock_path, writer_time

    wh = Warehouse(tmp_path / "a.duckdb", schema=SCHEMA)
    got: list[tuple[float, float]] = []  # (cpu seconds of this thread while waiting, wall seconds waited)

    def write() -> None:
        cpu, wall = time.thread_time(), time.monotonic()
        with wh.connect() as con:
            got.append((time.thread_time() - cpu, time.monotonic() - wall))
            con.execute(
                "INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES ('second', '1', now())"
            )

    with _held_by_another_process(wh):
        assert writer_lock_path(str(wh.work_path.resolve())).exists()
        before = writer_time()
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=2.0)
        assert writer.is_alive() and not got  # still waiting: the holder has not let go
    writer.join(timeout=120)
    (cpu, waited), spent = got[0], writer_time().since(before)
    assert waited >= 2.0 and spent.waited_s >= 2.0 and spent.holds == 1 and spent.held_s > 0
    assert cpu < 0.25 * waited, f"waiting for the writer took {cpu:.2f} s of CPU in {waited:.2f} s"
    with wh.connect() as con:
        rows = con.execute("SELECT tenant_id FROM meta_catalogs ORDER BY observed_at").fetchall()
    assert rows == [("holder",), ("second",)]


def test_writer_lock_wait_is_bounded_and_names_the_file(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb", lock_timeout=1.0, schema=SCHEMA)
    with (
        _held_by_another_process(wh),
        pytest.raises(TimeoutError, match=r"warehouse\.duckdb .*more than 1s"),
        wh.connect(),
    ):
        pass


FORKED_WRITER = textwrap.dedent(
    """
    import os, subprocess, sys
    from kobi_cpas.tables import SCHEMA
    from kobi_cpas.warehouse import Warehouse

    def waits_out(timeout):
        try:
            with Warehouse(sys.argv[1], lock_timeout=timeout, schema=SCHEMA).connect():
                return False
        except TimeoutError:
            return True

    with Warehouse(sys.argv[1], schema=SCHEMA).connect():
        pid = os.fork()
        if pid == 0:  # the child inherits the parent's open lock file, but not the right to write
            os._exit(0 if waits_out(0.5) else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the forked child wrote while its parent held the lock"
        other = subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], timeout=120)
        assert other.returncode == 0, "the parent lost the lock when its child exited"
    print("ok", flush=True)
    """
)
OTHER_WAITS = "import sys\nfrom kobi_cpas.tables import SCHEMA\nfrom kobi_cpas.warehouse import Warehouse\ntry:\n    Warehouse(sys.argv[1], lock_timeout=0.5, schema=SCHEMA).connect().__enter__()\n    sys.exit(4)\nexcept TimeoutError:\n    pass\n"


def test_a_forked_child_does_not_share_its_parents_writer_lock(tmp_path):
    # In a script of its own: forking the pytest worker (threads, gRPC of earlier tests) is not safe.
    done = subprocess.run(
        [sys.executable, "-c", FORKED_WRITER, str(tmp_path / "a.duckdb"), OTHER_WAITS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


READER = textwrap.dedent(
    """
    import duckdb, sys, time
    path = sys.argv[1]
    held = duckdb.connect(path, read_only=True)      # an analyst session left open the whole time
    first = held.execute("SELECT min(registry_hash), count(*) FROM tenant_registry").fetchone()
    print("ready", flush=True)
    seen, errors = set(), 0
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        again = held.execute("SELECT min(registry_hash), max(registry_hash), count(*) FROM tenant_registry").fetchone()
        assert (again[0], again[2]) == first, again      # the open session keeps its complete snapshot
        try:
            # a fresh analyst session (ATTACH opens the file anew; connect() would reuse the cached instance)
            c = duckdb.connect()
            c.execute(f"ATTACH '{path}' AS a (READ_ONLY)")
            lo, hi, n = c.execute("SELECT min(registry_hash), max(registry_hash), count(*) FROM a.tenant_registry").fetchone()
            c.close()
            assert lo == hi and n == 5000, (lo, hi, n)     # never a half-written table
            seen.add(lo)
        except duckdb.Error as e:
            errors += 1
            print("ERR", e, flush=True)
        time.sleep(0.01)
    print("generations", len(seen), "errors", errors, flush=True)
    """
)


def _write_generation(wh: Warehouse, gen: int) -> None:
    with wh.connect() as con:
        con.execute("BEGIN")
        con.execute("DELETE FROM tenant_registry")
        con.execute(
            "INSERT INTO tenant_registry (tenant_id, business_id, catalog_id, registry_hash) "
            "SELECT 't' || i, '1', '2', ? FROM range(5000) r(i)",
            [f"gen{gen:03d}"],
        )
        con.execute("COMMIT")
        wh.publish(con)


def test_analyst_session_open_while_writers_publish(tmp_path: Path):
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    _write_generation(wh, 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(wh.analyst_path), "4"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        for gen in range(1, 16):  # every write succeeds although the analyst holds the file open
            _write_generation(wh, gen)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "generations" and int(last[1]) >= 2, out  # it saw several complete generations
    assert last[3] == "0", out
    # and the published file holds the latest generation
    con = duckdb.connect(str(wh.analyst_path), read_only=True)
    assert con.execute("SELECT DISTINCT registry_hash FROM tenant_registry").fetchall() == [("gen015",)]
    con.close()
    assert not list(tmp_path.glob("*.publishing*"))


def _analyst_rows(wh: Warehouse, sql: str) -> list[tuple]:
    con = duckdb.connect(str(wh.analyst_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_publish_rewrites_only_the_tables_that_changed(tmp_path: Path):
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    _write_generation(wh, 1)  # first publish: everything
    with wh.connect() as con:
        assert wh.publish(con).rewritten == []  # nothing changed
        con.execute(
            "INSERT INTO feed_snapshots (tenant_id, snapshot_id, taken_at, source) VALUES ('t0', 's', now(), 'x')"
        )
        r = wh.publish(con)
        assert (r.incremental, r.rewritten) == (True, ["feed_snapshots"])
        assert r.row_counts["tenant_registry"] == 5000 and r.row_counts["feed_snapshots"] == 1
        # an update that keeps the row count is a change too
        con.execute("UPDATE tenant_registry SET catalog_id = '3' WHERE tenant_id = 't7'")
        assert wh.publish(con).rewritten == ["tenant_registry"]
        # rewriting the table under an analyst view keeps the view working
        con.execute(
            "INSERT INTO shared_item_metrics VALUES ('2026-11-01', 't1', 'trendyol', 'act_1', 'campaign', 'c1', "
            "'c1', '', '', 'spend', '', 'default', 12.5, false, 'TRY', 'p1', now())"
        )
        assert wh.publish(con).rewritten == ["shared_item_metrics"]
    assert _analyst_rows(wh, "SELECT sum(spend), any_value(currency) FROM cpas_dashboard") == [(12.5, "TRY")]
    assert _analyst_rows(wh, "SELECT catalog_id FROM tenant_registry WHERE tenant_id = 't7'") == [("3",)]
    assert _analyst_rows(wh, "SELECT count(*) FROM tenant_registry") == [(5000,)]
    assert _analyst_rows(wh, "SELECT count(*) FROM feed_snapshots") == [(1,)]
    # comments of tables that were carried over are still there
    comments = _analyst_rows(wh, "SELECT count(*) FROM duckdb_tables() WHERE comment IS NULL OR comment = ''")
    assert comments == [(0,)]
    assert not list(tmp_path.glob("*.publishing*"))


def test_publish_rebuilds_when_the_analyst_file_is_not_the_one_it_published(tmp_path: Path):
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    _write_generation(wh, 1)
    # someone replaces the analyst file (a restore, a copy from elsewhere)
    other = duckdb.connect(str(tmp_path / "other.duckdb"))
    other.execute("CREATE TABLE tenant_registry AS SELECT 'x' AS tenant_id")
    other.close()
    (tmp_path / "other.duckdb").replace(wh.analyst_path)
    with wh.connect() as con:
        r = wh.publish(con)
    assert not r.incremental and set(r.rewritten) == set(TABLES)
    assert _analyst_rows(wh, "SELECT count(*) FROM tenant_registry") == [(5000,)]
    # and a deleted analyst file is simply published again
    wh.analyst_path.unlink()
    with wh.connect() as con:
        assert not wh.publish(con).incremental
    assert _analyst_rows(wh, "SELECT count(*) FROM tenant_registry") == [(5000,)]


def test_incremental_publishes_keep_the_file_the_size_of_a_fresh_one_and_a_fragmented_file_is_rebuilt(
    tmp_path, monkeypatch
):
    from kobi_cpas.warehouse import publish as pmod

    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    with wh.connect() as con:  # 100,000 rows, as many as the items of a 100k-item feed
        con.execute(
            "INSERT INTO tenant_registry (tenant_id, business_id, catalog_id, registry_hash) "
            "SELECT 't' || i, '1', '2', 'gen000-' || repeat('x', 20) FROM range(100000) r(i)"
        )
        assert not wh.publish(con).incremental
    sizes = []
    for gen in range(1, 21):  # the big table changes every time: each publish rewrites it whole
        with wh.connect() as con:
            con.execute("UPDATE tenant_registry SET registry_hash = ?", [f"gen{gen:03d}-{'x' * 20}"])
            assert wh.publish(con).incremental
        sizes.append(wh.analyst_path.stat().st_size)
    assert _analyst_rows(wh, "SELECT DISTINCT left(registry_hash, 6) FROM tenant_registry") == [("gen020",)]
    # the same rows published from scratch (no analyst file to build on)
    wh.analyst_path.unlink()
    with wh.connect() as con:
        assert not wh.publish(con).incremental
    fresh = wh.analyst_path.stat().st_size
    assert max(sizes) <= 1.1 * fresh, (fresh, sizes)
    # past the free-space threshold the next publish starts from an empty file again
    monkeypatch.setattr(pmod, "_MAX_FREE_BLOCK_SHARE", -1.0)
    with wh.connect() as con:
        con.execute("UPDATE tenant_registry SET registry_hash = 'again'")
        assert wh.publish(con).incremental  # this one finds the file fragmented
        assert not wh.publish(con).incremental


# The content of tenant_registry, order-independent: equal in the work database and the analyst file.
_REGISTRY_CONTENT = (
    "SELECT count(*), sum(hash(tenant_id, retailer, business_id, registry_hash)) FROM tenant_registry"
)


def _fill_registry(
    con: duckdb.DuckDBPyConnection, rows: int, tenant: str, retailer: str, business: str
) -> None:
    """``rows`` rows in tenant_registry, built from the SQL expressions of ``i`` given."""
    con.execute(
        "INSERT INTO tenant_registry (tenant_id, retailer, business_id, catalog_id, registry_hash) "
        f"SELECT {tenant}, {retailer}, {business}, '2', 'gen000-' || md5(i::VARCHAR) FROM range({rows}) r(i)"
    )


def test_a_small_file_is_published_by_whole_tables(tmp_path):
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    # 60,000 short rows: a file of about a MB, which replacing rows would grow by 25 %
    with wh.connect() as con:
        _fill_registry(con, 60_000, "'t' || i", "'r'", "'1'")
        wh.publish(con)
        con.execute("UPDATE tenant_registry SET registry_hash = 'h2' WHERE hash(tenant_id) % 100 = 0")
        result = wh.publish(con)
    assert result.incremental and result.rewritten == ["tenant_registry"] and result.by_rows == {}


def test_a_small_change_of_a_big_table_replaces_only_its_changed_rows_and_the_file_stays_small(tmp_path):
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    content = _REGISTRY_CONTENT
    # 100,000 rows of ~200 bytes, like a feed's items; half with a NULL in their key
    with wh.connect() as con:
        _fill_registry(
            con,
            100_000,
            "'t' || (i // 2)",
            "CASE WHEN i % 2 = 1 THEN 'r' END",
            "md5(i::VARCHAR) || md5((i + 1)::VARCHAR) || md5((i + 2)::VARCHAR)",
        )
        assert not wh.publish(con).incremental
    sizes, by_rows = [], []
    for gen in range(1, 13):
        with wh.connect() as con:  # about 1 % of the rows change, and one row comes and one goes
            con.execute(
                "UPDATE tenant_registry SET registry_hash = ? || md5(business_id) "
                "WHERE hash(tenant_id, retailer, ?) % 100 = 0",
                [f"gen{gen:03d}-", gen],
            )
            con.execute("DELETE FROM tenant_registry WHERE tenant_id = ?", [f"t{gen}"])
            con.execute(
                "INSERT INTO tenant_registry (tenant_id, retailer, business_id, catalog_id, registry_hash) "
                "VALUES (?, NULL, '1', '2', 'new')",
                [f"new{gen}"],
            )
            result = wh.publish(con)
            expected = con.execute(content).fetchone()
        assert result.incremental and result.rewritten == ["tenant_registry"]
        assert _analyst_rows(wh, content) == [expected]  # the file holds exactly the work database's rows
        by_rows.append(result.by_rows.get("tenant_registry"))
        sizes.append(wh.analyst_path.stat().st_size)
    replaced = [r for r in by_rows if r]
    # Publishes replaced only the changed rows (about 1,000 of 100,000) until the file had grown by 3 %; the next
    # one copied the table whole instead.
    assert all(500 < gone < 2_000 and abs(come - gone) <= 2 for gone, come in replaced)
    assert len(replaced) >= 4 and by_rows.count(None) >= 2, by_rows
    wh.analyst_path.unlink()
    with wh.connect() as con:
        assert not wh.publish(con).incremental
    fresh = wh.analyst_path.stat().st_size
    assert max(sizes) <= 1.1 * fresh, (fresh, sizes)


def test_a_key_that_does_not_identify_its_rows_gets_the_table_copied_whole(tmp_path, monkeypatch):
    from kobi_cpas.warehouse import publish_rows

    monkeypatch.setattr(publish_rows, "_MAX_STEP_SHARE", 1.0)  # a small file may be published by rows too
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    content = _REGISTRY_CONTENT
    with wh.connect() as con:
        _fill_registry(con, 60_000, "'t' || i", "'r'", "md5(i::VARCHAR)")
        wh.publish(con)
        wh.publish(con)  # nothing changed
        # A second row with the key of an existing one (the table's key is documented, not enforced).
        con.execute(
            "INSERT INTO tenant_registry (tenant_id, retailer, business_id, catalog_id, registry_hash) "
            "VALUES ('t7', 'r', 'other', '2', 'h2')"
        )
        result = wh.publish(con)
        expected = con.execute(content).fetchone()
    assert result.incremental and result.rewritten == ["tenant_registry"] and result.by_rows == {}
    assert _analyst_rows(wh, content) == [expected]


def test_feed_items_rows_are_told_apart_by_their_row_identity_alone(tmp_path, monkeypatch):
    from kobi_cpas.warehouse import publish_rows

    monkeypatch.setattr(publish_rows, "_MAX_STEP_SHARE", 1.0)  # a small file may be published by rows too
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    content = "SELECT count(*), sum(hash(retailer_id, snapshot_id, title, content_hash)) FROM feed_items"
    with wh.connect() as con:
        con.execute(
            "INSERT INTO feed_items (tenant_id, snapshot_id, retailer_id, title, price, content_hash, volatile_hash, "
            "price_amount, currency) SELECT 't', 's1', 'r' || i, md5(i::VARCHAR), '10.00 TRY', hash(md5(i::VARCHAR)), "
            "hash('10.00 TRY'), 10, 'TRY' FROM range(60000) r(i)"
        )
        wh.publish(con)
        # A field changed under unchanged hashes: no writer does that, so the publish does not read fields.
        con.execute("UPDATE feed_items SET title = 'not read' WHERE retailer_id = 'r1'")
        assert wh.publish(con).rewritten == []
        # A new version of 300 items, as a snapshot writes it: new hashes and the snapshot it arrived in.
        con.execute(
            "UPDATE feed_items SET title = 'v2 ' || title, content_hash = hash('v2 ' || title), snapshot_id = 's2' "
            "WHERE retailer_id IN (SELECT 'r' || i FROM range(0, 60000, 200) r(i))"
        )
        result = wh.publish(con)
        expected = con.execute(content).fetchone()
        # Typed columns filled in later, hashes unchanged, are a change too.
        con.execute("UPDATE feed_items SET quantity = 5 WHERE retailer_id = 'r3'")
        typed = wh.publish(con)
    assert result.rewritten == ["feed_items"] and result.by_rows == {"feed_items": (300, 300)}
    assert _analyst_rows(wh, content) == [expected]
    assert _analyst_rows(wh, "SELECT title FROM feed_items WHERE retailer_id = 'r200'") == [
        (f"v2 {_md5(200)}",)
    ]
    assert typed.rewritten == ["feed_items"]
    assert _analyst_rows(wh, "SELECT quantity FROM feed_items WHERE retailer_id = 'r3'") == [(5,)]


def _md5(i: int) -> str:
    import hashlib

    return hashlib.md5(str(i).encode()).hexdigest()


def test_threads_of_one_process_connect_migrate_and_publish_at_once(tmp_path):
    import threading

    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)  # a new file: the first connections all migrate
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                with wh.connect() as con:
                    con.execute(
                        "INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES (?, '1', now())",
                        [f"t{i}"],
                    )
                    wh.publish(con)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert _analyst_rows(wh, "SELECT count(*) FROM meta_catalogs") == [(12,)]
    # and the file is free again: another process can write it
    code = f"import duckdb; duckdb.connect({str(wh.work_path)!r}).execute('SELECT 1')"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dashboard_counts_keep_fractional_action_counts(tmp_path: Path):
    """Meta sends action counts as numeric strings, and modelled or data-driven attributed counts can be
    fractional: the dashboard's counts must keep them, not round them to integers."""
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)
    with wh.connect() as con:
        for action, value in (
            ("omni_purchase", "0.5"),
            ("omni_purchase", "1.25"),
            ("omni_add_to_cart", "2.4"),
        ):
            con.execute(
                "INSERT INTO shared_item_metrics VALUES ('2026-11-01', 't1', 'trendyol', 'act_1', 'campaign', "
                "'c1', 'c1', 'n/a', 'n/a', 'catalog_segment_actions', ?, 'default', ?::DECIMAL(20, 6), true, "
                "'TRY', ?, now())",
                [action, value, f"p{value}"],
            )
        wh.publish(con)
    rows = _analyst_rows(wh, "SELECT purchases, add_to_cart FROM cpas_dashboard")
    assert [(float(p), float(a)) for p, a in rows] == [(1.75, 2.4)]
