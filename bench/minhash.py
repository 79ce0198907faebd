"""MinHash near-dedup: docs/s of llmtrain's signature + LSH path against datasketch (and rensa), and
recall/precision against exact Jaccard ground truth on real text with planted near-duplicates.

Corpus: the Linux kernel's Documentation/ (real prose, ~3,000 files) cut into documents of 300-3,000
words, plus near-copies of 15% of them with 0.2-6% of words replaced (true Jaccard of 5-grams spread over
roughly 0.6-0.99). Same parameters everywhere: numPerm 112, 16 bands x 7 rows (llmtrain's default),
word 5-grams, threshold 0.8; each library's candidates are checked against the threshold its own
way. datasketch's per-shingle loop is slow: it is timed on a subset and reported per document.

    python bench/minhash.py [--docs N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora

from llmtrain.data.dedup.exact import content_hash
from llmtrain.data.dedup.lsh import drop_from_clusters, similar_pairs
from llmtrain.data.dedup.minhash import MinHasher, exact_jaccard

NUM_PERM, BANDS, NGRAM, THRESHOLD = 112, 16, 5, 0.8


def build_corpus(limit: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs: list[str] = []
    for path in sorted(corpora.kernel_docs().rglob("*.rst")):
        words = path.read_text(errors="replace").split()
        start = 0
        while start < len(words) and len(docs) < limit:
            size = rng.randint(300, 3000)
            if len(words) - start >= 300:
                docs.append(" ".join(words[start : start + size]))
            start += size
        if len(docs) >= limit:
            break
    vocabulary = " ".join(docs[:50]).split()
    planted = []
    for doc in rng.sample(docs, k=int(0.15 * len(docs))):
        words = doc.split()
        for _ in range(rng.choice((1, 2))):
            copy = list(words)
            for _ in range(int(len(copy) * rng.uniform(0.002, 0.06))):
                copy[rng.randrange(len(copy))] = rng.choice(vocabulary)
            planted.append(" ".join(copy))
    everything = docs + planted
    rng.shuffle(everything)
    return everything


def shingles(text: str) -> set[bytes]:
    words = text.lower().encode().split()
    n = min(NGRAM, len(words))
    return {b" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def ground_truth(docs: list[str]) -> set[tuple[int, int]]:
    """Every pair with exact Jaccard >= THRESHOLD (candidates from an inverted index of shingles)."""
    sets = [shingles(d) for d in docs]
    index: dict[bytes, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            index[sh].append(i)
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for members in index.values():
        if 1 < len(members) <= 200:
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    shared[(members[a], members[b])] += 1
    truth = set()
    for (a, b), common in shared.items():
        union = len(sets[a]) + len(sets[b]) - common
        if common / union >= THRESHOLD:
            truth.add((a, b))
    return truth


def components(n: int, pairs: set[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    return [find(i) for i in range(n)]


def score(found: set[tuple[int, int]], truth: set[tuple[int, int]], docs: list[str]) -> dict[str, float]:
    """Recall: true pairs that end up in one cluster; precision: reported pairs that truly reach it."""
    root = components(len(docs), found)
    hits = sum(1 for a, b in truth if root[a] == root[b])
    precise = sum(1 for a, b in found if (a, b) in truth or _jaccard(docs[a], docs[b]) >= THRESHOLD)
    return {
        "recall": round(hits / len(truth), 4) if truth else 1.0,
        "precision": round(precise / len(found), 4) if found else 1.0,
        "pairs": len(found),
    }


def _jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def run_ours(docs: list[str], bands: int = BANDS) -> tuple[float, set[tuple[int, int]], int]:
    """Signatures, LSH, exact verification from the kept shingle hashes, clusters: as `llmtrain ingest`."""
    started = time.perf_counter()
    hasher = MinHasher(NUM_PERM, NGRAM, seed=1)
    computed = [hasher.signature_and_shingles(d) for d in docs]
    signatures = np.stack([sig for sig, _ in computed])
    shingle_sets = [sh for _, sh in computed]

    def similarity(pairs: np.ndarray) -> np.ndarray:
        return np.array([exact_jaccard(shingle_sets[a], shingle_sets[b]) for a, b in pairs.tolist()])

    pairs = similar_pairs(signatures, bands, THRESHOLD, similarity)
    keys = np.array([content_hash(d)[0] for d in docs], dtype=np.uint64)
    dropped = int(drop_from_clusters(len(docs), pairs, keys).sum())
    elapsed = time.perf_counter() - started
    return elapsed, {(min(a, b), max(a, b)) for a, b in pairs.tolist()}, dropped


def run_datasketch(docs: list[str], batch: bool) -> tuple[float, set[tuple[int, int]]]:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
    found = set()
    hashes = []
    for i, doc in enumerate(docs):
        m = MinHash(num_perm=NUM_PERM, seed=1)
        words = doc.lower().encode().split()
        n = min(NGRAM, len(words))
        grams = [b" ".join(words[j : j + n]) for j in range(len(words) - n + 1)]
        if batch:
            m.update_batch(grams)
        else:
            for gram in grams:
                m.update(gram)
        for other in lsh.query(m):
            if m.jaccard(hashes[other]) >= THRESHOLD:  # the same verification as ours
                found.add((other, i))
        lsh.insert(i, m)
        hashes.append(m)
    return time.perf_counter() - started, found


def run_rensa(docs: list[str]) -> tuple[float, set[tuple[int, int]]] | None:
    try:
        from rensa import RMinHash, RMinHashLSH
    except ImportError:
        return None
    started = time.perf_counter()
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    found = set()
    hashes = []
    for i, doc in enumerate(docs):
        m = RMinHash(num_perm=NUM_PERM, seed=1)
        words = doc.lower().split()
        n = min(NGRAM, len(words))
        m.update([" ".join(words[j : j + n]) for j in range(len(words) - n + 1)])
        for other in lsh.query(m):
            if m.jaccard(hashes[other]) >= THRESHOLD:
                found.add((other, i))
        lsh.insert(i, m)
        hashes.append(m)
    return time.perf_counter() - started, found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--datasketch-docs", type=int, default=400)
    args = parser.parse_args()
    docs = build_corpus(args.docs)
    megabytes = sum(len(d) for d in docs) / 1e6
    truth = ground_truth(docs)
    subset = docs[: args.datasketch_docs]
    subset_truth = {p for p in truth if p[1] < len(subset)}

    ours_time, ours_pairs, dropped = run_ours(docs)
    by_bands = {}
    for bands in (8, 14, 16, 28):
        elapsed, pairs, _ = run_ours(docs, bands)
        by_bands[bands] = {"docs_per_s": round(len(docs) / elapsed, 1), **score(pairs, truth, docs)}
    sub_time, sub_pairs, _ = run_ours(subset)
    ds_time, ds_pairs = run_datasketch(subset, batch=False)
    dsb_time, dsb_pairs = run_datasketch(docs, batch=True)
    rensa = run_rensa(docs)

    results = {
        "corpus": {"documents": len(docs), "megabytes": round(megabytes, 1), "true_pairs": len(truth)},
        "llmtrain": {
            "docs_per_s": round(len(docs) / ours_time, 1),
            **score(ours_pairs, truth, docs),
            "dropped": dropped,
        },
        "llmtrain_subset": {"docs_per_s": round(len(subset) / sub_time, 1), **score(sub_pairs, subset_truth, subset)},
        "datasketch_update": {"docs_per_s": round(len(subset) / ds_time, 1), **score(ds_pairs, subset_truth, subset)},
        "datasketch_update_batch": {"docs_per_s": round(len(docs) / dsb_time, 1), **score(dsb_pairs, truth, docs)},
    }
    results["llmtrain_by_bands"] = by_bands
    if rensa:
        results["rensa"] = {"docs_per_s": round(len(docs) / rensa[0], 1), **score(rensa[1], truth, docs)}
    ours_rate = results["llmtrain"]["docs_per_s"]
    for name in ("datasketch_update", "datasketch_update_batch", "rensa"):
        if name in results:
            results[name]["llmtrain_speedup"] = round(ours_rate / results[name]["docs_per_s"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
