"""Per-item content and volatile hashes, computed in SQL.

``content_hash`` covers every non-volatile canonical field (``fields.CONTENT_COLUMNS``, including id),
``volatile_hash`` the volatile ones (``fields.VOLATILE_COLUMNS``: price, sale_price,
sale_price_effective_date, availability, quantity_to_sell_on_facebook). A price/stock change therefore
changes only ``volatile_hash``; anything else changes ``content_hash``.

Definition: DuckDB's multi-argument ``hash(c1, c2, ...)`` (a UBIGINT) of the *normalised* values (trimmed,
blank = NULL, valid enums lower-cased) in ``COLUMNS`` order. Each argument is hashed on its own and the
results combined, so a value moving to the next column is a change, and NULL hashes differently from ''.

Why not md5: at a million items md5 over the concatenated fields cost more than the whole validation
(about 1 s of a 6 s ingest on 2 cores, `make bench`), ``hash()`` almost nothing. 64 bits are plenty
for change detection: an edit goes unnoticed only if the old and new versions of one item collide
(probability 2^-64 per edit).

The price: DuckDB does not promise that ``hash()`` stays the same across versions, and a new field in
``fields.FIELDS`` changes every hash too. :func:`hash_scheme` fingerprints both (probe values hashed by
the running DuckDB + the column lists); ``kobi_cpas.sync.state`` stores the scheme the sync state was
written with and, when it differs, re-hashes the state so that items in sync with Meta stay in sync
(nothing is re-sent because of an upgrade) and items that were not stay pending.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import duckdb

from kobi_cpas.feeds.fields import CONTENT_COLUMNS, VOLATILE_COLUMNS

HASH_TYPE = "UBIGINT"
# Bump when the definition above changes in a way the probe below cannot see.
_SCHEME_VERSION = 2
# Probe values: ASCII, Turkish letters, blank, NULL, a long value (DuckDB hashes long strings in chunks).
_PROBE = "hash('kobi', NULL::VARCHAR, '', 'Kiğılı Ayakkabı 1.299,90 TRY', repeat('abcdefghij', 40))"
_PROBE_BY_VERSION: dict[str, int] = {}


def _hash_sql(
    columns: Sequence[str], qualifier: str | None, overrides: Mapping[str, str] | None = None
) -> str:
    prefix = f"{qualifier}." if qualifier else ""
    args = ((overrides or {}).get(c, f"{prefix}{c}") for c in columns)
    # ::VARCHAR pins the argument type: a string literal (e.g. a constant in a SELECT) hashes as VARCHAR.
    return f"hash({', '.join(f'{a}::VARCHAR' for a in args)})"


def content_hash_sql(qualifier: str | None = None, overrides: Mapping[str, str] | None = None) -> str:
    """SQL expression of the content hash over the normalised columns (optionally ``qualifier.col``);
    ``overrides`` gives other expressions for some columns (the hash of the item as it would be with them)."""
    return _hash_sql(CONTENT_COLUMNS, qualifier, overrides)


def volatile_hash_sql(qualifier: str | None = None) -> str:
    """SQL expression of the volatile hash over the normalised columns."""
    return _hash_sql(VOLATILE_COLUMNS, qualifier)


def hash_scheme(con: duckdb.DuckDBPyConnection) -> str:
    """Fingerprint of the hash definition as the running DuckDB computes it.

    Two databases agree on every item hash exactly when their schemes are equal.
    """
    # Every connection checks the scheme (Warehouse.migrate); the probe is a property of the DuckDB library,
    # which is loaded once per process, so it is computed once per process and version.
    probe = _PROBE_BY_VERSION.get(duckdb.__version__)
    if probe is None:
        (probe,) = con.execute(f"SELECT {_PROBE}").fetchone()  # type: ignore[misc]
        _PROBE_BY_VERSION[duckdb.__version__] = probe
    columns = hashlib.sha256(f"{CONTENT_COLUMNS}|{VOLATILE_COLUMNS}".encode()).hexdigest()[:12]
    return f"v{_SCHEME_VERSION}:duckdb-hash:{probe}:cols-{columns}"


def item_hashes(con: duckdb.DuckDBPyConnection, values: Mapping[str, str | None]) -> tuple[int, int]:
    """(content_hash, volatile_hash) of one item of *normalised* values (missing fields are NULL).

    Evaluates the same SQL as the bulk paths; for tests and for explaining a single item.
    """
    cols = (*CONTENT_COLUMNS, *VOLATILE_COLUMNS)
    select = ", ".join(f"?::VARCHAR AS {c}" for c in cols)
    row = con.execute(
        f"SELECT {content_hash_sql()}, {volatile_hash_sql()} FROM (SELECT {select})",
        [values.get(c) for c in cols],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
