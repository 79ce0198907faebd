"""Where each resource reads and writes: spec URIs, the default storage, and the volumes they need."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from ..api import DataSource, ModelExport, TrainingRun
from ..errors import BadInput
from .context import Context


class PlacementError(BadInput, ValueError):
    """A spec that cannot run where it was applied (a local path in a cluster); names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def is_local(uri: str) -> bool:
    return "://" not in uri


def _resolve(uri: str | None, default: str, ctx: Context, field: str) -> str:
    if uri is None:
        return default
    if is_local(uri):
        if not ctx.local:
            raise PlacementError(
                field, f"{uri!r} is a local path, which only `llmtrain run` can use; use s3:// or pvc:// in a cluster"
            )
        if not posixpath.isabs(uri) and ctx.base_dir:
            return posixpath.normpath(posixpath.join(ctx.base_dir, uri))
    return uri


def default_uri(ctx: Context, namespace: str, plural: str, name: str, *parts: str) -> str:
    return "/".join([ctx.storage_root.rstrip("/"), namespace, plural, name, *parts])


def dataset_uri(source: DataSource, namespace: str, ctx: Context) -> str:
    default = default_uri(ctx, namespace, "datasources", source.name)
    return _resolve(source.spec.output.uri, default, ctx, "spec.output.uri")


def checkpoints_uri(run: TrainingRun, namespace: str, ctx: Context) -> str:
    default = default_uri(ctx, namespace, "trainingruns", run.name, "checkpoints")
    return _resolve(run.spec.checkpointing.uri, default, ctx, "spec.checkpointing.uri")


def export_uri(export: ModelExport, namespace: str, ctx: Context) -> str:
    default = default_uri(ctx, namespace, "modelexports", export.name)
    return _resolve(export.spec.output.uri, default, ctx, "spec.output.uri")


def explicit_checkpoint_uri(export: ModelExport, ctx: Context) -> str | None:
    uri = export.spec.checkpoint_uri
    return None if uri is None else _resolve(uri, uri, ctx, "spec.checkpointUri")


def init_from_uri(run: TrainingRun, ctx: Context) -> str | None:
    """The weights `spec.init.from` names (a Hugging Face directory or an llmtrain checkpoint), if set."""
    uri = run.spec.init.from_uri if run.spec.init is not None else None
    return None if uri is None else _resolve(uri, uri, ctx, "spec.init.from")


def check_sources(source: DataSource, ctx: Context) -> None:
    """Local and on-disk Hugging Face paths only work on the runner's machine."""
    if ctx.local:
        return
    for index, item in enumerate(source.spec.sources):
        if item.local is not None:
            raise PlacementError(
                f"spec.sources[{index}].local",
                "local files only work with `llmtrain run`; in a cluster use pvc: {claimName, path} or s3",
            )
        if item.huggingface is not None and is_local(item.huggingface.path):
            raise PlacementError(f"spec.sources[{index}].huggingface.path", "use pvc://<claim>/<path> in a cluster")
    tokenizer_from = source.spec.tokenizer.from_uri
    if tokenizer_from is not None and is_local(tokenizer_from):
        raise PlacementError("spec.tokenizer.from", "a local path only works with `llmtrain run`; use pvc:// or s3://")


def claims(uris: Iterable[str | None]) -> list[str]:
    """PersistentVolumeClaims named by pvc:// URIs, sorted and unique."""
    found = {u[len("pvc://") :].split("/", 1)[0] for u in uris if u and u.startswith("pvc://")}
    return sorted(found)


def source_claims(source: DataSource) -> list[str]:
    uris: list[str | None] = []
    for item in source.spec.sources:
        if item.pvc is not None:
            uris.append(f"pvc://{item.pvc.claim_name}")
        if item.huggingface is not None:
            uris.append(item.huggingface.path)
    uris.append(source.spec.tokenizer.from_uri)
    return claims(uris)


def secret_names(source: DataSource) -> list[str]:
    """Secrets a DataSource's sources read (mounted as files, never copied into env or args)."""
    names: set[str] = set()
    for item in source.spec.sources:
        if item.s3 is not None and item.s3.credentials_secret is not None:
            names.add(item.s3.credentials_secret.name)
        if item.http is not None and item.http.auth_secret is not None:
            names.add(item.http.auth_secret.name)
        if item.sql is not None:
            names.add(item.sql.url_secret.name)
    return sorted(names)
