"""Reading resources from YAML/JSON files such as `run.yaml` (multi-document, `kind: List`, or stdin)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from .common import GROUP
from .datasource import DataSource
from .decoding import MAX_FILE_BYTES, Refused, check_object_size, decode_documents
from .errors import Problem, SpecError
from .modelexport import ModelExport
from .resource import Resource
from .trainingrun import TrainingRun

_KINDS: dict[str, type[Resource]] = {k.KIND: k for k in (DataSource, TrainingRun, ModelExport)}
R = TypeVar("R", bound=Resource)


def read_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every mapping in a YAML/JSON file (`-` reads stdin); `kind: List` items are flattened.

    The file is read as the API server would take it (`decoding`): bounded in size, depth and alias
    expansion, with no duplicate keys, non-finite numbers or object over 1.5 MiB."""
    source = "<stdin>" if str(path) == "-" else str(path)
    text = _read_text(path, source)
    try:
        documents = decode_documents(text)
    except Refused as exc:
        raise SpecError([Problem("", str(exc))], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"is not valid YAML: {' '.join(str(exc).split())}")], source) from None
    flat = list(_flatten(documents, source))
    for index, document in enumerate(flat):
        try:
            check_object_size(document)
        except Refused as exc:
            raise SpecError([Problem(_describe(document, index), str(exc))], source) from None
    return flat


def _read_text(path: str | Path, source: str) -> str:
    """The file's text, read up to MAX_FILE_BYTES (a device or a pipe without end is refused there)."""
    try:
        if source == "<stdin>":
            stream = getattr(sys.stdin, "buffer", None)
            data = stream.read(MAX_FILE_BYTES + 1) if stream else sys.stdin.read(MAX_FILE_BYTES + 1).encode()
        else:
            with open(path, "rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read the file: {exc.strerror}")], source) from exc
    if len(data) > MAX_FILE_BYTES:
        limit = f"{MAX_FILE_BYTES // 1024**2} MiB"
        raise SpecError([Problem("", f"is larger than {limit}; a run file holds a few resources: split it")], source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem("", "is not UTF-8 text")], source) from exc


def _describe(document: dict[str, Any], index: int) -> str:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{document.get('kind')}/{name}" if name else f"document {index}"


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
    return parse_resources(read_documents(path), "<stdin>" if str(path) == "-" else str(path))


def parse_resources(documents: list[dict[str, Any]], source: str) -> list[Resource]:
    """Every llmtrain resource among documents already read (`read_documents`), validated together."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for doc in documents:
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
