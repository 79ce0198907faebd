"""The staged dedup (parts' band records -> search units -> clustering) against the one-process path."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llmtrain.data import parts
from llmtrain.data.dedup import cluster, search
from llmtrain.data.dedup.exact import content_hash, first_occurrences
from llmtrain.data.dedup.lsh import near_duplicates
from llmtrain.data.dedup.minhash import MinHasher, exact_jaccard

BANDS, THRESHOLD = 16, 0.8


def _corpus(seed: int = 3, originals: int = 120) -> list[str]:
    """Random-word documents, near copies (a few words changed) and exact copies, shuffled."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(40, 160))) for _ in range(originals)]
    near = []
    for doc in rng.sample(docs, 30):
        copy = doc.split()
        for _ in range(rng.randint(0, 3)):
            copy[rng.randrange(len(copy))] = rng.choice(words)
        near.append(" ".join(copy))
    everything = docs + near + rng.sample(docs, 10) + rng.sample(near, 5)
    rng.shuffle(everything)
    return everything


def _write_parts(root, docs: list[str], count: int, layout: parts.BandLayout) -> parts.PartSet:
    hasher = MinHasher(112, 5, 1)
    output = str(root / "out")
    bounds = np.linspace(0, len(docs), count + 1).astype(int)
    for i in range(count):
        writer = parts.PartWriter(root / f"staging-{i}", layout, 112)
        for text in docs[bounds[i] : bounds[i + 1]]:
            signature, shingles = hasher.signature_and_shingles(text)
            writer.add(text, content_hash(text), signature if layout.near else None, shingles)
        writer.publish(parts.part_uri(output, i, count), {"documentsValid": int(bounds[i + 1] - bounds[i])})
    return parts.PartSet.load(output, count)


def _one_process(docs: list[str]) -> np.ndarray:
    """What the single-process path drops: exact duplicates, then near ones among the survivors."""
    hasher = MinHasher(112, 5, 1)
    hashes = np.array([content_hash(t) for t in docs], dtype=np.uint64)
    signatures = np.stack([hasher.signature(t) for t in docs])
    shingles = [hasher.shingle_hashes(t) for t in docs]
    keep = first_occurrences(hashes)

    def similarity(pairs: np.ndarray) -> np.ndarray:
        return np.array([exact_jaccard(shingles[a], shingles[b]) for a, b in pairs.tolist()])

    near = near_duplicates(signatures, hashes[:, 0], BANDS, THRESHOLD, keep, similarity)
    return np.flatnonzero(~keep | near)


def _staged(part_set: parts.PartSet, layout: parts.BandLayout, tasks: int) -> tuple[np.ndarray, int]:
    found = [
        search.Search(part_set, layout, THRESHOLD).run(search.task_units(layout, part_set.total, i, tasks))
        for i in range(tasks)
    ]
    return cluster.dropped(np.concatenate([f.pairs for f in found]))


@pytest.mark.parametrize(("part_count", "tasks"), [(1, 1), (2, 3), (5, 2)])
def test_staged_dedup_drops_what_one_process_drops(tmp_path, part_count, tasks):
    docs = _corpus()
    layout = parts.BandLayout(BANDS, exact=True)
    drop, exact = _staged(_write_parts(tmp_path, docs, part_count, layout), layout, tasks)
    expected = _one_process(docs)
    assert len(expected) > 30  # the corpus has near and exact duplicates to find
    np.testing.assert_array_equal(drop, expected)
    assert exact == len(docs) - len({content_hash(t) for t in docs})


def test_many_small_runs_and_units_give_the_same_records_and_drops(tmp_path, monkeypatch):
    """Spilling band records in runs of 7 documents and merging 3 key-range groups at a time writes the
    same bands as one run; units of 10 records, verified 3 pairs at a time, find the same duplicates as
    one unit per band."""
    docs = _corpus(seed=5)
    layout = parts.BandLayout(BANDS, exact=True)
    whole = _write_parts(tmp_path / "whole", docs, 2, layout)
    monkeypatch.setattr(parts, "RUN_DOCUMENTS", 7)
    monkeypatch.setattr(parts, "MERGE_RECORDS", 50)
    spilled = _write_parts(tmp_path / "spilled", docs, 2, layout)
    for i in range(2):
        for name in ("bands.bin", "band_offsets.bin", "shingles.bin", "offsets.bin", "hashes.bin"):
            assert (tmp_path / f"whole/out/.work/part-{i:05d}-of-00002/{name}").read_bytes() == (
                tmp_path / f"spilled/out/.work/part-{i:05d}-of-00002/{name}"
            ).read_bytes(), name
    expected, _ = _staged(whole, layout, 1)
    monkeypatch.setattr(search, "UNIT_RECORDS", 10)
    monkeypatch.setattr(search, "VERIFY_PAIRS", 3)  # shingles held for 3 pairs at a time
    assert len(search.units(layout, spilled.total)) >= 16 * layout.count  # many key-range groups per band
    drop, _ = _staged(spilled, layout, 3)
    np.testing.assert_array_equal(drop, expected)


def test_a_unit_holds_a_bounded_share_of_the_records(monkeypatch):
    """The number of key-range groups grows with the corpus, so a unit's records stay near UNIT_RECORDS."""
    layout = parts.BandLayout(16, exact=True)
    for documents in (10, 4_000_000, 40_000_000, 400_000_000):
        units = search.units(layout, documents)
        per_band = len(units) // layout.count
        assert documents / per_band <= search.UNIT_RECORDS
        assert sorted({(u.first_range, u.last_range) for u in units})[-1][1] == parts.RANGES


def test_near_only_and_exact_only_layouts(tmp_path):
    docs = _corpus(seed=7)
    hashes = np.array([content_hash(t) for t in docs], dtype=np.uint64)
    exact_only = parts.BandLayout(0, exact=True)
    drop, exact = _staged(_write_parts(tmp_path / "exact", docs, 2, exact_only), exact_only, 2)
    np.testing.assert_array_equal(drop, np.flatnonzero(~first_occurrences(hashes)))
    assert exact == len(drop)
    near_only = parts.BandLayout(BANDS, exact=False)
    drop, exact = _staged(_write_parts(tmp_path / "near", docs, 2, near_only), near_only, 2)
    assert exact == 0 and set(np.flatnonzero(~first_occurrences(hashes))) <= set(drop.tolist())


def test_a_cluster_keeps_its_smallest_content_hash_first_of_equals():
    pairs = np.zeros(3, search.PAIR)
    pairs["a"], pairs["b"] = [5, 5, 9], [7, 9, 12]
    pairs["order_a"], pairs["order_b"] = [30, 30, 10], [20, 10, 10]
    pairs["exact"] = [False, False, True]
    drop, exact = cluster.dropped(pairs)
    assert drop.tolist() == [5, 7, 12] and exact == 1  # 9 and 12 tie on the hash: 9 (first) stays
