"""YAML with line numbers, for files people write (IVR flows, scenarios): every problem
found in them names its line."""

from __future__ import annotations

from typing import Any

import yaml


class YamlSyntaxError(ValueError):
    """The text is not YAML; the message is "<source>:<line>: invalid YAML: <reason>"."""


class LineMapping(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys start (1-based)."""

    line: int
    key_lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are LineMapping; a duplicate key is an error."""


def _construct_line_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineMapping:
    loader.flatten_mapping(node)
    mapping = LineMapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping.key_lines:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_line_mapping,
)


def load_yaml(text: str, source: str) -> Any:
    """The YAML `text` (safe: plain data only), its mappings LineMapping; YamlSyntaxError
    naming `source` and the line when it is not YAML."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}:" if mark is not None else ""
        reason = exc.problem or exc.context or "unreadable"
        raise YamlSyntaxError(f"{source}:{line} invalid YAML: {reason}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"{source}: invalid YAML: {exc}") from None


def line_of(mapping: object, key: object = None) -> int:
    """The line of `key` in `mapping` (of the mapping itself without a key); 0 if unknown."""
    if not isinstance(mapping, LineMapping):
        return 0
    return mapping.key_lines.get(key, mapping.line) if key is not None else mapping.line
