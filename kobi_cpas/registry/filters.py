"""Meta's product-set rule language (catalog segment filters and product set filters), in two evaluators.

A rule is a dict (or its JSON text), e.g.::

    {"and": [{"or": [{"brand": {"eq": "Acme"}}]}, {"availability": {"is_any": ["in stock"]}}]}

Grammar (what :func:`parse_rule` accepts):

* ``{"and": [rule, ...]}`` / ``{"or": [rule, ...]}`` — a non-empty list of rules;
* ``{"not": rule}`` — true exactly when ``rule`` is false;
* ``{field: {operator: value, ...}}`` — several operators on one field are ANDed;
* a dict with several keys (fields and/or ``and``/``or``) ANDs them.

Operators: ``eq neq contains not_contains i_contains i_not_contains starts_with is_any is_not_any lt lte gt
gte`` (see :data:`OPERATORS`). Fields: :data:`FIELD_COLUMNS` (``name`` is Meta's alias of ``title``; ``url``,
``image_url`` and ``retailer_product_group_id`` are Meta's names of ``link``, ``image_link`` and
``item_group_id``).

One semantics, implemented twice and tested to agree:

* :func:`compile_sql` — a DuckDB boolean expression with every value bound as a ``?`` parameter, used by
  Kobi on the feed snapshot (:func:`expected_membership`);
* :func:`matches` / :func:`compile_matcher` — the same in Python, used by the Meta sandbox for a segment's
  and a product set's ``product_count`` and the ``filter`` of ``GET /{catalog_id}/products``.

Value semantics (identical in both):

* a missing field, NULL or empty string is *no value* (one rule for missing fields): positive operators (eq,
  contains, i_contains, starts_with, is_any, lt..gte) are false on no value, and each negated operator (neq,
  not_contains, i_not_contains, is_not_any) and ``not`` is the exact complement of its positive form, so it is
  true on no value. An item without a brand is therefore in ``{"brand": {"neq": "Acme"}}`` and in
  ``{"not": {"brand": {"eq": "Acme"}}}``, as Meta's "is not" / "does not contain" set rules include items that
  lack the field. (Meta's product-set reference documents the rule as JSON with these operators but says
  nothing explicit about missing fields; this is the behaviour the sandbox serves and Kobi predicts.)
* text comparisons are exact and case-sensitive, except ``i_contains``/``i_not_contains`` which compare
  lower-cased text per character (Python lower-cases ``İ`` to ``i`` like DuckDB does);
* ``lt lte gt gte`` compare numbers: the leading number of the value (``"199.90 TRY"`` -> 199.9, the amount
  in major units, not cents); a value without a leading number is no value;
* on the numeric fields (:data:`NUMERIC_FIELDS`: price, sale_price, quantity_to_sell_on_facebook) ``eq neq
  is_any is_not_any`` compare numbers too; ``contains``/``starts_with`` always work on the text.

Errors are :class:`FilterError` whose message names the clause path, e.g.
``and[1].availability: unknown operator 'is_anyy'``. Rules nest at most :data:`MAX_RULE_DEPTH` and/or groups
deep: every evaluator recurses, and a deeper rule would end in a RecursionError instead of an error naming it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

OPERATORS: frozenset[str] = frozenset(
    {
        "eq",
        "neq",
        "contains",
        "not_contains",
        "i_contains",
        "i_not_contains",
        "starts_with",
        "is_any",
        "is_not_any",
        "lt",
        "lte",
        "gt",
        "gte",
    }
)
LIST_OPERATORS = frozenset({"is_any", "is_not_any"})
NUMERIC_OPERATORS = frozenset({"lt", "lte", "gt", "gte"})
TEXT_OPERATORS = frozenset({"contains", "not_contains", "i_contains", "i_not_contains", "starts_with"})
# Negated operators: the exact complement of their positive form (so true on no value).
NEGATED_OPERATORS = frozenset({"neq", "not_contains", "i_not_contains", "is_not_any"})
# Real segment rules nest two or three groups (and/or/not); 32 leaves room and keeps every recursive walk far from the limit.
MAX_RULE_DEPTH = 32

# Rule field -> feed column (kobi_cpas.feeds.fields.COLUMNS; the id column is configurable because the
# analyst table feed_items calls it retailer_id and the stage tables call it id).
ID_FIELD = "retailer_id"
FIELD_COLUMNS: dict[str, str] = {
    "retailer_id": ID_FIELD,
    "name": "title",
    "title": "title",
    "url": "link",
    "link": "link",
    "image_url": "image_link",
    "image_link": "image_link",
    "retailer_product_group_id": "item_group_id",
    "description": "description",
    "brand": "brand",
    "availability": "availability",
    "condition": "condition",
    "price": "price",
    "sale_price": "sale_price",
    "item_group_id": "item_group_id",
    "color": "color",
    "size": "size",
    "gender": "gender",
    "age_group": "age_group",
    "material": "material",
    "pattern": "pattern",
    "google_product_category": "google_product_category",
    "category": "google_product_category",
    "fb_product_category": "fb_product_category",
    # Not a column of Kobi's feeds: evaluates as "no value" unless the table/item has it.
    "product_type": "product_type",
    "quantity_to_sell_on_facebook": "quantity_to_sell_on_facebook",
    **{f"custom_label_{i}": f"custom_label_{i}" for i in range(5)},
}
NUMERIC_FIELDS = frozenset({"price", "sale_price", "quantity_to_sell_on_facebook"})

# The leading number of a value: "199.90 TRY" -> 199.90. RE2 (DuckDB) and Python agree on this pattern.
_NUMBER_SQL_RE = r"^[ \t]*(-?[0-9]+(\.[0-9]+)?)"
_NUMBER_PY_RE = re.compile(r"[ \t]*(-?[0-9]+(?:\.[0-9]+)?)")
_FULL_NUMBER_RE = re.compile(r"^[ \t]*-?[0-9]+(\.[0-9]+)?[ \t]*$")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class FilterError(ValueError):
    """An invalid rule; the message starts with the path of the offending clause."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path or "<rule>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# -- the parsed form ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    path: str  # e.g. "and[1].availability"
    field: str  # rule field as written (``name``)
    column: str  # feed column (``title``)
    op: str
    value: Any  # str | float | tuple[str | float, ...]
    numeric: bool  # compare as numbers


@dataclass(frozen=True)
class Group:
    path: str
    kind: str  # "and" | "or" | "not" (one child)
    children: tuple[Node, ...]


Node = Condition | Group


def load_rule(rule: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """A rule given as a dict or as JSON text -> dict (FilterError when the JSON is bad or not an object)."""
    if isinstance(rule, bytes | bytearray):
        rule = rule.decode("utf-8")
    if isinstance(rule, str):
        try:
            rule = json.loads(rule)
        except ValueError as exc:
            raise FilterError("<rule>", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise FilterError("<rule>", f"nested more than {MAX_RULE_DEPTH} levels deep") from None
    if not isinstance(rule, Mapping):
        raise FilterError("<rule>", f"must be a JSON object, got {type(rule).__name__}")
    return dict(rule)


def parse_rule(rule: Mapping[str, Any] | str | bytes) -> Node:
    """Validate a rule and return its tree (raises FilterError naming the clause)."""
    return _parse(load_rule(rule), "", 0)


def validate_rule(rule: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """Validate and return the rule as a dict."""
    data = load_rule(rule)
    _parse(data, "", 0)
    return data


def canonical_json(rule: Mapping[str, Any] | str | bytes) -> str:
    """The rule as compact JSON with sorted keys: equal rules give equal text (for comparisons and storage)."""
    return json.dumps(validate_rule(rule), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(path: str) -> str:
    return path if len(path) <= 60 else f"{path[:28]}...{path[-28:]}"


def _parse(rule: Any, path: str, depth: int) -> Node:
    if depth > MAX_RULE_DEPTH:
        raise FilterError(_short(path), f"rule nested more than {MAX_RULE_DEPTH} and/or groups deep")
    if not isinstance(rule, Mapping):
        raise FilterError(path, f"a clause must be an object, got {_show(rule)}")
    if not rule:
        raise FilterError(path, "empty clause")
    parts: list[Node] = []
    for key, body in rule.items():
        if not isinstance(key, str):
            raise FilterError(path, f"clause keys must be strings, got {key!r}")
        if key in ("and", "or"):
            kpath = _join(path, key)
            if not isinstance(body, list) or not body:
                raise FilterError(kpath, f"'{key}' needs a non-empty list of clauses, got {_show(body)}")
            children = tuple(_parse(child, f"{kpath}[{i}]", depth + 1) for i, child in enumerate(body))
            parts.append(Group(kpath, key, children))
        elif key == "not":
            kpath = _join(path, key)
            if not isinstance(body, Mapping):
                raise FilterError(kpath, f"'not' needs one clause (an object), got {_show(body)}")
            parts.append(Group(kpath, "not", (_parse(body, kpath, depth + 1),)))
        else:
            parts.extend(_parse_field(key, body, _join(path, key)))
    if len(parts) == 1:
        return parts[0]
    return Group(path, "and", tuple(parts))


def _parse_field(field_name: str, body: Any, path: str) -> list[Node]:
    column = FIELD_COLUMNS.get(field_name)
    if column is None:
        known = ", ".join(sorted(FIELD_COLUMNS))
        raise FilterError(path, f"unknown field '{field_name}' (known: {known})")
    if not isinstance(body, Mapping) or not body:
        raise FilterError(path, f"needs an object {{operator: value}}, got {_show(body)}")
    out: list[Node] = []
    for op, value in body.items():
        if op not in OPERATORS:
            raise FilterError(path, f"unknown operator '{op}' (known: {', '.join(sorted(OPERATORS))})")
        numeric = op in NUMERIC_OPERATORS or (field_name in NUMERIC_FIELDS and op not in TEXT_OPERATORS)
        out.append(Condition(path, field_name, column, op, _parse_value(op, value, numeric, path), numeric))
    return out


def _parse_value(op: str, value: Any, numeric: bool, path: str) -> Any:
    if op in LIST_OPERATORS:
        if not isinstance(value, list):
            raise FilterError(path, f"operator '{op}' needs a list, got {_show(value)}")
        return tuple(_scalar(op, v, numeric, f"{path}.{op}[{i}]") for i, v in enumerate(value))
    return _scalar(op, value, numeric, path)


def _scalar(op: str, value: Any, numeric: bool, path: str) -> str | float:
    if isinstance(value, bool) or value is None or isinstance(value, Mapping | list):
        raise FilterError(path, f"operator '{op}' needs a text or number value, got {_show(value)}")
    if numeric:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str) and _FULL_NUMBER_RE.match(value):
            number = float(value.strip())
        else:
            raise FilterError(path, f"operator '{op}' needs a number here, got {_show(value)}")
        if not math.isfinite(number):
            raise FilterError(path, f"operator '{op}' needs a finite number, got {_show(value)}")
        return number
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= 60 else text[:57] + "..."


# -- Python evaluator ----------------------------------------------------------------------------------


def py_lower(text: str) -> str:
    """Lower-case exactly like DuckDB's lower(): per character, simple case mapping."""
    return text.replace("\u0130", "i").replace("\u03a3", "\u03c3").lower()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    m = _NUMBER_PY_RE.match(text)
    return float(m.group(1)) if m else None


_FALLBACK_KEYS: dict[str, tuple[str, ...]] = {ID_FIELD: (ID_FIELD, "id"), "title": ("title", "name")}


def _lookup(item: Mapping[str, Any], column: str) -> str | None:
    for key in _FALLBACK_KEYS.get(column, (column,)):
        if key in item:
            return _text(item[key])
    return None


def _cond_fn(c: Condition) -> Callable[[Mapping[str, Any]], bool]:
    col, op, val = c.column, c.op, c.value
    if c.numeric:

        def num_fn(item: Mapping[str, Any]) -> bool:
            n = _number(_lookup(item, col))
            if op == "eq":
                return n is not None and n == val
            if op == "neq":
                return not (n is not None and n == val)
            if op == "is_any":
                return n is not None and n in val
            if op == "is_not_any":
                return not (n is not None and n in val)
            if n is None:
                return False
            return {"lt": n < val, "lte": n <= val, "gt": n > val, "gte": n >= val}[op]

        return num_fn

    lowered = py_lower(val) if op in ("i_contains", "i_not_contains") else None

    def text_fn(item: Mapping[str, Any]) -> bool:
        t = _lookup(item, col)
        if op == "eq":
            return t is not None and t == val
        if op == "neq":
            return not (t is not None and t == val)
        if op == "contains":
            return t is not None and val in t
        if op == "not_contains":
            return not (t is not None and val in t)
        if op == "i_contains":
            return t is not None and lowered in py_lower(t)
        if op == "i_not_contains":
            return not (t is not None and lowered in py_lower(t))
        if op == "starts_with":
            return t is not None and t.startswith(val)
        if op == "is_any":
            return t is not None and t in val
        if op == "is_not_any":
            return not (t is not None and t in val)
        raise AssertionError(op)  # pragma: no cover - parse_rule rejects other operators

    return text_fn


def _node_fn(node: Node) -> Callable[[Mapping[str, Any]], bool]:
    if isinstance(node, Condition):
        return _cond_fn(node)
    fns = [_node_fn(child) for child in node.children]
    if node.kind == "not":
        (fn,) = fns
        return lambda item: not fn(item)
    if node.kind == "and":
        return lambda item: all(fn(item) for fn in fns)
    return lambda item: any(fn(item) for fn in fns)


def compile_matcher(rule: Mapping[str, Any] | str | bytes | Node) -> Callable[[Mapping[str, Any]], bool]:
    """A fast predicate ``item -> bool`` for a rule (validated once).

    ``item`` maps feed columns to values; ``retailer_id`` falls back to ``id`` and ``title`` to ``name`` so
    the sandbox's catalog items (keyed like Meta's product fields) work too.
    """
    node = rule if isinstance(rule, Condition | Group) else parse_rule(rule)
    return _node_fn(node)


def matches(rule: Mapping[str, Any] | str | bytes | Node, item: Mapping[str, Any]) -> bool:
    """Does ``item`` satisfy ``rule``? (see :func:`compile_matcher`)."""
    return compile_matcher(rule)(item)


def filter_items(
    rule: Mapping[str, Any] | str | bytes | Node, items: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    fn = compile_matcher(rule)
    return [item for item in items if fn(item)]


# -- SQL compiler --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlFilter:
    """A DuckDB boolean expression with ``?`` placeholders and its parameters, in order."""

    sql: str
    params: tuple[Any, ...]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def compile_sql(
    rule: Mapping[str, Any] | str | bytes | Node,
    *,
    id_column: str = ID_FIELD,
    available_columns: Collection[str] | None = None,
    qualifier: str | None = None,
) -> SqlFilter:
    """Compile a rule into a DuckDB boolean expression (never NULL) over a table with the feed columns.

    ``id_column``: the column holding the retailer id (``retailer_id`` in ``feed_items``, ``id`` in the feed
    stage tables). ``available_columns``: the table's columns; a field whose column is missing evaluates as
    "no value" (like a missing key in the Python evaluator). ``qualifier``: optional table alias. Every value
    is a bound parameter; identifiers come from a fixed whitelist and are quoted.
    """
    node = rule if isinstance(rule, Condition | Group) else parse_rule(rule)
    params: list[Any] = []
    cols = None if available_columns is None else {c.lower() for c in available_columns}

    def column_sql(column: str) -> str:
        name = id_column if column == ID_FIELD else column
        if cols is not None and name.lower() not in cols:
            return "CAST(NULL AS VARCHAR)"
        ref = f"{quote_ident(qualifier)}.{quote_ident(name)}" if qualifier else quote_ident(name)
        # Same "no value" rule as the Python side: NULL or empty string.
        return f"NULLIF(CAST({ref} AS VARCHAR), '')"

    def bind(value: Any) -> str:
        params.append(value)
        return "?"

    def cond_sql(c: Condition) -> str:
        t = column_sql(c.column)
        op, val = c.op, c.value
        if c.numeric:
            n = f"TRY_CAST(NULLIF(regexp_extract({t}, '{_NUMBER_SQL_RE}', 1), '') AS DOUBLE)"
            if op in ("is_any", "is_not_any"):
                inner = f"{n} IN ({', '.join(bind(v) for v in val)})" if val else "FALSE"
            else:
                sym = {"eq": "=", "neq": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[op]
                inner = f"{n} {sym} CAST({bind(val)} AS DOUBLE)"
            positive = f"COALESCE({inner}, FALSE)"
            return f"(NOT {positive})" if op in ("neq", "is_not_any") else positive
        if op in ("eq", "neq"):
            inner = f"{t} = {bind(val)}"
        elif op in ("contains", "not_contains"):
            inner = f"strpos({t}, {bind(val)}) > 0"
        elif op in ("i_contains", "i_not_contains"):
            inner = f"strpos(lower({t}), lower({bind(val)})) > 0"
        elif op == "starts_with":
            inner = f"starts_with({t}, {bind(val)})"
        elif op in ("is_any", "is_not_any"):
            inner = f"{t} IN ({', '.join(bind(v) for v in val)})" if val else "FALSE"
        else:  # pragma: no cover - numeric operators are handled above
            raise AssertionError(op)
        positive = f"COALESCE({inner}, FALSE)"
        return f"(NOT {positive})" if op in NEGATED_OPERATORS else positive

    def node_sql(n: Node) -> str:
        if isinstance(n, Condition):
            return cond_sql(n)
        if n.kind == "not":
            # Every condition is COALESCEd to a boolean, so NOT of one is never NULL either.
            return f"(NOT {node_sql(n.children[0])})"
        joiner = " AND " if n.kind == "and" else " OR "
        return "(" + joiner.join(node_sql(child) for child in n.children) + ")"

    sql = node_sql(node)
    return SqlFilter(sql, tuple(params))


def _table_sql(table: str) -> str:
    if not _TABLE_RE.match(table):
        raise ValueError(f"items_table must be a plain [schema.]table name, got {table!r}")
    return ".".join(quote_ident(part) for part in table.split("."))


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    cur = con.execute(f"SELECT * FROM {_table_sql(table)} LIMIT 0")
    return [d[0] for d in cur.description]


def expected_membership(
    con: duckdb.DuckDBPyConnection,
    rule: Mapping[str, Any] | str | bytes,
    items_table: str,
    tenant_id: str,
    *,
    id_column: str | None = None,
    sample_size: int = 10,
) -> tuple[int, list[str]]:
    """How many of the tenant's items in ``items_table`` match ``rule``, and a sample of their ids.

    ``items_table`` is ``feed_items`` (id column ``retailer_id``) or a feed stage table (``id``); the id column
    is detected unless given. When the table has an ``is_valid`` column only valid items count (Meta only
    holds those). Returns ``(count, sample_ids)``, the sample being the ``sample_size`` smallest ids.
    """
    node = parse_rule(rule)
    columns = table_columns(con, items_table)
    lowered = {c.lower() for c in columns}
    if id_column is None:
        id_column = ID_FIELD if ID_FIELD in lowered else "id"
    if id_column.lower() not in lowered:
        raise ValueError(f"{items_table} has no id column {id_column!r} (columns: {', '.join(columns)})")
    where = compile_sql(node, id_column=id_column, available_columns=columns)
    conditions = [where.sql]
    params: list[Any] = list(where.params)
    if "tenant_id" in lowered:
        conditions.insert(0, "tenant_id = ?")
        params.insert(0, tenant_id)
    if "is_valid" in lowered:
        conditions.append("COALESCE(is_valid, FALSE)")
    table = _table_sql(items_table)
    ident = quote_ident(id_column)
    sql = (
        f"SELECT count(*) AS n, "
        f"(list({ident} ORDER BY {ident}) FILTER (WHERE {ident} IS NOT NULL))[1:{max(0, int(sample_size))}] "
        f"FROM {table} WHERE {' AND '.join(conditions)}"
    )
    count, sample = con.execute(sql, params).fetchone()
    return int(count), [str(s) for s in (sample or [])]


def describe_rule(rule: Mapping[str, Any] | str | bytes | None) -> str:
    """Compact JSON of a rule for messages (or 'no filter')."""
    if rule is None:
        return "no filter"
    try:
        return canonical_json(rule)
    except FilterError:
        return str(rule)


__all__ = [
    "FIELD_COLUMNS",
    "NEGATED_OPERATORS",
    "NUMERIC_FIELDS",
    "OPERATORS",
    "Condition",
    "FilterError",
    "Group",
    "SqlFilter",
    "canonical_json",
    "compile_matcher",
    "compile_sql",
    "describe_rule",
    "expected_membership",
    "filter_items",
    "load_rule",
    "matches",
    "parse_rule",
    "py_lower",
    "validate_rule",
]
