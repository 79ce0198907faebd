"""Per-stage peak memory, throughput and scaling of llmtrain's staged ingest, and a 1 TB projection.

For each corpus size (real text with planted duplicates, bench/ingest_stages_corpus.py) the six stages
run as separate processes, in order, as pods would run them: scan, dedup, cluster, tokenizer, encode,
manifest. One worker first (N=1); at `--scaling-size` also N=2, the indexed stages' two tasks side by
side. Per stage: peak PSS per task (process tree, sampled every 20 ms), wall and CPU seconds, input
documents and MB per CPU second; per run: candidate and verified pairs, dropped documents against the
planted ones. The results are JSON (stdout, `--out`); `--markdown` prints the tables for
docs/benchmarks.md instead, with the 1 TB projection (bench/ingest_stages_projection.py).

    python bench/ingest_stages.py [--size-mb 64,256,1024] [--scaling-size 256] [--out FILE] [--markdown]
    python bench/ingest_stages.py --render FILE --markdown    # the tables again from saved results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_stage_runner import STAGES, SpecOptions, StagedIngest, StageResult
from ingest_stages_corpus import CACHE, CorpusCache, Planted
from ingest_stages_markdown import render
from ingest_stages_projection import project

DEFAULT_SIZES = (64, 256, 1024)


def _find(report: dict, key: str) -> object:
    """`key` in the stage's report or its stats (the contract fixes the report, not where each fact sits)."""
    if key in report:
        return report[key]
    stats = report.get("stats")
    return stats.get(key) if isinstance(stats, dict) else None


def _stage_summary(result: StageResult, planted: Planted) -> dict:
    megabytes = planted.bytes / 1e6
    cpu = max(result.cpu_s, 1e-9)
    return {
        "wall_s": result.wall_s,
        "cpu_s": round(result.cpu_s, 3),
        "cpu_per_wall": round(result.cpu_s / max(result.wall_s, 1e-9), 2),
        "peak_pss_per_task_mib": result.peak_pss_per_task_mib,
        "peak_anon_pss_per_task_mib": result.peak_anon_pss_per_task_mib,
        "peak_pss_all_tasks_mib": result.peak_pss_total_mib,
        "pss_samples": result.samples,
        "documents_per_cpu_s": round(planted.documents / cpu, 1),
        "mb_per_cpu_s": round(megabytes / cpu, 3),
        "tasks": [
            {
                "index": task.index,
                "wall_s": task.wall_s,
                "cpu_s": task.cpu_s,
                "peak_pss_mib": task.peak_pss_mib,
                "peak_anon_pss_mib": task.peak_anon_pss_mib,
                "max_rss_mib": task.max_rss_mib,
                "units": _find(task.report, "units"),
                "stats": task.report.get("stats"),
            }
            for task in result.tasks
        ],
    }


def _pairs(dedup: StageResult) -> dict:
    totals = {"candidatePairs": 0, "verifiedPairs": 0}
    for task in dedup.tasks:
        for key in totals:
            value = _find(task.report, key)
            if not isinstance(value, int):
                raise SystemExit(f"the dedup report has no integer {key!r}: {json.dumps(task.report)[:2000]}")
            totals[key] += value
    return totals


def _dropped(cluster: StageResult) -> dict:
    report = cluster.tasks[0].report
    return {"exact": _find(report, "duplicatesExact"), "near": _find(report, "duplicatesNear")}


def run_one(corpus: Path, planted: Planted, size_mb: int, workers: int, options: SpecOptions, keep: bool) -> dict:
    work = CACHE / "runs" / f"{size_mb}MB-{workers}w"
    shutil.rmtree(work, ignore_errors=True)
    ingest = StagedIngest.prepare(corpus, work, workers, options)
    print(f"ingest_stages: {size_mb} MB, {workers} worker(s) in {work}", file=sys.stderr)
    results = {}
    for stage, _ in STAGES:
        results[stage] = ingest.run_stage(stage, concurrent=workers > 1)
        print(f"  {stage}: {results[stage].wall_s:.1f} s", file=sys.stderr)
    run = {
        "size_mb": size_mb,
        "workers": workers,
        "corpus": {
            "path": str(corpus),
            "documents": planted.documents,
            "bytes": planted.bytes,
            "planted": asdict(planted),
        },
        "stages": {stage: _stage_summary(result, planted) for stage, result in results.items()},
        "pairs": _pairs(results["dedup"]),
        "dropped": _dropped(results["cluster"]),
    }
    if not keep:
        shutil.rmtree(ingest.output, ignore_errors=True)
    return run


def _sizes(values: list[str] | None) -> list[int]:
    if not values:
        return list(DEFAULT_SIZES)
    return sorted({int(size) for value in values for size in value.split(",") if size.strip()})


def _machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "git_commit": commit.stdout.strip(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def measure(args: argparse.Namespace) -> dict:
    sizes = _sizes(args.size_mb)
    scaling = args.scaling_size or max([s for s in sizes if s <= 256] or [min(sizes)])
    if scaling not in sizes:
        raise SystemExit(f"--scaling-size {scaling} is not one of the sizes {sizes}")
    options = SpecOptions(vocab_size=args.vocab_size, train_sample_bytes=args.train_sample_bytes)
    results: dict = {"machine": _machine(), "spec": asdict(options), "scaling_size_mb": scaling, "runs": []}
    cache = CorpusCache(seed=args.seed)
    for size in sizes:
        started = time.perf_counter()
        corpus, planted = cache.get(size)
        print(f"ingest_stages: corpus {corpus} ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        results["runs"].append(run_one(corpus, planted, size, 1, options, args.keep))
        if size == scaling:
            results["runs"].append(run_one(corpus, planted, size, 2, options, args.keep))
    results["projection"] = _projection(results, args.pods, args.pod_cores)
    return results


def _projection(results: dict, pods: list[int], pod_cores: int) -> dict:
    spec = results["spec"]
    stages = [stage for stage, _ in STAGES]
    return project(results["runs"], stages, pods, pod_cores, spec["train_sample_bytes"], spec["bands"] + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", action="append", help="corpus sizes in MB, repeatable or a list (64,256,1024)")
    parser.add_argument("--scaling-size", type=int, help="size of the 1 -> 2 workers run (default: largest <= 256)")
    parser.add_argument("--pods", type=int, nargs="+", default=[64, 512], help="pod counts of the 1 TB projection")
    parser.add_argument("--pod-cores", type=int, default=1, help="cores per pod in the projection")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--train-sample-bytes", type=int, default=50_000_000)
    parser.add_argument("--seed", type=int, default=0, help="corpus generator seed")
    parser.add_argument("--keep", action="store_true", help="keep the ingest outputs under bench/.cache")
    parser.add_argument("--out", type=Path, help="also write the JSON results here")
    parser.add_argument("--markdown", action="store_true", help="print the tables for docs/benchmarks.md")
    parser.add_argument("--render", type=Path, help="no run: read these saved results (with --markdown)")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        results["projection"] = _projection(results, args.pods, args.pod_cores)
    else:
        results = measure(args)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(render(results) if args.markdown else text)


if __name__ == "__main__":
    main()
