"""End-to-end ingest against the tokenizer alone, and peak memory on a large input.

1. `llmtrain ingest` (2 workers) on >=100 MB of mixed real text (bench/corpora.py): wall time by stage
   and peak memory (PSS) of the whole process tree.
2. Baseline, same run, same machine: the trained tokenizer's own `encode_batch` over the same raw
   files (4 MB batches, all cores). Pipeline overhead = (ingest wall time less tokenizer training)
   / encode time - 1.
3. Peak memory of `llmtrain ingest` on ~1 GB of Linux kernel sources (`--large`).

    python bench/ingest.py [--large]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora

from llmtrain.data import tokenizer


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                stack += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return found


def tree_pss(pid: int) -> int:
    """Proportional set size of a process and all its descendants: pages shared between forked workers
    are counted once, not once per process as a sum of RSS would."""
    total = 0
    for current in _descendants(pid):
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def run_ingest(spec_path: Path, output: Path, workers: int) -> dict:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmtrain.cli",
            "ingest",
            "-f",
            str(spec_path),
            "--output",
            str(output),
            "--workers",
            str(workers),
            "--force",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss(process.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    stdout, _ = process.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"ingest failed: {stdout[-2000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "peak_memory_pss_mib": round(peak / 2**20, 1), "stats": report["stats"]}


def spec_for(data: Path, sample_bytes: int) -> dict:
    return {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": "bench"},
        "spec": {
            "sources": [{"local": {"path": str(data / "**" / "*")}}],
            "format": "txt",
            "validation": {"minChars": 200, "maxChars": 2_000_000},
            "tokenizer": {"type": "bpe", "vocabSize": 32000, "trainSampleBytes": sample_bytes},
            "split": {"validationFraction": 0.01},
            "output": {"shardTokens": 50_000_000},
        },
    }


def encode_baseline(data: Path, tokenizer_dir: Path) -> dict:
    tok = tokenizer.load(tokenizer_dir)
    files = sorted(p for p in data.rglob("*") if p.is_file())
    texts = [p.read_text(errors="replace") for p in files]
    size = sum(len(t.encode()) for t in texts)
    batches, batch, batch_bytes = [], [], 0
    for text in texts:
        batch.append(text)
        batch_bytes += len(text)
        if batch_bytes >= 4 << 20:
            batches.append(batch)
            batch, batch_bytes = [], 0
    if batch:
        batches.append(batch)
    started = time.perf_counter()
    tokens = sum(len(ids) for b in batches for ids in tok.encode_batch(b))
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 2), "megabytes_per_s": round(size / 1e6 / elapsed, 2), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", action="store_true", help="also the ~1 GB kernel-source run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-mb", type=int, default=64, help="tokenizer trainSampleBytes, in MB")
    args = parser.parse_args()
    results: dict = {"cpus": os.cpu_count(), "train_sample_mb": args.sample_mb}
    with tempfile.TemporaryDirectory(dir=corpora.CACHE) as work:
        work_dir = Path(work)
        data = corpora.prose_mix()
        spec = work_dir / "mix.yaml"
        spec.write_text(yaml.safe_dump(spec_for(data, args.sample_mb * 10**6)))
        run = run_ingest(spec, work_dir / "mix-out", args.workers)
        baseline = encode_baseline(data, work_dir / "mix-out" / "tokenizer")
        seconds = run["stats"]["seconds"]
        without_training = run["wall_s"] - seconds.get("tokenizer", 0.0)
        results["mix"] = {
            "input_mb": round(corpora.size_of(data) / 1e6, 1),
            "ingest": run,
            "ingest_mb_per_s_excluding_tokenizer_training": round(corpora.size_of(data) / 1e6 / without_training, 2),
            "encode_batch_alone": baseline,
            "pipeline_overhead": round(without_training / baseline["seconds"] - 1, 3),
        }
        if args.large:
            source = corpora.kernel_source()
            spec = work_dir / "large.yaml"
            spec.write_text(yaml.safe_dump(spec_for(source, args.sample_mb * 10**6)))
            results["large"] = {
                "input_mb": round(corpora.size_of(source) / 1e6, 1),
                "ingest": run_ingest(spec, work_dir / "large-out", args.workers),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
