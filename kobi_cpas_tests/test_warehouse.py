"""Warehouse: idempotent migration with comments, and atomic publishing that analysts can read during writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

import kobi_cpas.warehouse.all_tables  # noqa: F401  (every domain's tables)
from kobi_cpas.warehouse import Warehouse
from kobi_cpas.warehouse.tables import TABLES


def test_migration_is_idempotent_and_documents_every_column(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb")
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

    wh = Warehouse(tmp_path / "a.duckdb")
    with wh.connect() as con:
        con.execute("INSERT INTO meta_catalogs (tenant_id, catalog_id, observed_at) VALUES ('t', '1', now())")
    spec = TABLES["meta_catalogs"]
    monkeypatch.setitem(
        TABLES, "meta_catalogs", replace(spec, columns=(*spec.columns, col("extra", "INTEGER", "x")))
    )
    with wh.connect() as con:
        assert con.execute("SELECT tenant_id, extra FROM meta_catalogs").fetchall() == [("t", None)]


def test_connection_closed_when_body_raises(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb", lock_timeout=1)
    with pytest.raises(RuntimeError), wh.connect() as con:
        con.execute("SELECT 1")
        raise RuntimeError("boom")
    # Another process can now take the write lock immediately.
    code = f"import duckdb; duckdb.connect({str(wh.work_path)!r}).execute('select 1').close()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_writer_waits_for_lock_then_fails_clearly(tmp_path):
    wh = Warehouse(tmp_path / "a.duckdb", lock_timeout=1.5)
    with wh.connect():
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(wh.work_path)!r}); print('held', flush=True); time.sleep(4)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(duckdb.IOException, match="lock"), wh.connect():
            pass
        assert time.monotonic() - t0 >= 1.0  # it waited (bounded) before giving up
    finally:
        holder.wait(timeout=30)
    with wh.connect() as con:  # and succeeds once the holder is gone
        assert con.execute("SELECT 1").fetchone() == (1,)


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
    wh = Warehouse(tmp_path / "kobi.duckdb")
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
    wh = Warehouse(tmp_path / "kobi.duckdb")
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
    assert _analyst_rows(wh, "SELECT sum(spend) FROM cpas_dashboard") == [(12.5,)]
    assert _analyst_rows(wh, "SELECT catalog_id FROM tenant_registry WHERE tenant_id = 't7'") == [("3",)]
    assert _analyst_rows(wh, "SELECT count(*) FROM tenant_registry") == [(5000,)]
    assert _analyst_rows(wh, "SELECT count(*) FROM feed_snapshots") == [(1,)]
    # comments of tables that were carried over are still there
    comments = _analyst_rows(wh, "SELECT count(*) FROM duckdb_tables() WHERE comment IS NULL OR comment = ''")
    assert comments == [(0,)]
    assert not list(tmp_path.glob("*.publishing*"))


def test_publish_rebuilds_when_the_analyst_file_is_not_the_one_it_published(tmp_path: Path):
    wh = Warehouse(tmp_path / "kobi.duckdb")
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


def test_incremental_publishes_do_not_grow_the_file_and_a_fragmented_file_is_rebuilt(tmp_path, monkeypatch):
    from kobi_cpas.warehouse import warehouse as wmod

    wh = Warehouse(tmp_path / "kobi.duckdb")
    _write_generation(wh, 0)
    first_size = wh.analyst_path.stat().st_size
    sizes = []
    for gen in range(1, 11):  # the big table changes every time: its old blocks become free space
        with wh.connect() as con:
            con.execute("UPDATE tenant_registry SET registry_hash = ?", [f"gen{gen:03d}-{'x' * 200}"])
            assert wh.publish(con).incremental
        sizes.append(wh.analyst_path.stat().st_size)
    assert max(sizes) <= 3 * max(first_size, sizes[0]), sizes  # DuckDB reuses the freed blocks
    assert _analyst_rows(wh, "SELECT DISTINCT left(registry_hash, 6) FROM tenant_registry") == [("gen010",)]
    # past the free-space threshold the next publish starts from an empty file again
    monkeypatch.setattr(wmod, "_MAX_FREE_BLOCK_SHARE", -1.0)
    with wh.connect() as con:
        assert wh.publish(con).incremental  # this one finds the file fragmented
        assert not wh.publish(con).incremental
