"""RSS 2.0 and Atom feed items as rows of Meta fields (Google's ``g:`` namespace first), stream-parsed with
``xml.etree.ElementTree.iterparse``: each item's elements are cleared once it is read, so memory stays bounded.
:func:`kobi_cpas.feeds.parser.open_feed_source` spools them to a CSV that takes the delimited files' path."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from kobi_cpas.feeds.errors import FeedFileError
from kobi_cpas.feeds.fields import canonical_column

G_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"

# Atom element names with a Meta meaning of their own.
_ATOM_NAMES = {"summary": "description", "content": "description"}
# Standard RSS/Atom item elements that are not product data (an Atom <id> is the entry's URI, not the
# retailer id: that one comes from <g:id>). Skipped silently rather than reported as unknown.
_FEED_STRUCTURE_ELEMENTS: dict[str | None, frozenset[str]] = {
    ATOM_NS: frozenset(
        {"id", "updated", "published", "author", "contributor", "category", "rights", "source"}
    ),
    None: frozenset({"guid", "pubDate", "author", "category", "comments", "enclosure", "source"}),
}


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _element_value(elem: ET.Element) -> str:
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    # Nested Google attributes, e.g. <g:shipping><g:country>TR</g:country>...: Meta's flat text form is
    # country:region:service:price for shipping; other nested fields join their parts the same way.
    parts = {_local(c.tag)[1]: (c.text or "").strip() for c in children}
    if _local(elem.tag)[1] == "shipping":
        return ":".join(parts.get(k, "") for k in ("country", "region", "service", "price"))
    return ":".join(v for v in parts.values())


_SKIP = "\x00skip"  # marker: a known RSS/Atom structure element, ignored silently
_ITEM_NAMES = ("item", "entry")


def _child_info(tag: str) -> tuple[str | None, str, str | None]:
    """(namespace, local name, canonical field | None | _SKIP) of an item's child element tag."""
    ns, name = _local(tag)
    if ns == G_NS:
        return ns, name, canonical_column(name)
    if ns is None or ns == ATOM_NS:
        if name in _FEED_STRUCTURE_ELEMENTS[ns]:
            return ns, name, _SKIP
        return ns, name, _ATOM_NAMES.get(name) or canonical_column(name)
    return ns, name, None


def iter_xml_items(path: Path) -> Iterator[tuple[dict[str, str], set[str]]]:
    """Yield (canonical field -> value, unknown element names) per <item>/<entry>, streaming.

    Each finished item is cleared and detached from its parent, so memory does not grow with the
    number of items.
    """
    stack: list[ET.Element] = []
    parent: ET.Element | None = None
    item_tag: str | None = None
    infos: dict[str, tuple[str | None, str, str | None]] = {}  # per-tag cache: ~25 tags, millions of elements
    try:
        for event, elem in ET.iterparse(str(path), events=("start", "end")):
            if parent is None:
                # Until the first item is seen, track depth to find the element holding the items.
                if event == "start":
                    stack.append(elem)
                    if len(stack) > 1 and _local(elem.tag)[1] in _ITEM_NAMES:
                        parent, item_tag = stack[-2], elem.tag
                        stack.clear()
                else:
                    stack.pop()
                continue
            if event == "start" or elem.tag != item_tag:
                continue
            g_values: dict[str, list[str]] = {}
            plain_values: dict[str, list[str]] = {}
            unknown: set[str] = set()
            for child in elem:
                info = infos.get(child.tag)
                if info is None:
                    info = infos[child.tag] = _child_info(child.tag)
                ns, name, canon = info
                if canon == _SKIP:
                    continue
                if canon is None:
                    unknown.add(f"g:{name}" if ns == G_NS else name)
                    continue
                if canon == "link" and ns != G_NS and child.get("href") is not None:
                    if child.get("rel", "alternate") != "alternate":
                        continue
                    value = child.get("href", "").strip()
                else:
                    value = _element_value(child)
                if value:
                    (g_values if ns == G_NS else plain_values).setdefault(canon, []).append(value)
            # g: elements win over the plain RSS/Atom element of the same meaning (<g:title> vs
            # <title>); repeated elements (additional_image_link, shipping) are joined with commas.
            row = {c: ",".join(v) for c, v in plain_values.items()}
            row.update({c: ",".join(v) for c, v in g_values.items()})
            yield row, unknown
            elem.clear()
            with contextlib.suppress(ValueError):
                parent.remove(elem)
    except ET.ParseError as exc:
        line, col = exc.position
        raise FeedFileError(
            path,
            f"malformed XML at line {line}, column {col}: {exc}"
            " (an invalid byte here usually means the file is not UTF-8 or not the declared encoding)",
            line_number=line,
        ) from None
