"""Per-item content and volatile hashes, computed in SQL (and reproducible in Python).

``content_hash`` covers every non-volatile canonical field (``fields.CONTENT_COLUMNS``, including id),
``volatile_hash`` the volatile ones (``fields.VOLATILE_COLUMNS``: price, sale_price,
sale_price_effective_date, availability, quantity_to_sell_on_facebook). A price/stock change therefore
changes only ``volatile_hash``; anything else changes ``content_hash``.

Definition (version ``HASH_VERSION``): lower-case hex ``md5`` of the *normalised* values (trimmed,
blank = NULL, valid enums lower-cased) in ``COLUMNS`` order, NULL written as the empty string, joined
with the unit separator ``chr(31)``. md5 is used rather than DuckDB's ``hash()`` because it is identical
across DuckDB versions and languages. Adding a field to ``fields.FIELDS`` changes every hash: bump
``HASH_VERSION`` and expect one full re-sync.

Cost note: ``md5_number(...)`` (a UHUGEINT) instead of the hex string saves about 1.3 CPU-seconds per
million items (formatting and storing random 32-character strings costs more than the md5 itself), but
the sync tables store VARCHAR hashes, so switching is a coordinated change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from kobi_cpas.feeds.fields import CONTENT_COLUMNS, VOLATILE_COLUMNS

HASH_VERSION = 1
SEPARATOR = "\x1f"


def _hash_sql(columns: Sequence[str], qualifier: str | None) -> str:
    prefix = f"{qualifier}." if qualifier else ""
    # concat() treats NULL as '' (cheaper than concat_ws over coalesce()).
    parts = ", chr(31), ".join(f"{prefix}{c}" for c in columns)
    return f"md5(concat({parts}))"


def content_hash_sql(qualifier: str | None = None) -> str:
    """SQL expression of the content hash over the normalised columns (optionally ``qualifier.col``)."""
    return _hash_sql(CONTENT_COLUMNS, qualifier)


def volatile_hash_sql(qualifier: str | None = None) -> str:
    """SQL expression of the volatile hash over the normalised columns."""
    return _hash_sql(VOLATILE_COLUMNS, qualifier)


def _hash_py(values: Mapping[str, str | None], columns: Sequence[str]) -> str:
    joined = SEPARATOR.join(values.get(c) or "" for c in columns)
    return hashlib.md5(joined.encode("utf-8")).hexdigest()


def content_hash(values: Mapping[str, str | None]) -> str:
    """Python twin of :func:`content_hash_sql` for one item of *normalised* values."""
    return _hash_py(values, CONTENT_COLUMNS)


def volatile_hash(values: Mapping[str, str | None]) -> str:
    """Python twin of :func:`volatile_hash_sql`."""
    return _hash_py(values, VOLATILE_COLUMNS)


def add_hash_columns_sql(source_sql: str) -> str:
    """``SELECT *, content_hash, volatile_hash FROM (source_sql)`` for a relation of normalised columns."""
    return (
        f"SELECT *, {content_hash_sql()} AS content_hash, {volatile_hash_sql()} AS volatile_hash "
        f"FROM ({source_sql})"
    )
