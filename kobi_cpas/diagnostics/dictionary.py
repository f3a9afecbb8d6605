"""Meta's error dictionary (``GET catalog_all_errors?locale=..``) and the call-to-action (CTA) rules.

A CTA is never empty. Which text an analyst sees, in order (``resolved_texts_from`` implements this as SQL joins
with fallbacks, ``cta_for`` answers it for one type):

- Kobi's own feed validation (``kobi_feed_validation``): Kobi's CTA from ``feed_item_issues``.
- Meta's async item errors and catalog diagnostics: the dictionary in the chosen locale, then the CTA Meta put
  on the item's error itself, then the dictionary in en_US.
- Ingestion errors (feed uploads, Batch API): the dictionary (locale, then en_US), then Kobi's text for known
  ingestion types (``KOBI_INGESTION_CTA``). Their type comes from the error when Meta gives one, else from the
  title of the summary or message (``INGESTION_TITLE_TYPES``): Meta's samples carry none.
- Kobi's sync guards (``kobi_sync_guard``): Kobi's text for the guard's problem type (``KOBI_GUARD_CTA``).
- Otherwise the generic CTA of the priority: ``INGESTION_CTA`` for ingestion errors, else ``GENERIC_CTA``.
  An error type missing from the dictionary (Meta reports types before documenting them) therefore still gets
  the item's own CTA or the generic one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from kobi_cpas.meta.client import MetaGraphClient
from kobi_cpas.warehouse.sql import sql_str, transaction

PRIORITIES: tuple[str, ...] = ("HIGH", "MEDIUM", "LOW")
DEFAULT_LOCALE = "en_US"
DICTIONARY_MAX_AGE = timedelta(hours=24)
INGESTION_SOURCES = ("feed_upload", "batch_request")
META_SOURCES = ("meta_item_check", "meta_catalog_diagnostics")
GUARD_SOURCE = "kobi_sync_guard"

# Documented generic CTAs, used when neither the source nor the dictionary has one.
GENERIC_CTA: dict[str, str] = {
    "HIGH": (
        "Fix this now: the item cannot be shown in ads or shops until this problem is corrected. Correct it in "
        "the product feed (or wherever the value comes from); Kobi sends the fix with the next sync and the "
        "problem closes when Meta stops reporting it."
    ),
    "MEDIUM": (
        "Fix soon: the item can still be shown, but this problem limits where it appears or how well it "
        "performs. Correct it in the product feed at the next opportunity."
    ),
    "LOW": (
        "Improve when convenient: the item is shown, but adding or correcting this information helps people "
        "find and buy it."
    ),
}
# Generic CTAs of ingestion errors (feed uploads, Batch API): Meta recommends fixing fatals at the platform
# level, so they point at both the feed and Kobi's export.
INGESTION_CTA: dict[str, str] = {
    "HIGH": (
        "Fix this now: Meta rejected this item when Kobi sent it, so the catalog does not hold this version of "
        "it. Correct the value named in the description in the product feed; if the feed is right, Kobi's "
        "export is at fault (raise it with the Kobi data team). The item is sent again with the next sync."
    ),
    "MEDIUM": (
        "Fix soon: Meta accepted the item with a warning. Correct the value named in the description in the "
        "product feed."
    ),
    "LOW": (
        "Improve when convenient: Meta accepted the item but recommends the information named in the "
        "description. Add it to the product feed."
    ),
}
# Kobi's CTAs for ingestion error types that have no entry in Meta's dictionary.
KOBI_INGESTION_CTA: dict[str, str] = {
    "ITEM_NOT_FOUND": (
        "No action for the seller: Meta did not know the item when the Batch API update arrived; Kobi sends it "
        "as a new item with the next update feed."
    ),
    "GROUP_MISMATCH": (
        "Give every variant of the item group the same value for the property named in the summary (or move "
        "the variant to its own item_group_id) in the product feed."
    ),
    "DUPLICATE_RETAILER_ID": (
        "Give every item of the feed its own id: two rows share this id and only the first was uploaded."
    ),
    "MISSING_REQUIRED_FIELD": (
        "Add the required field named in the message (for example availability, price or image_link) to this "
        "item in the product feed: Meta rejects items without it. Kobi sends the item again with the next sync."
    ),
    "INVALID_URL": (
        "Correct the link in the product feed: a complete http:// or https:// address without a user name or "
        "password; several links in one field are separated by commas."
    ),
    "MISSING_RECOMMENDED_FIELD": (
        "Add the field named in the message (for example google_product_category) to this item in the product "
        "feed: Meta accepted the item, but people find it more easily with it."
    ),
    "INVALID_PRICE": (
        'Write the price as a number, a space and an ISO 4217 currency code (for example "19.99 TRY") in the '
        "product feed, without currency symbols or thousands separators."
    ),
    "TEXT_TOO_LONG": (
        "Shorten the field named in the summary in the product feed to the length the description gives."
    ),
    "INVALID_VALUE": (
        "Use one of the values the description lists for the field named in the summary (in US English) in the "
        "product feed."
    ),
    "INVALID_DATE_RANGE": (
        "Write the date range as two ISO 8601 dates separated by a slash (for example "
        "2025-06-01T00:00+03:00/2025-06-30T23:59+03:00) in the product feed."
    ),
    "INVALID_SALE_PRICE": (
        "Make the sale_price lower than the price and in the same currency in the product feed, or leave it "
        "empty: Meta ignores it otherwise."
    ),
    "INVALID_METHOD": (
        "No action for the seller: Kobi sent a Batch API request Meta does not accept; raise it with the Kobi "
        "data team."
    ),
}

# Ingestion errors often come without an error type: Meta's own upload-error sample has none (its summary is
# "<title>: <field>.") and Batch API messages are "<title>: <description>". Titles Meta's pages show (and the
# types they stand for) -> the type whose CTA applies; other titles become their upper-cased words.
INGESTION_TITLE_TYPES: dict[str, str] = {
    "group mismatch for property": "GROUP_MISMATCH",  # Catalog Integration: feed fatals sample
    "a required field is missing": "MISSING_REQUIRED_FIELD",  # Catalog Integration: Batch API sample
    "url incorrectly formatted": "INVALID_URL",  # Catalog Integration: Batch API sample
    "these fields have missing information": "MISSING_RECOMMENDED_FIELD",  # Batch API sample (warning)
    "duplicate id": "DUPLICATE_RETAILER_ID",
    "invalid price format": "INVALID_PRICE",
    "text too long": "TEXT_TOO_LONG",
    "invalid value for property": "INVALID_VALUE",
    "invalid date range": "INVALID_DATE_RANGE",
    "sale price not lower than price": "INVALID_SALE_PRICE",
    "invalid method": "INVALID_METHOD",
}

# Kobi's CTAs for the problems its own sync guards raise (catalog level).
KOBI_GUARD_CTA: dict[str, str] = {
    "SURPLUS_DELETIONS": (
        "Act now: Meta deleted more items from this tenant's product feed than Kobi's replace upload planned, "
        "so someone else (another tenant, another tool or a person in Commerce Manager) is writing to the same "
        "feed or catalog. Find who uploads to the feed named in the description and stop it (each tenant needs "
        "its own catalog), then check the catalog's items. Replace uploads of this tenant stay blocked until a "
        "person confirms by running catalog_replace_job with the run tag kobi/override_deletion_guard=true."
    ),
    "ADOPTED_DELETIONS_HELD": (
        "Check, then confirm: items adopted from the brand's existing catalog (it held them before Kobi; Kobi's "
        "feed does not send them) are out of stock and past the tenant's retention, but deleting them now would "
        "remove more of the catalog than sync.max_delete_share allows, so Kobi holds their deletion while the "
        "daily replace of Kobi's own feed goes on. Check the items (catalog_item_state, desired_status "
        "adopted_held) are ones the brand no longer sells, then run catalog_replace_job with the run tag "
        "kobi/override_deletion_guard=true to delete them; to keep them instead, set sync.adopted_items: keep "
        "for the tenant in the registry."
    ),
}


def normalise_priority(priority: str | None) -> str:
    p = (priority or "").strip().upper()
    return p if p in PRIORITIES else "MEDIUM"


def generic_cta(priority: str | None, source: str | None = None) -> str:
    """The documented generic CTA of a priority (unknown priorities count as MEDIUM)."""
    table = INGESTION_CTA if source in INGESTION_SOURCES else GENERIC_CTA
    return table[normalise_priority(priority)]


def priority_sql(expr: str) -> str:
    """SQL: a priority expression normalised to HIGH/MEDIUM/LOW (unknown -> MEDIUM)."""
    return f"(CASE WHEN upper(trim({expr})) IN ('HIGH', 'MEDIUM', 'LOW') THEN upper(trim({expr})) ELSE 'MEDIUM' END)"


def generic_cta_sql(priority_expr: str, source_expr: str | None = None) -> str:
    """SQL: ``generic_cta(priority, source)`` as a CASE expression."""
    p = priority_sql(priority_expr)
    generic = (
        "CASE " + " ".join(f"WHEN {p} = '{k}' THEN {sql_str(v)}" for k, v in GENERIC_CTA.items()) + " END"
    )
    if source_expr is None:
        return f"({generic})"
    ingestion = (
        "CASE " + " ".join(f"WHEN {p} = '{k}' THEN {sql_str(v)}" for k, v in INGESTION_CTA.items()) + " END"
    )
    sources = ", ".join(sql_str(s) for s in INGESTION_SOURCES)
    return f"(CASE WHEN {source_expr} IN ({sources}) THEN {ingestion} ELSE {generic} END)"


def kobi_ingestion_cta_sql(error_type_expr: str) -> str:
    """SQL: Kobi's CTA for a known ingestion error type, else NULL."""
    whens = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in KOBI_INGESTION_CTA.items())
    return f"(CASE {error_type_expr} {whens} ELSE NULL END)"


def error_type_from_title_sql(title_expr: str) -> str:
    """SQL: the error type of an ingestion error title (``INGESTION_TITLE_TYPES``, else the title's words upper
    cased and joined by ``_``; NULL for a blank title)."""
    mapped = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in INGESTION_TITLE_TYPES.items())
    derived = f"trim(regexp_replace(upper(trim({title_expr})), '[^A-Z0-9]+', '_', 'g'), '_')"
    return f"(CASE lower(trim({title_expr})) {mapped} ELSE nullif({derived}, '') END)"


def kobi_guard_cta_sql(error_type_expr: str) -> str:
    """SQL: Kobi's CTA for a guard problem type, else NULL."""
    whens = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in KOBI_GUARD_CTA.items())
    return f"(CASE {error_type_expr} {whens} ELSE NULL END)"


def _blank(expr: str) -> str:
    return f"nullif(trim({expr}), '')"


def resolved_texts_from(rows: str, locale_param: str = "$locale") -> str:
    """SQL: a subquery with every column of ``rows`` (a table or CTE name with columns source, error_type,
    priority, title, description, reported_cta) plus the resolved ``text_priority``, ``text_title``,
    ``text_description``, ``text_call_to_action`` and ``text_cta_source`` (and helper columns starting with
    ``_tx_``), from LEFT JOINs of ``main.catalog_error_types`` in the chosen locale and in en_US on error_type.

    See the module docstring for the order of fallbacks. Every input (a trimmed text, a dictionary column, Kobi's
    CTA of the type, the priority) is computed once in an inner select and referred to by name: written as one
    nested expression, the generic CTA alone repeated the priority expression two dozen times, and planning the
    merge statement cost tens of milliseconds per poll."""
    meta = ", ".join(sql_str(x) for x in META_SOURCES)
    ingest = ", ".join(sql_str(x) for x in INGESTION_SOURCES)
    gen = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in GENERIC_CTA.items())
    ing = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in INGESTION_CTA.items())
    inputs = f"""SELECT r.*,
               {_blank("r.priority")} AS _tx_s_priority, {_blank("r.title")} AS _tx_s_title,
               {_blank("r.description")} AS _tx_s_description, {_blank("r.reported_cta")} AS _tx_s_cta,
               dl.error_priority AS _tx_l_priority, de.error_priority AS _tx_e_priority,
               {_blank("dl.title")} AS _tx_l_title, {_blank("de.title")} AS _tx_e_title,
               {_blank("dl.description")} AS _tx_l_description, {_blank("de.description")} AS _tx_e_description,
               {_blank("dl.meta_call_to_action")} AS _tx_l_cta, {_blank("de.meta_call_to_action")} AS _tx_e_cta,
               {kobi_ingestion_cta_sql("r.error_type")} AS _tx_k_cta, {kobi_guard_cta_sql("r.error_type")} AS _tx_g_cta
             FROM {rows} r
             {dictionary_joins("r", locale_param)}"""
    prio = f"""SELECT x.*,
               {priority_sql("coalesce(x._tx_s_priority, x._tx_l_priority, x._tx_e_priority)")} AS _tx_priority,
               coalesce(x._tx_l_cta, x._tx_e_cta) AS _tx_d_cta
             FROM ({inputs}) x"""
    return f"""(SELECT t.*, t._tx_priority AS text_priority,
               coalesce(CASE
                 WHEN t.source = 'kobi_feed_validation' THEN t._tx_s_cta
                 WHEN t.source = '{GUARD_SOURCE}' THEN t._tx_g_cta
                 WHEN t.source IN ({meta}) THEN coalesce(t._tx_l_cta, t._tx_s_cta, t._tx_e_cta)
                 WHEN t.source IN ({ingest}) THEN coalesce(t._tx_d_cta, t._tx_k_cta)
                 ELSE coalesce(t._tx_s_cta, t._tx_d_cta) END,
                 CASE WHEN t.source IN ({ingest}) THEN (CASE t._tx_priority {ing} END)
                      ELSE (CASE t._tx_priority {gen} END) END) AS text_call_to_action,
               CASE
                 WHEN t.source = 'kobi_feed_validation' AND t._tx_s_cta IS NOT NULL THEN 'kobi'
                 WHEN t.source = '{GUARD_SOURCE}' AND t._tx_g_cta IS NOT NULL THEN 'kobi'
                 WHEN t.source IN ({meta}) AND t._tx_l_cta IS NOT NULL THEN 'dictionary'
                 WHEN t.source IN ({meta}) AND t._tx_s_cta IS NOT NULL THEN 'meta'
                 WHEN t.source <> 'kobi_feed_validation' AND t._tx_d_cta IS NOT NULL THEN 'dictionary'
                 WHEN t.source IN ({ingest}) AND t._tx_k_cta IS NOT NULL THEN 'kobi_ingestion'
                 WHEN t.source NOT IN ('kobi_feed_validation', {meta}, {ingest}) AND t._tx_s_cta IS NOT NULL
                      THEN 'meta'
                 ELSE 'generic' END AS text_cta_source,
               -- Meta's sources prefer the dictionary's (possibly localised) texts; ingestion and Kobi keep theirs.
               coalesce(CASE WHEN t.source IN ({meta}) THEN coalesce(t._tx_l_title, t._tx_s_title, t._tx_e_title)
                             ELSE coalesce(t._tx_s_title, t._tx_l_title, t._tx_e_title) END,
                        replace(t.error_type, '_', ' ')) AS text_title,
               CASE WHEN t.source IN ({meta})
                    THEN coalesce(t._tx_l_description, t._tx_s_description, t._tx_e_description)
                    ELSE coalesce(t._tx_s_description, t._tx_l_description, t._tx_e_description) END AS text_description
             FROM ({prio}) t)"""


def dictionary_joins(alias: str, locale_param: str = "$locale", loc: str = "dl", en: str = "de") -> str:
    """The two LEFT JOINs of ``main.catalog_error_types`` (chosen locale, en_US) on ``alias.error_type``."""
    return (
        f"LEFT JOIN main.catalog_error_types {loc} ON {loc}.locale = {locale_param} AND {loc}.error_type = {alias}.error_type "
        f"LEFT JOIN main.catalog_error_types {en} ON {en}.locale = '{DEFAULT_LOCALE}' AND {en}.error_type = {alias}.error_type"
    )


# -- fetching and storing the dictionary --------------------------------------------------------------------


def fetch_error_types(client: MetaGraphClient, locale: str = DEFAULT_LOCALE) -> list[dict[str, Any]]:
    """``GET catalog_all_errors?locale=..`` -> the ``all`` list as Meta returns it."""
    resp = client.get("catalog_all_errors", params={"locale": locale})
    entries = resp.get("all")
    if not isinstance(entries, list):
        raise ValueError(f"catalog_all_errors?locale={locale}: the answer has no 'all' list")
    return [e for e in entries if isinstance(e, dict) and e.get("error_type")]


_DICT_JSON_TYPE = json.dumps(
    [
        {
            "error_type": "VARCHAR",
            "error_priority": "VARCHAR",
            "title": "VARCHAR",
            "description": "VARCHAR",
            "call_to_action": "VARCHAR",
        }
    ]
)


def store_error_types(
    con: duckdb.DuckDBPyConnection, entries: list[dict[str, Any]], locale: str, now: datetime
) -> int:
    """Replace the locale's rows of ``catalog_error_types`` with ``entries`` (set-based, from JSON)."""
    with transaction(con):
        con.execute("DELETE FROM main.catalog_error_types WHERE locale = ?", [locale])
        con.execute(
            f"""INSERT INTO main.catalog_error_types (locale, error_type, error_priority, title, description,
                  call_to_action, meta_call_to_action, cta_is_generic, fetched_at)
                WITH raw AS (SELECT unnest(from_json(?::JSON, '{_DICT_JSON_TYPE}')) AS e)
                SELECT ?, e.error_type, {priority_sql("e.error_priority")}, e.title, e.description,
                       coalesce({_blank("e.call_to_action")}, {generic_cta_sql("e.error_priority")}),
                       e.call_to_action, {_blank("e.call_to_action")} IS NULL, ?
                FROM raw
                QUALIFY row_number() OVER (PARTITION BY e.error_type) = 1""",
            [json.dumps(entries), locale, now],
        )
        n = con.execute("SELECT count(*) FROM main.catalog_error_types WHERE locale = ?", [locale]).fetchone()
    return int(n[0]) if n else 0


def refresh_error_types(
    client: MetaGraphClient,
    con: duckdb.DuckDBPyConnection,
    locale: str = DEFAULT_LOCALE,
    now: datetime | None = None,
) -> int:
    """Fetch the dictionary for ``locale`` and replace its rows in ``catalog_error_types``; returns the row count."""
    entries = fetch_error_types(client, locale)
    return store_error_types(con, entries, locale, now or datetime.now(UTC))


def dictionary_fetched_at(con: duckdb.DuckDBPyConnection, locale: str = DEFAULT_LOCALE) -> datetime | None:
    row = con.execute(
        "SELECT max(fetched_at) FROM main.catalog_error_types WHERE locale = ?", [locale]
    ).fetchone()
    return row[0] if row else None


def needs_refresh(
    con: duckdb.DuckDBPyConnection,
    locale: str = DEFAULT_LOCALE,
    now: datetime | None = None,
    max_age: timedelta = DICTIONARY_MAX_AGE,
) -> bool:
    """True when the locale's dictionary is missing or older than ``max_age`` (daily by default)."""
    fetched = dictionary_fetched_at(con, locale)
    return fetched is None or (now or datetime.now(UTC)) - fetched >= max_age


def cta_for(
    con: duckdb.DuckDBPyConnection,
    error_type: str,
    priority: str | None = None,
    locale: str = DEFAULT_LOCALE,
    source: str = "meta_item_check",
    reported_cta: str | None = None,
) -> str:
    """The CTA a problem of ``error_type`` gets (the same SQL the lifecycle merge uses); never empty.

    ``priority`` None uses the dictionary's priority of the type (MEDIUM when the type is unknown)."""
    row = con.execute(
        f"""WITH s AS (SELECT ?::VARCHAR AS source, ?::VARCHAR AS error_type, ?::VARCHAR AS priority,
                              NULL::VARCHAR AS title, NULL::VARCHAR AS description, ?::VARCHAR AS reported_cta)
            SELECT text_call_to_action FROM {resolved_texts_from("s", "?")}""",
        [source, error_type, priority, reported_cta, locale],
    ).fetchone()
    assert row is not None and row[0]
    return str(row[0])
