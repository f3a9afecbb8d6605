"""Item error types, diagnostic groups, locales and the problems that come and go, loaded from
``sandbox/data/error_types.json`` at import (data, not code: adding a type is a JSON edit)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta_sandbox.reference import load_fixture

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "error_types.json"


@dataclass(frozen=True)
class ErrorType:
    error_type: str
    priority: str
    title: str
    description: str
    call_to_action: str
    group: str  # ProductCatalogDiagnosticGroup type
    title_tr: str | None = None


@dataclass(frozen=True)
class Problem:
    """A problem that comes and goes: present for an item in a time window of ``period_hours`` with
    probability ``rate`` (times the admin's problem_rate_scale)."""

    error_type: str
    rate: float
    period_hours: int
    only_if: str | None = None  # "out_of_stock"


def _error_type(entry: dict[str, Any]) -> ErrorType:
    return ErrorType(
        entry["error_type"],
        entry["priority"],
        entry["title"],
        entry["description"],
        entry["call_to_action"],
        entry["group"],
        entry.get("title_tr"),
    )


def _reference_entry(extra: dict[str, Any]) -> ErrorType:
    # The first type is Meta's own catalog_all_errors sample, served verbatim.
    (entry,) = load_fixture("catalog_all_errors")["all"]
    return ErrorType(
        entry["error_type"],
        entry["error_priority"],
        entry["title"],
        entry["description"],
        entry["call_to_action"],
        extra["group"],
        extra.get("title_tr"),
    )


_DATA: dict[str, Any] = json.loads(DATA_FILE.read_text(encoding="utf-8"))

ERROR_TYPES: tuple[ErrorType, ...] = (
    _reference_entry(_DATA["reference_entry"]),
    *(_error_type(e) for e in _DATA["error_types"]),
)
ERROR_TYPES_BY_NAME: dict[str, ErrorType] = {e.error_type: e for e in ERROR_TYPES}

# Reported on items but absent from catalog_all_errors (Meta adds types before documenting them).
UNDOCUMENTED_ERROR = _error_type(_DATA["undocumented_error"])
ITEM_ERROR_TYPES: dict[str, ErrorType] = {
    **ERROR_TYPES_BY_NAME,
    UNDOCUMENTED_ERROR.error_type: UNDOCUMENTED_ERROR,
}

# Locales Meta serves (a representative set); tr_TR has translated titles, the others answer in English.
KNOWN_LOCALES: frozenset[str] = frozenset(_DATA["known_locales"])

# ProductCatalogDiagnosticGroup types: title, subtitle, error_code, affected channels and features.
DIAGNOSTIC_GROUPS: dict[str, tuple[str, str, int, list[str], list[str]]] = {
    name: (
        g["title"],
        g["subtitle"],
        int(g["error_code"]),
        list(g["affected_channels"]),
        list(g["affected_features"]),
    )
    for name, g in _DATA["diagnostic_groups"].items()
}

GENERATED_PROBLEMS: tuple[Problem, ...] = tuple(
    Problem(p["error_type"], float(p["rate"]), int(p["period_hours"]), p.get("only_if"))
    for p in _DATA["generated_problems"]
)


def error_type_info(error_type: str) -> ErrorType:
    known = ITEM_ERROR_TYPES.get(error_type)
    if known is not None:
        return known
    u = UNDOCUMENTED_ERROR
    return ErrorType(error_type, u.priority, u.title, u.description, u.call_to_action, u.group)


def all_errors(locale: str) -> list[dict[str, Any]]:
    out = []
    for e in ERROR_TYPES:
        title = e.title_tr if locale == "tr_TR" and e.title_tr else e.title
        out.append(
            {
                "error_type": e.error_type,
                "error_priority": e.priority,
                "title": title,
                "description": e.description,
                "call_to_action": e.call_to_action,
            }
        )
    return out
