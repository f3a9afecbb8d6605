"""A strict YAML reader for the registry: ids keep their text and nothing is silently dropped.

PyYAML's ``safe_load`` speaks YAML 1.1, where ``yes``/``no``/``on``/``off`` are booleans, ``0012`` is the
octal 10 and ``1_000`` or ``1:30`` are integers, and a repeated key silently keeps the last value. For a
registry of ids that is how one tenant becomes another. :class:`RegistryYamlLoader` resolves plain scalars
like YAML 1.2's core schema (only ``true``/``false`` are booleans, decimal integers without leading zeros are
integers, no timestamps); everything else stays a string. Quoted scalars are always strings.

:func:`read_yaml` also reports, with their path and line, keys that appear twice in one mapping and
structures nested deeper than :data:`MAX_YAML_DEPTH` (PyYAML composes recursively: a few hundred levels
end in a RecursionError). The caller decides whether an issue belongs to one tenant or to the whole file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Deep enough for any sane registry (a rule nested 32 levels deep is about 70 YAML levels).
MAX_YAML_DEPTH = 100

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_TOO_DEEP = "tag:kobi.invalid,2026:too-deep"

PathPart = str | int


@dataclass(frozen=True)
class YamlIssue:
    """A problem found while reading: where (path from the root, 1-based line) and what."""

    path: tuple[PathPart, ...]
    line: int
    message: str


class RegistryYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and a bounded nesting depth (see the module docstring)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in {_BOOL, _INT, _FLOAT, _TIMESTAMP}]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if (
                self._depth > MAX_YAML_DEPTH
                and not self.check_event(AliasEvent)
                and self.check_event(CollectionStartEvent)
            ):
                return self._skip_collection()
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _skip_collection(self) -> Node:
        """Consume a too-deep collection without recursion; a marker node takes its place."""
        start = self.get_event()
        level = 1
        while level:
            event = self.get_event()
            if isinstance(event, CollectionStartEvent):
                level += 1
            elif isinstance(event, CollectionEndEvent):
                level -= 1
        return ScalarNode(_TOO_DEEP, "", start.start_mark, event.end_mark)

    def construct_decimal_int(self, node: ScalarNode) -> int:
        # Plain scalars reach here only when they are decimal; an explicit !!int is read as decimal too.
        value = self.construct_scalar(node)
        try:
            return int(str(value), 10)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a decimal integer, got {value!r}", node.start_mark
            ) from None


RegistryYamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RegistryYamlLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
RegistryYamlLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
RegistryYamlLoader.add_constructor(_INT, RegistryYamlLoader.construct_decimal_int)
RegistryYamlLoader.add_constructor(_TOO_DEEP, lambda loader, node: None)


def _scan(root: Node) -> list[YamlIssue]:
    """Duplicate keys and cut-off (too deep) collections, walked without recursion."""
    issues: list[YamlIssue] = []
    stack: list[tuple[Node, tuple[PathPart, ...]]] = [(root, ())]
    seen: set[int] = set()  # aliases share nodes: visit each once
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag == _TOO_DEEP:
            issues.append(
                YamlIssue(path, node.start_mark.line + 1, f"nested more than {MAX_YAML_DEPTH} levels deep")
            )
        elif isinstance(node, SequenceNode):
            stack.extend((child, (*path, i)) for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, ScalarNode):
                    stack.append((value, (*path, "?")))
                    continue
                line = key.start_mark.line + 1
                if key.tag != _MERGE:
                    ident = (key.tag, key.value)
                    if ident in first_line:
                        issues.append(
                            YamlIssue(
                                (*path, key.value),
                                line,
                                f"key '{key.value}' appears twice in one mapping (lines {first_line[ident]} "
                                f"and {line}); YAML would silently keep the last value",
                            )
                        )
                    else:
                        first_line[ident] = line
                stack.append((value, path if key.tag == _MERGE else (*path, key.value)))
    return sorted(issues, key=lambda i: i.line)


def read_yaml(text: str) -> tuple[Any, list[YamlIssue]]:
    """The document's data and the issues found in it; yaml.YAMLError when it is not YAML at all."""
    loader = RegistryYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        return loader.construct_document(node), _scan(node)
    finally:
        loader.dispose()


def format_path(parts: tuple[PathPart, ...] | list[PathPart]) -> str:
    """('cpas_retailers', 0, 'segment_filter') -> 'cpas_retailers[0].segment_filter'."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
