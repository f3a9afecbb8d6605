"""Parse CSV, TSV and RSS 2.0 / Atom XML feeds into DuckDB.

Output of :func:`parse_feed`: a table ``<schema>.<table>`` with one VARCHAR column per canonical field of
:mod:`kobi_cpas.feeds.fields` (in ``COLUMNS`` order; fields absent from the file are NULL) plus
``_row_number``.

Row numbers: ``_row_number`` is the 1-based number of the *item* in the file (the first data row after
the header is 1; in XML the first ``<item>``/``<entry>`` is 1). This is the number reported in issues.
Whole-file errors (:class:`FeedFileError`) report *line* numbers instead, counted the way DuckDB does:
the header is line 1, and a quoted value spanning several physical lines counts as one line; so item
``n`` is on line ``n + 1``.

Columns: headers are matched case-insensitively with spaces/hyphens normalised and the ``g:`` prefix
stripped (:func:`fields.normalise_header`). Columns that are not Meta fields are kept out of the table and
reported once (``unknown_columns``; ingest turns them into one INFO issue each).

CSV/TSV go through DuckDB's ``read_csv`` with every dialect option explicit (no sniffing): RFC 4180
quotes, strict mode, all VARCHAR, ``max_line_size`` = Meta's 5 MB per-line limit. DuckDB measures that
limit in bytes, which is never less than the character count, so a line DuckDB accepts is always within
Meta's 5,242,880-character limit (multi-byte text near the limit is rejected slightly early).

XML items come from :mod:`kobi_cpas.feeds.xml_items` (a bounded-memory stream parse), spooled to a temporary CSV
that takes the same ``read_csv`` path.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from kobi_cpas.feeds import plan
from kobi_cpas.feeds.errors import FeedFileError
from kobi_cpas.feeds.fields import (
    COLUMNS,
    MAX_LINE_CHARS,
    REQUIRED_COLUMNS,
    canonical_column,
)
from kobi_cpas.feeds.plan import (  # noqa: F401 (is_streaming_plan: part of this module's API)
    insertion_order_preserved,
    is_streaming_plan,
)
from kobi_cpas.feeds.sniff import check_kind
from kobi_cpas.feeds.xml_items import iter_xml_items
from kobi_cpas.warehouse.sql import sql_str

FeedFormat = Literal["csv", "tsv", "xml"]
FORMAT_ALIASES: dict[str, FeedFormat] = {
    "csv": "csv",
    "tsv": "tsv",
    "tab": "tsv",
    "xml": "xml",
    "rss": "xml",
    "atom": "xml",
}
DELIMITERS: dict[str, str] = {"csv": ",", "tsv": "\t"}

_HEADER_MAX_BYTES = 1 << 20
_XML_FLUSH_ROWS = 10_000
# DuckDB sizes its read buffers at 16x max_line_size by default: 80 MB for Meta's 5 MB line limit, which
# leaves a 2-core reader few buffers to share and made parsing 1M items ~30 % slower than with 16 MB
# (measured with `make bench`). A buffer only has to hold the longest line, so 16 MB keeps the limit.
_READ_BUFFER_BYTES = 16 * 1024 * 1024
_READER_LIMITS = f"max_line_size={MAX_LINE_CHARS}, buffer_size={_READ_BUFFER_BYTES}"
# The delimiter that reads a line whole: four control characters no feed is expected to hold (DuckDB takes up to
# four bytes). A line that does hold them fails that read, and the ingest does without it.
LINE_DELIMITER = "\x1f\x1e\x1d\x1c"


@dataclass
class FeedSource:
    """A feed file opened for reading: ``select_sql`` yields the canonical VARCHAR columns in file order.

    ``cleanup()`` removes temporary files (XML spool); call it once the SELECT has been consumed.
    """

    path: Path
    fmt: FeedFormat
    select_sql: str
    columns_present: tuple[str, ...]
    unknown_columns: tuple[str, ...]
    # A delimited file also gives its lines as they are (column ``l``: every non-blank line after the header, in
    # file order), its header line as it is (no line end, no byte order mark) and the SELECT of ``select_sql``
    # over another file that starts with that header.
    lines_sql: str | None = field(default=None, kw_only=True)
    header_line: bytes | None = field(default=None, kw_only=True)
    select_at: Callable[[Path], str] | None = field(default=None, kw_only=True)
    _temp_files: list[Path] = field(default_factory=list, kw_only=True)

    def cleanup(self) -> None:
        for p in self._temp_files:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self._temp_files.clear()


@dataclass(frozen=True)
class ParseResult:
    table: str
    row_count: int
    columns_present: tuple[str, ...]
    unknown_columns: tuple[str, ...]


def normalise_format(fmt: str) -> FeedFormat:
    try:
        return FORMAT_ALIASES[fmt.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown feed format {fmt!r}: expected one of {sorted(FORMAT_ALIASES)}") from None


def sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------------
# Opening a source


def open_feed_source(
    path: str | Path,
    fmt: str,
    *,
    required_columns: tuple[str, ...] = REQUIRED_COLUMNS,
    tmp_dir: str | Path | None = None,
) -> FeedSource:
    """Check the file's header (or scan the XML) and return the SELECT that reads it.

    Raises :class:`FeedFileError` for an empty file, a header that is not UTF-8, a wrong delimiter,
    duplicate or missing required columns, or malformed XML. Problems further down a CSV/TSV file
    (encoding, line length, column count) surface when the SELECT runs: execute it through
    :func:`execute_reading` to get them as :class:`FeedFileError` too.
    """
    path = Path(path)
    ffmt = normalise_format(fmt)
    if not path.is_file():
        raise FeedFileError(path, "file not found")
    check_kind(path, ffmt)
    if ffmt == "xml":
        return _open_xml(path, required_columns, tmp_dir)
    return _open_delimited(path, ffmt, required_columns)


def _open_delimited(path: Path, fmt: FeedFormat, required: tuple[str, ...]) -> FeedSource:
    delim = DELIMITERS[fmt]
    header_line, header = _read_header(path, delim)
    if len(header) == 1:
        for other, label in (("\t", "tab"), (",", "comma"), (";", "semicolon"), ("|", "pipe")):
            if other != delim and other in header[0]:
                raise FeedFileError(
                    path,
                    f"declared as {fmt.upper()} ({'tab' if delim == chr(9) else 'comma'}-separated) but the "
                    f"header is one single column containing {label} characters: the file looks "
                    f"{label}-separated. Declare the right format or re-export the file.",
                    line_number=1,
                )
    mapping: list[tuple[int, str]] = []
    unknown: list[str] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(header):
        canon = canonical_column(raw)
        if canon is None:
            unknown.append(raw.strip() or f"<blank column {i + 1}>")
            continue
        if canon in seen:
            raise FeedFileError(
                path,
                f"columns {seen[canon]!r} and {raw!r} both map to the field {canon!r}; keep only one",
                line_number=1,
                columns=(canon,),
            )
        seen[canon] = raw
        mapping.append((i, canon))
    _check_required(path, [c for _, c in mapping], required)
    columns_sql = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header))) + "}"
    by_canon = {c: i for i, c in mapping}
    select_list = ", ".join(
        (f"c{by_canon[c]} AS {c}" if c in by_canon else f"NULL::VARCHAR AS {c}") for c in COLUMNS
    )

    def select_at(at: Path) -> str:
        return (
            f"SELECT {select_list} FROM read_csv({sql_str(str(at))}, auto_detect=false, header=true, "
            f"columns={columns_sql}, delim={sql_str(delim)}, quote='\"', escape='\"', "
            f"strict_mode=true, ignore_errors=false, null_padding=false, {_READER_LIMITS}, encoding='utf-8')"
        )

    # No quoting: each physical line whole (a blank line reads as NULL; the SELECT above skips it).
    lines_sql = (
        f"SELECT l FROM read_csv({sql_str(str(path))}, auto_detect=false, header=true, columns={{'l': 'VARCHAR'}}, "
        f"delim={sql_str(LINE_DELIMITER)}, quote='', escape='', strict_mode=true, {_READER_LIMITS}, "
        "encoding='utf-8') WHERE l IS NOT NULL"
    )
    return FeedSource(
        path,
        fmt,
        select_at(path),
        tuple(c for c in COLUMNS if c in by_canon),
        tuple(unknown),
        lines_sql=lines_sql,
        header_line=header_line,
        select_at=select_at,
    )


def _check_required(path: Path, present: list[str], required: tuple[str, ...]) -> None:
    missing = tuple(c for c in required if c not in present)
    if missing:
        raise FeedFileError(
            path,
            f"missing required column(s): {', '.join(missing)} (found: {', '.join(present) or 'none'})",
            columns=missing,
        )


def _read_header(path: Path, delim: str) -> tuple[bytes, list[str]]:
    """The first record of a delimited file as it is (without its line end and a UTF-8 byte order mark) and its
    names, decoded as UTF-8."""
    with path.open("rb") as f:
        raw = f.readline(_HEADER_MAX_BYTES)
        # A quoted header name may span lines: read on until the quotes balance.
        while raw.count(b'"') % 2 == 1 and len(raw) < _HEADER_MAX_BYTES:
            more = f.readline(_HEADER_MAX_BYTES)
            if not more:
                break
            raw += more
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if not raw.strip():
        raise FeedFileError(path, "empty file (no header line)", line_number=1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FeedFileError(
            path,
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} on line 1 (the "
            "header). Re-export the feed as UTF-8.",
            line_number=1,
            byte_offset=exc.start,
        ) from None
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delim, quotechar='"', doublequote=True))
    except csv.Error as exc:
        raise FeedFileError(path, f"cannot read the header line: {exc}", line_number=1) from None
    if not rows or not any(h.strip() for h in rows[0]):
        raise FeedFileError(path, "empty file (blank header line)", line_number=1)
    return raw.rstrip(b"\r\n"), rows[0]


# --------------------------------------------------------------------------------------------------
# Running the SELECT and translating DuckDB's CSV errors

_LINE_RE = re.compile(r"CSV Error on Line: (\d+)")
_COLS_RE = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_SIZE_RE = re.compile(r"Actual Size:\s*(\d+)")


def execute_reading(con: duckdb.DuckDBPyConnection, sql: str, source: FeedSource) -> None:
    """Run a statement that reads ``source``; DuckDB CSV errors become :class:`FeedFileError`."""
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise translate_duckdb_error(exc, source) from None


def create_table_streaming(
    con: duckdb.DuckDBPyConnection, target: str, select_sql: str, source: FeedSource
) -> bool:
    """:func:`kobi_cpas.feeds.plan.create_table_streaming` reading ``source``: its CSV errors become
    :class:`FeedFileError` naming the file, line and item."""
    return plan.create_table_streaming(
        con, target, select_sql, lambda exc: translate_duckdb_error(exc, source)
    )


def translate_duckdb_error(exc: Exception, source: FeedSource) -> Exception:
    msg = str(exc)
    if "CSV Error" not in msg and "Invalid unicode" not in msg and "read_csv" not in msg:
        return exc
    path = source.path
    m = _LINE_RE.search(msg)
    line = int(m.group(1)) if m else None
    where = f"line {line} (item {line - 1})" if line and line > 1 else (f"line {line}" if line else "a line")
    if "Invalid unicode" in msg or "not utf-8" in msg.lower():
        offset, phys_line, byte = find_invalid_utf8(path)
        detail = (
            f"byte 0x{byte:02x} at byte offset {offset} (physical line {phys_line})"
            if offset is not None and byte is not None
            else "an invalid byte sequence"
        )
        return FeedFileError(
            path,
            f"not valid UTF-8: {detail}, in {where}. Re-export the feed as UTF-8.",
            line_number=line,
            byte_offset=offset,
        )
    if "Maximum line size" in msg:
        s = _SIZE_RE.search(msg)
        size = f" ({int(s.group(1)):,} bytes)" if s else ""
        return FeedFileError(
            path,
            f"{where} is longer than Meta's per-line limit of 5 MB ({MAX_LINE_CHARS:,} characters){size}. "
            "Shorten the values of that item (description max 5,000 characters).",
            line_number=line,
        )
    c = _COLS_RE.search(msg)
    if c:
        expected, found = int(c.group(1)), int(c.group(2))
        delim_name = "tabs" if source.fmt == "tsv" else "commas"
        return FeedFileError(
            path,
            f"{where} has {found} columns but the header has {expected}: check the delimiter ({delim_name} "
            f"for {source.fmt.upper()}) and quote values that contain it.",
            line_number=line,
        )
    if "unterminated quote" in msg.lower():
        return FeedFileError(
            path,
            f'{where} has a value with an unterminated quote ("). Escape quotes inside values as "".',
            line_number=line,
        )
    first = msg.splitlines()[0] if msg else type(exc).__name__
    return FeedFileError(
        path, f"cannot be read as {source.fmt.upper()} at {where}: {first}", line_number=line
    )


def find_invalid_utf8(path: Path, chunk_size: int = 1 << 20) -> tuple[int | None, int | None, int | None]:
    """(byte offset, 1-based physical line, byte value) of the first invalid UTF-8 sequence, streaming."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    lines = 1
    with path.open("rb") as f:
        while True:
            chunk = f.read(chunk_size)
            final = not chunk
            try:
                decoder.decode(chunk, final)
            except UnicodeDecodeError:
                # Locate precisely: re-decode this chunk (plus the decoder's pending bytes) alone.
                pending, _ = decoder.getstate()
                data = pending + chunk
                base = offset - len(pending)
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as e2:
                    pos = e2.start
                    return base + pos, lines + data[:pos].count(b"\n"), data[pos]
                return base, lines, data[0] if data else None
            if final:
                return None, None, None
            lines += chunk.count(b"\n")
            offset += len(chunk)


def _open_xml(path: Path, required: tuple[str, ...], tmp_dir: str | Path | None) -> FeedSource:
    if path.stat().st_size == 0:
        raise FeedFileError(path, "empty file", line_number=1)
    fd, tmp_name = tempfile.mkstemp(prefix="feed_xml_", suffix=".csv", dir=tmp_dir)
    tmp = Path(tmp_name)
    seen: set[str] = set()
    unknown: set[str] = set()
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, delimiter=",", quotechar='"', lineterminator="\n")
            writer.writerow(COLUMNS)
            buf: list[list[str]] = []
            for row, unk in iter_xml_items(path):
                n += 1
                seen.update(row)
                unknown |= unk
                buf.append([row.get(c, "") for c in COLUMNS])
                if len(buf) >= _XML_FLUSH_ROWS:
                    writer.writerows(buf)
                    buf.clear()
            writer.writerows(buf)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        if n == 0:
            raise FeedFileError(path, "no <item> or <entry> elements found (empty feed or not RSS/Atom)")
        _check_required(path, [c for c in COLUMNS if c in seen], required)
    except FeedFileError:
        tmp.unlink(missing_ok=True)
        raise
    cols_sql = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in COLUMNS) + "}"
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM read_csv({sql_str(str(tmp))}, auto_detect=false, header=true, "
        f"columns={cols_sql}, delim=',', quote='\"', escape='\"', strict_mode=true, ignore_errors=false, "
        f"{_READER_LIMITS}, encoding='utf-8')"
    )
    present = tuple(c for c in COLUMNS if c in seen)
    return FeedSource(path, "xml", sql, present, tuple(sorted(unknown)), _temp_files=[tmp])


# --------------------------------------------------------------------------------------------------
# Public: parse into a table


def parse_feed(
    con: duckdb.DuckDBPyConnection,
    path: str | Path,
    fmt: str,
    *,
    schema: str,
    table: str,
    required_columns: tuple[str, ...] = REQUIRED_COLUMNS,
    allow_empty: bool = False,
    tmp_dir: str | Path | None = None,
) -> ParseResult:
    """Parse ``path`` into ``<schema>.<table>`` (replaced): canonical VARCHAR columns + ``_row_number``.

    A file with a header but no items raises :class:`FeedFileError` unless ``allow_empty`` (an empty
    replace upload would delete the whole catalog on Meta's side).
    """
    source = open_feed_source(path, fmt, required_columns=required_columns, tmp_dir=tmp_dir)
    target = f"{sql_ident(schema)}.{sql_ident(table)}"
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_ident(schema)}")
        select = f"SELECT *, NULL::BIGINT AS _row_number FROM ({source.select_sql})"
        with insertion_order_preserved(con):
            if create_table_streaming(con, target, select, source):
                # Rows were inserted in file order: rowid + 1 is the item number (and much cheaper
                # than row_number() OVER (), which runs single-threaded).
                con.execute(f"UPDATE {target} SET _row_number = rowid + 1")
            else:  # pragma: no cover - only if a DuckDB version plans the plain SELECT differently
                execute_reading(
                    con,
                    f"CREATE OR REPLACE TABLE {target} AS SELECT *, row_number() OVER () AS _row_number "
                    f"FROM ({source.select_sql})",
                    source,
                )
        (count,) = con.execute(f"SELECT count(*) FROM {target}").fetchone()  # type: ignore[misc]
    finally:
        source.cleanup()
    if count == 0 and not allow_empty:
        con.execute(f"DROP TABLE IF EXISTS {target}")
        raise FeedFileError(path, "the file has a header but no items")
    return ParseResult(f"{schema}.{table}", int(count), source.columns_present, source.unknown_columns)
