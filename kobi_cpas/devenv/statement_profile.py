"""Where a step's time goes, statement by statement, for `make bench`.

:class:`ProfiledConnection` wraps a DuckDB connection: every statement run through it is timed, and DuckDB's own
profile of it (``enable_profiling = 'no_output'``, read back with ``get_profiling_information``) gives its CPU time
over all threads and its costliest operator. :func:`by_stage` then gives each statement to the stage of the
feed_snapshot step that ran it, from the stage end times the step records (``SnapshotOutcome.stage_ends``).

The labels keep the start of each statement with its string literals blanked: the structure says which statement
it is, a literal could be a path or a value that has no place in a report.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

LABEL_CHARS = 110
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_SPACE = re.compile(r"\s+")


def label(sql: str) -> str:
    """The start of ``sql`` on one line, its string literals shown as ``'…'``."""
    return _SPACE.sub(" ", _LITERAL.sub("'…'", sql)).strip()[:LABEL_CHARS]


@dataclass(frozen=True)
class Statement:
    at: float  # time.perf_counter() when it started
    seconds: float  # wall time of the execute call
    # DuckDB's profile: CPU time over all threads (None: DuckDB kept no profile of it)
    cpu_seconds: float | None
    # the costliest operator and its share of all operators' time, e.g. "PROJECTION 41 %"
    operator: str | None
    label: str


def _operators(node: dict) -> list[tuple[str, float]]:
    out = [(str(node.get("name") or node.get("type") or "?"), float(node.get("timing") or 0.0))]
    for child in node.get("children") or []:
        out += _operators(child)
    return out


def _costliest(profile: dict) -> str | None:
    ops = [op for root in profile.get("operator") or [] for op in _operators(root)]
    total = sum(t for _, t in ops)
    if not total:
        return None
    name, t = max(ops, key=lambda op: op[1])
    return f"{name} {t / total:.0%}"


class ProfiledConnection:
    """A DuckDB connection that records every statement run through ``execute`` (see the module's doc); anything
    else goes to the connection as it is."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statements: list[Statement] | None = None) -> None:
        self._con = con
        self.statements: list[Statement] = [] if statements is None else statements
        con.execute("SET enable_profiling = 'no_output'")

    def cursor(self) -> ProfiledConnection:
        """A cursor (a connection of its own, e.g. the publish's) whose statements are recorded here too."""
        return ProfiledConnection(self._con.cursor(), self.statements)

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        at = time.perf_counter()
        result = self._con.execute(sql, *args, **kwargs)
        seconds = time.perf_counter() - at
        cpu, operator = None, None
        try:
            profile = json.loads(self._con.get_profiling_information(format="json"))
        except (duckdb.Error, ValueError):
            profile = {}
        query = profile.get("query") or {}
        # DuckDB keeps no profile of some statements (SET, BEGIN, a SELECT), and a script's is its last statement's:
        # a profile is taken only when it is the statement's own.
        if _SPACE.sub(" ", str(query.get("sql", ""))).strip() == _SPACE.sub(" ", sql).strip():
            cpu, operator = float(query.get("cpu_time") or 0.0), _costliest(profile)
        text = label(sql)
        if ";" in sql and (n := len(self._con.extract_statements(sql))) > 1:
            text = f"[{n} statements] {text}"
        self.statements.append(Statement(at, seconds, cpu, operator, text))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def by_stage(statements: list[Statement], start: float, ends: dict[str, float], top: int = 3) -> dict:
    """Per stage, in order (``ends``: the perf_counter() at the end of each stage, the first starting at
    ``start``): its seconds, how many statements ran in it, the seconds they took, and the ``top`` costliest. A
    statement belongs to the stage in which it started; statements run one after the other, so those of a
    stage took at most its seconds (the rest is Python between them)."""
    out: dict[str, dict] = {}
    begin = start
    for name, end in sorted(ends.items(), key=lambda kv: kv[1]):
        mine = [s for s in statements if begin <= s.at < end]
        out[name] = {
            "seconds": end - begin,
            "statements": len(mine),
            "statement_seconds": sum(s.seconds for s in mine),
            "top": [asdict(s) for s in sorted(mine, key=lambda s: s.seconds, reverse=True)[:top]],
        }
        begin = end
    return out


def print_profile(title: str, stages: dict) -> None:
    print(f"  {title}:")
    for name, st in stages.items():
        print(
            f"    {name:12s} {st['seconds']:6.2f} s, {st['statements']} statements taking "
            f"{st['statement_seconds']:.2f} s; the largest:"
        )
        for s in st["top"]:
            cpu = f"CPU {s['cpu_seconds']:.2f} s" if s["cpu_seconds"] is not None else "no profile"
            op = f", {s['operator']}" if s["operator"] else ""
            print(f"      {s['seconds']:6.2f} s ({cpu}{op}) {s['label']}")
