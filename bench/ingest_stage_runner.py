"""Runs llmtrain's staged ingest one stage at a time as separate processes (what the pods run) and measures
each task: wall seconds, CPU seconds (wait4's rusage: the task and the descendants it waited for), peak
PSS and peak anonymous PSS of its process tree (sampled every 20 ms) and its JSON report (the last line
of stdout).

A task that exits nonzero stops the benchmark: its stderr and stdout tails are printed to stderr.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml
from pss_sampler import PeakPssSampler

MiB = 2**20
STAGES: tuple[tuple[str, bool], ...] = (  # (stage, indexed: one task per part)
    ("scan", True),
    ("dedup", True),
    ("cluster", False),
    ("tokenizer", False),
    ("encode", True),
    ("manifest", False),
)
INDEXED = {stage for stage, indexed in STAGES if indexed}
TAIL_CHARS = 4000


@dataclass
class SpecOptions:
    """The DataSource knobs the benchmark sets (the rest are the API's defaults)."""

    vocab_size: int = 8192
    train_sample_bytes: int = 50_000_000
    num_perm: int = 112
    bands: int = 16
    ngram: int = 5
    threshold: float = 0.8


def datasource_spec(corpus: Path, output: Path, workers: int, options: SpecOptions) -> dict:
    return {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": "bench-stages"},
        "spec": {
            "sources": [{"local": {"path": str(corpus.resolve())}}],
            "format": "jsonl",
            "textField": "text",
            "validation": {"minChars": 1},
            "dedup": {
                "exact": True,
                "minhash": {
                    "enabled": True,
                    "numPerm": options.num_perm,
                    "bands": options.bands,
                    "ngram": options.ngram,
                    "threshold": options.threshold,
                },
            },
            "tokenizer": {
                "type": "bpe",
                "vocabSize": options.vocab_size,
                "trainSampleBytes": options.train_sample_bytes,
            },
            "output": {"uri": str(output.resolve())},
            "workers": workers,
        },
    }


@dataclass
class TaskResult:
    stage: str
    index: int | None
    wall_s: float
    cpu_s: float
    peak_pss_mib: float
    peak_anon_pss_mib: float
    max_rss_mib: float
    report: dict


@dataclass
class StageResult:
    stage: str
    tasks: list[TaskResult]
    wall_s: float
    peak_pss_total_mib: float
    samples: int
    extra: dict = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return sum(task.cpu_s for task in self.tasks)

    @property
    def peak_pss_per_task_mib(self) -> float:
        return max(task.peak_pss_mib for task in self.tasks)

    @property
    def peak_anon_pss_per_task_mib(self) -> float:
        return max(task.peak_anon_pss_mib for task in self.tasks)


class StagedIngest:
    """One ingest of `corpus` into `work/out`, `count` parts, stage by stage."""

    def __init__(self, spec_path: Path, output: Path, logs: Path, count: int, interval_s: float = 0.02) -> None:
        self.spec_path, self.output, self.logs, self.count = spec_path, output, logs, count
        self.interval_s = interval_s

    @classmethod
    def prepare(cls, corpus: Path, work: Path, count: int, options: SpecOptions) -> StagedIngest:
        work.mkdir(parents=True, exist_ok=True)
        spec_path, output, logs = work / "datasource.yaml", work / "out", work / "logs"
        logs.mkdir(exist_ok=True)
        spec_path.write_text(yaml.safe_dump(datasource_spec(corpus, output, count, options), sort_keys=False))
        return cls(spec_path, output, logs, count)

    def command(self, stage: str, index: int | None) -> list[str]:
        command = [sys.executable, "-m", "llmtrain.cli", "ingest", "-f", str(self.spec_path)]
        command += ["--output", str(self.output), "--stage", stage, "--shard-count", str(self.count)]
        return command + ([] if index is None else ["--shard-index", str(index)])

    def run_stage(self, stage: str, concurrent: bool) -> StageResult:
        """All tasks of `stage`: side by side when `concurrent`, else one after another."""
        indices: list[int | None] = list(range(self.count)) if stage in INDEXED else [None]
        started = time.perf_counter()
        with PeakPssSampler(self.interval_s) as sampler:
            if concurrent:
                running = [_Task.launch(self, stage, index, sampler) for index in indices]
                try:
                    tasks = [task.finish() for task in running]
                except SystemExit:
                    for task in running:
                        task.stop()
                    raise
            else:
                tasks = [_Task.launch(self, stage, index, sampler).finish() for index in indices]
        wall = time.perf_counter() - started
        return StageResult(stage, tasks, round(wall, 3), round(sampler.peak_total / MiB, 1), sampler.samples)

    def run_all(self, concurrent: bool) -> list[StageResult]:
        return [self.run_stage(stage, concurrent and stage in INDEXED) for stage, _ in STAGES]


class _Task:
    """One stage process: its own stdout/stderr files, watched by the sampler, reaped by a thread with
    os.wait4 so that its CPU time and exit time are its own even when tasks run side by side."""

    def __init__(self, ingest: StagedIngest, stage: str, index: int | None, sampler: PeakPssSampler) -> None:
        self.stage, self.index, self.sampler = stage, index, sampler
        name = stage if index is None else f"{stage}-{index:05d}"
        self.key, self.stdout_path, self.stderr_path = name, ingest.logs / f"{name}.out", ingest.logs / f"{name}.err"
        self.command = ingest.command(stage, index)
        self.exit_code = -1
        self.usage: resource.struct_rusage | None = None
        self.ended = 0.0

    @classmethod
    def launch(cls, ingest: StagedIngest, stage: str, index: int | None, sampler: PeakPssSampler) -> _Task:
        task = cls(ingest, stage, index, sampler)
        task.start()
        return task

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.sampler.watch(self.key, self.process.pid)
        self.reaper = threading.Thread(target=self._reap, name=f"reap-{self.key}", daemon=True)
        self.reaper.start()

    def _reap(self) -> None:
        _, status, self.usage = os.wait4(self.process.pid, 0)
        self.ended = time.perf_counter()
        self.sampler.unwatch(self.key)
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.exit_code  # reaped here, not by Popen

    def stop(self) -> None:
        """Ends the task if it still runs (a sibling failed)."""
        if self.reaper.is_alive():
            self.process.kill()
            self.reaper.join()

    def finish(self) -> TaskResult:
        self.reaper.join()
        if self.exit_code != 0:
            self._fail()
        usage = self.usage
        assert usage is not None
        return TaskResult(
            stage=self.stage,
            index=self.index,
            wall_s=round(self.ended - self.started, 3),
            cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
            peak_pss_mib=round(self.sampler.peaks[self.key] / MiB, 1),
            peak_anon_pss_mib=round(self.sampler.anon_peaks[self.key] / MiB, 1),
            max_rss_mib=round(usage.ru_maxrss / 1024, 1),
            report=self._report(),
        )

    def _report(self) -> dict:
        lines = self.stdout_path.read_text(errors="replace").strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            self._fail("printed no JSON report as its last stdout line")

    def _fail(self, why: str | None = None) -> NoReturn:
        what = why or f"exited {self.exit_code}"
        print(f"\n=== stage {self.key} {what}: {' '.join(self.command)}", file=sys.stderr)
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = path.read_text(errors="replace")
            print(f"--- {label} (last {TAIL_CHARS} characters of {path}) ---\n{text[-TAIL_CHARS:]}", file=sys.stderr)
        raise SystemExit(f"ingest stage {self.key} failed ({what})")
