"""Feed files: decoding and parsing CSV/TSV feeds into rows, and fetching a feed from a URL.

``row_number`` is 1 for the first data record after the header (records, not physical lines: a quoted
multi-line description is one record)."""

from __future__ import annotations

import csv
import io
import itertools
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kobi_cpas.feeds.fields import canonical_column
from meta_sandbox.catalog_model.issues import Issue, file_issue


@dataclass(slots=True)  # a million of them for a big upload
class ParsedRow:
    row_number: int
    fields: dict[str, str]  # canonical column -> trimmed value ("" when blank)
    malformed: bool = False


@dataclass
class ParsedFeed:
    header: list[str] = field(default_factory=list)
    columns: list[str | None] = field(default_factory=list)  # canonical name per column (None: unknown)
    rows: list[ParsedRow] = field(default_factory=list)
    file_issues: list[Issue] = field(default_factory=list)

    def column_number(self, name: str | None) -> int | None:
        """1-based column of a canonical field in the file, as Meta's column_number."""
        if name is None:
            return None
        try:
            return self.columns.index(name) + 1
        except ValueError:
            return None


def _text_lines(stream: BinaryIO) -> Iterator[str]:
    """The lines of the seekable ``stream`` (endings kept, split as ``newline=""`` does), decoded while they are
    read: a big upload is never held as bytes and text at once. UTF-16 needs its byte order mark; anything else
    is read as UTF-8 (a UTF-8 byte order mark is dropped)."""
    head = stream.read(2)
    stream.seek(0)
    encoding = "utf-16" if head in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    return io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")


def _encoding_issue() -> Issue:
    return file_issue(
        "INVALID_FILE_ENCODING",
        "File Encoding Not Supported",
        "The file couldn't be read. Save it as UTF-8 (or UTF-16 with a byte order mark) and upload it again.",
    )


def parse_feed(data: bytes | BinaryIO) -> ParsedFeed:
    """Parse a CSV or TSV feed (delimiter sniffed from the header line), given as bytes or as a seekable binary
    file, which is read as it is parsed. Never raises: problems with the file as a whole become
    ``file_issues`` (and then nothing of the upload is applied)."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    if not stream.seekable():
        stream = io.BytesIO(stream.read())
    lines = _text_lines(stream)
    try:
        parsed = _parse_lines(lines)
        for _rest in lines:  # a file refused early is still read to its end: a bad byte anywhere refuses it
            pass
    except UnicodeError:
        return ParsedFeed(file_issues=[_encoding_issue()])  # nothing of the file is used
    return parsed


def _parse_lines(lines: Iterator[str]) -> ParsedFeed:
    parsed = ParsedFeed()
    # Read ahead to the first non-blank line (a file of nothing but whitespace has no items: a replace upload
    # then deletes every item of the feed) and to the first "\n", up to which the delimiter is sniffed.
    ahead: list[str] = []
    blank = True
    for line in lines:
        ahead.append(line)
        blank = blank and not line.strip()
        if not blank and line.endswith("\n"):
            break
    if blank:
        return parsed
    first_line = "".join(ahead).split("\n", 1)[0]
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.reader(itertools.chain(ahead, lines), delimiter=delimiter)
    try:
        header = next(reader)
        parsed.header = header
        seen: set[str] = set()
        for raw in header:
            name = canonical_column(raw)
            parsed.columns.append(name if name and name not in seen else None)
            if name:
                seen.add(name)
        if "id" not in parsed.columns:
            parsed.file_issues.append(
                file_issue(
                    "MISSING_ID_COLUMN",
                    "Missing Required Column",
                    "The file has no id column. Check that the first line is a header row that names each "
                    "column, including id.",
                )
            )
            return parsed
        row_number = 0
        width = len(parsed.columns)
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue
            row_number += 1
            row_fields = {
                name: cell.strip()
                for name, cell in zip(parsed.columns, record, strict=False)
                if name is not None
            }
            for name in parsed.columns:
                if name is not None:
                    row_fields.setdefault(name, "")
            malformed = len(record) > width and any(c.strip() for c in record[width:])
            parsed.rows.append(ParsedRow(row_number, row_fields, malformed))
    except csv.Error as exc:
        parsed.rows = []
        parsed.file_issues.append(
            file_issue("MALFORMED_FILE", "File Couldn't Be Read", f"The file isn't valid CSV or TSV: {exc}.")
        )
    return parsed


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def fetch_feed_url(url: str) -> tuple[bytes | None, Issue | None]:
    """Fetch a feed for ``POST /{feed_id}/uploads?url=``. Only loopback http(s) and file:// are allowed
    (the caller checks the host first); a failed fetch is an upload error, as at Meta."""
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.scheme == "file":
            return Path(urllib.parse.unquote(parts.path)).read_bytes(), None
        with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only, see routes_feeds
            return resp.read(), None
    except (OSError, ValueError) as exc:
        return None, file_issue(
            "FETCH_FAILED",
            "Feed File Couldn't Be Fetched",
            f"We couldn't download the file at the feed URL ({type(exc).__name__}). Check that the URL is "
            "reachable and try again.",
        )
