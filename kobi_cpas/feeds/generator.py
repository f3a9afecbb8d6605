"""Deterministic synthetic Meta feeds, generated in DuckDB SQL (1,000,000 items in a few seconds).

Pseudo-random values come from ``md5_number_lower(seed || ':' || key)`` so the same seed gives the same file
byte for byte, on any machine and DuckDB version (md5 is stable, unlike DuckDB's ``hash``).

Shape of a generated feed: products of 4 variants (sizes S/M/L/XL) sharing ``item_group_id``, brand,
colour and shipping; one product in five is a one-size accessory without ``item_group_id``; prices in TRY,
about 15 % of products on sale (half of them with a ``sale_price_effective_date``), availability mix
80 % in stock / 15 % out of stock / 5 % preorder.

``variant_mismatch=True`` gives the shape of exporters that write brand casing and a size-specific title per
variant: the variants of a product carry up to four spellings of the brand and their size in the title (Meta
ingests these; the validator warns once per group), while shipping stays equal within the group.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

GENERATED_COLUMNS: tuple[str, ...] = (
    "id",
    "title",
    "description",
    "availability",
    "condition",
    "price",
    "sale_price",
    "sale_price_effective_date",
    "link",
    "image_link",
    "additional_image_link",
    "brand",
    "google_product_category",
    "item_group_id",
    "size",
    "color",
    "gender",
    "age_group",
    "material",
    "pattern",
    "quantity_to_sell_on_facebook",
    "shipping",
    "custom_label_0",
)

_BRANDS = [
    "Koton",
    "LC Waikiki",
    "Mavi",
    "DeFacto",
    "Colin's",
    "Boyner",
    "Ipekyol",
    "Network",
    "Vakko",
    "Beymen Club",
    "Hotiç",
    "Derimod",
    "Kiğılı",
    "Altınyıldız",
    "Twist",
    "Machka",
    "Penti",
    "Suwen",
    "Flo",
    "Greyder",
]
_PRODUCTS = [
    ("T-Shirt", "Apparel & Accessories > Clothing > Shirts & Tops"),
    ("Shirt", "Apparel & Accessories > Clothing > Shirts & Tops"),
    ("Jeans", "Apparel & Accessories > Clothing > Pants"),
    ("Dress", "Apparel & Accessories > Clothing > Dresses"),
    ("Jacket", "Apparel & Accessories > Clothing > Outerwear > Coats & Jackets"),
    ("Sweater", "Apparel & Accessories > Clothing > Shirts & Tops"),
    ("Sneakers", "Apparel & Accessories > Shoes"),
    ("Skirt", "Apparel & Accessories > Clothing > Skirts"),
]
_ACCESSORIES = [
    ("Scarf", "Apparel & Accessories > Clothing Accessories > Scarves & Shawls"),
    ("Belt", "Apparel & Accessories > Clothing Accessories > Belts"),
    ("Handbag", "Apparel & Accessories > Handbags, Wallets & Cases > Handbags"),
    ("Sunglasses", "Apparel & Accessories > Clothing Accessories > Sunglasses"),
]
_COLORS = ["Black", "White", "Navy", "Red", "Green", "Beige", "Grey", "Blue", "Pink", "Brown"]
_MATERIALS = ["Cotton", "Linen", "Wool", "Polyester", "Denim", "Leather", "Viscose"]
_PATTERNS = ["Solid", "Striped", "Checked", "Floral", "Printed"]
_GENDERS = ["female", "male", "unisex"]
_AGE_GROUPS = ["adult", "adult", "adult", "teen", "kids"]
_SHIPPING = ["TR::Standard:0.00 TRY", "TR::Standard:29.90 TRY", "TR::Express:59.90 TRY"]
_LABELS = ["summer", "winter", "bestseller", "new-arrival", "clearance"]


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _pick(values: list[str], h: str, shift: int) -> str:
    """SQL picking one of ``values`` from bits ``shift..`` of the UHUGEINT hash expression ``h``."""
    return f"{_sql_list(values)}[(({h} >> {shift}) % {len(values)})::INTEGER + 1]"


def _connect(threads: int | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    # Output order = range() order: DuckDB keeps insertion order through projections and COPY, which
    # makes the file deterministic without an ORDER BY (a sort would cost ~1.5 GB at 1M rows).
    con.execute("SET preserve_insertion_order = true")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def generate_feed_sql(
    n_items: int, seed: int, error_share: float = 0.0, variant_mismatch: bool = False
) -> str:
    """The SELECT producing the feed rows in order (exposed for tests and ad-hoc use)."""
    if n_items < 0:
        raise ValueError("n_items must be >= 0")
    seed_s = str(int(seed))
    err_ppm = round(error_share * 1_000_000)
    p_titles = _sql_list([t for t, _ in _PRODUCTS])
    p_cats = _sql_list([c for _, c in _PRODUCTS])
    a_titles = _sql_list([t for t, _ in _ACCESSORIES])
    a_cats = _sql_list([c for _, c in _ACCESSORIES])
    if variant_mismatch:
        brand = "CASE WHEN size IS NULL THEN brand ELSE [brand, upper(brand), brand || ' Co', lower(brand)][v + 1] END"
        title = f"{brand} || ' ' || color || ' ' || material || ' ' || noun || coalesce(' - ' || size, '')"
    else:
        brand, title = "brand", "brand || ' ' || color || ' ' || material || ' ' || noun"
    return f"""
WITH b AS (
    SELECT i,
           i // 4 AS p,
           i % 4 AS v,
           md5_number_lower('{seed_s}:p:' || (i // 4)) AS hp,
           md5_number_lower('{seed_s}:i:' || i) AS hi
    FROM range({int(n_items)}) t(i)
), c AS (
    SELECT *,
           (hp % 5) = 0 AS accessory,
           {_pick(_BRANDS, "hp", 3)} AS brand,
           {_pick(_COLORS, "hp", 8)} AS color,
           {_pick(_MATERIALS, "hp", 13)} AS material,
           {_pick(_PATTERNS, "hp", 17)} AS pattern,
           {_pick(_GENDERS, "hp", 21)} AS gender,
           {_pick(_AGE_GROUPS, "hp", 24)} AS age_group,
           {_pick(_SHIPPING, "hp", 28)} AS shipping,
           {_pick(_LABELS, "hp", 31)} AS label,
           ((hp >> 35) % {len(_PRODUCTS)})::INTEGER + 1 AS kind,
           ((hp >> 39) % {len(_ACCESSORIES)})::INTEGER + 1 AS akind,
           (49.90 + ((hp >> 42) % 300) * 10)::DECIMAL(12, 2) AS amount,
           (hp >> 52) % 100 AS sale_roll,
           hi % 100 AS avail_roll,
           (hi >> 20) % 1000000 AS err_roll,
           (hi >> 54) % 4 AS err_kind
    FROM b
), d AS (
    SELECT *,
           CASE WHEN accessory THEN {a_titles}[akind] ELSE {p_titles}[kind] END AS noun,
           CASE WHEN accessory THEN {a_cats}[akind] ELSE {p_cats}[kind] END AS gpc,
           CASE WHEN avail_roll < 80 THEN 'in stock' WHEN avail_roll < 95 THEN 'out of stock'
                ELSE 'preorder' END AS availability,
           CASE WHEN accessory THEN NULL ELSE ['S', 'M', 'L', 'XL'][v + 1] END AS size
    FROM c
), e AS (
    SELECT *,
           CASE WHEN accessory THEN 'SKU' || lpad(i::VARCHAR, 9, '0')
                ELSE 'SKU' || lpad(p::VARCHAR, 8, '0') || '-' || size END AS id,
           CASE WHEN accessory THEN NULL ELSE 'G' || lpad(p::VARCHAR, 8, '0') END AS item_group_id
    FROM d
)
SELECT
    CASE WHEN err_roll < {err_ppm} AND err_kind = 3 THEN NULL ELSE id END AS id,
    {title} AS title,
    brand || ' ' || lower(noun) || ' in ' || lower(color) || ', made of ' || lower(material)
        || ' with a ' || lower(pattern) || ' pattern. Comfortable, easy to care for, ships from Istanbul.'
        || CASE WHEN size IS NULL THEN '' ELSE ' Size ' || size || '.' END AS description,
    CASE WHEN err_roll < {err_ppm} AND err_kind = 1 THEN 'maybe' ELSE availability END AS availability,
    'new' AS condition,
    CASE WHEN err_roll < {err_ppm} AND err_kind = 0 THEN '₺' || amount::VARCHAR
         ELSE amount::VARCHAR || ' TRY' END AS price,
    CASE WHEN sale_roll < 15 THEN round(amount * 0.8, 2)::DECIMAL(12, 2)::VARCHAR || ' TRY' END AS sale_price,
    CASE WHEN sale_roll < 7 THEN '2025-06-01T00:00+03:00/2025-06-30T23:59+03:00' END
        AS sale_price_effective_date,
    'https://shop.example.com/p/' || coalesce(item_group_id, id) || '?variant=' || id AS link,
    CASE WHEN err_roll < {err_ppm} AND err_kind = 2 THEN 'cdn.example.com/img/' || p || '.jpg'
         ELSE 'https://cdn.example.com/img/' || p || '.jpg' END AS image_link,
    'https://cdn.example.com/img/' || p || '_2.jpg,https://cdn.example.com/img/' || p || '_3.jpg'
        AS additional_image_link,
    {brand} AS brand,
    gpc AS google_product_category,
    item_group_id,
    size,
    color,
    gender,
    age_group,
    material,
    pattern,
    CASE WHEN availability = 'in stock' THEN ((hi >> 10) % 50 + 1)::VARCHAR ELSE '0' END
        AS quantity_to_sell_on_facebook,
    shipping,
    label AS custom_label_0
FROM e
"""


def generate_feed(
    path: str | Path,
    n_items: int,
    *,
    seed: int = 42,
    error_share: float = 0.0,
    threads: int | None = None,
    variant_mismatch: bool = False,
) -> Path:
    """Write an ``n_items`` CSV feed (header + one line per item) to ``path``; same seed, same bytes.

    ``error_share`` (0..1) corrupts that share of items in one of four ways (price with a currency
    sign, unknown availability, image_link without scheme, missing id) to exercise the validator.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sql = generate_feed_sql(n_items, seed, error_share, variant_mismatch)
    con = _connect(threads)
    try:
        con.execute(f"COPY ({sql}) TO '{_sql_path(path)}' (FORMAT csv, HEADER, DELIMITER ',')")
    finally:
        con.close()
    return path


def mutation_predicate_sql(seed: int, share: float, id_expr: str = "id") -> str:
    """SQL boolean: does ``mutate_volatile(seed=seed, share=share)`` change the item with this id."""
    ppm = round(share * 1_000_000)
    return f"(md5_number_lower('{int(seed)}:m:' || coalesce({id_expr}, '')) % 1000000) < {ppm}"


def mutate_volatile(
    src: str | Path,
    dst: str | Path,
    *,
    share: float = 0.01,
    seed: int = 1,
    threads: int | None = None,
) -> Path:
    """Copy the CSV feed ``src`` to ``dst`` changing only volatile fields of ``share`` of the items.

    A changed item gets price +10 % (sale_price stays lower), availability toggled between
    "in stock" and "out of stock", and a new quantity. Which items change is a pure function of
    (seed, id): see :func:`mutation_predicate_sql`. Row order and all other bytes stay the same.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    hit = mutation_predicate_sql(seed, share)
    con = _connect(threads)
    try:
        cols = [
            r[0]
            for r in con.execute(
                f"DESCRIBE SELECT * FROM read_csv('{_sql_path(src)}', header=true, all_varchar=true)"
            ).fetchall()
        ]
        needed = {"price", "availability", "quantity_to_sell_on_facebook"}
        if not needed <= set(cols):
            raise ValueError(f"{src}: mutate_volatile needs the columns {sorted(needed)}")
        con.execute(
            f"""
            COPY (
                SELECT * REPLACE (
                    CASE WHEN {hit} AND regexp_full_match(price, '[0-9]+(\\.[0-9]{{1,2}})? [A-Z]{{3}}')
                         THEN round(split_part(price, ' ', 1)::DECIMAL(18, 2) * 1.1, 2)::DECIMAL(18, 2)::VARCHAR
                              || ' ' || split_part(price, ' ', 2)
                         ELSE price END AS price,
                    CASE WHEN {hit} THEN
                         CASE WHEN availability = 'in stock' THEN 'out of stock' ELSE 'in stock' END
                         ELSE availability END AS availability,
                    CASE WHEN {hit} THEN
                         CASE WHEN availability = 'in stock' THEN '0'
                              ELSE ((md5_number_lower('{int(seed)}:q:' || id) % 40) + 1)::VARCHAR END
                         ELSE quantity_to_sell_on_facebook END AS quantity_to_sell_on_facebook
                )
                FROM read_csv('{_sql_path(src)}', header=true, all_varchar=true, delim=',', quote='"',
                              escape='"')
            ) TO '{_sql_path(dst)}' (FORMAT csv, HEADER, DELIMITER ',')
            """
        )
    finally:
        con.close()
    return dst


def change_feed(
    src: str | Path,
    dst: str | Path,
    scratch: str | Path,
    *,
    seeds: tuple[int, int, int],
    new_id_sql: str,
    new_group_sql: str,
    shares: tuple[float, float, float] = (0.01, 0.002, 0.002),
    threads: int | None = None,
) -> Path:
    """Copy the CSV feed ``src`` to ``dst`` changed as between two snapshots: of the items, ``shares`` (volatile,
    removed, new) get another price or stock (:func:`mutate_volatile`), are left out, or are copied as new items
    whose id and group are the SQL ``new_id_sql`` and ``new_group_sql``; which ones is a pure function of
    ``seeds`` (same order) and the id (:func:`mutation_predicate_sql`). ``scratch`` is a file path for the
    intermediate feed."""
    volatile, removed, new = shares
    mutate_volatile(src, scratch, seed=seeds[0], share=volatile, threads=threads)
    read = (
        f"read_csv('{_sql_path(scratch)}', header=true, all_varchar=true, delim=',', quote='\"', escape='\"')"
    )
    con = _connect(threads)
    try:
        con.execute(
            f"""COPY (
                SELECT * FROM {read} WHERE NOT {mutation_predicate_sql(seeds[1], removed)}
                UNION ALL
                SELECT * REPLACE ({new_id_sql} AS id, {new_group_sql} AS item_group_id)
                FROM {read} WHERE {mutation_predicate_sql(seeds[2], new)}
            ) TO '{_sql_path(dst)}' (FORMAT csv, HEADER, DELIMITER ',')"""
        )
    finally:
        con.close()
    return Path(dst)


# The change of the snapshot and sync benchmarks: 1 % volatile (seed 7), 0.2 % removed, 0.2 % new under a
# ``NEW-`` id in a group of its own (a prefix, so that no new id reads as a variant of a removed one).
BENCH_CHANGE_SEEDS = (7, 11, 13)
FLEET_REMOVED_SQL = mutation_predicate_sql(BENCH_CHANGE_SEEDS[1], 0.002)


def fleet_change(src: str | Path, dst: str | Path, scratch: str | Path) -> Path:
    """:func:`change_feed` with the benchmarks' change (:data:`BENCH_CHANGE_SEEDS`)."""
    return change_feed(
        src,
        dst,
        scratch,
        seeds=BENCH_CHANGE_SEEDS,
        new_id_sql="'NEW-' || id",
        new_group_sql="item_group_id || '-new'",
    )


def _sql_path(path: str | Path) -> str:
    return str(path).replace("'", "''")
