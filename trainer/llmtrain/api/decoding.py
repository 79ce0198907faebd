"""Decoding run files as the API server would take them: bounded, strict YAML and JSON.

kubectl turns YAML into JSON (sigs.k8s.io/yaml over go-yaml) and the API server keeps JSON in etcd, so a
document is refused here for what they refuse: alias expansion beyond go-yaml's budget, an alias inside
its own anchor, a key defined twice, numbers JSON cannot carry (NaN, infinities, integers beyond 64
bits), an object over etcd's size limit. Nesting is bounded too, so that nothing downstream recurses
without end. The checks run while the file is composed, before any alias is expanded; every refusal
is a `Refused` whose one-line message says where and what to change.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

#: Largest run file read (stdin included): a few resources of at most `MAX_OBJECT_BYTES` each.
MAX_FILE_BYTES = 4 * 1024**2
#: Largest object, as JSON: etcd's default request limit (1.5 MiB), which bounds every stored object.
MAX_OBJECT_BYTES = 1536 * 1024
#: Deepest nesting of mappings, lists and values; a resource of this project needs about ten levels.
MAX_DEPTH = 100
#: go-yaml (v2.2.8+, v3) refuses "excessive aliasing" past these counts of decoded nodes.
_ALIAS_FREE_ALIASED, _ALIAS_FREE_DECODED = 100, 1000
_RATIO_LOW_DECODED, _RATIO_HIGH_DECODED = 400_000, 4_000_000
_INT64_LIMIT = 2**63


class Refused(Exception):
    """A document the API server would not take; the message is one line: where, what, the fix."""


def allowed_alias_ratio(decoded: int) -> float:
    """go-yaml's budget: the share of decoded nodes that may come from aliases, 99% falling to 10%."""
    if decoded <= _RATIO_LOW_DECODED:
        return 0.99
    if decoded >= _RATIO_HIGH_DECODED:
        return 0.10
    return 0.99 - 0.89 * (decoded - _RATIO_LOW_DECODED) / (_RATIO_HIGH_DECODED - _RATIO_LOW_DECODED)


def _line(node_or_event: Any) -> str:
    return f"line {node_or_event.start_mark.line + 1}"


def _too_deep(where: str) -> Refused:
    return Refused(f"{where}: nested deeper than {MAX_DEPTH} levels; flatten the structure")


class KubeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading as kubectl does: `3e-4` is a number (YAML 1.1 wants `3.0e-4`), a
    whole float is an integer (`2.0` reaches the API server as JSON `2`), a timestamp stays a string;
    and refusing, while composing, what go-yaml and JSON refuse (see the module docstring)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._reset_budget()

    def _reset_budget(self) -> None:
        self._depth = 0  # nodes open above the one being composed
        self._reach = 0  # deepest level reached below the open nodes, aliases expanded
        self._decoded = 0  # nodes decoded as go-yaml counts them, aliases expanded
        self._aliased = 0  # of those, the nodes that came from aliases
        self._expanded: dict[int, tuple[int, int]] = {}  # id(complete node) -> (decoded nodes, height)

    def compose_document(self) -> yaml.Node | None:
        self._reset_budget()  # go-yaml decodes each document of a stream on its own
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            return self._compose_alias(parent, index)
        event = self.peek_event()
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _too_deep(_line(event))
        self._count(1, 0, event)
        start, outer_reach = self._decoded, self._reach
        self._reach = self._depth
        node = super().compose_node(parent, index)
        self._expanded[id(node)] = (self._decoded - start + 1, self._reach - self._depth + 1)
        self._reach = max(outer_reach, self._reach)
        self._depth -= 1
        return node

    def _compose_alias(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        node = super().compose_node(parent, index)  # the anchored node; an undefined alias is a YAMLError
        if id(node) not in self._expanded:
            raise Refused(
                f"{_line(event)}: alias *{event.anchor} is inside its own anchor; a value cannot contain itself"
            )
        decoded, height = self._expanded[id(node)]
        if self._depth + height > MAX_DEPTH:
            raise _too_deep(f"{_line(event)}: alias *{event.anchor}")
        self._reach = max(self._reach, self._depth + height)
        self._count(1 + decoded, decoded, event)
        return node

    def _count(self, decoded: int, aliased: int, event: yaml.Event) -> None:
        """go-yaml's alias budget, checked as it decodes: refused before anything is expanded."""
        self._decoded += decoded
        self._aliased += aliased
        if (
            self._aliased > _ALIAS_FREE_ALIASED
            and self._decoded > _ALIAS_FREE_DECODED
            and self._aliased / self._decoded > allowed_alias_ratio(self._decoded)
        ):
            raise Refused(
                f"{_line(event)}: excessive aliasing: aliases expand the document to {self._decoded:,} values,"
                f" {self._aliased:,} of them copies (more than the API server's YAML decoder allows);"
                " write the values out or reuse fewer anchors"
            )

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            identity = (key.tag, key.value)
            if identity in seen:
                raise Refused(
                    f'{_line(key)}: mapping key "{key.value}" already defined at {_line(seen[identity])};'
                    " remove one of them"
                )
            seen[identity] = key
        return node

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | int:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise Refused(f"{_line(node)}: {node.value} is not a finite number; JSON and the API server take none")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts
            value = _INT64_LIMIT
        if abs(value) >= _INT64_LIMIT:
            raise Refused(f"{_line(node)}: {node.value[:40]} is outside the 64-bit integers the API server takes")
        return value


KubeYamlLoader.add_constructor("tag:yaml.org,2002:float", KubeYamlLoader.construct_yaml_float)
KubeYamlLoader.add_constructor("tag:yaml.org,2002:int", KubeYamlLoader.construct_yaml_int)
KubeYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", KubeYamlLoader.construct_yaml_str)
KubeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def decode_documents(text: str) -> list[Any]:
    """The documents of a YAML or JSON stream (JSON when it starts with `{`, as kubectl guesses)."""
    documents = _decode_json(text) if text.lstrip("\ufeff \t\r\n").startswith("{") else None
    if documents is None:
        try:
            documents = list(yaml.load_all(text, Loader=KubeYamlLoader))
        except ValueError as exc:  # a constructor's own error (a date out of range, say) is malformed YAML
            raise Refused(f"cannot be read: {exc}") from None
    return [d for d in documents if d is not None]


def _decode_json(text: str) -> list[Any] | None:
    """A stream of JSON values, strictly; None when it is not JSON after all (YAML reads flow mappings)."""
    decoder = json.JSONDecoder(
        object_pairs_hook=_unique_keys, parse_constant=_non_finite, parse_float=_json_float, parse_int=_json_int
    )
    documents: list[Any] = []
    position = len(text) - len(text.lstrip("\ufeff"))
    try:
        while (position := _skip_space(text, position)) < len(text):
            document, position = decoder.raw_decode(text, position)
            documents.append(document)
    except json.JSONDecodeError:
        return None
    except RecursionError:
        raise _too_deep("the JSON") from None
    for document in documents:
        _check_depth(document)
    return documents


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise Refused(f'mapping key "{key}" already defined; remove one of them')
        mapping[key] = value
    return mapping


def _non_finite(constant: str) -> float:
    raise Refused(f"{constant} is not a finite number; JSON and the API server take none")


def _json_float(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise Refused(f"{text[:40]} is not a finite number; JSON and the API server take none")
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(int(text)) >= _INT64_LIMIT:
        raise Refused(f"{text[:40]} is outside the 64-bit integers the API server takes")
    return int(text)


def _check_depth(document: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH (a value inside a mapping at level d is at level d + 1)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep("the JSON")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)


def check_object_size(document: Any) -> None:
    """Refuse an object larger, as JSON, than the API server stores."""
    wire = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)
    size = len(wire.encode("utf-8", "surrogatepass"))
    if size > MAX_OBJECT_BYTES:
        raise Refused(
            f"is {size:,} bytes as JSON; the API server stores at most {MAX_OBJECT_BYTES:,} bytes (1.5 MiB)"
            " per object: move large values out of the resource"
        )
