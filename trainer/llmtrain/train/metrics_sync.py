"""The trainer's metrics beside its checkpoints (`<checkpoint uri>/metrics/`), so the curves outlive the pod.

The JSONL file and the TensorBoard event files live on the pod's scratch volume while it trains; rank 0
copies the files that changed since its last copy to storage at every completed checkpoint and at the end
(succeeded, failed, diverged, interrupted). Each file is one atomic write (a rename on a volume, one PUT or
multipart upload on S3): a reader finds the previous copy or the new one, never half of one, and a JSONL
copy ends at its last complete line. Nothing stored is ever deleted: a new pod's event files join the
earlier pods'. `restore()`, before the metrics file is opened, fetches the stored metrics.jsonl when the
local one is missing or shorter (the new pod of a resumed run), so the file keeps every attempt's lines.
Checkpoint listing and retention only look at `step-NNNNNNNN` directories: `metrics/` is never theirs.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from .. import storage

log = logging.getLogger("llmtrain.train")

#: the folder under the checkpoint URI
METRICS_FOLDER = "metrics"
JSONL = "metrics.jsonl"


def metrics_uri(checkpoints: str) -> str:
    """Where a run's metrics are kept: `<checkpoint uri>/metrics`."""
    return storage.join(checkpoints, METRICS_FOLDER)


class MetricsSync:
    """Copies a local metrics folder to a storage URI, file by file, only what changed since the last copy."""

    def __init__(self, directory: Path, uri: str) -> None:
        self.directory, self.uri = Path(directory), uri.rstrip("/")
        self._copied: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns) when last copied
        self._lock = threading.Lock()  # a checkpoint's completion may be heard on another thread

    def restore(self) -> bool:
        """Fetch the stored metrics.jsonl when the local one is missing or shorter; whether it did.
        A storage failure is a warning: the run trains on, its file starting afresh."""
        with self._lock:
            try:
                return self._restore()
            except OSError as exc:
                log.warning("stored metrics not restored", extra={"uri": self.uri, "error": str(exc)[:300]})
                return False

    def sync(self) -> int:
        """Copy every file that changed since the last copy; the number copied. A file that cannot be
        copied is a warning (tried again next time), never a failed run."""
        with self._lock:
            changed = [(path, key) for path, key in self._files() if self._copied.get(self._name(path)) != key]
            if not changed:
                return 0
            try:
                client = storage.s3_client() if storage.is_s3(self.uri) else None
            except Exception as exc:  # boto3 missing or misconfigured: the metrics stay local this time
                log.warning("metrics not copied to storage", extra={"uri": self.uri, "error": str(exc)[:300]})
                return 0
            return sum(self._copy(path, key, client) for path, key in changed)

    def _restore(self) -> bool:
        stored = storage.join(self.uri, JSONL)
        local = self.directory / JSONL
        if not storage.exists(stored):
            return False
        data = _whole_lines(storage.read_bytes(stored))
        if local.exists() and local.stat().st_size >= len(data):
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = local.with_name(f".{local.name}.tmp-{os.getpid()}")
        temp.write_bytes(data)
        os.replace(temp, local)
        self._copied[JSONL] = _key(local)  # the stored copy holds exactly these bytes
        log.info("metrics restored from storage", extra={"uri": stored, "bytes": len(data)})
        return True

    def _files(self) -> list[tuple[Path, tuple[int, int]]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.rglob("*")):
            if path.is_file() and not path.name.startswith("."):  # temp files of a restore or a copy
                found.append((path, _key(path)))
        return found

    def _name(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    def _copy(self, path: Path, key: tuple[int, int], client: Any) -> bool:
        name = self._name(path)
        target = storage.join(self.uri, name)
        try:
            if path.suffix == ".jsonl":  # appended line by line: copy up to the last complete line
                storage.write_bytes(target, _whole_lines(path.read_bytes()), client)
            else:
                storage.upload_file(path, target, client)
        except OSError as exc:  # StorageError included
            log.warning("metrics file not copied to storage", extra={"uri": target, "error": str(exc)[:300]})
            return False
        self._copied[name] = key
        return True


def _key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _whole_lines(data: bytes) -> bytes:
    """`data` up to and including its last newline (a line being written is left for the next copy)."""
    return data[: data.rfind(b"\n") + 1]
