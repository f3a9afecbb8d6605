"""The Graph API ``fields=`` parameter: parsing and applying it to a node's available fields.

Accepted forms: ``id,name``, nested ``commerce_merchant_settings{id,cta}`` and
``commerce_merchant_settings.fields(id,cta)``, and modifiers such as ``.limit(5)`` / ``.summary(true)``
(kept in ``FieldSpec.modifiers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meta_sandbox.errors import GraphError, nonexisting_field


@dataclass
class FieldSpec:
    name: str
    subfields: list[FieldSpec] | None = None
    modifiers: dict[str, str] = field(default_factory=dict)


def _syntax_error(spec: str, pos: int, expected: str) -> GraphError:
    return GraphError(100, f'(#100) Syntax error "Expected {expected}." at character {pos}: {spec}')


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek().isspace():
            self.pos += 1

    def name(self) -> str:
        self.skip_ws()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() in "_"):
            self.pos += 1
        if start == self.pos:
            raise _syntax_error(self.text, self.pos, "a field name")
        return self.text[start : self.pos]

    def until_close_paren(self) -> str:
        start = self.pos
        depth = 0
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in "({":
                depth += 1
            elif ch in ")}":
                if depth == 0:
                    return self.text[start : self.pos]
                depth -= 1
            self.pos += 1
        raise _syntax_error(self.text, self.pos, "')'")

    def expect(self, ch: str) -> None:
        self.skip_ws()
        if self.peek() != ch:
            raise _syntax_error(self.text, self.pos, f"'{ch}'")
        self.pos += 1

    def field_list(self, closer: str = "") -> list[FieldSpec]:
        specs: list[FieldSpec] = []
        while True:
            specs.append(self.field())
            self.skip_ws()
            if self.peek() == ",":
                self.pos += 1
                continue
            if self.peek() == closer:
                return specs
            raise _syntax_error(
                self.text, self.pos, f"',' or {closer!r}" if closer else "',' or end of string"
            )

    def field(self) -> FieldSpec:
        spec = FieldSpec(self.name())
        while True:
            self.skip_ws()
            ch = self.peek()
            if ch == "{":
                self.pos += 1
                spec.subfields = self.field_list("}")
                self.expect("}")
            elif ch == ".":
                self.pos += 1
                modifier = self.name()
                self.expect("(")
                if modifier == "fields":
                    spec.subfields = self.field_list(")")
                else:
                    spec.modifiers[modifier] = self.until_close_paren().strip()
                self.expect(")")
            else:
                return spec


def parse_fields(text: str | None) -> list[FieldSpec] | None:
    """Parse a ``fields`` parameter; None when absent or blank (the node's default fields apply)."""
    if text is None or not text.strip():
        return None
    return _Parser(text.strip()).field_list("")


FieldValue = Any | Callable[[], Any]


def _nested(value: Any, subfields: list[FieldSpec] | None, field_name: str) -> Any:
    if isinstance(value, dict):
        if "data" in value and isinstance(value["data"], list):  # an edge asked for as a field
            return {**value, "data": [_nested(v, subfields, field_name) for v in value["data"]]}
        if subfields is None:
            # Nested objects default to their id (and name when they have one), as Meta does.
            return {k: value[k] for k in ("id", "name") if k in value} or value
        out: dict[str, Any] = {}
        for sub in subfields:
            if sub.name not in value:
                raise nonexisting_field(sub.name, field_name)
            v = _nested(value[sub.name], sub.subfields, sub.name)
            if v is not None:
                out[sub.name] = v
        return out
    if isinstance(value, list):
        return [_nested(v, subfields, field_name) if isinstance(v, dict) else v for v in value]
    return value


def select_fields(
    available: Mapping[str, FieldValue],
    specs: list[FieldSpec] | None,
    *,
    node_type: str,
    defaults: Iterable[str] = ("id", "name"),
) -> dict[str, Any]:
    """Render the requested fields of a node, in request order, then ``id`` (Meta always returns it).

    ``available`` maps field names to values or to zero-argument callables (computed only when asked for).
    Unknown fields raise Meta's error 100; fields whose value is None are omitted, as Meta does.
    """
    if specs is None:
        specs = [FieldSpec(name) for name in defaults if name in available]
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in available:
            raise nonexisting_field(spec.name, node_type)
        value = available[spec.name]
        if callable(value):
            value = value()
        value = _nested(value, spec.subfields, spec.name)
        if value is not None:
            out[spec.name] = value
    if "id" in available and "id" not in out:
        value = available["id"]
        out["id"] = value() if callable(value) else value
    return out
