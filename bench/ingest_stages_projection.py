"""A 1 TB ingest on paper, from the per-stage measurements of bench/ingest_stages.py.

Each stage's CPU seconds per task are fitted as `fixed + per_unit * x` (least squares over every measured
task: all sizes, 1 and 2 workers), and its peak PSS per task as a line over the same x, with x the
quantity the stage's work follows:

- scan, encode: documents of the task's part (documents / workers);
- dedup: CPU follows the documents times the task's share of the units (band x key-range group);
  memory follows the documents of one unit (documents / key-range groups per band);
- cluster: the verified pairs (union-find over the pairs' documents);
- tokenizer: constant (it trains on the bounded sample; time scaled up when the corpus was smaller);
- manifest: constant (it reads one shard list per part).

Fewer than two distinct x (one size), or a slope <= 0: CPU becomes proportional to x (an upper bound:
the start-up cost scales too). Memory comes from the top of the measured range: flat at the highest peak
unless the peak at the largest x exceeds that at the next largest x by more than sampling noise (8 MiB
or 5%), then linear through those two points; the basis says which.
Pods run one task on `pod_cores` cores; CPU time divided by cores assumes linear scaling (1: none).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from llmtrain.data.dedup.search import UNIT_RECORDS
from llmtrain.data.parts import RANGES

TB = 10**12
#: a growth of the peak PSS below this is taken as sampling noise: flat
MEMORY_NOISE_MIB, MEMORY_NOISE_FRACTION = 8.0, 0.05
CONSTANT_STAGES = ("tokenizer", "manifest")


@dataclass
class Line:
    fixed: float
    slope: float
    basis: str

    def at(self, x: float) -> float:
        return self.fixed + self.slope * x


def fit_cpu(points: list[tuple[float, float]]) -> Line:
    line = _least_squares(points)
    if line is not None and line.slope > 0:
        return line
    x, y = max(points)
    return Line(0.0, y / max(x, 1.0), "proportional to the largest run (upper bound: start-up scaled too)")


def fit_memory(points: list[tuple[float, float]]) -> Line:
    """Peak PSS over x, from the top of the measured range (memory that saturates, such as a batch
    buffer, must not be extrapolated): flat at the highest peak unless the peak at the largest x exceeds
    the peak at the next largest x by more than sampling noise; then the line through those two."""
    peaks: dict[float, float] = {}
    for x, y in points:
        peaks[x] = max(peaks.get(x, 0.0), y)
    highest = max(peaks.values())
    if len(peaks) < 2:
        return Line(highest, 0.0, "flat (one x measured)")
    (x0, y0), (x1, y1) = sorted(peaks.items())[-2:]
    growth = y1 - y0
    if growth <= max(MEMORY_NOISE_MIB, MEMORY_NOISE_FRACTION * highest):
        return Line(highest, 0.0, f"flat (peak {growth:+.1f} MiB from x={x0:,.0f} to x={x1:,.0f}: noise)")
    slope = growth / (x1 - x0)
    return Line(y1 - slope * x1, slope, f"grows {growth:+.1f} MiB from x={x0:,.0f} to x={x1:,.0f}")


def _least_squares(points: list[tuple[float, float]]) -> Line | None:
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None
    n, mean_x, mean_y = len(points), sum(xs) / len(xs), sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return Line(mean_y - slope * mean_x, slope, f"least squares over {n} tasks, {len(set(xs))} distinct x")


def dedup_groups(documents: float) -> int:
    """Key-range groups per band (as `dedup.search.units`)."""
    return min(RANGES, max(1, math.ceil(documents / UNIT_RECORDS)))


class Corpus:
    """What a run measured about its corpus and its duplicates."""

    def __init__(self, run: dict) -> None:
        self.documents = run["corpus"]["documents"]
        self.bytes = run["corpus"]["bytes"]
        self.verified_pairs = run["pairs"].get("verifiedPairs", 0)


def _x_cpu(stage: str, run: dict, task: dict) -> float:
    corpus = Corpus(run)
    if stage == "dedup":
        units = [t["units"] for t in run["stages"]["dedup"]["tasks"]]
        return corpus.documents * task["units"] / max(sum(units), 1)
    if stage == "cluster":
        return corpus.verified_pairs
    return corpus.documents / run["workers"]


def _x_memory(stage: str, run: dict, task: dict) -> float:
    if stage == "dedup":
        documents = Corpus(run).documents
        return documents / dedup_groups(documents)
    return _x_cpu(stage, run, task)


def stage_models(runs: list[dict], stage: str) -> tuple[Line, Line, Line]:
    """(CPU seconds, peak PSS MiB, peak anonymous PSS MiB) per task as lines over the stage's x."""
    cpu, memory, anon = [], [], []
    for run in runs:
        for task in run["stages"][stage]["tasks"]:
            cpu.append((_x_cpu(stage, run, task), task["cpu_s"]))
            memory.append((_x_memory(stage, run, task), task["peak_pss_mib"]))
            anon.append((_x_memory(stage, run, task), task["peak_anon_pss_mib"]))
    return fit_cpu(cpu), fit_memory(memory), fit_memory(anon)


@dataclass
class Terabyte:
    """1 TB of jsonl like the largest corpus measured."""

    mean_document_bytes: float
    documents: float
    verified_pairs: float
    candidate_pairs: float
    bands: int

    @classmethod
    def like(cls, run: dict, bands: int) -> Terabyte:
        corpus = Corpus(run)
        documents = TB * corpus.documents / corpus.bytes
        per_document = documents / corpus.documents
        pairs = run["pairs"]
        return cls(
            corpus.bytes / corpus.documents,
            documents,
            pairs.get("verifiedPairs", 0) * per_document,
            pairs.get("candidatePairs", 0) * per_document,
            bands,
        )

    def dedup_units(self) -> int:
        return self.bands * dedup_groups(self.documents)

    def x_cpu(self, stage: str, pods: int) -> float:
        if stage == "dedup":
            units = self.dedup_units()
            return self.documents * math.ceil(units / pods) / units
        if stage == "cluster":
            return self.verified_pairs
        return self.documents / pods

    def x_memory(self, stage: str, pods: int) -> float:
        if stage == "dedup":
            return self.documents / dedup_groups(self.documents)
        return self.x_cpu(stage, pods)

    def busy_pods(self, stage: str, pods: int) -> int:
        if stage == "dedup":
            return min(pods, self.dedup_units())
        return pods if stage in ("scan", "encode") else 1


def _constant_stage(runs: list[dict], stage: str, sample_bytes: int) -> tuple[float, float, float, str]:
    """(CPU seconds, peak PSS MiB, peak anonymous PSS MiB, basis) of a stage whose work does not follow
    the corpus."""
    largest = max(runs, key=lambda run: (run["corpus"]["bytes"], -run["workers"]))
    task = largest["stages"][stage]["tasks"][0]
    cpu, basis = task["cpu_s"], f"as measured at {largest['size_mb']} MB"
    if stage == "tokenizer" and largest["corpus"]["bytes"] < sample_bytes:
        cpu *= sample_bytes / largest["corpus"]["bytes"]
        basis += f" (corpus < trainSampleBytes: CPU scaled by {sample_bytes / largest['corpus']['bytes']:.1f})"
    return cpu, task["peak_pss_mib"], task["peak_anon_pss_mib"], basis


def project(
    runs: list[dict], stages: list[str], pods: list[int], pod_cores: int, sample_bytes: int, bands: int
) -> dict:
    largest = max(runs, key=lambda run: (run["corpus"]["bytes"], -run["workers"]))
    terabyte = Terabyte.like(largest, bands)
    result: dict = {
        "label": "PROJECTION on paper, not a measurement",
        "basis_run": {"size_mb": largest["size_mb"], "workers": largest["workers"]},
        "pod_cores": pod_cores,
        "terabyte": {**asdict(terabyte), "dedup_units": terabyte.dedup_units()},
        "stages": {},
        "pods": {str(count): {} for count in pods},
    }
    for stage in stages:
        if stage in CONSTANT_STAGES:
            cpu, memory, anon, basis = _constant_stage(runs, stage, sample_bytes)
            result["stages"][stage] = {"name": stage, "basis": basis}
            for count in pods:
                result["pods"][str(count)][stage] = _estimate(cpu, memory, anon, 1, 1)
            continue
        cpu_line, memory_line, anon_line = stage_models(runs, stage)
        result["stages"][stage] = {
            "name": stage,
            "cpu": asdict(cpu_line),
            "memory_mib": asdict(memory_line),
            "anon_memory_mib": asdict(anon_line),
        }
        for count in pods:
            x_cpu, x_memory = terabyte.x_cpu(stage, count), terabyte.x_memory(stage, count)
            result["pods"][str(count)][stage] = _estimate(
                cpu_line.fixed + cpu_line.slope * x_cpu / pod_cores,
                memory_line.at(x_memory),
                anon_line.at(x_memory),
                terabyte.busy_pods(stage, count),
                x_cpu,
            )
    for per_stage in result["pods"].values():
        per_stage["total_hours"] = round(sum(e["hours"] for e in per_stage.values()), 2)
    return result


def _estimate(cpu_s: float, memory_mib: float, anon_mib: float, busy_pods: int, x: float) -> dict:
    return {
        "hours": round(cpu_s / 3600, 3),
        "memory_gib": round(memory_mib / 1024, 2),
        "anon_memory_gib": round(anon_mib / 1024, 2),
        "busy_pods": busy_pods,
        "x": x,
    }
