"""The JSON samples of Meta's Catalog Integration guide, pinned as fixtures the sandbox serves.

Fixed from the guide only where it was not valid JSON (typographic quotes, trailing commas, "..." elisions);
every field and value shown there is kept.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

REFERENCE_FIXTURES = (
    "commerce_merchant_settings",  # GET /{catalog_id}?fields=commerce_merchant_settings.fields(id,cta)
    "feed_upload_errors",  # GET /{upload_id}/errors?error_priority=HIGH
    "batch_request_status",  # GET /{catalog_id}/check_batch_request_status?handle=..
    "catalog_all_errors",  # GET /catalog_all_errors?locale=en_US
    "products_with_errors",  # GET /{catalog_id}/products?fields=id,errors&error_priority=HIGH
    "item_errors",  # GET /{item_id}?fields=errors
)


@cache
def _load(name: str) -> Any:
    path = FIXTURES_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(
            f"no sandbox fixture {name!r} in {FIXTURES_DIR} (known: {', '.join(REFERENCE_FIXTURES)})"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_fixture(name: str) -> Any:
    """A fresh copy of the named fixture (callers may mutate it)."""
    return copy.deepcopy(_load(name))
