"""Set-based validation of parsed feed rows in DuckDB SQL.

Everything is done in a few statements, whatever the number of rules:

1. :func:`items_select_sql` normalises the canonical columns (trim, blank -> NULL; *valid* enums
   lower-cased and valid prices with an upper-case currency, invalid values kept as written),
   evaluates every *row-local* rule as one bit of ``_issue_mask`` (CASE expressions in a single
   projection), and computes ``is_valid``, issue counts and the two hashes. It is meant to be the body
   of one ``CREATE TABLE ... AS`` straight from the file reader, and stores only the columns present in
   the file; :func:`items_view_sql` reads that table with the full shape.
2. :func:`finish_validation` runs the *cross-row* rules with two aggregates (duplicate ids; item groups
   that disagree, with their examples in the same pass), marks the affected items invalid, and writes the
   issues table in one pass over the flagged items only (their set bits unnested and joined to the rule
   table), reading only the columns that the messages of the rules that fired need. The rows are sorted
   compact (two integer keys; group warnings as group, size and examples) and get their strings after the
   sort, so a feed with a warning for every group costs little more than a clean one.

Severity: ``error`` = Meta rejects the item (or we must not send it): the item is invalid and excluded
from sync, the other items are unaffected. ``warning`` = the item is valid but could be better.
``info`` = file-level notes (unknown columns). Duplicate ids: the first occurrence stays valid, every
later copy is an error naming the first row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from kobi_cpas.feeds.fields import (
    COLUMNS,
    FIELDS,
    FIELDS_BY_NAME,
    GROUP_REJECT_COLUMNS,
    GROUP_WARN_COLUMNS,
)
from kobi_cpas.feeds.hashing import content_hash_sql, volatile_hash_sql
from kobi_cpas.feeds.row_rules import (
    _TRUNCATE,
    DATE_RANGE_RE,
    ERROR_MASK,
    PRICE_FORMAT_RE,
    PRICE_RE,
    ROW_RULES,
    WARNING_MASK,
    Rule,
    _enum_state,
    show,
    trimmed_sql,
)
from kobi_cpas.warehouse.sql import sql_str

ISSUE_COLUMNS: tuple[str, ...] = (
    "tenant_id",
    "snapshot_id",
    "retailer_id",
    "row_number",
    "field",
    "severity",
    "code",
    "message",
    "call_to_action",
)


# Cross-row rules (not in the mask).
DUPLICATE_CTA = "Give every item a unique id; remove or rename the duplicate row."
GROUP_CTA = (
    "Use the same {field} on every item of an item_group_id (variants of one product), or put the "
    "items in different groups."
)
UNKNOWN_COLUMN_CTA = "Rename the column to a Meta field name if it should be synced, or remove it."
GROUP_WARN_CTA = (
    "Consider one {field} for all variants of an item_group_id (e.g. the product name without the colour "
    "or size); the items are valid and are sent as they are."
)


def _final(col: str) -> str:
    """SQL: the stored value of ``col``. Valid enums are lower-cased and valid prices get an upper-case
    currency; invalid values stay as written (trimmed) so that messages and analysts see the original.
    Only values whose state says so (-1) are re-cased: lower()/upper() copy every string they touch."""
    spec = FIELDS_BY_NAME[col]
    if spec.kind == "enum" and spec.allowed_values:
        return f"CASE WHEN _{col}_state = -1 THEN lower({col}) ELSE {col} END"
    if spec.kind == "price":
        return f"CASE WHEN _{col}_state = -1 THEN upper({col}) ELSE {col} END"
    return col


STORED_RESULT_COLUMNS: tuple[str, ...] = (
    "is_valid",
    "error_count",
    "warning_count",
    "content_hash",
    "volatile_hash",
)


def items_select_sql(
    source_sql: str,
    *,
    columns: Sequence[str] = COLUMNS,
    row_number_sql: str | None = None,
    carry: Sequence[str] = (),
) -> str:
    """SELECT producing the stored items relation from ``source_sql`` (every canonical column, VARCHAR).

    Output: ``row_number``, the canonical ``columns`` (normalised), :data:`STORED_RESULT_COLUMNS` and
    ``_issue_mask``. ``columns`` are those the file has: a field absent from the file is NULL in every row,
    so it is not stored; :func:`items_view_sql` adds it back with the tenant and snapshot ids. (Constant
    columns are not free in an order-preserving bulk insert: the 8 of a typical feed cost ~0.4 s per
    million items, `make bench`.) Hashes and rules still see every column.

    ``row_number_sql`` is the source's row-number expression (e.g. ``_row_number``); when None the
    column is NULL and the caller fills it from ``rowid`` after a ``CREATE TABLE AS`` that preserved
    insertion order (much cheaper than ``row_number() OVER ()``).

    ``carry`` names columns of ``source_sql`` passed through unchanged, after ``_issue_mask``.
    """
    rn = row_number_sql or "NULL::BIGINT"
    kept = "".join(f", {c}" for c in carry)
    norm = ", ".join(f"{trimmed_sql(c)} AS {c}" for c in COLUMNS)
    final = ", ".join(f"{_final(c)} AS {c}" for c in COLUMNS)
    # Helper states (small integers, cheaper than strings): NULL = no value, 0 = valid as written,
    # -1 = valid once re-cased, 1 = unknown currency / start not before end, 2 = malformed.
    states = [
        f"CASE WHEN {p} IS NULL THEN NULL WHEN regexp_full_match({p}, {sql_str(PRICE_RE)}) THEN 0 "
        f"WHEN regexp_full_match({p}, {sql_str(PRICE_RE)}, 'i') THEN -1 "
        f"WHEN regexp_full_match({p}, {sql_str(PRICE_FORMAT_RE)}, 'i') THEN 1 ELSE 2 END AS _{p}_state"
        for p in ("price", "sale_price")
    ] + [
        f"{_enum_state(f.name, f.allowed_values)} AS _{f.name}_state"
        for f in FIELDS
        if f.kind == "enum" and f.allowed_values
    ]
    start = "TRY_CAST(split_part(sale_price_effective_date, '/', 1) AS TIMESTAMPTZ)"
    end = "TRY_CAST(split_part(sale_price_effective_date, '/', 2) AS TIMESTAMPTZ)"
    date_state = (
        "CASE WHEN sale_price_effective_date IS NULL THEN NULL "
        f"WHEN NOT regexp_full_match(sale_price_effective_date, {sql_str(DATE_RANGE_RE)}) THEN 2 "
        f"WHEN {start} IS NULL OR {end} IS NULL THEN 2 "
        f"WHEN {start} >= {end} THEN 1 ELSE 0 END"
    )
    mask = (
        " + ".join(f"(CASE WHEN {r.condition} THEN {1 << i} ELSE 0 END)" for i, r in enumerate(ROW_RULES))
        or "0"
    )
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise ValueError(f"not canonical feed columns: {unknown}")
    stored = ", ".join(c for c in COLUMNS if c in columns)
    return f"""
WITH _n AS (
    SELECT {rn} AS row_number, {norm}{kept} FROM ({source_sql})
), _d AS (
    SELECT *, {", ".join(states)}, {date_state} AS _date_state
    FROM _n
), _m AS (
    SELECT *, ({mask})::BIGINT AS _issue_mask FROM _d
), _f AS (
    SELECT row_number, {final}, _issue_mask{kept} FROM _m
)
SELECT row_number, {stored},
       (_issue_mask & {ERROR_MASK}) = 0 AS is_valid,
       bit_count(_issue_mask & {ERROR_MASK})::INTEGER AS error_count,
       bit_count(_issue_mask & {WARNING_MASK})::INTEGER AS warning_count,
       {content_hash_sql()} AS content_hash,
       {volatile_hash_sql()} AS volatile_hash,
       _issue_mask{kept}
FROM _f
"""


def items_view_sql(
    table: str,
    *,
    tenant_id: str,
    snapshot_id: str,
    columns: Sequence[str],
    with_mask: bool = False,
) -> str:
    """SELECT over a table made by :func:`items_select_sql` with the full stage shape: tenant_id,
    snapshot_id, row_number, every canonical column (those not in ``columns`` as NULL), the result
    columns (and ``_issue_mask`` when ``with_mask``). ``table`` is an already-quoted name."""
    cols = ", ".join(c if c in columns else f"NULL::VARCHAR AS {c}" for c in COLUMNS)
    extra = ", _issue_mask" if with_mask else ""
    return (
        f"SELECT {sql_str(tenant_id)} AS tenant_id, {sql_str(snapshot_id)} AS snapshot_id, row_number, {cols}, "
        f"{', '.join(STORED_RESULT_COLUMNS)}{extra} FROM {table}"
    )


@dataclass(frozen=True)
class ValidationCounts:
    item_count: int
    valid_count: int
    invalid_count: int
    issue_counts: dict[str, int]


def finish_validation(
    con: duckdb.DuckDBPyConnection,
    *,
    items_table: str,
    issues_table: str,
    tenant_id: str,
    snapshot_id: str,
    rows_table: str,
    unknown_columns: Sequence[str] = (),
) -> ValidationCounts:
    """Cross-row rules + the issues table.

    ``rows_table`` is the table made from :func:`items_select_sql`; ``items_table`` reads it with the
    full shape and ``_issue_mask`` (:func:`items_view_sql` with ``with_mask``). Cross-row errors are
    written to ``rows_table``, which keeps its ``_issue_mask`` column for the next ingest
    (:mod:`kobi_cpas.feeds.incremental`). Names are already-quoted qualified names. Leaves ``issues_table`` with
    :data:`ISSUE_COLUMNS`.
    """
    tmp = f"_fv_{abs(hash((items_table, issues_table))) % 10**8}"
    t_dup, t_bad, t_cross, t_rej = f"{tmp}_dup", f"{tmp}_bad", f"{tmp}_cross", f"{tmp}_rej"
    group_cols = (*GROUP_REJECT_COLUMNS, *GROUP_WARN_COLUMNS)
    ten, snap = sql_str(tenant_id), sql_str(snapshot_id)
    try:
        # The row-local rules that fired (one cheap pass over the mask column).
        (fired,) = con.execute(  # type: ignore[misc]
            f"SELECT bit_or(_issue_mask) FROM {items_table} WHERE _issue_mask <> 0"
        ).fetchone()
        rules = [(i, r) for i, r in enumerate(ROW_RULES) if fired and (fired >> i) & 1]
        kinds = _IssueKinds(
            [
                *((r.field, r.code, r.severity, r.call_to_action) for _, r in rules),
                ("id", "duplicate_id", "error", DUPLICATE_CTA),
                *(
                    (c, "item_group_mismatch", "error", GROUP_CTA.format(field=c))
                    for c in GROUP_REJECT_COLUMNS
                ),
                *(
                    (c, "item_group_inconsistent", "warning", GROUP_WARN_CTA.format(field=c))
                    for c in GROUP_WARN_COLUMNS
                ),
                *((col, "unknown_column", "info", UNKNOWN_COLUMN_CTA) for col in unknown_columns),
            ]
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {t_dup} AS
            SELECT id, min(row_number) AS first_row, count(*) AS copies
            FROM {items_table} WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1"""
        )
        # One pass over the items finds the groups that disagree on any column and their examples: the
        # smallest and largest value (blank values are NULL here, shown as ''; a NULL and a value differ).
        # A second pass for the examples of the disagreeing groups only costs more than it saves as soon
        # as many groups disagree (a variant-specific title in every group), and min/max of the strings
        # cost little more than min/max of their hashes. For the columns Meta rejects, the group's first
        # item (file order) sets the value: the hash of it, compared with the hash of each item's value.
        lohi = [f"min(coalesce({c}, '')) AS lo_{c}, max(coalesce({c}, '')) AS hi_{c}" for c in group_cols]
        firsts = [f"arg_min(hash({c}), row_number) AS first_{c}" for c in GROUP_REJECT_COLUMNS]
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {t_bad} AS SELECT * FROM (
                SELECT item_group_id, count(*) AS members, min(row_number) AS first_row,
                       {", ".join([*lohi, *firsts])}
                FROM {items_table} WHERE item_group_id IS NOT NULL GROUP BY item_group_id
            ) WHERE {" OR ".join(f"lo_{c} <> hi_{c}" for c in group_cols)}"""
        )
        dup_kind = kinds.of("id", "duplicate_id", "error", DUPLICATE_CTA)
        (cross_rows,) = con.execute(  # type: ignore[misc]
            f"SELECT (SELECT count(*) FROM {t_dup}) + (SELECT count(*) FROM {t_bad})"
        ).fetchone()
        if cross_rows:
            _cross_row_errors(con, items_table, rows_table, t_dup, t_bad, t_rej, t_cross, kinds, dup_kind)
            parts = [f"SELECT * FROM {t_cross}"]
        else:
            # No duplicate id and no disagreeing group (most feeds): no cross-row error, no item to mark.
            parts = [
                f"SELECT NULL::VARCHAR, NULL::BIGINT, NULL::INTEGER, NULL::VARCHAR, {_NO_GROUP} WHERE false"
            ]
        # Warnings (one per group and property, possibly two per group of the feed) stay compact (the group,
        # its member count and the two examples) until after the sort: their messages are built on the way
        # into the issues table, so the sort moves a few dozen bytes per row instead of the message and the
        # call to action.
        parts += [
            f"SELECT NULL, g.first_row, "
            f"{kinds.of(c, 'item_group_inconsistent', 'warning', GROUP_WARN_CTA.format(field=c))}, NULL, "
            f"g.item_group_id, g.members, g.lo_{c}, g.hi_{c} FROM {t_bad} g WHERE g.lo_{c} <> g.hi_{c}"
            for c in GROUP_WARN_COLUMNS
        ]
        # Row-local issues: unnest the set bits of the flagged items. Only the columns that the messages of
        # the rules that fired need are read: the flagged items are spread over the whole table, so every
        # column read is decompressed in full (~80 ms per million items for all columns).
        if rules:
            needed = sorted({c for _, r in rules for c in r.message_columns} - {"id"})
            rules_values = ", ".join(
                f"({i}, {kinds.of(r.field, r.code, r.severity, r.call_to_action)})" for i, r in rules
            )
            messages = " ".join(f"WHEN {i} THEN {r.message}" for i, r in rules)
            parts.append(
                f"""SELECT b.id, b.row_number, r.kind, CASE r.bit {messages} END, {_NO_GROUP}
                FROM (
                    SELECT {", ".join(["id", "row_number", *needed])},
                           unnest(list_filter(range(0, {len(ROW_RULES)}), lambda x: ((_issue_mask >> x) & 1) = 1)) AS _bit
                    FROM {items_table} WHERE _issue_mask <> 0
                ) b
                JOIN (VALUES {rules_values}) r(bit, kind) ON r.bit = b._bit"""
            )
        for col in unknown_columns:
            parts.append(
                f"SELECT NULL, NULL, {kinds.of(col, 'unknown_column', 'info', UNKNOWN_COLUMN_CTA)}, "
                f"{sql_str(f'Column {col!r} is not a Meta product field; it is ignored.')}, {_NO_GROUP}"
            )
        union = "\nUNION ALL\n".join(parts)
        # One concat() instead of a chain of || (each of which copies the string built so far): a third of the
        # cost with hundreds of thousands of group warnings. The same text as show() and _values() give.
        warning_message = (
            f"concat('item_group_id ''', {_truncated('_group')}, ''' (', _members, ' items, from row ', "
            f"row_number, ') has different ', field, ' values (''', {_truncated('_lo')}, ''' ... ''', "
            f"{_truncated('_hi')}, '''); Meta ingests them all, but shows the variants of one product under one ', "
            "field, '.')"
        )
        # Sorted on two integers (the kinds are numbered in (field, code) order), the strings of a kind are
        # looked up after the sort; the projections above the ORDER BY keep its order on the way in.
        con.execute(
            f"""CREATE OR REPLACE TABLE {issues_table} AS
            SELECT {ten} AS tenant_id, {snap} AS snapshot_id, retailer_id, row_number, field, severity, code,
                   coalesce(message, {warning_message}) AS message, call_to_action
            FROM (
                SELECT *, {kinds.lookup_sql("field")} AS field, {kinds.lookup_sql("code")} AS code,
                       {kinds.lookup_sql("severity")} AS severity, {kinds.lookup_sql("call_to_action")} AS call_to_action
                FROM (
                    SELECT * FROM ({union}) AS u({", ".join(_COMPACT)})
                    ORDER BY row_number NULLS FIRST, _kind
                )
            )"""
        )
        item_count, valid_count = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE is_valid) FROM {rows_table}"
        ).fetchone()  # type: ignore[misc]
        counts = {"error": 0, "warning": 0, "info": 0}
        for sev, n in con.execute(
            f"SELECT severity, count(*) FROM {issues_table} GROUP BY severity"
        ).fetchall():
            counts[sev] = int(n)
    finally:
        for t in (t_dup, t_bad, t_cross, t_rej):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return ValidationCounts(int(item_count), int(valid_count), int(item_count - valid_count), counts)


def _cross_row_errors(
    con: duckdb.DuckDBPyConnection,
    items_table: str,
    rows_table: str,
    t_dup: str,
    t_bad: str,
    t_rej: str,
    t_cross: str,
    kinds: _IssueKinds,
    dup_kind: str,
) -> None:
    """Fill ``t_rej`` (items Meta rejects for their group) and ``t_cross`` (the cross-row errors, columns
    :data:`_COMPACT`) from the duplicate ids ``t_dup`` and the disagreeing groups ``t_bad``, and mark the
    items they affect invalid in ``rows_table``."""
    # The items Meta rejects: a reject-column value that differs from the group's first item.
    rejected = [
        f"SELECT i.row_number, i.id, i.item_group_id, {sql_str(c)} AS field FROM {items_table} i "
        f"JOIN (SELECT item_group_id, first_{c} FROM {t_bad} WHERE lo_{c} <> hi_{c}) g USING (item_group_id) "
        f"WHERE hash(i.{c}) <> g.first_{c}"
        for c in GROUP_REJECT_COLUMNS
    ] or ["SELECT NULL::BIGINT, NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR WHERE false"]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {t_rej} AS SELECT * FROM ({' UNION ALL '.join(rejected)}) "
        "AS u(row_number, id, item_group_id, field)"
    )
    # Cross-row errors (few rows, messages built here): duplicate ids one per later copy; item-group
    # rejections one per group and property. Columns: see _COMPACT.
    cross = [
        f"SELECT i.id, i.row_number, {dup_kind}, "
        f"'id ' || {show('i.id')} || ' appears ' || d.copies || ' times; this row duplicates row ' "
        f"|| d.first_row || ', which is used.', {_NO_GROUP} "
        f"FROM {items_table} i JOIN {t_dup} d ON i.id = d.id AND i.row_number > d.first_row"
    ]
    for c in GROUP_REJECT_COLUMNS:
        # Anchored on the group's first rejected item; the message names how many were rejected.
        cross.append(
            f"SELECT r.first_id, r.first_rejected, "
            f"{kinds.of(c, 'item_group_mismatch', 'error', GROUP_CTA.format(field=c))}, "
            f"'item_group_id ' || {show('g.item_group_id')} || ' (' || g.members || ' items) has ' "
            f"|| {_values(c, f'g.lo_{c}', f'g.hi_{c}')} "
            f"|| '; Meta requires one {c} per group and rejects the ' "
            f"|| r.n || ' item(s) that differ from the first item (row ' || g.first_row || '), from row ' "
            f"|| r.first_rejected || ' (' || {show('r.first_id')} || ').', {_NO_GROUP} "
            f"FROM {t_bad} g JOIN ("
            f"SELECT item_group_id, count(*) AS n, min(row_number) AS first_rejected, "
            f"arg_min(id, row_number) AS first_id FROM {t_rej} WHERE field = {sql_str(c)} GROUP BY item_group_id"
            f") r USING (item_group_id)"
        )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {t_cross} AS SELECT * FROM ({' UNION ALL '.join(cross)}) "
        f"AS u({', '.join(_COMPACT)})"
    )
    con.execute(
        f"""UPDATE {rows_table} SET is_valid = false, error_count = {rows_table}.error_count + e.n
        FROM (
            SELECT row_number, count(*)::INTEGER AS n FROM (
                SELECT row_number FROM {t_cross} WHERE _kind = {dup_kind}
                UNION ALL SELECT row_number FROM {t_rej}
            ) GROUP BY row_number
        ) e
        WHERE {rows_table}.row_number = e.row_number"""
    )


# The issue rows before the strings of their kind (:class:`_IssueKinds`) are added; group warnings have no
# ``message`` yet but the group, its size and two examples.
_COMPACT = ("retailer_id", "row_number", "_kind", "message", "_group", "_members", "_lo", "_hi")
_NO_GROUP = "NULL::VARCHAR, NULL::BIGINT, NULL::VARCHAR, NULL::VARCHAR"


def _truncated(col: str) -> str:
    """SQL: the value :func:`show` puts between its quotes (strlen counts bytes, so it bounds length)."""
    return (
        f"CASE WHEN strlen({col}) > {_TRUNCATE} AND length({col}) > {_TRUNCATE} "
        f"THEN left({col}, {_TRUNCATE}) || '...' ELSE {col} END"
    )


def _values(field: str, lo: str, hi: str) -> str:
    """SQL: ``different <field> values ('<lo>' ... '<hi>')`` for a message."""
    return f"'different {field} values (' || {show(lo)} || ' ... ' || {show(hi)} || ')'"


class _IssueKinds:
    """The (field, code, severity, call to action) of the issues of one table, numbered in (field, code)
    order: the rows carry the number through the sort (ordering by it orders by field and code) and get the
    strings after it."""

    _PARTS = ("field", "code", "severity", "call_to_action")

    def __init__(self, kinds: Sequence[tuple[str, str, str, str]]) -> None:
        self._kinds = sorted(set(kinds))
        self._number = {k: n for n, k in enumerate(self._kinds)}

    def of(self, field: str, code: str, severity: str, call_to_action: str) -> str:
        """SQL literal: the number of a kind given to the constructor."""
        return f"{self._number[(field, code, severity, call_to_action)]}::INTEGER"

    def lookup_sql(self, part: str) -> str:
        """SQL: the ``part`` (one of field, code, severity, call_to_action) of the row's ``_kind``."""
        i = self._PARTS.index(part)
        return f"[{', '.join(sql_str(k[i]) for k in self._kinds)}][_kind + 1]"


__all__ = [
    "ERROR_MASK",
    "ISSUE_COLUMNS",
    "ROW_RULES",
    "STORED_RESULT_COLUMNS",
    "WARNING_MASK",
    "Rule",
    "ValidationCounts",
    "finish_validation",
    "items_select_sql",
    "items_view_sql",
]
