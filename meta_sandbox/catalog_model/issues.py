"""Ingestion issues (feed upload errors and Batch API messages) and the Meta-like checks of one item's fields.

The field rules (required fields, length limits, allowed values) come from ``kobi_cpas.feeds.fields``; the
*formats* (price, URL, dates) are checked here with Meta's wording and independently of the project's own feed
validator, so a bug there cannot hide behind the same bug here."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kobi_cpas.feeds.fields import FIELDS, ISO_4217_CURRENCIES

PRIORITIES = ("HIGH", "MEDIUM", "LOW")


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
