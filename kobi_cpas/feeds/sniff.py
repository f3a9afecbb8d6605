"""Tell what a feed file plainly is before parsing it, so the message names the real problem (binary data, UTF-16,
XML given to a CSV/TSV tenant or the reverse) instead of a misleading delimiter or missing-columns message."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from kobi_cpas.feeds.errors import FeedFileError

_SNIFF_BYTES = 8192
_MAGIC: dict[bytes, str] = {
    b"\x1f\x8b": "gzip-compressed data",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}
# Bytes that never occur in a text feed (tab, newlines, form feed and escape aside).
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13, 27}
_XML_START_RE = re.compile(rb"<(\?xml|!DOCTYPE|!--|rss\b|feed\b|channel\b|[A-Za-z_][\w.:-]*[\s>/])", re.I)


def check_kind(path: Path, fmt: str) -> None:
    """Name what the file is when it is plainly not the declared format: binary data, UTF-16 text, or XML
    declared as CSV/TSV (and the reverse), instead of a misleading delimiter or column message later."""
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FeedFileError(path, "the file is encoded as UTF-16; re-export the feed as UTF-8", line_number=1)
    body = head.removeprefix(codecs.BOM_UTF8)
    what = next((name for magic, name in _MAGIC.items() if body.startswith(magic)), None)
    if what is None and body:
        controls = sum(1 for b in body if b in _CONTROL)
        if b"\x00" in body or controls > len(body) * 0.05:
            what = "binary data"
    if what is not None:
        raise FeedFileError(
            path,
            f"this looks like {what}, not a CSV/TSV/XML feed: point feed.source at the uncompressed feed file",
            line_number=1,
        )
    text = body.lstrip()
    looks_xml = bool(_XML_START_RE.match(text))
    if fmt != "xml" and looks_xml:
        raise FeedFileError(
            path,
            f"this file looks like XML but the tenant's feed.format is {fmt}: set feed.format: xml in the "
            f"registry, or export the feed as {fmt.upper()}",
            line_number=1,
        )
    if fmt == "xml" and text and not text.startswith(b"<"):
        first = text.split(b"\n", 1)[0]
        guess = "TSV" if b"\t" in first else "CSV" if b"," in first else "plain text"
        raise FeedFileError(
            path,
            f"this file looks like {guess}, not XML, but the tenant's feed.format is xml: set feed.format to "
            f"{'tsv' if guess == 'TSV' else 'csv'} in the registry, or export the feed as RSS/Atom XML",
            line_number=1,
        )
