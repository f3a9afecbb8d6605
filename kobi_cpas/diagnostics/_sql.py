"""Small SQL helpers shared by the diagnostics modules."""

from __future__ import annotations

import re
from typing import Any

import duckdb

_NAMED = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Execute with named parameters, passing only those the statement uses (DuckDB rejects extra ones)."""
    used = set(_NAMED.findall(sql))
    return con.execute(sql, {k: v for k, v in params.items() if k in used})
