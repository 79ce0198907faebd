"""The MinHash signature of one document in one compiled pass (numba): word hashes, shingle hashes, the
distinct sorted shingles and the `numPerm` minima, bit for bit what `minhash.MinHasher`'s numpy path
computes (tested side by side), at a fraction of its memory traffic.

numba compiles on first use (about a second; cached under `NUMBA_CACHE_DIR` or the package's
`__pycache__` when writable). Without numba, or with `LLMTRAIN_MINHASH_KERNEL=numpy`, the numpy path runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def _compile() -> Callable[..., Any] | None:
    if os.environ.get("LLMTRAIN_MINHASH_KERNEL", "numba") == "numpy":
        return None
    try:
        import numba
    except ImportError:
        return None
    try:
        return numba.njit(cache=True, nogil=True)(_signature_and_shingles)
    except RuntimeError:  # no writable cache location: compile per process
        return numba.njit(nogil=True)(_signature_and_shingles)


def _signature_and_shingles(
    data: np.ndarray,
    whitespace: np.ndarray,
    prime: np.uint64,
    ngram: int,
    mix: np.ndarray,
    final_mix: np.uint64,
    a: np.ndarray,
    b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`data`: the lowercased UTF-8 bytes; `a`, `b`: the permutations (uint32). See minhash.py."""
    one = np.uint64(1)
    words = np.empty(len(data) // 2 + 1, dtype=np.uint64)
    count = 0
    value, power, inside = np.uint64(0), one, False
    for byte in data:
        if whitespace[byte]:
            if inside:
                words[count] = value
                count += 1
                inside = False
            continue
        if not inside:
            value, power, inside = np.uint64(0), one, True
        value += (np.uint64(byte) + one) * power
        power *= prime
    if inside:
        words[count] = value
        count += 1
    perms = len(a)
    signature = np.full(perms, 0xFFFFFFFF, dtype=np.uint32)
    if count == 0:
        return signature, np.zeros(0, dtype=np.uint32)
    n = min(ngram, count)
    total = count - n + 1
    shingles = np.empty(total, dtype=np.uint32)
    shift31, shift32 = np.uint64(31), np.uint64(32)
    for i in range(total):
        combined = words[i] * mix[0]
        for j in range(1, n):
            combined = (combined ^ words[i + j]) * mix[j]
        combined ^= combined >> shift31
        combined = combined * final_mix
        shingles[i] = np.uint32(combined >> shift32)
    shingles.sort()
    distinct = np.empty(total, dtype=np.uint32)
    kept = 0
    for i in range(total):
        if i == 0 or shingles[i] != shingles[i - 1]:
            distinct[kept] = shingles[i]
            kept += 1
    for i in range(kept):  # (a*x + b) mod 2^32 in uint32 lanes, as the numpy path computes it
        x = distinct[i]
        for p in range(perms):
            signature[p] = min(signature[p], np.uint32(a[p] * x + b[p]))
    return signature, distinct[:kept].copy()


_KERNEL: Callable[..., Any] | bool | None = False  # False: not compiled yet


def kernel() -> Callable[..., Any] | None:
    """The compiled kernel, or None where the numpy path must run."""
    global _KERNEL
    if _KERNEL is False:
        _KERNEL = _compile()
    return _KERNEL  # type: ignore[return-value]
