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
