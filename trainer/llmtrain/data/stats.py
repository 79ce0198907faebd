"""Counters of an ingest, summed across workers, reported in the manifest, stdout and the status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    inputs: int = 0
    documents_in: int = 0
    bytes_in: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    repaired: int = 0
    documents_valid: int = 0
    duplicates_exact: int = 0
    duplicates_near: int = 0
    documents_out: int = 0
    tokens_train: int = 0
    tokens_validation: int = 0
    documents_train: int = 0
    documents_validation: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, other: Stats) -> None:
        for name in ("inputs", "documents_in", "bytes_in", "repaired", "documents_valid"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.update(other.rejected)
        if "scan" in other.seconds:  # parts scan in parallel: the slowest one is the wall time
            self.seconds["scan"] = max(self.seconds.get("scan", 0.0), other.seconds["scan"])

    @property
    def dedup_percent(self) -> float:
        removed = self.duplicates_exact + self.duplicates_near
        return round(100.0 * removed / self.documents_valid, 2) if self.documents_valid else 0.0

    def to_json(self) -> dict[str, Any]:
        total = sum(self.seconds.values())
        return {
            "inputs": self.inputs,
            "documentsIn": self.documents_in,
            "documentsOut": self.documents_out,
            "bytesIn": self.bytes_in,
            "rejected": dict(sorted(self.rejected.items())),
            "repaired": self.repaired,
            "duplicatesExact": self.duplicates_exact,
            "duplicatesNear": self.duplicates_near,
            "dedupPercent": self.dedup_percent,
            "tokensTrain": self.tokens_train,
            "tokensValidation": self.tokens_validation,
            "documentsTrain": self.documents_train,
            "documentsValidation": self.documents_validation,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "megabytesPerSecond": round(self.bytes_in / 1e6 / total, 3) if total else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        return cls(
            inputs=data.get("inputs", 0),
            documents_in=data.get("documentsIn", 0),
            bytes_in=data.get("bytesIn", 0),
            rejected=Counter(data.get("rejected", {})),
            repaired=data.get("repaired", 0),
            documents_valid=data.get("documentsValid", 0),
            seconds=dict(data.get("seconds", {})),
        )

    def scan_json(self) -> dict[str, Any]:
        """What one scan part records (summed by the manifest stage)."""
        return {**self.to_json(), "documentsValid": self.documents_valid}
