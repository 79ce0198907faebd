"""Near-duplicate clustering from MinHash signatures, datatrove-style: bands -> buckets -> clusters.

1. Each signature is cut into `bands` bands of `rows` values; a band's values hash to one 64-bit key.
2. Per band, documents are sorted by key; equal keys form a bucket and every member is a candidate
   of the bucket's first document.
3. A candidate pair joins a cluster (union-find) when its Jaccard similarity reaches the threshold:
   exact, from the stored shingle hashes, when a `similarity` function is given (no false positives,
   and no true pair lost to estimation noise), else estimated from the signatures.
4. In each cluster one document is kept: the one with the smallest content hash, so the kept set does
   not depend on input order or on how the input was split between workers.
All steps are vectorized except the union-find over verified pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """(n, bands) uint64 keys: a multiply-xor hash of each band's rows."""
    n, num_perm = signatures.shape
    rows = num_perm // bands
    rng = np.random.default_rng(0x5EED)
    weights = rng.integers(1, 2**63, rows, dtype=np.uint64) | np.uint64(1)
    keys = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            column = signatures[:, r : bands * rows : rows].astype(np.uint64)
            keys = (keys ^ column) * weights[r]
            keys ^= keys >> np.uint64(29)
    return keys


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """(m, 2) int64 pairs (bucket head, member) over all bands, duplicates removed."""
    pairs = []
    for band in range(keys.shape[1]):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        new_bucket = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
        bucket_id = np.cumsum(new_bucket) - 1
        heads = order[np.flatnonzero(new_bucket)]
        members = ~new_bucket
        if members.any():
            pairs.append(np.stack([heads[bucket_id[members]], order[members]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


Similarity = Callable[[np.ndarray], np.ndarray]


def similar_pairs(
    signatures: np.ndarray, bands: int, threshold: float, similarity: Similarity | None = None
) -> np.ndarray:
    """(m, 2) index pairs that share a band bucket and whose Jaccard similarity reaches `threshold`.

    `similarity(pairs)` returns the exact similarity of each pair; without it, the signatures' estimate.
    """
    if len(signatures) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = candidate_pairs(band_keys(signatures, bands))
    if len(pairs) == 0:
        return pairs
    if similarity is None:
        scores = (signatures[pairs[:, 0]] == signatures[pairs[:, 1]]).mean(axis=1)
    else:
        scores = similarity(pairs)
    return pairs[scores >= threshold]


def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def drop_from_clusters(n: int, pairs: np.ndarray, order_keys: np.ndarray) -> np.ndarray:
    """Mask over `n` documents: all members of each cluster (connected pairs) but the smallest key."""
    drop = np.zeros(n, dtype=bool)
    if len(pairs) == 0:
        return drop
    parent = np.arange(n)
    for a, b in pairs.tolist():
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = parent
    while True:  # pointer jumping: every entry ends at its root
        jumped = roots[roots]
        if np.array_equal(jumped, roots):
            break
        roots = jumped
    clustered = np.flatnonzero(np.bincount(roots, minlength=n)[roots] > 1)
    by_cluster = np.lexsort((order_keys[clustered], roots[clustered]))
    sorted_roots = roots[clustered][by_cluster]
    first = np.concatenate(([True], sorted_roots[1:] != sorted_roots[:-1]))
    drop[clustered[by_cluster[~first]]] = True
    return drop


def near_duplicates(
    signatures: np.ndarray,
    order_keys: np.ndarray,
    bands: int,
    threshold: float,
    active: np.ndarray | None = None,
    similarity: Similarity | None = None,
) -> np.ndarray:
    """Mask of documents to drop as near duplicates.

    `order_keys` (n,) decides which member of a cluster is kept (the smallest); `active` limits the
    search to some rows (e.g. exact-duplicate survivors); `similarity` takes global index pairs.
    """
    index = np.arange(len(signatures)) if active is None else np.flatnonzero(active)
    drop = np.zeros(len(signatures), dtype=bool)
    exact = None if similarity is None else (lambda pairs: similarity(index[pairs]))
    pairs = similar_pairs(signatures[index], bands, threshold, exact)
    drop[index] = drop_from_clusters(len(index), pairs, order_keys[index])
    return drop
