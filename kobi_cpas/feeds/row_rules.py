"""The row-local rule table of the feed validator: one ``Rule`` per Meta field constraint (required, length,
allowed values, price/URL/date formats), each a SQL condition and message over the normalised columns, and the
SQL helpers they are built from. ``validate`` evaluates them in one projection (a bit each in ``_issue_mask``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kobi_cpas.feeds.fields import COLUMNS, FIELDS, ISO_4217_CURRENCIES
from kobi_cpas.warehouse.sql import sql_str

Severity = Literal["error", "warning", "info"]

# "<amount> <ISO 4217>": digits, optional '.' and 1-2 decimals, one space, three letters (matched
# case-insensitively; valid prices are stored with the currency upper-cased).
PRICE_FORMAT_RE = r"[0-9]+(\.[0-9]{1,2})? [A-Z]{3}"
PRICE_RE = r"[0-9]+(\.[0-9]{1,2})? (" + "|".join(sorted(ISO_4217_CURRENCIES)) + ")"
# http(s), a host without userinfo ('@'), no whitespace anywhere.
_URL = r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@,]+([/?#][^\s,]*)?"
URL_RE = r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+([/?#]\S*)?"
URL_LIST_RE = _URL + r"(\s*,\s*" + _URL + r")*"
DATE_RANGE_RE = r"\d{4}-\d{2}-\d{2}[^/]*/\d{4}-\d{2}-\d{2}[^/]*"
_TRUNCATE = 60
_SQL_STRING_RE = re.compile(r"'(?:[^']|'')*'")


@dataclass(frozen=True)
class Rule:
    """A row-local rule: ``condition`` is SQL over the normalised columns and the helper columns."""

    code: str
    field: str
    severity: Severity
    condition: str
    message: str  # SQL VARCHAR expression
    call_to_action: str

    @property
    def message_columns(self) -> tuple[str, ...]:
        """The canonical columns that ``message`` reads (its SQL without the string literals)."""
        code = _SQL_STRING_RE.sub("''", self.message)
        return tuple(c for c in COLUMNS if re.search(rf"\b{c}\b", code))


def show(col: str) -> str:
    """SQL: the value of ``col`` quoted and truncated for a message."""
    return (
        f"('''' || left({col}, {_TRUNCATE}) || CASE WHEN length({col}) > {_TRUNCATE} THEN '...' ELSE '' END"
        " || '''')"
    )


def _alternation(values: Sequence[str]) -> str:
    """RE2 pattern matching exactly one of ``values``."""
    return "|".join(re.escape(v) for v in values)


def _char(ch: str) -> str:
    """SQL string literal of one character (not a quote): the character itself, not ``chr(n)``, whose calls
    cost ~0.25 ms each to bind and fold, every time the feed's SELECT (30 columns) is planned."""
    return f"'{ch}'"


def trimmed_sql(col: str) -> str:
    """SQL: ``col`` without surrounding whitespace, blank -> NULL.

    trim() copies every string and costs ~0.7 s per million descriptions; a cheap test of the first and last
    character skips it for the values that do not need it (nearly all of them). ``col < '!'`` is a byte
    comparison that holds exactly when the first byte is <= 0x20 (cheaper than decoding it with ascii()),
    and for '' too, so blanks need no test of their own; ``col[-1]`` is the last character. Both also hold for
    the other control characters, which trim() keeps: such a value comes out as it went in. One test of the
    last character costs a sixth of four ``suffix()`` tests, one per whitespace character (0.04 x against
    0.25 x a bare read of a million items of 23 columns).
    """
    return f"CASE WHEN {col} < '!' OR {col}[-1] < '!' THEN nullif(trim({col}, ' \t\r\n'), '') ELSE {col} END"


def _enum_state(col: str, values: Sequence[str]) -> str:
    """SQL: NULL = no value, 0 = one of ``values`` as written, -1 = one of them in other letter case
    (stored lower-cased), 2 = not an allowed value.

    Exact values are matched by a CASE (cheapest), other spellings by a case-insensitive regex. Not IN
    or list_contains: DuckDB rewrites those into a hash join, which would lose the file order that row
    numbers rely on (see snapshot.py).
    """
    exact = " ".join(f"WHEN {col} = {sql_str(v)} THEN 0" for v in values)
    return (
        f"CASE WHEN {col} IS NULL THEN NULL {exact} "
        f"WHEN regexp_full_match({col}, {sql_str(_alternation(values))}, 'i') THEN -1 ELSE 2 END"
    )


def _url_check(col: str, pattern: str) -> str:
    """SQL: is ``col`` (not NULL) a valid URL, or for :data:`URL_LIST_RE` a comma-separated list of them. The
    regex decides; a cheap byte-level test accepts the common case first: http(s)://, a host, no whitespace and
    no '@' anywhere implies a regex match, for a list in each of its comma-separated parts (0.09 s against the
    regex's 0.15 s for a million two-image lists)."""
    no_bad = " AND ".join(f"NOT contains({col}, {_char(chr(c))})" for c in (32, 9, 10, 13, 12, 11, 64))
    if pattern == URL_RE:
        fast = f"{_url_start(col)} AND {no_bad}"
    elif pattern == URL_LIST_RE:
        fast = f"{no_bad} AND list_bool_and(list_transform(string_split({col}, ','), lambda u: {_url_start('u')}))"
    else:
        return f"regexp_full_match({col}, {sql_str(pattern)})"
    return f"CASE WHEN {fast} THEN true ELSE regexp_full_match({col}, {sql_str(pattern)}) END"


def _url_start(col: str) -> str:
    """SQL: ``col`` begins with http(s):// and a first host character (not '/', '?' or '#')."""
    return (
        f"(prefix({col}, 'https://') OR prefix({col}, 'http://')) "
        f"AND NOT (prefix({col}, 'https:///') OR prefix({col}, 'http:///') OR prefix({col}, 'https://?') "
        f"OR prefix({col}, 'http://?') OR prefix({col}, 'https://#') OR prefix({col}, 'http://#') "
        f"OR {col} = 'https://' OR {col} = 'http://')"
    )


def _video_check(col: str) -> str:
    """SQL: is ``col`` (not NULL) a JSON list of objects, each with an http(s) ``url`` and, if any, a list of
    string ``tag``s."""
    each = (
        f"list_bool_and(list_transform(CAST(json_extract({col}, '$[*]') AS JSON[]), lambda v: "
        "json_type(v) = 'OBJECT' AND coalesce(regexp_full_match(json_extract_string(v, '$.url'), "
        f"{sql_str(URL_RE)}), false) AND coalesce(json_type(v, '$.tag') = 'ARRAY', json_extract(v, '$.tag') IS NULL)))"
    )
    return (
        f"coalesce(CASE WHEN json_valid({col}) AND json_type({col}) = 'ARRAY' AND json_array_length({col}) > 0 "
        f"THEN {each} END, false)"
    )


def _build_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for f in FIELDS:
        if f.required:
            rules.append(
                Rule(
                    "missing_required_field",
                    f.name,
                    "error",
                    f"{f.name} IS NULL",
                    sql_str(f"Required field {f.name} is missing or blank."),
                    f"Add a value for {f.name} to this item in the feed"
                    + (
                        f" (one of: {', '.join(f.allowed_values)})."
                        if f.allowed_values
                        else (" (format: 19.99 EUR)." if f.kind == "price" else ".")
                    ),
                )
            )
    for f in FIELDS:
        if f.kind == "enum" and f.allowed_values:
            allowed = ", ".join(f"'{v}'" for v in f.allowed_values)
            rules.append(
                Rule(
                    "invalid_value",
                    f.name,
                    "error",
                    f"_{f.name}_state = 2",
                    f"'Unsupported {f.name} value ' || {show(f.name)} || '.'",
                    f"Use one of the supported {f.name} values: {allowed} (in US English).",
                )
            )
    for p in ("price", "sale_price"):
        rules += [
            Rule(
                "invalid_price_format",
                p,
                "error",
                f"_{p}_state = 2",
                f"'{p} ' || {show(p)} || ' is not in the format \"<amount> <currency>\", e.g. \"19.99 EUR\".'",
                f"Write {p} as a number with a dot as decimal separator and at most 2 decimals, a space "
                "and the ISO 4217 currency code, e.g. 1299.90 TRY (no currency signs or thousands "
                "separators).",
            ),
            Rule(
                "unknown_currency",
                p,
                "error",
                f"_{p}_state = 1",
                f"'{p} ' || {show(p)} || ' uses an unknown currency code ' || {show(f'split_part({p}, chr(32), 2)')} || '.'",
                f"Use a valid ISO 4217 currency code in {p}, e.g. TRY, EUR or USD.",
            ),
        ]
    rules += [
        Rule(
            "sale_price_currency_mismatch",
            "sale_price",
            "error",
            "CASE WHEN _sale_price_state <= 0 AND _price_state <= 0 "
            "THEN upper(split_part(sale_price, ' ', 2)) <> upper(split_part(price, ' ', 2)) END",
            f"'sale_price ' || {show('sale_price')} || ' is not in the currency of price ' || {show('price')} || '.'",
            "Give sale_price in the same currency as price.",
        ),
        Rule(
            "sale_price_not_lower",
            "sale_price",
            "error",
            "CASE WHEN _sale_price_state <= 0 AND _price_state <= 0 "
            "AND upper(split_part(sale_price, ' ', 2)) = upper(split_part(price, ' ', 2)) "
            "THEN split_part(sale_price, ' ', 1)::DECIMAL(38, 2) >= split_part(price, ' ', 1)::DECIMAL(38, 2) END",
            f"'sale_price ' || {show('sale_price')} || ' is not lower than price ' || {show('price')} || '.'",
            "Set sale_price below price, or leave sale_price empty when the item is not on sale.",
        ),
        Rule(
            "invalid_date_range",
            "sale_price_effective_date",
            "error",
            "_date_state = 2",
            f"'sale_price_effective_date ' || {show('sale_price_effective_date')}"
            " || ' is not an ISO 8601 interval \"start/end\".'",
            "Write sale_price_effective_date as two ISO 8601 date-times separated by '/', e.g. "
            "2025-06-01T00:00+03:00/2025-06-30T23:59+03:00.",
        ),
        Rule(
            "date_range_start_not_before_end",
            "sale_price_effective_date",
            "error",
            "_date_state = 1",
            f"'sale_price_effective_date ' || {show('sale_price_effective_date')}"
            " || ' starts at or after its end.'",
            "Make the start of sale_price_effective_date earlier than its end.",
        ),
        Rule(
            "sale_dates_without_sale_price",
            "sale_price_effective_date",
            "warning",
            "sale_price_effective_date IS NOT NULL AND sale_price IS NULL",
            sql_str("sale_price_effective_date is set but sale_price is empty; the dates are ignored."),
            "Add the sale_price that applies during these dates, or remove sale_price_effective_date.",
        ),
    ]
    for f in FIELDS:
        if f.kind in ("url", "url_list"):
            pattern = URL_RE if f.kind == "url" else URL_LIST_RE
            rules.append(
                Rule(
                    "invalid_url",
                    f.name,
                    "error",
                    f"{f.name} IS NOT NULL AND NOT {_url_check(f.name, pattern)}",
                    f"'{f.name} ' || {show(f.name)} || ' is not a valid http(s) URL.'",
                    f"Check that {f.name} begins with http:// or https://, contains no spaces and no "
                    "user name or password"
                    + (", and separate several links with commas." if f.kind == "url_list" else "."),
                )
            )
    for f in FIELDS:
        if f.kind == "video":
            # A warning, not an error: Meta fetches videos after ingestion and reports a bad one on the item
            # (video_fetch_status) without rejecting it, so the item is sent as it is.
            rules.append(
                Rule(
                    "invalid_video",
                    f.name,
                    "warning",
                    f"{f.name} IS NOT NULL AND NOT {_video_check(f.name)}",
                    f"'{f.name} ' || {show(f.name)} || ' is not a JSON list of videos with http(s) urls.'",
                    f'Write {f.name} as a JSON list, e.g. [{{"url": "https://example.com/v.mp4", "tag": '
                    '["360"]}], one object per video, each with an http(s) url and optional tags.',
                )
            )
    for f in FIELDS:
        if f.max_length:
            rules.append(
                Rule(
                    "too_long",
                    f.name,
                    "error",
                    # strlen (bytes) >= length (characters): count characters only when needed.
                    f"strlen({f.name}) > {f.max_length} AND length({f.name}) > {f.max_length}",
                    f"'{f.name} has ' || length({f.name}) || ' characters (max {f.max_length}): ' "
                    f"|| {show(f.name)} || '.'",
                    f"Shorten {f.name} to at most {f.max_length} characters.",
                )
            )
    rules += [
        Rule(
            "invalid_quantity",
            "quantity_to_sell_on_facebook",
            "error",
            "quantity_to_sell_on_facebook IS NOT NULL AND NOT coalesce(CASE WHEN "
            "regexp_full_match(quantity_to_sell_on_facebook, '[0-9]{1,10}') THEN "
            "TRY_CAST(quantity_to_sell_on_facebook AS INTEGER) IS NOT NULL END, false)",
            f"'quantity_to_sell_on_facebook ' || {show('quantity_to_sell_on_facebook')}"
            " || ' is not a non-negative whole number.'",
            "Set quantity_to_sell_on_facebook to the units in stock as a whole number (0 or more).",
        ),
        Rule(
            "missing_category",
            "google_product_category",
            "warning",
            "google_product_category IS NULL AND fb_product_category IS NULL",
            sql_str("Neither google_product_category nor fb_product_category is set."),
            "Make items easier to discover by providing google_product_category or fb_product_category.",
        ),
    ]
    return tuple(rules)


ROW_RULES: tuple[Rule, ...] = _build_rules()
if len(ROW_RULES) > 62:  # pragma: no cover - guards the BIGINT mask
    raise RuntimeError("too many row rules for a BIGINT mask")
ERROR_MASK = sum(1 << i for i, r in enumerate(ROW_RULES) if r.severity == "error")
WARNING_MASK = sum(1 << i for i, r in enumerate(ROW_RULES) if r.severity == "warning")
