"""An exported artifact on disk: its files, size and digest, and where it is published."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import storage


def digest(path: Path) -> tuple[int, str]:
    """Total bytes and SHA-256 over the files of a file or directory (sorted by relative name)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    sha, size = hashlib.sha256(), 0
    for file in files:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
    return size, sha.hexdigest()


@dataclass
class Artifact:
    format: str
    quantization: str
    path: Path  # the local staging copy
    name: str  # its name under the output URI
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.validation.get("passed"))

    def publish(self, output: str) -> dict[str, Any]:
        """Upload (atomically per file; a directory's files first, so nothing looks complete early)."""
        size, sha = digest(self.path)
        uri = storage.join(output, self.name)
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for file in files:
            target = uri if self.path.is_file() else storage.join(uri, file.relative_to(self.path).as_posix())
            storage.upload_file(file, target)
        return {
            "format": self.format,
            "quantization": self.quantization,
            "uri": uri,
            "bytes": size,
            "sha256": sha,
            "validation": self.validation,
        }
