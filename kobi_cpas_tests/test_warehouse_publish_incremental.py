"""Incremental publishing replaces the rows of changed tables in a copy of the analyst file: the file it builds
must hold exactly what a publish from scratch holds (tables, rows, comments, column comments, views), and a
publish that fails half-way must leave the analyst file, the connection and the process's DuckDB instance as
they were."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse, qident
from kobi_cpas.warehouse import publish as pmod
from kobi_cpas_tests.warehouse_template import seed_work_database


def _analyst_dump(path: Path) -> dict:
    """Everything an analyst can see in the file: relations with comments, columns with types and comments,
    view definitions, and every table's rows."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal ORDER BY ALL"
        ).fetchall()
        return {
            "tables": tables,
            "columns": con.execute(
                "SELECT table_name, column_index, column_name, data_type, is_nullable, comment "
                "FROM duckdb_columns() WHERE NOT internal ORDER BY ALL"
            ).fetchall(),
            "views": con.execute(
                "SELECT view_name, comment, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL"
            ).fetchall(),
            "rows": {
                name: con.execute(f"SELECT * FROM main.{qident(name)} ORDER BY ALL").fetchall()
                for name, _ in tables
            },
        }
    finally:
        con.close()


def _write(con: duckdb.DuckDBPyConnection, gen: int) -> None:
    con.execute("DELETE FROM tenant_registry")
    con.execute(
        "INSERT INTO tenant_registry (tenant_id, business_id, catalog_id, registry_hash) "
        "SELECT 't' || i, 'b', (i % 3)::VARCHAR, ? FROM range(50) r(i)",
        [f"gen{gen}"],
    )
    con.execute(
        "INSERT INTO feed_snapshots (tenant_id, snapshot_id, taken_at, source) VALUES ('t0', ?, now(), 'x')",
        [f"s{gen}"],
    )


def test_an_incremental_publish_builds_the_same_file_as_a_publish_from_scratch(tmp_path: Path) -> None:
    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        _write(con, 0)
        assert not wh.publish(con).incremental
        for gen in range(1, 4):
            _write(con, gen)
            r = wh.publish(con)
            assert r.incremental and sorted(r.rewritten) == ["feed_snapshots", "tenant_registry"]
            assert r.row_counts["tenant_registry"] == 50 and r.row_counts["feed_snapshots"] == gen + 1
    incremental = _analyst_dump(wh.analyst_path)

    wh.analyst_path.unlink()  # the next publish starts from an empty file
    with wh.connect() as con:
        r = wh.publish(con)
    assert not r.incremental and set(r.rewritten) == set(SCHEMA.tables)
    from_scratch = _analyst_dump(wh.analyst_path)

    assert incremental == from_scratch
    assert incremental["rows"]["feed_snapshots"] and {row[0] for row in incremental["tables"]} == set(
        SCHEMA.tables
    )
    documented = [c for c in incremental["columns"] if c[0] in SCHEMA.tables]
    assert documented and all(c[5] for c in documented)  # every column of every table still has its comment


def test_a_publish_failing_half_way_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        _write(con, 0)
        wh.publish(con)
    before = _analyst_dump(wh.analyst_path)
    identity = wh.analyst_path.stat().st_ino

    real = pmod._rewrite_sql
    # The rows are already deleted from the copy when the statement fails.
    monkeypatch.setattr(
        pmod, "_rewrite_sql", lambda *a, **k: real(*a, **k) + ";\nSELECT * FROM main.no_such_table"
    )
    with wh.connect() as con:
        _write(con, 1)
        with pytest.raises(duckdb.CatalogException, match="no_such_table"):
            wh.publish(con)
        # the connection is usable (no transaction left open) and the new file is no longer attached
        con.execute("BEGIN")
        con.execute("ROLLBACK")
        attached = [r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()]
        assert not [a for a in attached if a.startswith("kobi_publish_")]
    assert wh.analyst_path.stat().st_ino == identity
    assert _analyst_dump(wh.analyst_path) == before
    assert not list(tmp_path.glob("*.publishing*"))

    monkeypatch.setattr(pmod, "_rewrite_sql", real)
    with wh.connect() as con:
        r = wh.publish(con)  # the failed one recorded nothing: the next compares against the file it built
    assert r.incremental and sorted(r.rewritten) == ["feed_snapshots", "tenant_registry"]
    analyst = duckdb.connect(str(wh.analyst_path), read_only=True)
    try:
        assert analyst.execute("SELECT DISTINCT registry_hash FROM tenant_registry").fetchall() == [("gen1",)]
    finally:
        analyst.close()


def test_instance_settings_follow_each_warehouse(tmp_path: Path) -> None:
    """memory_limit is instance-wide: a connection gets its warehouse's value whatever the one before set."""
    small = Warehouse(seed_work_database(tmp_path / "a" / "kobi.duckdb"), memory_limit="300MB", schema=SCHEMA)
    big = Warehouse(seed_work_database(tmp_path / "b" / "kobi.duckdb"), memory_limit="500MB", schema=SCHEMA)

    def limit(wh: Warehouse) -> str:
        with wh.connect() as con:
            row = con.execute("SELECT current_setting('memory_limit')").fetchone()
        assert row is not None
        return str(row[0])

    first = limit(small)
    second = limit(big)
    assert first != second
    assert limit(small) == first and limit(big) == second


def _schema_of(con: duckdb.DuckDBPyConnection, database: str) -> dict:
    """Tables and columns (types, nullability, comments) of the analyst tables in ``database``."""
    names = sorted(SCHEMA.tables)
    return {
        "tables": con.execute(
            "SELECT table_name, comment FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
            "AND list_contains(?, table_name) ORDER BY ALL",
            [database, names],
        ).fetchall(),
        "columns": con.execute(
            "SELECT table_name, column_index, column_name, data_type, is_nullable, comment FROM duckdb_columns() "
            "WHERE database_name = ? AND schema_name = 'main' AND list_contains(?, table_name) ORDER BY ALL",
            [database, names],
        ).fetchall(),
    }


def _templates(wh: Warehouse) -> list[Path]:
    return sorted(wh.work_dir.glob("analyst-template-*"))


def test_a_publish_from_scratch_copies_the_schema_template_built_once(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "kobi.duckdb", schema=SCHEMA)  # a new work database: no template yet
    with wh.connect() as con:
        _write(con, 0)
        assert not wh.publish(con).incremental
        work = _schema_of(con, con.execute("SELECT current_database()").fetchone()[0])
    (template,) = _templates(wh)
    built = (template.stat().st_ino, template.stat().st_mtime_ns)

    # The template: every analyst table as the migration declared it in the work database, no rows, the views.
    t = duckdb.connect(str(template), read_only=True)
    try:
        assert _schema_of(t, t.execute("SELECT current_database()").fetchone()[0]) == work
        assert all(
            t.execute(f"SELECT count(*) FROM main.{qident(n)}").fetchone() == (0,) for n in SCHEMA.tables
        )
        assert {
            r[0] for r in t.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        } == set(SCHEMA.views)
    finally:
        t.close()
    first = _analyst_dump(wh.analyst_path)
    assert first["rows"]["tenant_registry"] and first["rows"]["feed_snapshots"]

    wh.analyst_path.unlink()
    with wh.connect() as con:
        r = wh.publish(con)
    assert not r.incremental and set(r.rewritten) == set(SCHEMA.tables)
    assert _templates(wh) == [template] and (template.stat().st_ino, template.stat().st_mtime_ns) == built
    assert _analyst_dump(wh.analyst_path) == first


def test_a_schema_change_gets_a_new_template_and_the_old_one_goes(tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    from kobi_cpas.warehouse.specs import col

    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        _write(con, 0)
        wh.publish(con)
    (old,) = _templates(wh)
    spec = SCHEMA.tables["feed_snapshots"]
    monkeypatch.setitem(
        SCHEMA.tables,
        "feed_snapshots",
        replace(spec, columns=(*spec.columns, col("extra", "INTEGER", "an extra"))),
    )
    with wh.connect() as con:  # migrates: a new schema fingerprint
        r = wh.publish(con)
    assert not r.incremental  # the schema is part of the state: the old file is not built on
    (new,) = _templates(wh)
    assert new != old
    analyst = duckdb.connect(str(wh.analyst_path), read_only=True)
    try:
        assert analyst.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'feed_snapshots' AND column_name = 'extra'"
        ).fetchall() == [("an extra",)]
        assert analyst.execute("SELECT count(*) FROM feed_snapshots").fetchone() == (1,)
    finally:
        analyst.close()


def _storage_version(path: Path) -> str:
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{path}' AS f (READ_ONLY)")
        (tags,) = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = 'f'").fetchone()
        return tags["storage_version"]
    finally:
        con.close()


def test_analysts_open_the_published_file_with_the_duckdb_cli_make_installs(tmp_path: Path) -> None:
    """The analyst file is in a storage format older readers take, from scratch and after incremental
    publishes, and the DuckDB command line installed into the venv reads it as the printed command does."""
    import subprocess
    import sys

    from kobi_cpas.devenv.cli import duckdb_cli

    wh = Warehouse(seed_work_database(tmp_path / "kobi.duckdb"), schema=SCHEMA)
    with wh.connect() as con:
        _write(con, 0)
        wh.publish(con)
        assert _storage_version(wh.analyst_path).startswith(pmod.ANALYST_STORAGE_VERSION)
        _write(con, 1)
        assert wh.publish(con).incremental
    assert _storage_version(wh.analyst_path).startswith(pmod.ANALYST_STORAGE_VERSION)

    cli = Path(sys.executable).parent / "duckdb"
    assert cli.exists(), "make installs the DuckDB command line into the venv (duckdb-cli)"
    assert Path(duckdb_cli()).resolve() == cli.resolve()
    out = subprocess.run(
        [
            str(cli),
            "-readonly",
            str(wh.analyst_path),
            "-csv",
            "-noheader",
            "-c",
            "SELECT count(*) FROM tenant_registry; SELECT comment IS NOT NULL FROM duckdb_tables() "
            "WHERE table_name = 'tenant_registry'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["50", "true"]
