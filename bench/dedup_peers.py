"""Near-duplicate removal side by side: llmtrain's staged ingest (scan, dedup, cluster) against datatrove
0.10's MinHash pipeline (signature, buckets, cluster, filter), on the same corpus, scored the same way.

Corpus: bench/minhash.py's build_corpus (kernel Documentation/ cut into 300-3,000-word documents plus
planted near-copies; its default limit of 4000 gives 3,559 documents), one jsonl file with a "text" field.
Ground truth: bench/minhash.py's, every pair whose word 5-gram sets (lowercased, split on ASCII
whitespace) have exact Jaccard >= 0.8. Both sides: 112 hashes as 16 bands x 7 rows, word 5-grams.
llmtrain verifies LSH candidates against the threshold; datatrove does not (its precision is reported as is).

Every stage is a child process on one core, timed by wall clock (start-up included, the same for both)
and sampled every 20 ms for the PSS of its process tree (/proc/PID/smaps_rollup, children included).
datatrove runs under its own venv (bench/.venv-peers, `make bench-peers`) through
bench/dedup_peers_datatrove.py, twice: with its default English word tokenizer (spaCy's blank `en`, after
its text simplification) and with an ASCII whitespace splitter on the lowercased text (the ground truth's
shingles). llmtrain runs its stage CLI with exact dedup off (datatrove has none in this pipeline),
validation minChars 1, no quality filter and the default normalization (NFC, control characters stripped:
neither changes this corpus, so global index == line number); once more with exact dedup on; and with
2 parts whose scan and dedup tasks run side by side (2 cores: wall time, speedup, the same drop set?).

Scores: `pairs` = bench/minhash.py's score of the pairs each side reports (datatrove's bucket matches,
llmtrain's verified pairs): recall = true pairs that end up in one cluster, precision = reported pairs that
truly reach 0.8. `drops` = the final drop set against the truth's clusters, whichever member each keeps:
a cluster of k documents credits at most k-1 drops; recall = credited / sum(k-1), precision = credited /
dropped. docs/s per core = documents / the stages' summed wall seconds (one core each, child start-up
included); `..._own_seconds` divides by the seconds each stage says it worked instead (llmtrain's JSON
report, the driver's timing of datatrove's executor.run()). llmtrain's headline is scan+dedup+cluster
(scan also reads, decodes, normalizes and filters); datatrove's is all four stages, and without filter.
`..._dedup_work` counts only llmtrain's near-duplicate work, as the scan parts record it (MinHash
signatures and shingles, `signatureSeconds`; LSH band records, `bandSeconds`) plus the dedup and cluster
stages' own seconds: what bench/minhash.py measured in one process, against datatrove's own seconds
(which include its reading of the jsonl file, a small share of its signature stage).

    python bench/dedup_peers.py [--docs N] [--out FILE] [--datatrove-python bench/.venv-peers/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minhash
from pss_sampler import PeakPssSampler

BENCH = Path(__file__).resolve().parent

MiB = 2**20
SAMPLE_S = 0.02
DATATROVE_STAGES = ("signature", "buckets", "cluster", "filter")
LLMTRAIN_STAGES = ("scan", "dedup", "cluster")
TAIL_CHARS = 3000


def run_side_by_side(commands: list[list[str]], logs: Path, name: str) -> dict:
    """Runs the commands at once; wall seconds, peak PSS (together and per task), each last stdout line."""
    logs.mkdir(parents=True, exist_ok=True)
    running = []
    with PeakPssSampler(SAMPLE_S) as sampler:
        started = time.perf_counter()
        for i, command in enumerate(commands):
            key = f"{name}-{i}"
            with (logs / f"{key}.out").open("wb") as out, (logs / f"{key}.err").open("wb") as err:
                process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            sampler.watch(key, process.pid)
            running.append((key, process, command))
        ended: dict[str, float] = {}
        while len(ended) < len(running):
            for key, process, _ in running:
                if key not in ended and process.poll() is not None:
                    ended[key] = time.perf_counter()
                    sampler.unwatch(key)
            time.sleep(0.005)
    tasks = []
    for key, process, command in running:
        if process.returncode != 0:
            _fail(key, command, logs)
        tasks.append(
            {
                "seconds": round(ended[key] - started, 3),
                "peak_pss_mib": round(sampler.peaks[key] / MiB, 1),
                "report": _last_json_line(logs / f"{key}.out"),
            }
        )
    wall = max(ended.values()) - started
    return {"seconds": round(wall, 3), "peak_pss_mib": round(sampler.peak_total / MiB, 1), "tasks": tasks}


def _last_json_line(path: Path) -> dict:
    lines = path.read_text(errors="replace").strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _fail(key: str, command: list[str], logs: Path) -> None:
    print(f"=== {key} failed: {' '.join(command)}", file=sys.stderr)
    for suffix in ("err", "out"):
        print((logs / f"{key}.{suffix}").read_text(errors="replace")[-TAIL_CHARS:], file=sys.stderr)
    raise SystemExit(f"{key} failed")


def write_corpus(docs: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    with path.open("w") as out:
        for doc in docs:
            out.write(json.dumps({"text": doc}) + "\n")
    return path


def truth_clusters(n: int, truth: set[tuple[int, int]]) -> list[list[int]]:
    """The documents of every cluster of true pairs (size >= 2)."""
    members: dict[int, list[int]] = defaultdict(list)
    for doc, root in enumerate(minhash.components(n, truth)):
        members[root].append(doc)
    return [group for group in members.values() if len(group) > 1]


def drop_score(dropped: set[int], clusters: list[list[int]]) -> dict:
    """A cluster of k credits at most k-1 of its documents dropped, whichever it keeps."""
    credited = sum(min(len(dropped.intersection(group)), len(group) - 1) for group in clusters)
    expected = sum(len(group) - 1 for group in clusters)
    return {
        "recall": round(credited / expected, 4) if expected else 1.0,
        "precision": round(credited / len(dropped), 4) if dropped else 1.0,
    }


def scores(pairs: set[tuple[int, int]], dropped: set[int], truth, clusters, docs: list[str]) -> dict:
    return {"pairs": minhash.score(pairs, truth, docs), "drops": drop_score(dropped, clusters)}


def run_datatrove(python: str, corpus_folder: Path, work: Path, tokenizer: str) -> dict:
    """The four stages one after another, each a child process (LocalPipelineExecutor, workers=1)."""
    driver = BENCH / "dedup_peers_datatrove.py"
    stages, found = {}, {}
    for stage in DATATROVE_STAGES:
        command = [python, "-P", str(driver), stage, "--input", str(corpus_folder), "--work", str(work)]
        phase = run_side_by_side([[*command, "--tokenizer", tokenizer]], work / "logs", stage)
        report = phase["tasks"][0]["report"]
        stages[stage] = {
            "seconds": phase["seconds"],
            "own_seconds": report["seconds"],
            "peak_pss_mib": phase["peak_pss_mib"],
        }
        found.update(report)
    return {"stages": stages, "pairs": {tuple(p) for p in found["pairs"]}, "dropped": set(found["dropped"])}


def datasource(corpus: Path, output: Path, workers: int, exact: bool) -> dict:
    minhash_spec = {"enabled": True, "numPerm": 112, "bands": 16, "ngram": 5, "threshold": minhash.THRESHOLD}
    return {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": "bench-dedup-peers"},
        "spec": {
            "sources": [{"local": {"path": str(corpus)}}],
            "format": "jsonl",
            "textField": "text",
            "validation": {"minChars": 1},
            "dedup": {"exact": exact, "minhash": minhash_spec},
            "tokenizer": {"type": "bpe", "vocabSize": 4096, "trainSampleBytes": 20_000_000},
            "output": {"uri": str(output)},
            "workers": workers,
        },
    }


def reported_seconds(report: dict) -> float:
    """The seconds a stage's JSON report says it worked (scan reports them by step)."""
    seconds = report["stats"]["seconds"]
    return sum(seconds.values()) if isinstance(seconds, dict) else seconds


def run_llmtrain(corpus: Path, work: Path, workers: int, exact: bool, documents: int) -> dict:
    """scan and dedup (the N tasks of each side by side), then cluster: `llmtrain ingest --stage`."""
    work.mkdir(parents=True)
    spec, output = work / "datasource.yaml", work / "out"
    spec.write_text(yaml.safe_dump(datasource(corpus, output, workers, exact), sort_keys=False))
    base = [sys.executable, "-m", "llmtrain.cli", "ingest", "-f", str(spec), "--output", str(output)]
    stages = {}
    for stage in LLMTRAIN_STAGES:
        command = [*base, "--stage", stage, "--shard-count", str(workers)]
        indexed = [[*command, "--shard-index", str(i)] for i in range(workers)]
        phase = run_side_by_side(indexed if stage != "cluster" else [command], work / "logs", stage)
        own = sum(reported_seconds(task["report"]) for task in phase["tasks"])
        stages[stage] = {
            "seconds": phase["seconds"],
            "own_seconds": round(own, 3),
            "peak_pss_mib": phase["peak_pss_mib"],
        }
        if workers > 1 and stage != "cluster":
            stages[stage]["task_seconds"] = [task["seconds"] for task in phase["tasks"]]
        if stage == "scan":
            _check_all_valid([task["report"]["stats"] for task in phase["tasks"]], documents)
            dedup_work = sum(
                task["report"]["stats"]["signatureSeconds"] + task["report"]["stats"]["bandSeconds"]
                for task in phase["tasks"]
            )
        else:
            dedup_work += own
        report = phase["tasks"][-1]["report"]
    verified = set()
    for path in sorted((output / ".work").glob("dedup-*/pairs.npy")):
        pairs = np.load(path, allow_pickle=False)
        low, high = np.minimum(pairs["a"], pairs["b"]), np.maximum(pairs["a"], pairs["b"])
        verified.update(zip(low.tolist(), high.tolist(), strict=True))
    dropped = np.load(output / ".work" / "cluster" / "drop.npy")
    stats = report.get("stats", {})
    return {
        "stages": stages,
        "dedup_work_seconds": round(dedup_work, 3),
        "pairs": verified,
        "dropped": set(dropped.tolist()),
        "exact_near": {key: stats.get(key) for key in ("duplicatesExact", "duplicatesNear")},
    }


def _check_all_valid(scan_stats: list[dict], documents: int) -> None:
    """Every line passed the filters, so a global index is a line number."""
    valid = sum(stats["documentsValid"] for stats in scan_stats)
    rejected = [stats["rejected"] for stats in scan_stats if stats["rejected"]]
    if valid != documents or rejected:
        raise SystemExit(f"scan kept {valid} of {documents} documents (rejected: {rejected}): indices would move")


def summary(run: dict, documents: int, truth, clusters, docs: list[str]) -> dict:
    seconds = sum(stage["seconds"] for stage in run["stages"].values())
    own = sum(stage["own_seconds"] for stage in run["stages"].values())
    return {
        "docs_per_s_per_core": round(documents / seconds, 1),
        "docs_per_s_per_core_own_seconds": round(documents / own, 1),
        **(
            {"docs_per_s_per_core_dedup_work": round(documents / run["dedup_work_seconds"], 1)}
            if "dedup_work_seconds" in run
            else {}
        ),
        "seconds": round(seconds, 3),
        "peak_pss_mib": max(stage["peak_pss_mib"] for stage in run["stages"].values()),
        "stages": run["stages"],
        "dropped": len(run["dropped"]),
        **scores(run["pairs"], run["dropped"], truth, clusters, docs),
    }


def datatrove_summary(run: dict, documents: int, truth, clusters, docs: list[str]) -> dict:
    result = summary(run, documents, truth, clusters, docs)
    without_filter = sum(run["stages"][stage]["seconds"] for stage in DATATROVE_STAGES[:3])
    result["docs_per_s_per_core_without_filter"] = round(documents / without_filter, 1)
    return result


def ratios(ours: dict, peer: dict) -> dict:
    return {
        "docs_per_s_per_core": round(ours["docs_per_s_per_core"] / peer["docs_per_s_per_core"], 2),
        "docs_per_s_per_core_own_seconds": round(
            ours["docs_per_s_per_core_own_seconds"] / peer["docs_per_s_per_core_own_seconds"], 2
        ),
        "docs_per_s_per_core_vs_without_filter": round(
            ours["docs_per_s_per_core"] / peer["docs_per_s_per_core_without_filter"], 2
        ),
        "docs_per_s_per_core_dedup_work_vs_own_seconds": round(
            ours["docs_per_s_per_core_dedup_work"] / peer["docs_per_s_per_core_own_seconds"], 2
        ),
        "peak_pss": round(ours["peak_pss_mib"] / peer["peak_pss_mib"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=4000, help="build_corpus's limit (4000: 3,559 documents)")
    parser.add_argument("--datatrove-python", default=str(BENCH / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    docs = minhash.build_corpus(args.docs)
    truth = minhash.ground_truth(docs)
    clusters = truth_clusters(len(docs), truth)
    n = len(docs)
    with tempfile.TemporaryDirectory(prefix="dedup-peers-") as temp:
        work = Path(temp)
        corpus = write_corpus(docs, work / "corpus")
        peers = {
            f"datatrove_{tokenizer}": datatrove_summary(
                run_datatrove(args.datatrove_python, corpus.parent, work / f"datatrove-{tokenizer}", tokenizer),
                n,
                truth,
                clusters,
                docs,
            )
            for tokenizer in ("whitespace", "default")
        }
        one = run_llmtrain(corpus, work / "llmtrain-1", 1, exact=False, documents=n)
        exact_on = run_llmtrain(corpus, work / "llmtrain-exact", 1, exact=True, documents=n)
        two = run_llmtrain(corpus, work / "llmtrain-2", 2, exact=False, documents=n)

    ours = summary(one, n, truth, clusters, docs)
    with_exact = {**summary(exact_on, n, truth, clusters, docs), **exact_on["exact_near"]}
    two_seconds = sum(stage["seconds"] for stage in two["stages"].values())
    results = {
        "corpus": {
            "documents": n,
            "megabytes": round(sum(len(d) for d in docs) / 1e6, 1),
            "true_pairs": len(truth),
            "true_drops": sum(len(group) - 1 for group in clusters),
        },
        "llmtrain": ours,
        "llmtrain_exact_on": with_exact,
        "llmtrain_2_workers": {
            "wall_seconds": round(two_seconds, 3),
            "docs_per_s": round(n / two_seconds, 1),
            "speedup_vs_1": round(ours["seconds"] / two_seconds, 2),
            "drop_set_identical_to_1": two["dropped"] == one["dropped"],
            "stages": two["stages"],
        },
        **peers,
        "ratios_llmtrain_over": {name: ratios(ours, peer) for name, peer in peers.items()},
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
