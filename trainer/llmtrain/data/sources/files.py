"""Local files (local runner only) and files on a PersistentVolumeClaim, selected by glob."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ... import storage
from ...api.datasource import LocalSource, PvcSource
from . import InputRef, SourceError


def _glob(root: Path, pattern: str, described: str) -> list[Path]:
    """Files matching `pattern` below `root`, sorted; a symlink leading outside `root` is refused."""
    matches = [Path(p) for p in glob.glob(str(root / pattern), recursive=True)]
    files = sorted(p for p in matches if p.is_file())
    resolved_root = root.resolve()
    for path in files:
        if not path.resolve().is_relative_to(resolved_root):
            raise SourceError(f"{described}: {path} leaves {root} through a symlink; refusing to read it")
    return files


def list_local(index: int, source: LocalSource, base_dir: Path) -> list[InputRef]:
    """Relative paths are resolved against the run file's folder and must stay below it."""
    described = f"spec.sources[{index}].local.path"
    if os.path.isabs(source.path):
        files = sorted(Path(p) for p in glob.glob(source.path, recursive=True) if Path(p).is_file())
        missing = Path(source.path)
    else:
        files = _glob(base_dir, source.path, described)
        missing = base_dir / source.path
    if not files and not glob.has_magic(source.path):
        raise SourceError(f"{described}: {missing} does not exist")
    return [InputRef(index, str(p), p.stat().st_size) for p in files]


def list_pvc(index: int, source: PvcSource) -> list[InputRef]:
    root = storage.local_path(f"pvc://{source.claim_name}")
    if not root.is_dir():
        raise SourceError(
            f"spec.sources[{index}].pvc: claim {source.claim_name!r} is not mounted at {root}"
            f" (set {storage.PVC_ROOT_ENV})"
        )
    return [InputRef(index, str(p), p.stat().st_size) for p in _glob(root, source.path, f"spec.sources[{index}].pvc")]


@contextlib.contextmanager
def open_file(path: str) -> Iterator[IO[bytes]]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SourceError(f"{path}: {os.strerror(exc.errno or 0)}") from exc
    with handle:
        yield handle
