"""Whether DuckDB reads a feed in file order: row numbers are taken from ``rowid`` after a ``CREATE TABLE AS``
with insertion order preserved, which is only sound for a plan of scan + projections/filters."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable

import duckdb

from kobi_cpas.warehouse.sql import insertion_order

_PLAN_OPERATOR_RE = re.compile(r"─ ([A-Z][A-Za-z_ ]+?) ─")
_STREAMING_OPERATORS = frozenset({"Projection", "Filter", "Read Csv", "Table Scan"})
# The same check on the JSON plan of EXPLAIN ANALYZE of a CREATE TABLE AS: the SELECT's operators, plus what
# the statement adds around them (the batch sink keeps insertion order; the plain one runs single-threaded
# when order must be kept).
_STREAMING_TYPES = frozenset({"PROJECTION", "FILTER", "READ_CSV", "TABLE_SCAN"})
_ANALYZED_CTAS_TYPES = frozenset(
    {"RESULT_COLLECTOR", "EXPLAIN_ANALYZE", "BATCH_CREATE_TABLE_AS", "CREATE_TABLE_AS"}
)


def _analyzed_ctas_is_streaming(plan_json: str) -> bool:
    types: set[str] = set()
    try:
        todo = list(json.loads(plan_json)["operator"])
        while todo:
            node = todo.pop()
            types.add(node["type"])
            todo.extend(node.get("children", ()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # an unrecognised plan format counts as not streaming
    select_types = types - _ANALYZED_CTAS_TYPES
    return bool(select_types) and select_types <= _STREAMING_TYPES


def is_streaming_plan(con: duckdb.DuckDBPyConnection, select_sql: str) -> bool:
    """True when DuckDB plans ``select_sql`` as scan + projections/filters only.

    Row numbers are taken from ``rowid`` after ``CREATE TABLE AS`` with insertion order preserved; that
    is only sound when no operator in between may reorder rows. DuckDB's optimizer can turn innocent
    scalar SQL into joins (e.g. an ``IN`` list or ``list_contains`` over constants becomes a hash join),
    so the plan is checked, not assumed. An unrecognised plan format counts as not streaming.
    """
    plan = "\n".join(str(r[1]) for r in con.execute(f"EXPLAIN {select_sql}").fetchall())
    ops = set(_PLAN_OPERATOR_RE.findall(plan))
    return bool(ops) and ops <= _STREAMING_OPERATORS


def create_table_streaming(
    con: duckdb.DuckDBPyConnection,
    target: str,
    select_sql: str,
    translate: Callable[[duckdb.Error], Exception] = lambda exc: exc,
) -> bool:
    """``CREATE OR REPLACE TABLE target AS select_sql`` (a DuckDB error is raised as ``translate`` makes it, e.g.
    a CSV error as :class:`FeedFileError` naming the file), and whether the plan that ran was streaming in the sense of
    :func:`is_streaming_plan`.

    The statement runs under EXPLAIN ANALYZE, which returns the plan it executed: the check costs no second
    bind and optimisation of the SELECT (for a small feed these cost as much as reading it), and it judges the
    plan that actually ran. When False, the table exists but its rows may be out of file order: the caller
    must not number them from ``rowid``. Runs with insertion order preserved."""
    try:
        with insertion_order_preserved(con):
            row = con.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) CREATE OR REPLACE TABLE {target} AS {select_sql}"
            ).fetchone()
    except duckdb.Error as exc:
        raise translate(exc) from None
    return row is not None and _analyzed_ctas_is_streaming(str(row[-1]))


def insertion_order_preserved(con: duckdb.DuckDBPyConnection) -> contextlib.AbstractContextManager[None]:
    """Force ``preserve_insertion_order`` (row numbers rely on it) and restore the caller's setting."""
    return insertion_order(con, True)
