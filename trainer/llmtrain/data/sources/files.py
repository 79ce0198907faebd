"""Local files (local runner only) and files on a PersistentVolumeClaim, selected by glob.

Every file must stay inside its root: the run file's folder for a relative local path, the folder before
the first wildcard for an absolute one, the claim's mount for a PVC. Listing resolves each match and
refuses one that a symlink leads outside; opening walks the resolved path from the root one component at
a time without following links, so a symlink swapped in after the listing is refused, not followed. Only
regular files are read (never a FIFO, a device or a socket), and the filesystem root, /proc, /dev and /sys
are not sources.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ... import storage
from ...api.datasource import LocalSource, PvcSource
from . import InputRef, SourceError

#: folders whose files are the system's, not data; reading them can block forever or leak secrets
SYSTEM_DIRS = (Path("/proc"), Path("/dev"), Path("/sys"))


def _glob(index: int, root: Path, pattern: str, described: str) -> list[InputRef]:
    """Regular files matching `pattern` below `root`, sorted; a symlink leading outside `root` is refused."""
    resolved_root = root.resolve()
    matches = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True))
    refs = []
    for path in (p for p in matches if p.is_file()):
        resolved = path.resolve()
        if not resolved.is_relative_to(resolved_root):
            raise SourceError(f"{described}: {path} leaves {root} through a symlink; refusing to read it")
        refs.append(InputRef(index, str(resolved), resolved.stat().st_size, str(resolved_root)))
    return refs


def _absolute_root(path: str) -> Path:
    """The folder before the first wildcard of an absolute path (a plain file's parent)."""
    parts = Path(path).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts) - 1)
    return Path(*parts[: max(fixed, 1)])


def _refuse_system_root(root: Path, described: str, path: str) -> None:
    resolved = root.resolve()
    if resolved == Path(resolved.anchor) or any(resolved.is_relative_to(d) for d in SYSTEM_DIRS):
        raise SourceError(
            f"{described}: {path!r} reads from {resolved}, which is the filesystem root or a system folder"
            " (/proc, /dev, /sys); point it at a folder of data files, e.g. /data/corpus/*.jsonl"
        )


def list_local(index: int, source: LocalSource, base_dir: Path) -> list[InputRef]:
    """Relative paths are resolved against the run file's folder and must stay below it."""
    described = f"spec.sources[{index}].local.path"
    if os.path.isabs(source.path):
        root, pattern = _absolute_root(source.path), os.path.relpath(source.path, _absolute_root(source.path))
    else:
        root, pattern = base_dir, source.path
    _refuse_system_root(root, described, source.path)
    refs = _glob(index, root, pattern, described)
    if not refs and not glob.has_magic(source.path):
        _missing(root / pattern, described)
    return refs


def list_pvc(index: int, source: PvcSource) -> list[InputRef]:
    root = storage.local_path(f"pvc://{source.claim_name}")
    if not root.is_dir():
        raise SourceError(
            f"spec.sources[{index}].pvc: claim {source.claim_name!r} is not mounted at {root}"
            f" (set {storage.PVC_ROOT_ENV})"
        )
    return _glob(index, root, source.path, f"spec.sources[{index}].pvc")


def _missing(path: Path, described: str) -> None:
    if path.exists():
        raise SourceError(f"{described}: {path} is not a regular file (a folder, FIFO, device or socket); name files")
    raise SourceError(f"{described}: {path} does not exist")


def _open_below(root: str, path: str) -> int:
    """A read descriptor of `path`, walked from `root` without following a symlink anywhere below it."""
    parts = Path(path).relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            parent, fd = fd, os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(parent)
        # O_NONBLOCK: a FIFO swapped in must not block the open; the file type is checked below
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_file(path: str, root: str | None = None) -> Iterator[IO[bytes]]:
    """Open a listed file: below `root` without following links, and only if it is a regular file."""
    try:
        fd = _open_below(root, path) if root else os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SourceError(
                f"{path}: a symlink appeared below {root} after the file was listed; refusing to follow it"
                " (was the folder changed while ingest ran?)"
            ) from None
        raise SourceError(f"{path}: {os.strerror(exc.errno or 0)}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceError(f"{path}: not a regular file (a FIFO, device or socket); refusing to read it")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        yield handle
