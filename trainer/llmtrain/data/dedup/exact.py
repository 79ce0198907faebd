"""Exact duplicates: a 128-bit content hash per document; the first of each hash is kept."""

from __future__ import annotations

import hashlib

import numpy as np


def content_hash(text: str) -> tuple[int, int]:
    """Two 64-bit halves of BLAKE2b-128 over the UTF-8 text."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Boolean mask over rows of an (n, 2) uint64 array: True for the first row of each distinct hash."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=bool)
    _, first = np.unique(
        np.ascontiguousarray(hashes).view([("a", np.uint64), ("b", np.uint64)]).ravel(), return_index=True
    )
    keep = np.zeros(len(hashes), dtype=bool)
    keep[first] = True
    return keep
