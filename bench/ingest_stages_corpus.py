"""A jsonl corpus of any size from real text, with planted near-duplicates and exact duplicates.

Pool: the real text of bench/corpora.py (Linux kernel documentation, GCIDE dictionary, King James Bible,
Shakespeare, and every k-th kernel C file up to C_POOL_BYTES) cut into documents of 300-3,000 words,
shuffled. The corpus takes documents from the pool in order; past the pool's end each document is a
*perturbed* copy of a pool document (lines shuffled within windows of 8, 30-40% of words replaced by
words drawn from the pool's unigram distribution), so its Jaccard similarity of word 5-grams to its source
is ~0.05, far below the dedup threshold (a sample is measured and the run fails above MAX_REUSE_JACCARD).
Then, as bench/minhash.py does: 10% of documents get a near-copy with 0.2-6% of words replaced (true
Jaccard ~0.6-0.99, counted against the 0.8 threshold) and 2% an exact copy, each placed a random distance
later. Deterministic for a seed; written once to bench/.cache/ingest_stages/corpus-<S>MB.jsonl with the
planted counts beside it in corpus-<S>MB.json.
"""

from __future__ import annotations

import heapq
import json
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora

CACHE = corpora.CACHE / "ingest_stages"
FORMAT_VERSION = 1
MIN_WORDS, MAX_WORDS, MAX_LINE_WORDS = 300, 3000, 1000
C_POOL_BYTES = 200 * 10**6
NEAR_FRACTION, EXACT_FRACTION = 0.10, 0.02
NEAR_REPLACED = (0.002, 0.06)
REUSE_REPLACED = (0.30, 0.40)
SHUFFLE_WINDOW = 8
NGRAM, THRESHOLD = 5, 0.8
MAX_REUSE_JACCARD = 0.3
REUSE_CHECK_EVERY = 20
MAX_COPY_DISTANCE = 50_000
_TOKENS = re.compile(r"(\s+)")


@dataclass
class Planted:
    """What the generator put into one corpus."""

    documents: int = 0
    bytes: int = 0
    pool_documents: int = 0
    originals: int = 0
    reused_perturbed: int = 0
    near_duplicates: int = 0
    near_duplicates_at_or_above_threshold: int = 0
    exact_duplicates: int = 0
    reuse_jaccard_checked: int = 0
    reuse_jaccard_max: float = 0.0
    reuse_jaccard_mean: float = 0.0
    near_jaccard_min: float = 1.0
    params: dict = field(default_factory=dict)

    @property
    def mean_document_bytes(self) -> float:
        return self.bytes / max(self.documents, 1)


def shingles(text: str, n: int = NGRAM) -> set[str]:
    """Word n-grams as llmtrain's MinHash sees them: lowercased, split on whitespace."""
    words = text.lower().split()
    n = min(n, len(words))
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def _source_files() -> list[list[Path]]:
    """One sorted file list per source; kernel C thinned to every k-th file so it spans the tree."""
    prose = [corpora.kernel_docs(), corpora.gcide(), corpora.kjv(), corpora.ROOT / "examples/data/shakespeare"]
    lists = [sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".rst", ".txt")) for root in prose]
    c_files = sorted(p for p in corpora.kernel_source().rglob("*") if p.is_file() and p.suffix in (".c", ".h"))
    stride = max(1, round(sum(p.stat().st_size for p in c_files) / C_POOL_BYTES))
    return [*lists, c_files[::stride]]


def _lines(files: list[Path]) -> Iterator[tuple[str, int]]:
    """(line, word count) over the files in order; lines longer than MAX_LINE_WORDS are cut into pieces."""
    for path in files:
        for line in path.read_text(errors="replace").splitlines(keepends=True):
            words = line.split()
            if len(words) <= MAX_LINE_WORDS:
                yield line, len(words)
                continue
            for start in range(0, len(words), MAX_LINE_WORDS):
                piece = words[start : start + MAX_LINE_WORDS]
                yield " ".join(piece) + "\n", len(piece)


def _cut(files: list[Path], rng: random.Random) -> Iterator[str]:
    """Consecutive documents of MIN_WORDS-MAX_WORDS words (whole lines) from one source's stream."""
    chunk: list[str] = []
    words, target = 0, rng.randint(MIN_WORDS, MAX_WORDS)
    for line, count in _lines(files):
        if words + count > target and words >= MIN_WORDS:
            yield "".join(chunk).strip()
            chunk, words, target = [], 0, rng.randint(MIN_WORDS, MAX_WORDS)
        chunk.append(line)
        words += count
    if words >= MIN_WORDS:
        yield "".join(chunk).strip()


def load_pool(seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = [doc for files in _source_files() for doc in _cut(files, rng)]
    rng.shuffle(pool)
    return pool


def unigram_sample(pool: list[str], every: int = 50) -> list[str]:
    """Words of every `every`-th pool document, repeats kept: drawing from it follows word frequency."""
    return [word for doc in pool[::every] for word in doc.split()]


def replace_words(text: str, fraction: float, vocabulary: list[str], rng: random.Random) -> str:
    """`text` with `fraction` of its words (random positions) replaced; whitespace is kept as it was."""
    tokens = _TOKENS.split(text)
    positions = [i for i, token in enumerate(tokens) if token and not token.isspace()]
    for i in rng.sample(positions, k=int(len(positions) * fraction)):
        tokens[i] = rng.choice(vocabulary)
    return "".join(tokens)


def perturb(text: str, vocabulary: list[str], rng: random.Random) -> str:
    """A copy that is no near-duplicate: lines shuffled within windows, 30-40% of words replaced."""
    lines = text.split("\n")
    for start in range(0, len(lines), SHUFFLE_WINDOW):
        window = lines[start : start + SHUFFLE_WINDOW]
        rng.shuffle(window)
        lines[start : start + SHUFFLE_WINDOW] = window
    return replace_words("\n".join(lines), rng.uniform(*REUSE_REPLACED), vocabulary, rng)


class _CorpusWriter:
    """Writes documents and the copies planted a random distance later, and counts what it planted."""

    def __init__(self, handle, planted: Planted, rng: random.Random, vocabulary: list[str], distance: int) -> None:
        self.handle, self.planted, self.rng, self.vocabulary = handle, planted, rng, vocabulary
        self.distance = distance
        self.pending: list[tuple[int, int, str]] = []  # (due position, tie-break, text)
        self._near_jaccard: list[float] = []

    def write(self, text: str) -> None:
        line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
        self.handle.write(line)
        self.planted.documents += 1
        self.planted.bytes += len(line.encode())

    def write_due_copies(self) -> None:
        while self.pending and self.pending[0][0] <= self.planted.documents:
            self.write(heapq.heappop(self.pending)[2])

    def plant_copies_of(self, text: str) -> None:
        draw = self.rng.random()
        if draw < NEAR_FRACTION:
            copy = replace_words(text, self.rng.uniform(*NEAR_REPLACED), self.vocabulary, self.rng)
            similarity = jaccard(text, copy)
            self.planted.near_duplicates += 1
            self.planted.near_duplicates_at_or_above_threshold += similarity >= THRESHOLD
            self.planted.near_jaccard_min = min(self.planted.near_jaccard_min, round(similarity, 4))
        elif draw < NEAR_FRACTION + EXACT_FRACTION:
            copy = text
            self.planted.exact_duplicates += 1
        else:
            return
        due = self.planted.documents + self.rng.randint(1, self.distance)
        heapq.heappush(self.pending, (due, self.planted.near_duplicates + self.planted.exact_duplicates, copy))

    def flush(self) -> None:
        while self.pending:
            self.write(heapq.heappop(self.pending)[2])


def generate(target_bytes: int, path: Path, pool: list[str], seed: int) -> Planted:
    """Writes the corpus to `path` (atomically) and returns what was planted in it."""
    rng = random.Random(seed)
    vocabulary = unigram_sample(pool)
    expected_documents = int(target_bytes * len(pool) / sum(len(doc) for doc in pool))
    distance = max(1, min(MAX_COPY_DISTANCE, expected_documents // 2))
    planted = Planted(pool_documents=len(pool), params=_params(target_bytes, seed))
    check = _ReuseCheck(planted)
    temp = path.with_name(path.name + ".tmp")
    with temp.open("w", encoding="utf-8") as handle:
        writer = _CorpusWriter(handle, planted, rng, vocabulary, distance)
        while planted.bytes < target_bytes:
            writer.write_due_copies()
            drawn = planted.originals + planted.reused_perturbed
            source = pool[drawn % len(pool)]
            if drawn < len(pool):
                text = source
                planted.originals += 1
            else:
                text = perturb(source, vocabulary, rng)
                check.sample(source, text)
                planted.reused_perturbed += 1
            writer.write(text)
            writer.plant_copies_of(text)
        writer.flush()
    check.finish()
    temp.rename(path)
    return planted


class _ReuseCheck:
    """Measures every REUSE_CHECK_EVERY-th perturbed copy against its source; fails above the limit."""

    def __init__(self, planted: Planted) -> None:
        self.planted, self.total = planted, 0.0

    def sample(self, source: str, copy: str) -> None:
        if self.planted.reused_perturbed % REUSE_CHECK_EVERY:
            return
        similarity = jaccard(source, copy)
        self.planted.reuse_jaccard_checked += 1
        self.planted.reuse_jaccard_max = max(self.planted.reuse_jaccard_max, round(similarity, 4))
        self.total += similarity

    def finish(self) -> None:
        self.planted.reuse_jaccard_mean = round(self.total / max(self.planted.reuse_jaccard_checked, 1), 4)
        if self.planted.reuse_jaccard_max > MAX_REUSE_JACCARD:
            raise SystemExit(
                f"perturbed copies too similar to their source: 5-gram Jaccard up to {self.planted.reuse_jaccard_max}"
                f" (limit {MAX_REUSE_JACCARD})"
            )


def _params(target_bytes: int, seed: int) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "target_bytes": target_bytes,
        "seed": seed,
        "words_per_document": [MIN_WORDS, MAX_WORDS],
        "near_fraction": NEAR_FRACTION,
        "near_replaced": list(NEAR_REPLACED),
        "exact_fraction": EXACT_FRACTION,
        "reuse_replaced": list(REUSE_REPLACED),
        "shuffle_window_lines": SHUFFLE_WINDOW,
        "c_pool_bytes": C_POOL_BYTES,
    }


class CorpusCache:
    """corpus-<S>MB.jsonl (+ .json with the planted counts) under CACHE, generated once per size and seed."""

    def __init__(self, seed: int = 0, directory: Path = CACHE) -> None:
        self.seed, self.directory = seed, directory
        self._pool: list[str] | None = None

    def paths(self, size_mb: int) -> tuple[Path, Path]:
        stem = f"corpus-{size_mb}MB" if self.seed == 0 else f"corpus-{size_mb}MB-seed{self.seed}"
        return self.directory / f"{stem}.jsonl", self.directory / f"{stem}.json"

    def get(self, size_mb: int) -> tuple[Path, Planted]:
        data, meta = self.paths(size_mb)
        if data.exists() and meta.exists():
            stored = json.loads(meta.read_text())
            if stored.get("params") == _params(size_mb * 10**6, self.seed):
                return data, Planted(**stored)
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._pool is None:
            self._pool = load_pool(self.seed)
        planted = generate(size_mb * 10**6, data, self._pool, self.seed)
        meta.write_text(json.dumps(asdict(planted), indent=2) + "\n")
        return data, planted
