"""The statement profile of `make bench` records what ran, where it ran, and what DuckDB measured of it, and
keeps the literals of a statement out of its label."""

from __future__ import annotations

import duckdb
import pytest

from kobi_cpas.devenv.statement_profile import ProfiledConnection, Statement, by_stage, label


def test_a_label_is_the_statement_on_one_line_without_its_literals():
    sql = "SELECT 'it''s',\n   count(*)\tFROM read_csv('/feeds/x.csv?access_token=SECRET') WHERE a = 'b'"
    assert label(sql) == "SELECT '…', count(*) FROM read_csv('…') WHERE a = '…'"
    assert "SECRET" not in label(sql)
    assert len(label("SELECT " + "x, " * 200 + "1")) == 110


def test_every_statement_is_recorded_with_duckdbs_profile_when_it_has_one():
    con = ProfiledConnection(duckdb.connect())
    con.execute("CREATE TABLE t AS SELECT range AS i FROM range(50000)")
    con.execute("SET threads = 1")
    assert con.execute("SELECT count(*) FROM t WHERE i > $x", {"x": 10}).fetchone() == (49989,)
    con.execute("CREATE TABLE u AS SELECT 1 AS a; INSERT INTO u SELECT i FROM t")
    create, setting, _select, script = con.statements
    assert [s.at for s in con.statements] == sorted(s.at for s in con.statements)
    assert create.label.startswith("CREATE TABLE t AS SELECT range")
    assert create.cpu_seconds is not None and create.operator is not None and create.seconds > 0
    # SET keeps no profile of its own: the CTAS's is not passed off as its
    assert setting.cpu_seconds is None and setting.operator is None
    assert script.label.startswith("[2 statements] CREATE TABLE u")
    # the profile DuckDB keeps of a script is its last statement's: not the script's
    assert script.cpu_seconds is None and script.seconds > 0
    # a cursor's statements are recorded in the same list
    cur = con.cursor()
    cur.execute("SELECT 42").fetchall()
    assert con.statements[-1].label == "SELECT 42"
    assert con.execute("SELECT count(*) FROM u").fetchone() == (50001,)


def _st(at: float, seconds: float, name: str) -> Statement:
    return Statement(at=at, seconds=seconds, cpu_seconds=None, operator=None, label=name)


def test_each_statement_goes_to_the_stage_in_which_it_started():
    statements = [
        _st(10.0, 0.5, "a1"),
        _st(10.6, 1.0, "a2"),
        _st(12.0, 0.2, "b1"),  # starts exactly at the end of stage a: it is b's
        _st(12.3, 0.1, "b2"),
        _st(13.0, 0.4, "c1"),
        _st(20.0, 1.0, "after"),  # after the last stage: nobody's
    ]
    stages = by_stage(statements, 10.0, {"b": 12.5, "a": 12.0, "c": 14.0}, top=1)
    assert list(stages) == ["a", "b", "c"]
    assert [stages[k]["statements"] for k in stages] == [2, 2, 1]
    assert stages["a"]["seconds"] == pytest.approx(2.0)
    assert stages["b"]["seconds"] == pytest.approx(0.5)
    assert stages["a"]["statement_seconds"] == pytest.approx(1.5)
    assert [t["label"] for t in stages["a"]["top"]] == ["a2"]
    assert [t["label"] for t in stages["b"]["top"]] == ["b1"]
