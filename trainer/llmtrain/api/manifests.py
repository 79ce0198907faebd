"""Reading resources from YAML/JSON files such as `run.yaml` (multi-document, `kind: List`, or stdin)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from .common import GROUP
from .datasource import DataSource
from .errors import Problem, SpecError
from .modelexport import ModelExport
from .resource import Resource
from .trainingrun import TrainingRun

_KINDS: dict[str, type[Resource]] = {k.KIND: k for k in (DataSource, TrainingRun, ModelExport)}
R = TypeVar("R", bound=Resource)


class KubeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as kubectl sends them: `3e-4` is a number (YAML 1.1 wants
    `3.0e-4`), and a whole float is an integer (`2.0` reaches the API server as JSON `2`)."""

    def construct_yaml_float(self, node: yaml.Node) -> float | int:
        value = super().construct_yaml_float(node)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value


KubeYamlLoader.add_constructor("tag:yaml.org,2002:float", KubeYamlLoader.construct_yaml_float)
KubeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every mapping in a YAML/JSON file (`-` reads stdin); `kind: List` items are flattened."""
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if source == "<stdin>" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read the file: {exc.strerror}")], source) from exc
    except UnicodeDecodeError as exc:
        raise SpecError([Problem("", "is not UTF-8 text")], source) from exc
    try:
        documents = [d for d in yaml.load_all(text, Loader=KubeYamlLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"is not valid YAML: {exc}")], source) from exc
    return list(_flatten(documents, source))


def _flatten(documents: list[Any], source: str) -> Iterator[dict[str, Any]]:
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise SpecError([Problem(f"document {index}", "must be a mapping with apiVersion and kind")], source)
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from _flatten(doc["items"], source)
        else:
            yield doc


def is_llmtrain(document: dict[str, Any]) -> bool:
    """Whether a document belongs to the llmtrain.dev group (others, like Secrets, are passed over)."""
    return str(document.get("apiVersion", "")).split("/")[0] == GROUP


def parse_resource(document: dict[str, Any], source: str = "") -> Resource:
    """A typed DataSource, TrainingRun or ModelExport; `SpecError` names every field at fault."""
    kind = document.get("kind")
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        allowed = ", ".join(_KINDS)
        raise SpecError([Problem("kind", f"must be one of {allowed} (got {kind!r})")], source)
    name = (document.get("metadata") or {}).get("name") if isinstance(document.get("metadata"), dict) else None
    where = f"{source}: {kind}/{name}" if source else f"{kind}/{name}"
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise SpecError.from_validation_error(exc, model, where) from None


def load_resources(path: str | Path) -> list[Resource]:
    """Every llmtrain resource in a file, validated; errors of all documents are reported together."""
    source = "<stdin>" if str(path) == "-" else str(path)
    resources: list[Resource] = []
    problems: list[Problem] = []
    for doc in read_documents(path):
        if not is_llmtrain(doc):
            continue
        try:
            resources.append(parse_resource(doc))
        except SpecError as exc:
            problems += [Problem(f"{exc.source}: {p.path}" if p.path else exc.source, p.message) for p in exc.problems]
    if problems:
        raise SpecError(problems, source)
    return resources


def select_resource(resources: list[Resource], kind: type[R], name: str | None = None) -> R:
    """The resource of `kind` named `name`, or the only one of that kind when `name` is None."""
    matching = [r for r in resources if isinstance(r, kind)]
    if name is not None:
        named = [r for r in matching if r.name == name]
        if not named:
            have = ", ".join(r.name for r in matching) or "none"
            raise SpecError([Problem("", f"no {kind.KIND} named {name!r} (found: {have})")])
        return named[0]
    if len(matching) != 1:
        have = ", ".join(r.name for r in matching) or "none"
        raise SpecError([Problem("", f"expected one {kind.KIND}, found {len(matching)} ({have}); pass --name")])
    return matching[0]
