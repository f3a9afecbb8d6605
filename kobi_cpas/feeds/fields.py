"""The single table of Meta commerce product fields used by every channel (feed, update feed, Batch API).

Every rule about a field (required, length limit, allowed values, volatility, item-group consistency) lives
here once, so the feed validator, the hashing and the batch sync can never disagree.

Sources: Meta's Catalog Integration guide and the product field reference (see
``/work/shared/reference``). Where two Meta sources disagree on a length limit (title 150 vs 200,
description 5,000 vs 9,999) the stricter one is used. Fields without a documented limit have
``max_length=None`` rather than a guessed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

FieldKind = Literal["text", "enum", "price", "url", "url_list", "date_range", "int", "video"]


GroupRule = Literal["reject", "warn"]

# Meta's product feed upload errors reference (and seed 002, "Address fatal ingestion errors"): the sample fatal
# error "Group Mismatch for Property: shipping" / "Property shipping must have the same value for all items in the
# same group", severity fatal; "errors that are fatal mean those items are not created ... the rest of the
# products with no errors are created". No Meta source names another property that must match.
SHIPPING_GROUP_SOURCE = (
    "Meta Marketing API reference, Product Feed Upload Errors: fatal 'Group Mismatch for Property: shipping'"
)
# Meta's Product Variants guide: variants share one product name ("so that the name does not change when
# variants are selected"); a recommendation, not an ingestion error.
VARIANT_GUIDE_SOURCE = (
    "Meta catalog guide, Product Variants: variants of one item_group_id share the product name"
)


@dataclass(frozen=True)
class FieldSpec:
    """One Meta product field.

    ``volatile`` fields (price, availability, stock) change often and are synced on the fast path
    (update feed / Batch API); they are hashed separately from the content fields.
    ``group_rule`` says what happens when the items sharing an ``item_group_id`` disagree on the field:
    ``"reject"``: Meta rejects the items whose value differs from the group's first item (a fatal upload error,
    "Group Mismatch for Property: <field>"; the rest of the feed is ingested); ``"warn"``: Meta ingests every item,
    but its variant guidance asks for one value per group, so Kobi warns once per group and sends the items.
    ``group_source`` names the Meta source the rule is taken from.
    """

    name: str
    required: bool = False
    max_length: int | None = None
    allowed_values: tuple[str, ...] | None = None
    volatile: bool = False
    group_rule: GroupRule | None = None
    group_source: str = ""
    kind: FieldKind = "text"
    description: str = ""


AVAILABILITY_VALUES = (
    "in stock",
    "out of stock",
    "preorder",
    "available for order",
    "discontinued",
    "pending",
    "mark_as_sold",
    "mark_as_expired",
)
CONDITION_VALUES = (
    "new",
    "refurbished",
    "used",
    "used_like_new",
    "used_good",
    "used_fair",
    "cpo",
    "open_box_new",
)
GENDER_VALUES = ("female", "male", "unisex")
AGE_GROUP_VALUES = ("adult", "all ages", "infant", "kids", "newborn", "teen", "toddler")

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", required=True, max_length=100, description="Retailer id; unique in the catalog."),
    FieldSpec("title", required=True, max_length=150, group_rule="warn", group_source=VARIANT_GUIDE_SOURCE),
    FieldSpec("description", required=True, max_length=5000),
    FieldSpec("availability", required=True, allowed_values=AVAILABILITY_VALUES, volatile=True, kind="enum"),
    FieldSpec("condition", required=True, allowed_values=CONDITION_VALUES, kind="enum"),
    FieldSpec("price", required=True, volatile=True, kind="price", description='"19.99 EUR"'),
    FieldSpec("sale_price", volatile=True, kind="price"),
    FieldSpec(
        "sale_price_effective_date",
        volatile=True,
        kind="date_range",
        description="ISO 8601 interval start/end",
    ),
    FieldSpec("link", required=True, kind="url"),
    FieldSpec("image_link", required=True, kind="url"),
    FieldSpec("additional_image_link", kind="url_list", description="Comma-separated URLs."),
    FieldSpec("brand", required=True, max_length=100, group_rule="warn", group_source=VARIANT_GUIDE_SOURCE),
    # Catalog Integration step 2: "add rich_text_description if description is over 200 characters" (HTML shown
    # in Shops instead of description); Meta documents no length limit of its own for it.
    FieldSpec("rich_text_description", description="HTML description shown in Shops instead of description."),
    # Nested fields take a JSON-encoded value in one column (Meta's catalog feed reference, "Nested or
    # multi-value fields"): a list of {"url": ..., "tag": [...]}.
    FieldSpec(
        "video", kind="video", description='JSON list of videos: [{"url": "https://...", "tag": ["..."]}]'
    ),
    FieldSpec("google_product_category"),
    FieldSpec("fb_product_category"),
    FieldSpec("item_group_id", description="Groups the variants of one product."),
    FieldSpec("size"),
    FieldSpec("color"),
    FieldSpec("gender", allowed_values=GENDER_VALUES, kind="enum"),
    FieldSpec("age_group", allowed_values=AGE_GROUP_VALUES, kind="enum"),
    FieldSpec("material"),
    FieldSpec("pattern"),
    FieldSpec("quantity_to_sell_on_facebook", volatile=True, kind="int"),
    FieldSpec(
        "shipping",
        group_rule="reject",
        group_source=SHIPPING_GROUP_SOURCE,
        description="country:region:service:price",
    ),
    FieldSpec("custom_label_0"),
    FieldSpec("custom_label_1"),
    FieldSpec("custom_label_2"),
    FieldSpec("custom_label_3"),
    FieldSpec("custom_label_4"),
    FieldSpec("previous_id", description="Former retailer id when variants replace an item."),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
VOLATILE_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.volatile)
# Every non-volatile field, including id: the content hash changes when anything but price/stock changes.
CONTENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if not f.volatile)
# Fields Meta requires equal within an item group (mismatching items rejected) / recommends equal (a warning).
GROUP_REJECT_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.group_rule == "reject")
GROUP_WARN_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.group_rule == "warn")
ENUM_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind == "enum")

# Header aliases, applied after normalise_header(). The Google namespace prefix ("g:") is stripped
# generically; only aliases that are unambiguous are listed ("quantity" is not: it is often a pack size).
HEADER_ALIASES: dict[str, str] = {
    "inventory": "quantity_to_sell_on_facebook",  # the field's former name in Meta's feeds
    "quantity_to_sell_on_fb": "quantity_to_sell_on_facebook",
}

_SEPARATORS = re.compile(r"[\s\-]+")


def normalise_header(raw: str) -> str:
    """Map a feed header (``g:Item Group ID``, ``Quantity to sell on Facebook``...) to a lower snake name."""
    name = raw.strip().lstrip("\ufeff").strip().lower()
    if name.startswith("g:"):
        name = name[2:]
    name = _SEPARATORS.sub("_", name).strip("_")
    return HEADER_ALIASES.get(name, name)


def canonical_column(raw: str) -> str | None:
    """The canonical field name for a header, or None when the column is not a known Meta field."""
    name = normalise_header(raw)
    return name if name in FIELDS_BY_NAME else None


# Active ISO 4217 currency codes that can price goods (funds, precious metals and test codes excluded).
ISO_4217_CURRENCIES: frozenset[str] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SLL",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
        "ZWL",
    ]
)

# Meta's per-line limit for feed files (5 MB = 5,242,880 characters).
MAX_LINE_CHARS = 5_242_880
