"""The cluster stage: the verified pairs of every dedup task joined into clusters; which documents go.

Pairs are joined by union-find over the documents they name (renumbered densely, so memory follows the
number of pairs, not of documents); each cluster keeps the document with the smallest content hash
(the first of equal ones), so the kept set does not depend on input order or on the number of workers.
Exact twins (pairs of the exact band) count as exact duplicates; every other dropped document as near.
"""

from __future__ import annotations

import numpy as np

from .lsh import drop_from_clusters
from .search import PAIR


def dropped(pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """The sorted global indices of the documents to drop, and how many of them are exact twins."""
    if len(pairs) == 0:
        return np.zeros(0, np.int64), 0
    ends = np.concatenate([pairs["a"], pairs["b"]])
    orders = np.concatenate([pairs["order_a"], pairs["order_b"]])
    documents, first, dense = np.unique(ends, return_index=True, return_inverse=True)
    links = dense.reshape(2, -1).T
    drop = documents[drop_from_clusters(len(documents), links, orders[first])]
    exact = len(np.unique(pairs["b"][pairs["exact"]]))
    return drop, exact


def load_pairs(paths: list) -> np.ndarray:
    loaded = [np.load(path, allow_pickle=False) for path in paths]
    for array in loaded:
        if array.dtype != PAIR:
            raise ValueError("a dedup task's pairs.npy has the wrong layout: rerun the dedup stage")
    return np.concatenate(loaded) if loaded else np.zeros(0, PAIR)
