"""One stage of datatrove's MinHash near-dedup, for bench/dedup_peers.py (runs under bench/.venv-peers).

    bench/.venv-peers/bin/python bench/dedup_peers_datatrove.py STAGE --input DIR --work DIR --tokenizer T

STAGE is signature, buckets, cluster or filter (datatrove's four MinHash steps, each a LocalPipelineExecutor
with workers=1: one core). buckets runs 16 tasks (datatrove requires a multiple of num_buckets), one after
another. T is `default` (datatrove's English word tokenizer, spaCy's blank `en` pipeline, after its own
text simplification) or `whitespace` (lowercase, split on ASCII whitespace: the ground truth's shingles).
Prints one JSON line: the stage, the seconds its executor ran, and what it found.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.text import TextNormConfig
from datatrove.utils.typeshelper import Languages
from datatrove.utils.word_tokenizers import WordTokenizer

BUCKETS, HASHES_PER_BUCKET, NGRAM, SEED = 16, 7, 5, 1
ASCII_WORD = re.compile(r"[^ \t\n\r\x0b\x0c]+")
ONLY_LOWERCASE = TextNormConfig(
    lowercase=True,
    norm_whitespace=False,
    remove_punctuation=False,
    norm_unicode_diacritics=False,
    norm_numbers=False,
)


class AsciiWhitespaceTokenizer(WordTokenizer):
    """Words = runs of non-ASCII-whitespace characters (as bytes.split()); only word_tokenize is used."""

    def word_tokenize(self, text: str) -> list[str]:
        return ASCII_WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def minhash_config(tokenizer: str) -> MinhashConfig:
    norm = ONLY_LOWERCASE if tokenizer == "whitespace" else TextNormConfig()
    return MinhashConfig(
        n_grams=NGRAM, num_buckets=BUCKETS, hashes_per_bucket=HASHES_PER_BUCKET, seed=SEED, norm_config=norm
    )


def stage_pipeline(stage: str, corpus: Path, work: Path, tokenizer: str) -> tuple[list, int]:
    """The stage's pipeline steps and its task count."""
    config = minhash_config(tokenizer)
    language = AsciiWhitespaceTokenizer() if tokenizer == "whitespace" else Languages.english
    reader = JsonlReader(str(corpus), compression=None, text_key="text")
    if stage == "signature":
        return [reader, MinhashDedupSignature(str(work / "signatures"), config=config, language=language)], 1
    if stage == "buckets":
        return [MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=config)], BUCKETS
    if stage == "cluster":
        return [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=config)], 1
    if stage == "filter":
        writer = JsonlWriter(str(work / "kept"), compression=None)
        return [reader, MinhashDedupFilter(str(work / "remove")), writer], 1
    raise ValueError(f"unknown stage {stage}")


def found(stage: str, work: Path) -> dict:
    """What the stage produced: candidate pairs (buckets), dropped line numbers (cluster), kept count (filter)."""
    if stage == "buckets":
        pairs = set()
        for dups in sorted((work / "buckets").glob("*.dups")):
            rows = np.fromfile(dups, dtype="<u4").reshape(-1, 4)
            pairs.update((min(a, b), max(a, b)) for a, b in rows[:, [1, 3]].tolist())
        return {"pairs": sorted(pairs)}
    if stage == "cluster":
        remove = work / "remove" / "000000.remove"
        dropped = np.fromfile(remove, dtype="<u4").tolist() if remove.exists() else []
        return {"dropped": sorted(dropped)}
    if stage == "filter":
        kept = sum(sum(1 for _ in path.open()) for path in (work / "kept").glob("*.jsonl"))
        return {"kept": kept}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=("signature", "buckets", "cluster", "filter"))
    parser.add_argument("--input", type=Path, required=True, help="folder holding the corpus jsonl")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tokenizer", choices=("default", "whitespace"), default="default")
    args = parser.parse_args()
    pipeline, tasks = stage_pipeline(args.stage, args.input, args.work, args.tokenizer)
    executor = LocalPipelineExecutor(
        pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(args.work / "logs" / args.stage)
    )
    started = time.perf_counter()
    executor.run()
    seconds = time.perf_counter() - started
    print(json.dumps({"stage": args.stage, "seconds": round(seconds, 3), **found(args.stage, args.work)}))


if __name__ == "__main__":
    main()
