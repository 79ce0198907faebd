"""Exact and near-duplicate removal: estimates track true Jaccard, clusters are found, kept sets are
deterministic whatever the order."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash

from llmtrain.data.dedup.exact import content_hash, first_occurrences
from llmtrain.data.dedup.lsh import near_duplicates
from llmtrain.data.dedup.minhash import MinHasher
from support.paths import ROOT


def words():
    text = (ROOT / "examples/data/shakespeare/hamlet.txt").read_text()
    return text.split()


def shingles(text: str, n: int = 5) -> set[bytes]:
    w = text.lower().encode().split()
    n = min(n, len(w))
    return {b" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def mutated(rng: random.Random, doc: list[str], edits: int, vocab: list[str]) -> list[str]:
    out = list(doc)
    for _ in range(edits):
        out[rng.randrange(len(out))] = rng.choice(vocab)
    return out


def test_estimate_tracks_exact_jaccard_like_datasketch():
    rng = random.Random(0)
    vocab = words()
    hasher = MinHasher(num_perm=128, ngram=5, seed=1)
    ours, theirs = [], []
    for start in range(0, 60 * 400, 400):
        a = vocab[start : start + 400]
        b = mutated(rng, a, rng.randint(1, 60), vocab)
        truth = jaccard(" ".join(a), " ".join(b))
        ours.append(float(np.mean(hasher.signature(" ".join(a)) == hasher.signature(" ".join(b)))) - truth)
        ma, mb = MinHash(num_perm=128, seed=1), MinHash(num_perm=128, seed=1)
        ma.update_batch(list(shingles(" ".join(a))))
        mb.update_batch(list(shingles(" ".join(b))))
        theirs.append(ma.jaccard(mb) - truth)
    assert abs(np.mean(ours)) < 0.02  # unbiased
    assert np.mean(np.abs(ours)) < 1.3 * np.mean(np.abs(theirs)) + 0.005  # as accurate as the reference


def test_signature_is_deterministic_and_case_insensitive():
    a, b = MinHasher(seed=3), MinHasher(seed=3)
    assert np.array_equal(a.signature("The Quick brown fox jumps"), b.signature("the quick BROWN fox jumps"))
    assert not np.array_equal(
        a.signature("one two three four five"), MinHasher(seed=4).signature("one two three four five")
    )


def test_short_and_empty_documents():
    hasher = MinHasher(ngram=5)
    assert len(hasher.shingle_hashes("only three words")) == 1
    assert (hasher.signature("") == np.iinfo(np.uint32).max).all()


def test_exact_first_occurrences():
    hashes = np.array([content_hash(t) for t in ["a", "b", "a", "c", "b"]], dtype=np.uint64)
    assert first_occurrences(hashes).tolist() == [True, True, False, True, False]


def _corpus(seed: int = 0):
    rng = random.Random(seed)
    vocab = words()
    originals = [vocab[i * 300 : i * 300 + 300] for i in range(40)]
    docs, groups = [], []
    for g, doc in enumerate(originals):
        docs.append(" ".join(doc))
        groups.append(g)
        if g % 4 == 0:  # every fourth original gets two near copies
            for _ in range(2):
                docs.append(" ".join(mutated(rng, doc, 3, vocab)))
                groups.append(g)
    return docs, groups


def _drop(docs: list[str], threshold: float = 0.7) -> set[str]:
    hasher = MinHasher(num_perm=112, ngram=5)
    sigs = np.stack([hasher.signature(d) for d in docs])
    keys = np.array([content_hash(d)[0] for d in docs], dtype=np.uint64)
    drop = near_duplicates(sigs, keys, bands=14, threshold=threshold)
    return {d for d, dropped in zip(docs, drop, strict=True) if dropped}


def test_planted_near_duplicates_are_removed_and_nothing_else():
    docs, groups = _corpus()
    dropped = _drop(docs)
    assert len(dropped) == 20  # 10 groups x 2 copies
    kept_groups = [g for d, g in zip(docs, groups, strict=True) if d not in dropped]
    assert sorted(kept_groups) == list(range(40))  # one survivor per group


def test_kept_set_does_not_depend_on_order():
    docs, _ = _corpus(1)
    shuffled = list(docs)
    random.Random(5).shuffle(shuffled)
    assert _drop(docs) == _drop(shuffled)


@pytest.mark.parametrize("threshold", [0.5, 0.95])
def test_threshold_is_respected(threshold):
    rng = random.Random(2)
    vocab = words()
    base = vocab[1000:1400]
    pair = [" ".join(base), " ".join(mutated(rng, base, 12, vocab))]
    truth = jaccard(*pair)
    assert 0.6 < truth < 0.9
    assert bool(_drop(pair, threshold)) == (truth >= threshold)


def test_exact_verification_decides_on_true_similarity():
    """With a similarity function the decision follows the exact Jaccard, not the signature estimate."""
    from llmtrain.data.dedup.minhash import exact_jaccard

    rng = random.Random(3)
    vocab = words()
    hasher = MinHasher(num_perm=112, ngram=5)
    base = " ".join(vocab[2000:2600])
    keys = np.array([1, 2], dtype=np.uint64)
    disagreements = 0
    for _ in range(200):
        other = " ".join(mutated(rng, vocab[2000:2600], rng.randint(8, 14), vocab))
        (sig_a, sh_a), (sig_b, sh_b) = hasher.signature_and_shingles(base), hasher.signature_and_shingles(other)
        truth = exact_jaccard(sh_a, sh_b)
        assert truth == pytest.approx(jaccard(base, other), abs=1e-3)  # hashed shingles vs the string sets
        sets = [sh_a, sh_b]

        def exact(pairs, sets=sets):
            return np.array([exact_jaccard(sets[a], sets[b]) for a, b in pairs.tolist()])

        signatures = np.stack([sig_a, sig_b])
        candidate = near_duplicates(signatures, keys, 16, 0.0).any()
        verified = near_duplicates(signatures, keys, 16, 0.8, similarity=exact).any()
        assert verified == (candidate and truth >= 0.8)
        disagreements += near_duplicates(signatures, keys, 16, 0.8).any() != verified
    assert disagreements > 0  # the estimate alone would have decided some of these pairs wrongly


def test_the_compiled_kernel_computes_what_numpy_computes():
    """kernels.py (numba) gives bit for bit the numpy path's signature and distinct sorted shingles:
    empty and whitespace-only texts, fewer words than the n-gram, Unicode, tabs and vertical tabs."""
    from llmtrain.data.dedup import kernels

    assert kernels.kernel() is not None  # numba is a dependency: the fast path is the one that runs
    rng = random.Random(3)
    texts = ["", " \t\n", "one", "two words", "a b c d", "a b c d e", "Ünïcödé  WÖRDS\tand\x0bmore\nlines ÄÖÜ"]
    texts += [
        " ".join(rng.choice(["a", "B", "cé", "dd", " ", "\t", "ß"]) for _ in range(rng.randint(0, 40)))
        for _ in range(200)
    ]
    texts += [" ".join(f"w{rng.randrange(300)}" for _ in range(rng.randint(50, 2000))) for _ in range(20)]
    for hasher in (MinHasher(112, 5, 1), MinHasher(64, 3, 7), MinHasher(128, 1, 2)):
        for text in texts:
            fast, reference = hasher.signature_and_shingles(text), hasher.numpy_signature_and_shingles(text)
            for got, want in zip(fast, reference, strict=True):
                assert got.dtype == want.dtype and np.array_equal(got, want), text[:40]
