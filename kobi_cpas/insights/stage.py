"""Pages read from Meta staged in a local file while report jobs run, then appended in one set-based statement.

The pull holds no database connection while it waits on Meta: each page (``{"data": [...]}``, never the paging
links, which carry the token on Meta) becomes one JSON line in a temporary file, and ``write`` loads the whole
file into ``raw.insights_pages`` with a single ``INSERT ... SELECT FROM read_json`` inside the caller's short
transaction. Memory stays flat however many pages a pull reads; the file is deleted on exit.

``opener`` lets the insights functions take either a connection (the caller holds it) or a callable that opens
one (``WarehouseResource.connection``), so they open the work database only around their writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from kobi_cpas.insights.jobs import Piece
from kobi_cpas.warehouse.sql import sql_str

_COLUMNS = (
    "{piece_id: 'VARCHAR', level: 'VARCHAR', family: 'VARCHAR', since: 'DATE', until: 'DATE', "
    "page_no: 'INTEGER', row_count: 'INTEGER', payload: 'VARCHAR'}"
)


class PageStage:
    """A context manager: ``add`` pages (any order), ``write`` them into DuckDB, the file goes on exit."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self._dir = directory
        self._path: Path | None = None
        self._fh: IO[str] | None = None
        self.pages = 0

    def __enter__(self) -> PageStage:
        fd, name = tempfile.mkstemp(prefix="kobi_insights_", suffix=".jsonl", dir=self._dir)
        self._path = Path(name)
        self._fh = os.fdopen(fd, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def add(self, piece: Piece, page_no: int, page: dict[str, Any]) -> None:
        assert self._fh is not None, "PageStage used outside its with block"
        req = piece.request
        rows = page.get("data") or []
        line = {
            "piece_id": piece.piece_id,
            "level": req.level,
            "family": req.family,
            "since": req.since.isoformat(),
            "until": req.until.isoformat(),
            "page_no": page_no,
            "row_count": len(rows),
            # The stored payload is exactly this string, as when pages were inserted one by one.
            "payload": json.dumps({"data": rows}, separators=(",", ":"), ensure_ascii=False),
        }
        self._fh.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.pages += 1

    def write(
        self,
        con: Any,
        *,
        pull_id: str,
        tenant_id: str,
        retailer: str,
        ad_account_id: str,
        pulled_at: datetime,
    ) -> int:
        """Append every staged page to ``raw.insights_pages`` (one statement); returns the pages written."""
        assert self._fh is not None and self._path is not None, "PageStage used outside its with block"
        self._fh.flush()
        if not self.pages:
            return 0
        con.execute(
            f"""
            INSERT INTO raw.insights_pages
            SELECT ?, piece_id, ?, ?, ?, level, family, since, until, page_no, row_count, payload::JSON, ?
            FROM read_json({sql_str(str(self._path))}, format = 'newline_delimited', columns = {_COLUMNS})
            """,
            [pull_id, tenant_id, retailer, ad_account_id, pulled_at],
        )
        return self.pages


def opener(con: Any) -> Callable[[], AbstractContextManager[Any]]:
    """A connection opener: a connection is reused as is (its owner closes it), a callable is called."""
    if hasattr(con, "execute"):
        return lambda: contextlib.nullcontext(con)
    if callable(con):
        return con
    raise TypeError(f"con must be a DuckDB connection or a callable opening one, got {type(con).__name__}")
