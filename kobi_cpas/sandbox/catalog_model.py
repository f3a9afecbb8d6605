"""The sandbox's model of a Meta catalog's items: feed parsing, Meta-like validation, applying uploads and
Batch API requests, and the item problems diagnostics report.

The field rules (required fields, length limits, allowed values, group-consistent fields) come from
``kobi_cpas.feeds.fields``; the *formats* (price, URL, dates) are checked here with Meta's wording and
independently of the project's own feed validator, so a bug there cannot hide behind the same bug here.

Conventions (mirroring Meta's):
- Feed ``row_number`` is 1 for the first data record after the header (records, not physical lines: a quoted
  multi-line description is one record). Batch ``line`` is the 0-based index of the request in ``requests``.
- Item fields are stored as received, trimmed; a blank value removes the field. ``Catalog.items`` maps
  retailer_id -> fields; ``World.product_items`` holds the Graph node (product_item_id) of each item.
- A replace upload (``update_only`` false) on a feed with ``deletion_enabled`` deletes the items *of that
  feed* (the feed whose upload last wrote them) that are not valid rows of the file; an empty replace upload
  therefore deletes all of them. Items only ever written by the Batch API belong to no feed.
- Uploads complete after ``upload_pending_polls`` status polls, or by world clock when
  ``upload_processing_seconds`` > 0; batches finish ``batch_processing_seconds`` after the call. Work is
  applied in the order it completes; ``settle`` applies whatever the world clock has made due.
- Item problems (diagnostics) are a pure function of (seed, catalog, retailer id, item fields, world-clock
  hour) plus admin overrides, so two reads in the same hour agree and problems come and go over hours.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kobi_cpas.feeds.fields import (
    FIELDS,
    FIELDS_BY_NAME,
    GROUP_REJECT_COLUMNS,
    ISO_4217_CURRENCIES,
    canonical_column,
)
from kobi_cpas.sandbox.reference import load_fixture
from kobi_cpas.sandbox.state import (
    Catalog,
    FeedUpload,
    ItemsBatch,
    ProductFeed,
    ProductItem,
    World,
)

MAX_BATCH_REQUESTS = 5000
BATCH_METHODS = ("CREATE", "UPDATE", "DELETE")
PRIORITIES = ("HIGH", "MEDIUM", "LOW")


def meta_time(dt: datetime | None) -> str | None:
    """Meta's timestamp format: ``2024-05-01T10:00:00+0000``."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# ---------------------------------------------------------------------------------------------------------
# Ingestion issues (feed upload errors and Batch API messages)


@dataclass(frozen=True)
class Issue:
    """One problem with one item. Feed errors show ``summary``/``description``; Batch API errors show
    ``message`` ("<title>: <description>", as Meta's check_batch_request_status does)."""

    error_type: str
    severity: str  # "fatal" | "warning"
    title: str
    description: str
    field: str | None = None
    priority: str = "HIGH"

    @property
    def summary(self) -> str:
        return f"{self.title}: {self.field}." if self.field else f"{self.title}."

    @property
    def message(self) -> str:
        return f"{self.title}: {self.description}"

    @property
    def fatal(self) -> bool:
        return self.severity == "fatal"


AVAILABILITY_MISSING_DESCRIPTION = (
    "Products need to have availability listed to run in ads. Include the current availability for each "
    "product in your data feed file and upload it again. You can only add the supported values "
    '"in stock", "out of stock", "preorder", "available for order", "discontinued", "pending" in US English '
    'under the "availability" column.'
)
URL_DESCRIPTION = (
    "The provided URL is formatted incorrectly. If multiple links are included in one field, separate them "
    "using a comma. Specifying username and password in the URL is not supported."
)


def missing_required(name: str) -> Issue:
    description = (
        AVAILABILITY_MISSING_DESCRIPTION
        if name == "availability"
        else f"Products need to have {name} listed to run in ads. Include the {name} for each product in "
        "your data feed file and upload it again."
    )
    return Issue("MISSING_REQUIRED_FIELD", "fatal", "A required field is missing", description, name)


def invalid_url(name: str) -> Issue:
    return Issue("INVALID_URL", "fatal", "URL Incorrectly Formatted", URL_DESCRIPTION, name)


def invalid_price(name: str) -> Issue:
    return Issue(
        "INVALID_PRICE",
        "fatal",
        "Invalid Price Format",
        f"The {name} must be a number followed by a space and a supported ISO 4217 currency code, for "
        'example "19.99 USD". Don\'t use currency symbols or thousands separators.',
        name,
    )


def invalid_value(name: str, allowed: Iterable[str]) -> Issue:
    values = ", ".join(f'"{v}"' for v in allowed)
    return Issue(
        f"INVALID_{name.upper()}",
        "fatal",
        "Invalid Value for Property",
        f"The value of {name} isn't supported. You can only add the supported values {values} in US English "
        f'under the "{name}" column.',
        name,
    )


def too_long(name: str, limit: int) -> Issue:
    return Issue(
        f"TOO_LONG_{name.upper()}",
        "fatal",
        "Text Too Long",
        f"The {name} of this item is longer than {limit} characters. Shorten it and upload it again.",
        name,
    )


def invalid_quantity(name: str) -> Issue:
    return Issue(
        "INVALID_QUANTITY",
        "fatal",
        "Invalid Value for Property",
        f"The {name} must be a whole number of 0 or more.",
        name,
    )


def invalid_date_range(name: str) -> Issue:
    return Issue(
        "INVALID_DATE_RANGE",
        "fatal",
        "Invalid Date Range",
        f"The {name} must be two ISO 8601 dates separated by a slash, for example "
        '"2025-06-01T00:00+03:00/2025-06-30T23:59+03:00".',
        name,
    )


def group_mismatch(name: str) -> Issue:
    return Issue(
        "GROUP_MISMATCH",
        "fatal",
        "Group Mismatch for Property",
        f"Property {name} must have the same value for all items in the same group.",
        name,
    )


DUPLICATE_ID = Issue(
    "DUPLICATE_RETAILER_ID",
    "fatal",
    "Duplicate ID",
    "Another item in this file uses the same id. Only the first item with this id was uploaded.",
    "id",
)
MALFORMED_ROW = Issue(
    "MALFORMED_ROW",
    "fatal",
    "Malformed Row",
    "This row has more values than the header has columns. Check the quoting of values that contain the "
    "delimiter.",
)
MISSING_CATEGORY = Issue(
    "MISSING_GOOGLE_PRODUCT_CATEGORY",
    "warning",
    "These fields have missing information",
    "Make items easier to discover by providing google_product_category information.",
    "google_product_category",
    priority="LOW",
)
SALE_PRICE_NOT_LOWER = Issue(
    "INVALID_SALE_PRICE",
    "warning",
    "Sale Price Not Lower Than Price",
    "The sale_price must be lower than the price and in the same currency; it is ignored otherwise.",
    "sale_price",
    priority="MEDIUM",
)


def file_issue(error_type: str, title: str, description: str) -> Issue:
    return Issue(error_type, "fatal", title, description)


# ---------------------------------------------------------------------------------------------------------
# Validation

_PRICE_RE = re.compile(r"(\d+(?:\.\d{1,2})?) ([A-Za-z]{3})")
_QUANTITY_RE = re.compile(r"\d{1,10}")
_DATE_RANGE_RE = re.compile(r"\d{4}-\d{2}-\d{2}[^/]*/\d{4}-\d{2}-\d{2}[^/]*")


def parse_price(value: str) -> tuple[float, str] | None:
    m = _PRICE_RE.fullmatch(value.strip())
    if not m or m.group(2).upper() not in ISO_4217_CURRENCIES:
        return None
    return float(m.group(1)), m.group(2).upper()


def valid_url(value: str) -> bool:
    if not value or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


def _url_list_ok(value: str) -> bool:
    return all(valid_url(part.strip()) for part in value.split(","))


def validate_fields(fields: Mapping[str, str], *, full: bool) -> list[Issue]:
    """Issues of one item. ``full``: the item is complete (a feed row, a created item), so absent required
    fields are missing; otherwise only the fields given are checked (a blank required field is missing)."""
    issues: list[Issue] = []
    for spec in FIELDS:
        value = fields.get(spec.name)
        if value is None or value == "":
            if spec.required and (full or spec.name in fields):
                issues.append(missing_required(spec.name))
            continue
        if spec.kind == "enum" and spec.allowed_values and value.lower() not in spec.allowed_values:
            issues.append(invalid_value(spec.name, spec.allowed_values))
        elif spec.kind == "price" and parse_price(value) is None:
            issues.append(invalid_price(spec.name))
        elif (spec.kind == "url" and not valid_url(value)) or (
            spec.kind == "url_list" and not _url_list_ok(value)
        ):
            issues.append(invalid_url(spec.name))
        elif spec.kind == "int" and not _QUANTITY_RE.fullmatch(value):
            issues.append(invalid_quantity(spec.name))
        elif spec.kind == "date_range" and not _DATE_RANGE_RE.fullmatch(value):
            issues.append(invalid_date_range(spec.name))
        if spec.max_length is not None and len(value) > spec.max_length:
            issues.append(too_long(spec.name, spec.max_length))
    if full and not fields.get("google_product_category") and not fields.get("fb_product_category"):
        issues.append(MISSING_CATEGORY)
    price, sale = parse_price(fields.get("price") or ""), parse_price(fields.get("sale_price") or "")
    if price and sale and (sale[1] != price[1] or sale[0] >= price[0]):
        issues.append(SALE_PRICE_NOT_LOWER)
    return issues


# ---------------------------------------------------------------------------------------------------------
# Feed files


@dataclass
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


def _decode(data: bytes) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def parse_feed(data: bytes) -> ParsedFeed:
    """Parse a CSV or TSV feed (delimiter sniffed from the header line). Never raises: problems with the
    file as a whole become ``file_issues`` (and then nothing of the upload is applied)."""
    parsed = ParsedFeed()
    text = _decode(data)
    if text is None:
        parsed.file_issues.append(
            file_issue(
                "INVALID_FILE_ENCODING",
                "File Encoding Not Supported",
                "The file couldn't be read. Save it as UTF-8 (or UTF-16 with a byte order mark) and upload it "
                "again.",
            )
        )
        return parsed
    if not text.strip():
        return parsed  # an empty file: no items (a replace upload then deletes every item of the feed)
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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


# ---------------------------------------------------------------------------------------------------------
# Items


def _clean(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value).strip()


def product_item_id(world: World, catalog_id: str, retailer_id: str) -> str | None:
    return world.product_item_index.get(catalog_id, {}).get(retailer_id)


def node_for(world: World, catalog: Catalog, retailer_id: str) -> ProductItem:
    """The Graph node of an item of ``catalog.items``, created on first sight for items other code wrote
    straight into ``Catalog.items`` (e.g. the CPAS admin loader)."""
    index = world.product_item_index.setdefault(catalog.id, {})
    pid = index.get(retailer_id)
    node = world.product_items.get(pid) if pid else None
    if node is None:
        now = world.now()
        node = ProductItem(
            id=world.new_id(),
            catalog_id=catalog.id,
            retailer_id=retailer_id,
            business_id=catalog.business_id,
            created_time=now,
            updated_time=now,
        )
        index[retailer_id] = node.id
        world.product_items[node.id] = node
    return node


def is_live(world: World, node: ProductItem) -> bool:
    """The node still names an item (other code may have removed items from ``Catalog.items``)."""
    catalog = world.catalogs.get(node.catalog_id)
    return (
        catalog is not None
        and node.retailer_id in catalog.items
        and product_item_id(world, node.catalog_id, node.retailer_id) == node.id
    )


def upsert_item(
    world: World,
    catalog: Catalog,
    retailer_id: str,
    values: Mapping[str, str],
    *,
    replace: bool,
    at: datetime,
    feed_id: str | None = None,
) -> bool:
    """Create or update an item. ``replace``: its fields become exactly ``values`` (minus blanks); otherwise
    the given fields are merged (a blank one is removed). Returns True when the item was created."""
    index = world.product_item_index.setdefault(catalog.id, {})
    existing = catalog.items.get(retailer_id)
    if replace or existing is None:
        new_fields = {k: v for k, v in values.items() if v != ""}
    else:
        new_fields = dict(existing)
        for k, v in values.items():
            if v == "":
                new_fields.pop(k, None)
            else:
                new_fields[k] = v
    new_fields["id"] = retailer_id
    created = existing is None
    if created:
        pid = world.new_id()
        index[retailer_id] = pid
        world.product_items[pid] = ProductItem(
            id=pid,
            catalog_id=catalog.id,
            retailer_id=retailer_id,
            business_id=catalog.business_id,
            feed_id=feed_id,
            created_time=at,
            updated_time=at,
        )
    else:
        item = node_for(world, catalog, retailer_id)
        if new_fields != existing:
            item.updated_time = at
        if feed_id is not None:
            item.feed_id = feed_id
    catalog.items[retailer_id] = new_fields
    return created


def delete_item(world: World, catalog: Catalog, retailer_id: str) -> bool:
    if retailer_id not in catalog.items:
        return False
    del catalog.items[retailer_id]
    pid = world.product_item_index.get(catalog.id, {}).pop(retailer_id, None)
    if pid is not None:
        world.product_items.pop(pid, None)
    world.item_error_overrides.pop(override_key(catalog.id, retailer_id), None)
    return True


# ---------------------------------------------------------------------------------------------------------
# Feed uploads


def create_upload(
    world: World,
    feed: ProductFeed,
    parsed: ParsedFeed,
    *,
    update_only: bool,
    input_method: str,
    filename: str | None = None,
    url: str | None = None,
) -> FeedUpload:
    cfg = world.catalog_config
    upload = FeedUpload(
        id=world.new_id(),
        feed_id=feed.id,
        catalog_id=feed.catalog_id,
        start_time=world.now(),
        update_only=update_only,
        business_id=feed.business_id,
        input_method=input_method,
        filename=filename,
        url=url,
        parsed=parsed,
        processing_seconds=float(cfg.upload_processing_seconds),
        pending_polls=int(cfg.upload_pending_polls),
    )
    world.feed_uploads[upload.id] = upload
    feed.upload_ids.append(upload.id)
    return upload


def poll_upload(world: World, upload: FeedUpload) -> None:
    """A status read of the session: counts as a poll and may complete it (poll rule)."""
    settle(world)
    upload.polls += 1
    if upload.end_time is None and upload.processing_seconds <= 0 and upload.polls > upload.pending_polls:
        complete_upload(world, upload, world.now())


def complete_upload(world: World, upload: FeedUpload, at: datetime) -> None:
    """Validate the parsed file against the catalog as it is now, apply it and record the errors."""
    parsed: ParsedFeed = upload.parsed or ParsedFeed()
    catalog = world.catalogs[upload.catalog_id]
    feed = world.product_feeds.get(upload.feed_id)
    found: list[tuple[Issue, ParsedRow | None, int | None]] = []  # issue, row, column_number

    if parsed.file_issues:
        found += [(issue, None, None) for issue in parsed.file_issues]
        _finish_upload(world, upload, at, found, detected=len(parsed.rows), invalid=0, persisted=0, deleted=0)
        return

    fatal_rows: set[int] = set()
    seen_ids: set[str] = set()
    for row in parsed.rows:
        rid = row.fields.get("id", "")
        full = not upload.update_only or rid not in catalog.items
        issues = validate_fields(row.fields, full=full)
        if row.malformed:
            issues.insert(0, MALFORMED_ROW)
        if rid and rid in seen_ids:
            issues.insert(0, DUPLICATE_ID)
        if rid:
            seen_ids.add(rid)
        for issue in issues:
            found.append((issue, row, parsed.column_number(issue.field)))
            if issue.fatal:
                fatal_rows.add(row.row_number)

    # Items sharing an item_group_id must agree on the group-defining fields; the first row of a group sets
    # the value and every later row that differs is rejected.
    for name in GROUP_REJECT_COLUMNS:
        if name not in parsed.columns:
            continue
        first: dict[str, str] = {}
        for row in parsed.rows:
            group = row.fields.get("item_group_id", "")
            if not group:
                continue
            value = row.fields.get(name, "")
            if group not in first:
                first[group] = value
            elif value != first[group]:
                found.append((group_mismatch(name), row, parsed.column_number(name)))
                fatal_rows.add(row.row_number)

    valid = [r for r in parsed.rows if r.row_number not in fatal_rows]
    feed_id = feed.id if feed else None
    for row in valid:
        rid = row.fields["id"]
        upsert_item(world, catalog, rid, row.fields, replace=not upload.update_only, at=at, feed_id=feed_id)
    deleted = 0
    if not upload.update_only and feed is not None and feed.deletion_enabled:
        keep = {r.fields["id"] for r in valid}
        for rid in [rid for rid in catalog.items if rid not in keep]:
            item = world.product_items.get(product_item_id(world, catalog.id, rid) or "")
            if item is not None and item.feed_id == feed.id:
                delete_item(world, catalog, rid)
                deleted += 1
    _finish_upload(
        world,
        upload,
        at,
        found,
        detected=len(parsed.rows),
        invalid=len(fatal_rows),
        persisted=len(valid),
        deleted=deleted,
    )


def _finish_upload(
    world: World,
    upload: FeedUpload,
    at: datetime,
    found: list[tuple[Issue, ParsedRow | None, int | None]],
    *,
    detected: int,
    invalid: int,
    persisted: int,
    deleted: int,
) -> None:
    # Aggregate like Meta: one entry per (severity, type, field) with the first occurrence's row and column,
    # total_count, and every occurrence as a sample (so each rejected row can be found).
    groups: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    ordered = sorted(found, key=lambda f: 0 if f[0].fatal else 1)
    for issue, row, column in ordered:
        key = (issue.severity, issue.error_type, issue.field)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = {
                "id": int(world.new_id()),
                "summary": issue.summary,
                "description": issue.description,
                "severity": issue.severity,
                "row_number": row.row_number if row else None,
                "column_number": column,
                # The SDK defines error_type but Meta's upload-error sample carries none, and Meta's values are
                # not documented: the field is accepted and never served (None is omitted), so clients must
                # work from the summary as they do against Meta.
                "error_type": None,
                "error_priority": "HIGH" if issue.fatal else issue.priority,
                "total_count": 0,
                "samples": {"data": []},
            }
        entry["total_count"] += 1
        if row is not None:
            rid = row.fields.get("id") or None
            # A sample is its own Graph object (ProductFeedUploadErrorSample) with its own id.
            sample = {"id": world.new_id(), "row_number": row.row_number, "retailer_id": rid}
            entry["samples"]["data"].append(sample)
    upload.errors = list(groups.values())
    upload.end_time = at
    upload.num_detected_items = detected
    upload.num_invalid_items = invalid
    upload.num_persisted_items = persisted
    upload.num_deleted_items = deleted
    upload.error_count = sum(1 for issue, _r, _c in found if issue.fatal)
    upload.warning_count = sum(1 for issue, _r, _c in found if not issue.fatal)
    upload.parsed = None  # applied: drop the rows


# ---------------------------------------------------------------------------------------------------------
# Batch API


class BatchRejected(ValueError):
    """The whole items_batch call is rejected (Meta error 100)."""


def new_handle(world: World) -> str:
    digest = hashlib.sha256(f"{world.seed}:handle:{world.new_id()}".encode()).digest()
    return (
        "Ac" + base64.urlsafe_b64encode(digest).decode().rstrip("=").replace("-", "x").replace("_", "y")[:30]
    )


def _request_id(req: Mapping[str, Any]) -> str:
    data = req.get("data")
    return _clean(data.get("id")) if isinstance(data, Mapping) else ""


def _batch_fields(data: Mapping[str, Any]) -> dict[str, str]:
    """The known product fields of a request's ``data`` (feed names; unknown keys are ignored, as in feeds)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = canonical_column(str(key))
        if name is not None:
            out[name] = _clean(value)
    return out


def create_batch(
    world: World, catalog: Catalog, requests: Any, *, allow_upsert: bool
) -> tuple[ItemsBatch, list[dict[str, Any]]]:
    """Check an items_batch call; returns the batch (to be applied when it finishes) and the synchronous
    ``validation_status``. Raises BatchRejected when Meta would reject the whole call."""
    if not isinstance(requests, list):
        raise BatchRejected("Param requests must be a JSON-encoded array of requests")
    if not requests:
        raise BatchRejected("Param requests must be a non-empty array")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise BatchRejected(
            f"Param requests must be an array of at most {MAX_BATCH_REQUESTS} requests; got {len(requests)}. "
            "Split the requests into several calls."
        )
    seen: dict[str, int] = {}
    for line, req in enumerate(requests):
        if not isinstance(req, Mapping) or not isinstance(req.get("data"), Mapping):
            raise BatchRejected(
                f'Request {line} must be an object with "method" and "data" (an object with the item fields)'
            )
        rid = _request_id(req)
        if rid:
            if rid in seen:
                raise BatchRejected(
                    f"Duplicate retailer id '{rid}' in requests {seen[rid]} and {line}: every update of an "
                    "item must be combined into a single request of the batch"
                )
            seen[rid] = line

    sync_errors: list[dict[str, Any]] = []
    status: list[dict[str, Any]] = []
    for line, req in enumerate(requests):
        rid = _request_id(req)
        method = str(req.get("method") or "").upper()
        messages: list[str] = []
        if method not in BATCH_METHODS:
            messages.append(
                f"Invalid method: '{req.get('method')}'. The method must be one of CREATE, UPDATE, DELETE."
            )
        if not rid:
            messages.append(
                "A required field is missing: Every request needs the retailer id of the item in data.id."
            )
        if method in ("CREATE", "UPDATE"):
            fields = _batch_fields(req["data"])
            messages += [
                i.message
                for i in validate_fields(fields, full=False)
                if i.fatal and i.error_type != "MISSING_REQUIRED_FIELD"
            ]
        if messages:
            sync_errors += [{"line": line, "id": rid or None, "message": m} for m in messages]
            status.append(
                {"retailer_id": rid or None, "errors": [{"message": m} for m in messages], "warnings": []}
            )
    batch = ItemsBatch(
        handle=new_handle(world),
        catalog_id=catalog.id,
        created_time=world.now(),
        allow_upsert=allow_upsert,
        requests=[dict(r) for r in requests],
        processing_seconds=float(world.catalog_config.batch_processing_seconds),
        sync_errors=sync_errors,
    )
    world.items_batches[batch.handle] = batch
    return batch, status


def batch_status(world: World, batch: ItemsBatch) -> str:
    if batch.outcome:
        return batch.outcome
    elapsed = (world.now() - batch.created_time).total_seconds()
    if batch.applied or elapsed >= batch.processing_seconds:
        return "finished"
    return "dispatched" if elapsed >= batch.processing_seconds / 2 else "started"


def end_batch(world: World, batch: ItemsBatch, status: str, applied_share: float = 0.0) -> None:
    """End a batch that has not finished with a terminal ``status`` other than finished, as Meta does with
    ``canceled`` (manually) or ``error`` ("some of the requests might not have finished successfully"): the
    first ``applied_share`` of its requests are applied, the rest never are."""
    if batch.applied:
        raise ValueError(f"batch {batch.handle} has already finished")
    status = status.strip().lower()
    if not status or status == "finished":
        raise ValueError("status must be a terminal status other than finished, e.g. canceled or error")
    if not 0.0 <= applied_share <= 1.0:
        raise ValueError("applied_share must be between 0 and 1")
    batch.requests = batch.requests[: int(len(batch.requests) * applied_share)]
    apply_batch(world, batch, world.now())
    batch.outcome = status


def not_found_message(retailer_id: str) -> str:
    return f"Product item with retailer id {retailer_id} does not exist"


def apply_batch(world: World, batch: ItemsBatch, at: datetime) -> None:
    catalog = world.catalogs[batch.catalog_id]
    rejected_lines = {e["line"] for e in batch.sync_errors}
    errors: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for line, req in enumerate(batch.requests):
        if line in rejected_lines:
            continue
        rid = _request_id(req)
        method = str(req.get("method")).upper()
        if method == "DELETE":
            if not delete_item(world, catalog, rid):
                errors.append({"line": line, "id": rid, "message": not_found_message(rid)})
            continue
        fields = _batch_fields(req["data"])
        exists = rid in catalog.items
        if method == "UPDATE" and not exists and not batch.allow_upsert:
            errors.append({"line": line, "id": rid, "message": not_found_message(rid)})
            continue
        if exists:
            issues = validate_fields(fields, full=False)
        else:
            issues = validate_fields({**fields, "id": rid}, full=True)
        fatal = [i for i in issues if i.fatal]
        if fatal:
            errors += [{"line": line, "id": rid, "message": i.message} for i in fatal]
            continue
        warnings += [{"line": line, "id": rid, "message": i.message} for i in issues if not i.fatal]
        upsert_item(world, catalog, rid, fields, replace=False, at=at)
    batch.errors = list(batch.sync_errors) + errors
    batch.warnings = warnings
    batch.invalid_ids = list(dict.fromkeys(str(e["id"]) for e in batch.errors if e.get("id")))
    batch.applied = True
    batch.requests = []  # applied: drop the payload


# ---------------------------------------------------------------------------------------------------------
# Time


def settle(world: World) -> None:
    """Apply every upload (clock rule) and batch whose processing time has passed, in completion order."""
    now = world.now()
    due: list[tuple[datetime, int, Any]] = []
    for n, upload in enumerate(world.feed_uploads.values()):
        if upload.end_time is None and upload.processing_seconds > 0:
            at = upload.start_time + timedelta(seconds=upload.processing_seconds)
            if at <= now:
                due.append((at, n, upload))
    offset = len(world.feed_uploads)
    for n, batch in enumerate(world.items_batches.values()):
        if not batch.applied:
            at = batch.created_time + timedelta(seconds=batch.processing_seconds)
            if at <= now:
                due.append((at, offset + n, batch))
    for at, _n, work in sorted(due, key=lambda d: (d[0], d[1])):
        if isinstance(work, FeedUpload):
            complete_upload(world, work, at)
        else:
            apply_batch(world, work, at)


# ---------------------------------------------------------------------------------------------------------
# Item problems (diagnostics)


@dataclass(frozen=True)
class ErrorType:
    error_type: str
    priority: str
    title: str
    description: str
    call_to_action: str
    group: str  # ProductCatalogDiagnosticGroup type
    title_tr: str | None = None


_IMAGE_CTA = (
    "After you've made changes, save the image under a different link (URL) and provide the new link. Check "
    "that the link begins with http:// or https:// and isn't broken. Make sure that it doesn't block Meta from "
    "accessing the image."
)


def _reference_entry() -> ErrorType:
    (entry,) = load_fixture("catalog_all_errors")["all"]
    return ErrorType(
        entry["error_type"],
        entry["error_priority"],
        entry["title"],
        entry["description"],
        entry["call_to_action"],
        "IMAGE_QUALITY",
        "Eksik veya geçersiz görseller",
    )


ERROR_TYPES: tuple[ErrorType, ...] = (
    _reference_entry(),
    ErrorType(
        "IMAGE_FETCH_FAILED",
        "HIGH",
        "Image couldn't be downloaded",
        "We couldn't download the main image of this item from the link you provided, so the item can't be "
        "shown.",
        _IMAGE_CTA,
        "IMAGE_QUALITY",
        "Görsel indirilemedi",
    ),
    ErrorType(
        "BAD_QUALITY_IMAGE",
        "MEDIUM",
        "Low-quality image",
        "The main image of this item is blurry, has a border, or contains text or a watermark over the product.",
        "Provide a clear image of the product on a plain background without added text.",
        "IMAGE_QUALITY",
        "Düşük kaliteli görsel",
    ),
    ErrorType(
        "NOT_ENOUGH_IMAGES",
        "LOW",
        "Add more images",
        "Items with several images get more engagement. This item has only one image.",
        "Add up to 20 images in the additional_image_link field.",
        "IMAGE_QUALITY",
        "Daha fazla görsel ekleyin",
    ),
    ErrorType(
        "DA_POLICY_VIOLATION",
        "HIGH",
        "Item doesn't comply with our Advertising Policies",
        "This item was rejected because it doesn't comply with our Advertising Policies, so it can't be shown "
        "in ads.",
        "Review the item against our Advertising Policies. If you think the decision is wrong, request another "
        "review in Commerce Manager.",
        "POLICY_VIOLATION",
        "Ürün Reklam Politikalarımıza uymuyor",
    ),
    ErrorType(
        "SHOPS_POLICY_VIOLATION",
        "HIGH",
        "Item doesn't comply with our Commerce Policies",
        "This item was rejected because it doesn't comply with our Commerce Policies, so it can't be shown in "
        "your shop.",
        "Review the item against our Commerce Policies. If you think the decision is wrong, request another "
        "review in Commerce Manager.",
        "POLICY_VIOLATION",
        "Ürün Ticaret Politikalarımıza uymuyor",
    ),
    ErrorType(
        "EMPTY_AVAILABILITY",
        "HIGH",
        "Missing availability",
        "Products need to have availability listed to run in ads.",
        'Add the availability of this item, for example "in stock" or "out of stock".',
        "ATTRIBUTES_MISSING",
        "Stok durumu eksik",
    ),
    ErrorType(
        "CRAWLED_AVAILABILITY_MISMATCH",
        "MEDIUM",
        "Availability doesn't match your website",
        "The availability of this item in your catalog is different from the availability shown on its "
        "website page.",
        "Update the availability in your catalog so it matches your website, and keep them in sync.",
        "ATTRIBUTES_INVALID",
        "Stok durumu web sitenizle eşleşmiyor",
    ),
    ErrorType(
        "QUALITY_ITEM_LINK_BROKEN",
        "HIGH",
        "Broken website link",
        "The link (URL) for this item leads to a page that doesn't exist or can't be reached.",
        "Check that the link in the link field opens the product page on your website.",
        "ATTRIBUTES_INVALID",
        "Bozuk web sitesi bağlantısı",
    ),
    ErrorType(
        "QUALITY_ITEM_LINK_REDIRECTING",
        "MEDIUM",
        "Website link redirects",
        "The link (URL) for this item redirects to a different page.",
        "Use the final address of the product page in the link field.",
        "ATTRIBUTES_INVALID",
        "Web sitesi bağlantısı yönlendiriyor",
    ),
    ErrorType(
        "ITEM_PRICE_NOT_POSITIVE",
        "HIGH",
        "Price must be more than zero",
        "The price of this item is zero, so it can't be shown in ads or sold.",
        "Set a price greater than 0.",
        "ATTRIBUTES_INVALID",
        "Fiyat sıfırdan büyük olmalı",
    ),
    ErrorType(
        "INVENTORY_ZERO_AVAILABILITY_IN_STOCK",
        "MEDIUM",
        'Item marked "in stock" with no inventory',
        'This item is marked "in stock" but its quantity_to_sell_on_facebook is 0.',
        "Update the availability or the quantity so that they agree.",
        "ATTRIBUTES_INVALID",
        'Envanteri olmayan ürün "stokta" olarak işaretlenmiş',
    ),
    ErrorType(
        "PROPERTY_VALUE_CONTAINS_HTML_TAGS",
        "MEDIUM",
        "Text contains HTML tags",
        "The title or description of this item contains HTML tags, which are shown as plain text.",
        "Remove the HTML tags, or use rich_text_description for formatted text.",
        "ATTRIBUTES_INVALID",
        "Metin HTML etiketleri içeriyor",
    ),
    ErrorType(
        "PRODUCT_URL_EQUALS_DOMAIN",
        "MEDIUM",
        "Link goes to your home page",
        "The link (URL) of this item is the home page of your website instead of the product page.",
        "Use the address of the product's own page in the link field.",
        "ATTRIBUTES_INVALID",
        "Bağlantı ana sayfanıza gidiyor",
    ),
    ErrorType(
        "DUPLICATE_TITLE_AND_DESCRIPTION",
        "LOW",
        "Title and description are the same",
        "The description of this item repeats its title. Descriptions help people decide to buy.",
        "Write a description with details such as material, size and care instructions.",
        "LOW_QUALITY_TITLE_AND_DESCRIPTION",
        "Başlık ve açıklama aynı",
    ),
    ErrorType(
        "ITEM_STALE_OUT_OF_STOCK",
        "LOW",
        "Item has been out of stock for a long time",
        "This item has been out of stock for more than 3 months and is no longer shown to people.",
        "Restock the item or remove it from your catalog.",
        "SHOPS_VISIBILITY_ISSUES",
        "Ürün uzun süredir stokta yok",
    ),
    ErrorType(
        "MISSING_SIZE",
        "MEDIUM",
        "Missing size",
        "This item is part of a product group but has no size, so people can't pick the variant they want.",
        "Add the size of each variant in the size field.",
        "ATTRIBUTES_MISSING",
        "Beden eksik",
    ),
    ErrorType(
        "MISSING_COLOR",
        "MEDIUM",
        "Missing color",
        "This item is part of a product group but has no color, so people can't pick the variant they want.",
        "Add the color of each variant in the color field.",
        "ATTRIBUTES_MISSING",
        "Renk eksik",
    ),
    ErrorType(
        "CATALOG_NOT_CONNECTED_TO_EVENT_SOURCE",
        "MEDIUM",
        "Connect a pixel or app to your catalog",
        "Your catalog isn't connected to a Meta Pixel or app, so ads can't show people the items they viewed.",
        "Connect the Meta Pixel of your website to this catalog in Commerce Manager.",
        "DA_VISIBILITY_ISSUES",
        "Kataloğunuza bir piksel veya uygulama bağlayın",
    ),
)
ERROR_TYPES_BY_NAME: dict[str, ErrorType] = {e.error_type: e for e in ERROR_TYPES}

# Reported on items but absent from catalog_all_errors (Meta adds types before documenting them).
UNDOCUMENTED_ERROR = ErrorType(
    "NEW_UNDOCUMENTED_ERROR",
    "MEDIUM",
    "Item can't be shown",
    "We found an issue with this item that limits where it can be shown.",
    "Review the item in Commerce Manager.",
    "ATTRIBUTES_INVALID",
)
ITEM_ERROR_TYPES: dict[str, ErrorType] = {
    **ERROR_TYPES_BY_NAME,
    UNDOCUMENTED_ERROR.error_type: UNDOCUMENTED_ERROR,
}


def error_type_info(error_type: str) -> ErrorType:
    known = ITEM_ERROR_TYPES.get(error_type)
    if known is not None:
        return known
    u = UNDOCUMENTED_ERROR
    return ErrorType(error_type, u.priority, u.title, u.description, u.call_to_action, u.group)


# Locales Meta serves (a representative set); tr_TR has translated titles, the others answer in English.
KNOWN_LOCALES = frozenset(
    {
        "en_US",
        "en_GB",
        "tr_TR",
        "de_DE",
        "fr_FR",
        "es_ES",
        "es_LA",
        "it_IT",
        "pt_BR",
        "pt_PT",
        "nl_NL",
        "pl_PL",
        "ru_RU",
        "ar_AR",
        "ja_JP",
        "ko_KR",
        "zh_CN",
        "zh_TW",
        "zh_HK",
        "sv_SE",
        "da_DK",
        "nb_NO",
        "fi_FI",
        "el_GR",
        "he_IL",
        "hi_IN",
        "id_ID",
        "th_TH",
        "vi_VN",
        "cs_CZ",
        "hu_HU",
        "ro_RO",
        "uk_UA",
        "az_AZ",
        "bg_BG",
        "hr_HR",
        "sk_SK",
        "sl_SI",
        "sr_RS",
        "ms_MY",
        "tl_PH",
        "fr_CA",
    }
)


def all_errors(locale: str) -> list[dict[str, Any]]:
    out = []
    for e in ERROR_TYPES:
        title = e.title_tr if locale == "tr_TR" and e.title_tr else e.title
        out.append(
            {
                "error_type": e.error_type,
                "error_priority": e.priority,
                "title": title,
                "description": e.description,
                "call_to_action": e.call_to_action,
            }
        )
    return out


@dataclass(frozen=True)
class Problem:
    """A problem that comes and goes: present for an item in a time window of ``period_hours`` with
    probability ``rate`` (times the admin's problem_rate_scale)."""

    error_type: str
    rate: float
    period_hours: int
    only_if: str | None = None  # "out_of_stock"


GENERATED_PROBLEMS: tuple[Problem, ...] = (
    Problem("IMAGE_RESOLUTION_LOW", 0.012, 6),
    Problem("IMAGE_FETCH_FAILED", 0.01, 3),
    Problem("CRAWLED_AVAILABILITY_MISMATCH", 0.01, 2),
    Problem("QUALITY_ITEM_LINK_BROKEN", 0.006, 4),
    Problem("DA_POLICY_VIOLATION", 0.004, 24),
    Problem("NEW_UNDOCUMENTED_ERROR", 0.004, 12),
    Problem("ITEM_STALE_OUT_OF_STOCK", 0.3, 24, only_if="out_of_stock"),
)


def _unit(*parts: Any) -> float:
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def hour_bucket(now: datetime) -> int:
    return int(now.timestamp() // 3600)


def override_key(catalog_id: str, retailer_id: str) -> str:
    return f"{catalog_id}/{retailer_id}"


_HTML_RE = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?\s*>")


def fact_problems(fields: Mapping[str, str]) -> list[str]:
    """Problems that follow from the item's data (present as long as the data is)."""
    out: list[str] = []
    price = parse_price(fields.get("price", ""))
    if price is not None and price[0] <= 0:
        out.append("ITEM_PRICE_NOT_POSITIVE")
    if (
        fields.get("quantity_to_sell_on_facebook") == "0"
        and fields.get("availability", "").lower() == "in stock"
    ):
        out.append("INVENTORY_ZERO_AVAILABILITY_IN_STOCK")
    if _HTML_RE.search(fields.get("title", "")) or _HTML_RE.search(fields.get("description", "")):
        out.append("PROPERTY_VALUE_CONTAINS_HTML_TAGS")
    link = fields.get("link", "")
    if link and valid_url(link):
        parts = urllib.parse.urlsplit(link)
        if parts.path in ("", "/") and not parts.query:
            out.append("PRODUCT_URL_EQUALS_DOMAIN")
    title, description = (
        fields.get("title", "").strip().lower(),
        fields.get("description", "").strip().lower(),
    )
    if title and title == description:
        out.append("DUPLICATE_TITLE_AND_DESCRIPTION")
    return out


def generated_problems(
    seed: int, catalog_id: str, retailer_id: str, fields: Mapping[str, str], hour: int, scale: float = 1.0
) -> list[str]:
    """Problems that appear and disappear, deterministic from (seed, catalog, item, hour)."""
    out: list[str] = []
    if scale <= 0:
        return out
    out_of_stock = fields.get("availability", "").lower() == "out of stock"
    for p in GENERATED_PROBLEMS:
        if p.only_if == "out_of_stock" and not out_of_stock:
            continue
        # A per-item phase keeps items from all changing at the same hour.
        phase = int(_unit(seed, "phase", catalog_id, retailer_id, p.error_type) * p.period_hours)
        window = (hour + phase) // p.period_hours
        if _unit(seed, catalog_id, retailer_id, p.error_type, window) < p.rate * scale:
            out.append(p.error_type)
    return out


def item_error_types(
    world: World, catalog_id: str, retailer_id: str, now: datetime | None = None
) -> list[str]:
    fields = world.catalogs[catalog_id].items.get(retailer_id, {})
    hour = hour_bucket(now or world.now())
    types = fact_problems(fields) + generated_problems(
        world.seed, catalog_id, retailer_id, fields, hour, world.catalog_config.problem_rate_scale
    )
    overrides = world.item_error_overrides.get(override_key(catalog_id, retailer_id), {})
    types += [t for t, forced in overrides.items() if forced]
    return [t for t in dict.fromkeys(types) if overrides.get(t, True)]


def item_errors(
    world: World, catalog_id: str, retailer_id: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    out = []
    for t in item_error_types(world, catalog_id, retailer_id, now):
        info = error_type_info(t)
        out.append(
            {
                "error_type": t,
                "error_priority": info.priority,
                "title": info.title,
                "description": info.description,
                "call_to_action": info.call_to_action,
            }
        )
    return out


# ProductCatalogDiagnosticGroup types: title, subtitle, error_code, affected channels and features.
DIAGNOSTIC_GROUPS: dict[str, tuple[str, str, int, list[str], list[str]]] = {
    "POLICY_VIOLATION": (
        "Items rejected for policy violations",
        "These items can't be shown in ads or your shop until they comply with our policies.",
        2_104_001,
        ["da", "shops", "marketplace"],
        [],
    ),
    "IMAGE_QUALITY": (
        "Fix image issues",
        "Items with missing, broken or low-quality images can't be shown or perform worse.",
        2_104_002,
        ["da", "shops", "ig_product_tagging"],
        [],
    ),
    "ATTRIBUTES_MISSING": (
        "Add missing information",
        "Items with missing information may not be shown, or people can't find the variant they want.",
        2_104_003,
        ["da", "shops"],
        ["checkout"],
    ),
    "ATTRIBUTES_INVALID": (
        "Fix invalid information",
        "Items with wrong or inconsistent information give people a poor experience.",
        2_104_004,
        ["da", "shops"],
        ["checkout"],
    ),
    "LOW_QUALITY_TITLE_AND_DESCRIPTION": (
        "Improve titles and descriptions",
        "Clear titles and descriptions help people find and buy your items.",
        2_104_005,
        ["shops"],
        [],
    ),
    "SHOPS_VISIBILITY_ISSUES": (
        "Items not visible in your shop",
        "These items aren't shown to people in your shop.",
        2_104_006,
        ["shops"],
        [],
    ),
    "DA_VISIBILITY_ISSUES": (
        "Improve how your items show in ads",
        "Ads can't use everything your catalog could offer.",
        2_104_007,
        ["da"],
        [],
    ),
}


def diagnostics(world: World, catalog: Catalog) -> list[dict[str, Any]]:
    """``GET /{catalog_id}/diagnostics``: item problems grouped by diagnostic type, plus catalog facts."""
    now = world.now()
    affected: dict[str, list[str]] = {}  # error_type -> retailer ids
    for rid in catalog.items:
        for t in item_error_types(world, catalog.id, rid, now):
            affected.setdefault(t, []).append(rid)
    groups: dict[str, list[dict[str, Any]]] = {}
    for t, rids in affected.items():
        info = error_type_info(t)
        groups.setdefault(info.group, []).append(
            {
                "error_type": t,
                "error_priority": info.priority,
                "title": info.title,
                "description": info.description,
                "call_to_action": info.call_to_action,
                "number_of_affected_items": len(rids),
                "sample_affected_items": [
                    {"id": node_for(world, catalog, rid).id, "retailer_id": rid} for rid in rids[:5]
                ],
                "_rids": rids,
            }
        )
    out: list[dict[str, Any]] = []
    for group_type, (title, subtitle, code, channels, features) in DIAGNOSTIC_GROUPS.items():
        entries = sorted(
            groups.get(group_type, []), key=lambda d: (-d["number_of_affected_items"], d["error_type"])
        )
        if entries:
            items = {rid for d in entries for rid in d.pop("_rids")}
            high = any(d["error_priority"] == "HIGH" for d in entries)
            out.append(
                {
                    "title": title,
                    "subtitle": subtitle,
                    "type": group_type,
                    "severity": "MUST_FIX" if high else "OPPORTUNITY",
                    "error_code": code,
                    "number_of_affected_items": len(items),
                    "affected_channels": channels,
                    "affected_features": features,
                    "affected_entity": "product_item",
                    "diagnostics": entries,
                }
            )
    if not catalog.external_event_source_ids:
        info = ERROR_TYPES_BY_NAME["CATALOG_NOT_CONNECTED_TO_EVENT_SOURCE"]
        title, subtitle, code, channels, features = DIAGNOSTIC_GROUPS[info.group]
        out.append(
            {
                "title": info.title,
                "subtitle": subtitle,
                "type": info.group,
                "severity": "OPPORTUNITY",
                "error_code": code,
                "number_of_affected_items": catalog.product_count,
                "affected_channels": channels,
                "affected_features": features,
                "affected_entity": "product_catalog",
                "diagnostics": [
                    {
                        "error_type": info.error_type,
                        "error_priority": info.priority,
                        "title": info.title,
                        "description": info.description,
                        "call_to_action": info.call_to_action,
                        "number_of_affected_items": catalog.product_count,
                    }
                ],
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------------
# Product item fields and filters


def product_item_fields(world: World, item: ProductItem) -> dict[str, Any]:
    """Every field the sandbox serves for a ProductItem: Meta's names (name, url, image_url,
    retailer_product_group_id, inventory, ...) and, for convenience, the feed names (title, link, ...)."""
    fields = world.catalogs[item.catalog_id].items.get(item.retailer_id, {})
    out: dict[str, Any] = {name: fields.get(name) or None for name in FIELDS_BY_NAME}
    price = parse_price(fields.get("price", ""))
    quantity = fields.get("quantity_to_sell_on_facebook", "")
    additional = fields.get("additional_image_link")
    out.update(
        {
            "id": item.id,
            "retailer_id": item.retailer_id,
            "name": fields.get("title") or None,
            "currency": price[1] if price else None,
            "url": fields.get("link") or None,
            "image_url": fields.get("image_link") or None,
            "additional_image_urls": [u.strip() for u in additional.split(",")] if additional else None,
            "retailer_product_group_id": fields.get("item_group_id") or None,
            "category": fields.get("google_product_category") or None,
            # Product identifiers Meta holds (not feed columns of Kobi's brands; retailers' items carry them).
            "gtin": fields.get("gtin") or None,
            "manufacturer_part_number": fields.get("manufacturer_part_number") or None,
            "inventory": int(quantity) if quantity.isdigit() else None,
            "review_status": "approved",
            "visibility": "published",
            "errors": lambda: item_errors(world, item.catalog_id, item.retailer_id),
        }
    )
    return out


FILTER_OPS = frozenset(
    {
        "eq",
        "neq",
        "is_any",
        "is_not_any",
        "contains",
        "i_contains",
        "not_contains",
        "i_not_contains",
        "starts_with",
    }
)


class FilterError(ValueError):
    pass


def parse_filter(raw: Any) -> Any:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise FilterError("Param filter must be a JSON-encoded rule") from None
    _check_rule(raw)
    return raw


def _check_rule(rule: Any) -> None:
    if not isinstance(rule, dict) or not rule:
        raise FilterError('Param filter must be a JSON object rule, e.g. {"retailer_id": {"eq": "sku-1"}}')
    for key, value in rule.items():
        if key in ("and", "or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"Param filter: '{key}' must be a non-empty list of rules")
            for sub in value:
                _check_rule(sub)
        elif key == "not":
            _check_rule(value)
        else:
            if not isinstance(value, dict) or len(value) != 1:
                raise FilterError(f"Param filter: field '{key}' needs one operator, e.g. {{\"eq\": ...}}")
            op = next(iter(value))
            if op not in FILTER_OPS:
                raise FilterError(f"Param filter: unsupported operator '{op}' for field '{key}'")


def _field_value(fields: Mapping[str, str], retailer_id: str, key: str) -> str:
    if key == "retailer_id":
        return retailer_id
    aliases = {
        "name": "title",
        "url": "link",
        "image_url": "image_link",
        "retailer_product_group_id": "item_group_id",
    }
    return fields.get(aliases.get(key, key), "")


def matches(rule: Any, fields: Mapping[str, str], retailer_id: str) -> bool:
    if rule is None:
        return True
    for key, value in rule.items():
        if key == "and":
            ok = all(matches(sub, fields, retailer_id) for sub in value)
        elif key == "or":
            ok = any(matches(sub, fields, retailer_id) for sub in value)
        elif key == "not":
            ok = not matches(value, fields, retailer_id)
        else:
            op, arg = next(iter(value.items()))
            actual = _field_value(fields, retailer_id, key)
            args = [str(a) for a in arg] if isinstance(arg, list) else [str(arg)]
            if op == "eq":
                ok = actual == args[0]
            elif op == "neq":
                ok = actual != args[0]
            elif op == "is_any":
                ok = actual in args
            elif op == "is_not_any":
                ok = actual not in args
            elif op == "contains":
                ok = args[0] in actual
            elif op == "i_contains":
                ok = args[0].lower() in actual.lower()
            elif op == "not_contains":
                ok = args[0] not in actual
            elif op == "i_not_contains":
                ok = args[0].lower() not in actual.lower()
            else:  # starts_with
                ok = actual.startswith(args[0])
        if not ok:
            return False
    return True
