"""MinHash signatures over word n-grams, vectorized with numpy.

Shingles: the document lowercased, split on ASCII whitespace, every run of `ngram` consecutive words
(one shingle of all words when there are fewer). This is the Jaccard similarity of
`{b" ".join(words[i:i+n])}` sets, the same sets `datasketch.MinHash` is fed in the benchmark.

Speed comes from never looping over shingles in Python: word hashes are polynomial hashes of the
UTF-8 bytes computed with prefix sums, shingle hashes combine word hashes with vector operations, and
the `numPerm` permutations `(a*x + b) mod 2^32` (odd `a`: a bijection of the 32-bit space) are one
broadcasted multiply-add followed by a column minimum. The distinct shingle hashes can be kept so
that LSH candidates are verified by their exact Jaccard similarity, not an estimate.
"""

from __future__ import annotations

import numpy as np

from . import kernels

_P = np.uint64(0x100000001B3)  # odd: invertible modulo 2^64
_P_INV = np.uint64(pow(int(_P), -1, 1 << 64))
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD],
    dtype=np.uint64,
)


class MinHasher:
    """Computes `num_perm` 32-bit MinHash values per document; deterministic for a given seed."""

    def __init__(self, num_perm: int = 112, ngram: int = 5, seed: int = 1) -> None:
        self.num_perm, self.ngram = num_perm, ngram
        rng = np.random.default_rng(seed)
        self._a = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
        self._b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
        self._mix = rng.integers(1, 2**63, max(ngram, 1), dtype=np.uint64) | np.uint64(1)
        self._powers = np.ones(1, dtype=np.uint64)
        self._inverse_powers = np.ones(1, dtype=np.uint64)
        self._block: np.ndarray | None = None  # the signature's work matrix, reused

    def _grow(self, length: int) -> None:
        if len(self._powers) >= length:
            return
        size = max(length, 2 * len(self._powers))
        with np.errstate(over="ignore"):
            self._powers = np.cumprod(np.concatenate(([np.uint64(1)], np.full(size - 1, _P))))
            self._inverse_powers = np.cumprod(np.concatenate(([np.uint64(1)], np.full(size - 1, _P_INV))))

    def word_hashes(self, text: str) -> np.ndarray:
        """A 64-bit hash per whitespace-separated word of the lowercased text."""
        data = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8)
        if len(data) == 0:
            return np.zeros(0, dtype=np.uint64)
        self._grow(len(data) + 1)
        in_word = ~_WHITESPACE[data]
        edges = np.diff(in_word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        with np.errstate(over="ignore"):
            prefix = np.zeros(len(data) + 1, dtype=np.uint64)
            np.cumsum((data.astype(np.uint64) + np.uint64(1)) * self._powers[: len(data)], out=prefix[1:])
            return (prefix[ends] - prefix[starts]) * self._inverse_powers[starts]

    def shingle_hashes(self, text: str) -> np.ndarray:
        """A 32-bit hash per word n-gram (one shingle of all words when there are fewer)."""
        words = self.word_hashes(text)
        if len(words) == 0:
            return np.zeros(0, dtype=np.uint32)
        n = min(self.ngram, len(words))
        count = len(words) - n + 1
        with np.errstate(over="ignore"):
            combined = words[:count] * self._mix[0]
            for j in range(1, n):
                combined = (combined ^ words[j : j + count]) * self._mix[j]
            combined ^= combined >> np.uint64(31)
            combined = combined * _MIX[4]
        return (combined >> np.uint64(32)).astype(np.uint32)

    def signature(self, text: str) -> np.ndarray:
        """`num_perm` uint32 MinHash values (all 0xFFFFFFFF for a text without words)."""
        return self.signature_and_shingles(text)[0]

    def signature_and_shingles(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The signature and the distinct shingle hashes, sorted (kept for exact verification of
        candidates): in one compiled pass where numba is there (`kernels.py`), else with numpy."""
        compiled = kernels.kernel()
        if compiled is None:
            return self.numpy_signature_and_shingles(text)
        data = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8)
        return compiled(data, _WHITESPACE, _P, self.ngram, self._mix, _MIX[4], self._a, self._b)

    def numpy_signature_and_shingles(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The same with numpy alone: the reference the kernel is tested against."""
        shingles = distinct_sorted(self.shingle_hashes(text))
        return self.signature_of(shingles), shingles

    def signature_of(self, shingles: np.ndarray) -> np.ndarray:
        if len(shingles) == 0:
            return np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        out = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        step = max(1, (1 << 20) // self.num_perm)  # bound the temporary matrix to ~4 MB
        if self._block is None:
            self._block = np.empty((step, self.num_perm), dtype=np.uint32)
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), step):
                piece = shingles[start : start + step]
                block = self._block[: len(piece)]
                np.multiply(piece[:, None], self._a[None, :], out=block)  # in place: no temporaries
                np.add(block, self._b, out=block)
                np.minimum(out, block.min(axis=0), out=out)
        return out


def distinct_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (a sort and a neighbour comparison: cheaper than `np.unique` here)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of the sets of two arrays of shingle hashes."""
    a, b = np.unique(a), np.unique(b)
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)
