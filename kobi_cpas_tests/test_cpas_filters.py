"""Meta's product-set rule language: validation, the DuckDB compiler and the Python evaluator agree."""

from __future__ import annotations

import json
import random
from typing import Any

import duckdb
import pytest

from kobi_cpas.feeds.fields import COLUMNS
from kobi_cpas.registry.filters import (
    NEGATED_OPERATORS,
    OPERATORS,
    FilterError,
    canonical_json,
    compile_matcher,
    compile_sql,
    expected_membership,
    matches,
    parse_rule,
    table_columns,
)

FEED_COLUMNS = [c for c in COLUMNS if c != "id"]

ITEMS: list[dict[str, Any]] = [
    {"retailer_id": "AH-001", "title": "İstanbul Towel", "brand": "Anatolia Home", "price": "199.90 TRY",
     "availability": "in stock", "color": "blue", "custom_label_0": "5", "item_group_id": "G1"},
    {"retailer_id": "AH-002", "title": "Bath robe ISPARTA", "brand": "anatolia home", "price": "349.00 TRY",
     "sale_price": "299 TRY", "availability": "out of stock", "color": "Blue", "item_group_id": "G1"},
    {"retailer_id": "AH-003", "title": "Duvet cover", "brand": "Anatolia Home", "price": "1299.5 TRY",
     "availability": "preorder", "gender": "unisex", "custom_label_0": "12"},
    {"retailer_id": "BO-100", "title": "Trail jacket", "brand": "Bosphorus Outdoor", "price": "20 TRY",
     "availability": "in stock", "size": "M", "condition": "new"},
    {"retailer_id": "BO-101", "title": "", "brand": "", "price": None, "availability": None},
    {"retailer_id": "CC-7", "title": "Ceramic bowl Σ", "brand": "Cappadocia Ceramics", "price": "abc",
     "availability": "in stock", "custom_label_0": "x12", "quantity_to_sell_on_facebook": "3"},
    {"retailer_id": "X'; DROP TABLE feed_items; --", "title": "weird id", "brand": "O'Brien", "price": "0 TRY",
     "availability": "discontinued"},
]  # fmt: skip


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    cols = ", ".join(f'"{c}" VARCHAR' for c in FEED_COLUMNS)
    con.execute(
        f"CREATE TABLE feed_items (tenant_id VARCHAR, snapshot_id VARCHAR, retailer_id VARCHAR, {cols})"
    )
    for item in ITEMS:
        values = ["t1", "s1", item["retailer_id"], *[item.get(c) for c in FEED_COLUMNS]]
        con.execute(f"INSERT INTO feed_items VALUES ({', '.join('?' * len(values))})", values)
    # Another tenant's identical item never counts.
    con.execute(
        "INSERT INTO feed_items (tenant_id, snapshot_id, retailer_id, brand) VALUES ('t2','s','Z','Anatolia Home')"
    )
    return con


def sql_ids(con: duckdb.DuckDBPyConnection, rule: Any) -> set[str]:
    where = compile_sql(rule, available_columns=table_columns(con, "feed_items"))
    rows = con.execute(
        f"SELECT retailer_id FROM feed_items WHERE tenant_id = 't1' AND {where.sql}", list(where.params)
    ).fetchall()
    return {r[0] for r in rows}


def py_ids(rule: Any) -> set[str]:
    fn = compile_matcher(rule)
    return {i["retailer_id"] for i in ITEMS if fn(i)}


CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"brand": {"eq": "Anatolia Home"}}, {"AH-001", "AH-003"}),
    ({"brand": {"neq": "Anatolia Home"}}, {"AH-002", "BO-100", "BO-101", "CC-7", "X'; DROP TABLE feed_items; --"}),
    ({"brand": {"i_contains": "ANATOLIA"}}, {"AH-001", "AH-002", "AH-003"}),
    ({"title": {"contains": "Towel"}}, {"AH-001"}),
    ({"title": {"contains": "towel"}}, set()),
    ({"name": {"i_contains": "istanbul"}}, {"AH-001"}),  # İ lower-cases to i in both evaluators
    ({"title": {"i_contains": "σ"}}, {"CC-7"}),
    ({"title": {"i_not_contains": "T"}}, {"BO-101", "CC-7", "X'; DROP TABLE feed_items; --"}),
    ({"title": {"not_contains": "Towel"}}, {"AH-002", "AH-003", "BO-100", "BO-101", "CC-7", "X'; DROP TABLE feed_items; --"}),
    ({"title": {"starts_with": "Bath"}}, {"AH-002"}),
    ({"availability": {"is_any": ["in stock", "preorder"]}}, {"AH-001", "AH-003", "BO-100", "CC-7"}),
    ({"availability": {"is_not_any": ["in stock"]}}, {"AH-002", "AH-003", "BO-101", "X'; DROP TABLE feed_items; --"}),
    ({"availability": {"is_any": []}}, set()),
    ({"price": {"lt": 200}}, {"AH-001", "BO-100", "X'; DROP TABLE feed_items; --"}),
    ({"price": {"lte": 199.9}}, {"AH-001", "BO-100", "X'; DROP TABLE feed_items; --"}),
    ({"price": {"gt": 349}}, {"AH-003"}),
    ({"price": {"gte": "349"}}, {"AH-002", "AH-003"}),
    ({"price": {"eq": 20}}, {"BO-100"}),
    ({"price": {"is_any": [20, 349]}}, {"AH-002", "BO-100"}),
    ({"sale_price": {"lt": 300}}, {"AH-002"}),
    ({"custom_label_0": {"gte": 5}}, {"AH-001", "AH-003"}),  # "x12" has no leading number
    ({"quantity_to_sell_on_facebook": {"eq": 3}}, {"CC-7"}),
    ({"retailer_id": {"is_any": ["AH-001", "X'; DROP TABLE feed_items; --"]}}, {"AH-001", "X'; DROP TABLE feed_items; --"}),
    ({"brand": {"eq": "O'Brien"}}, {"X'; DROP TABLE feed_items; --"}),
    ({"product_type": {"eq": "x"}}, set()),  # not a feed column: no value anywhere
    ({"product_type": {"neq": "x"}}, {i["retailer_id"] for i in ITEMS}),
    (
        {"and": [{"or": [{"brand": {"eq": "Anatolia Home"}}, {"brand": {"eq": "Bosphorus Outdoor"}}]},
                 {"availability": {"is_any": ["in stock"]}}]},
        {"AH-001", "BO-100"},
    ),
    ({"or": [{"and": [{"color": {"eq": "blue"}}, {"price": {"lt": 250}}]}, {"size": {"eq": "M"}}]}, {"AH-001", "BO-100"}),
    ({"brand": {"i_contains": "anatolia"}, "availability": {"eq": "in stock"}}, {"AH-001"}),  # implicit AND
    ({"price": {"gt": 100, "lt": 400}}, {"AH-001", "AH-002"}),
    ({"item_group_id": {"eq": "G1"}, "gender": {"neq": "unisex"}}, {"AH-001", "AH-002"}),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "expected"), CASES, ids=[json.dumps(c[0])[:60] for c in CASES])
def test_operator_semantics_sql_and_python(
    con: duckdb.DuckDBPyConnection, rule: Any, expected: set[str]
) -> None:
    assert py_ids(rule) == expected
    assert sql_ids(con, rule) == expected
    assert sql_ids(con, json.dumps(rule)) == expected  # JSON text works too


def test_every_operator_is_covered() -> None:
    used = set()
    for rule, _ in CASES:
        stack = [rule]
        while stack:
            node = stack.pop()
            for k, v in node.items():
                if k in ("and", "or"):
                    stack.extend(v)
                else:
                    used.update(v)
    assert used == OPERATORS


def _random_rule(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 2 and rng.random() < 0.35:
        kind = rng.choice(["and", "or"])
        return {kind: [_random_rule(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    field = rng.choice(["brand", "title", "availability", "price", "color", "custom_label_0", "retailer_id"])
    words = ["Anatolia Home", "anatolia", "blue", "Blue", "in stock", "İ", "i", "AH", "", "O'Brien", "199.90"]
    numeric_field = field == "price"
    op = rng.choice(sorted(OPERATORS))
    if op in ("lt", "lte", "gt", "gte") or (numeric_field and op in ("eq", "neq")):
        value: Any = rng.choice([0, 20, 199.9, 200, 349, 1299.5, 5, 12])
    elif op in ("is_any", "is_not_any"):
        pool = [20, 349, 0] if numeric_field else words
        value = rng.sample(pool, rng.randint(0, 2))
    else:
        value = rng.choice(words)
    return {field: {op: value}}


def test_random_rules_agree(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(7)
    checked = 0
    for _ in range(250):
        rule = _random_rule(rng)
        assert sql_ids(con, rule) == py_ids(rule), rule
        checked += 1
    assert checked == 250


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"and": [{"brand": {"eq": "x"}}, {"availability": {"is_anyy": ["in stock"]}}]},
         "and[1].availability: unknown operator 'is_anyy'"),
        ({"or": [{"and": [{"colour": {"eq": "red"}}]}]}, "or[0].and[0].colour: unknown field 'colour'"),
        ({"and": []}, "and: 'and' needs a non-empty list"),
        ({"availability": {"is_any": "in stock"}}, "availability: operator 'is_any' needs a list"),
        ({"price": {"gt": "cheap"}}, "price: operator 'gt' needs a number"),
        ({"brand": {"eq": {"nested": 1}}}, "brand: operator 'eq' needs a text or number value"),
        ({"brand": {"eq": True}}, "brand: operator 'eq' needs a text or number value"),
        ({"availability": {"is_any": ["in stock", None]}}, "availability.is_any[1]: operator 'is_any'"),
        ({"brand": "Acme"}, "brand: needs an object {operator: value}"),
        ({}, "<rule>: empty clause"),
        ([], "<rule>: must be a JSON object"),
        ("{not json", "<rule>: not valid JSON"),
        ({"not": [{"brand": {"eq": "x"}}]}, "not: 'not' needs one clause"),
        ({"and": [{"not": {"colour": {"eq": "red"}}}]}, "and[0].not.colour: unknown field 'colour'"),
        ({"and": [{"brand": {"eq": "x"}}, "oops"]}, "and[1]: a clause must be an object"),
    ],
)  # fmt: skip
def test_invalid_rules_name_the_clause(rule: Any, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_rule(rule)
    assert str(info.value).startswith(message), str(info.value)


def test_sql_binds_every_value() -> None:
    evil = "x' OR 1=1; --"
    where = compile_sql({"and": [{"brand": {"eq": evil}}, {"title": {"is_any": [evil, "b"]}}]})
    assert evil not in where.sql and "OR 1=1" not in where.sql
    assert where.params == (evil, evil, "b")


def test_expected_membership_on_feed_items_and_stage_table(con: duckdb.DuckDBPyConnection) -> None:
    rule = {"brand": {"i_contains": "anatolia"}}
    count, sample = expected_membership(con, rule, "feed_items", "t1")
    assert (count, sample) == (3, ["AH-001", "AH-002", "AH-003"])
    count, sample = expected_membership(con, rule, "feed_items", "t1", sample_size=1)
    assert (count, sample) == (3, ["AH-001"])
    # A stage table: the id column is `id`, invalid items do not count (Meta does not hold them).
    con.execute("CREATE SCHEMA feed_stage")
    con.execute(
        "CREATE TABLE feed_stage.items_t1 AS SELECT tenant_id, retailer_id AS id, brand, "
        "retailer_id <> 'AH-002' AS is_valid FROM feed_items"
    )
    assert expected_membership(con, rule, "feed_stage.items_t1", "t1") == (2, ["AH-001", "AH-003"])
    with pytest.raises(ValueError, match="plain"):
        expected_membership(con, rule, "feed_items; DROP TABLE feed_items", "t1")
    assert con.execute("SELECT count(*) FROM feed_items").fetchone()[0] == len(ITEMS) + 1


def test_matches_accepts_sandbox_items_and_canonical_json() -> None:
    item = {
        "id": "sku-1",
        "name": "Blue towel",
        "price": "10.00 TRY",
    }  # Meta field names, as the sandbox keeps them
    assert matches({"retailer_id": {"eq": "sku-1"}}, item)
    assert matches({"title": {"i_contains": "TOWEL"}}, item)
    assert (
        canonical_json('{"size": {"eq": 1}, "brand": {"eq": "x"}}') == '{"brand":{"eq":"x"},"size":{"eq":1}}'
    )


ALL_IDS = {i["retailer_id"] for i in ITEMS}

NOT_CASES: list[tuple[dict[str, Any], set[str]]] = [
    # ``not`` of a positive operator is its negated operator, items without the field included.
    ({"not": {"brand": {"eq": "Anatolia Home"}}}, ALL_IDS - {"AH-001", "AH-003"}),
    ({"not": {"availability": {"is_any": ["in stock"]}}}, {"AH-002", "AH-003", "BO-101", "X'; DROP TABLE feed_items; --"}),
    ({"not": {"price": {"lt": 200}}}, ALL_IDS - {"AH-001", "BO-100", "X'; DROP TABLE feed_items; --"}),
    ({"brand": {"i_contains": "anatolia"}, "not": {"availability": {"eq": "in stock"}}}, {"AH-002", "AH-003"}),
    ({"and": [{"brand": {"i_contains": "anatolia"}}, {"not": {"or": [{"color": {"eq": "blue"}}, {"gender": {"eq": "unisex"}}]}}]}, {"AH-002"}),
    ({"not": {"not": {"size": {"eq": "M"}}}}, {"BO-100"}),
    ({"or": [{"not": {"brand": {"i_contains": "o"}}}, {"size": {"eq": "M"}}]}, {"BO-100", "BO-101"}),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "expected"), NOT_CASES, ids=[json.dumps(c[0])[:60] for c in NOT_CASES])
def test_not_sql_and_python(con: duckdb.DuckDBPyConnection, rule: Any, expected: set[str]) -> None:
    assert py_ids(rule) == expected
    assert sql_ids(con, rule) == expected
    assert sql_ids(con, json.dumps(rule)) == expected


def test_not_is_the_complement_of_random_rules(con: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(11)
    for _ in range(120):
        rule = _random_rule(rng)
        negated = {"not": rule}
        assert py_ids(negated) == ALL_IDS - py_ids(rule), rule
        assert sql_ids(con, negated) == py_ids(negated), rule


def _missing_value_rule(op: str) -> dict[str, Any]:
    if op in ("lt", "lte", "gt", "gte"):
        return {"price": {op: 10}}
    if op in ("is_any", "is_not_any"):
        return {"brand": {op: ["Acme", ""]}}
    return {"brand": {op: "Acme"}}


@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_missing_field_is_no_value_for_every_operator(op: str) -> None:
    """One rule for missing fields in both evaluators: an absent key, None and "" are no value; positive
    operators are false on it, negated operators (and ``not`` of a positive one) true."""
    con = duckdb.connect()
    con.execute("CREATE TABLE items (retailer_id VARCHAR, brand VARCHAR, price VARCHAR)")
    con.execute("INSERT INTO items VALUES ('absent', NULL, NULL), ('empty', '', '')")
    rule = _missing_value_rule(op)
    expected = op in NEGATED_OPERATORS
    for item in ({"retailer_id": "absent"}, {"retailer_id": "none", "brand": None, "price": None},
                 {"retailer_id": "empty", "brand": "", "price": ""}):  # fmt: skip
        assert matches(rule, item) is expected, item
        assert matches({"not": rule}, item) is not expected, item
    where = compile_sql(rule, available_columns=["retailer_id", "brand", "price"])
    rows = con.execute(f"SELECT retailer_id FROM items WHERE {where.sql}", list(where.params)).fetchall()
    assert {r[0] for r in rows} == ({"absent", "empty"} if expected else set())
    # A field the table does not have at all is no value too.
    where = compile_sql(rule, available_columns=["retailer_id"])
    rows = con.execute(f"SELECT retailer_id FROM items WHERE {where.sql}", list(where.params)).fetchall()
    assert {r[0] for r in rows} == ({"absent", "empty"} if expected else set())


def test_meta_field_names_of_the_sandbox_items() -> None:
    item = {"id": "sku-1", "link": "https://shop.example.com/p/1", "image_link": "https://cdn.example.com/1.jpg",
            "item_group_id": "G7"}  # fmt: skip
    assert matches({"url": {"starts_with": "https://shop."}}, item)
    assert matches({"image_url": {"contains": "cdn"}}, item)
    assert matches({"retailer_product_group_id": {"eq": "G7"}}, item)
    assert not matches({"not": {"retailer_product_group_id": {"eq": "G7"}}}, item)
