"""The ingest pipeline: six stages, each a task per part where the work divides.

| stage     | tasks | does                                                            | memory follows      |
|-----------|-------|-----------------------------------------------------------------|---------------------|
| scan      | n     | read, decode, repair, normalize, filter, hash its units (scan.py) | a batch, a run     |
| dedup     | n     | candidates per band and key range, exact verification (dedup/search.py) | a unit      |
| cluster   | 1     | union-find over the verified pairs (dedup/cluster.py)           | the pairs           |
| tokenizer | 1     | train (or import) on the bounded sample (tokenizer_stage.py)    | trainSampleBytes    |
| encode    | n     | part i's kept documents into its shards (encode.py)             | a batch             |
| manifest  | 1     | manifest.json from the shard lists, written last (publish.py)   | the shard list      |

A pod of an Indexed Job runs one task (`run_stage`); `ingest` runs them all on one machine, the
indexed stages in `workers` processes. Every task skips what is already done for this spec hash
(`layout.done`), so a killed task's stage reruns and finished tasks are not redone. Writing an output's
files outside `.work` (tokenizer, manifest) and the whole ingest hold the output's lock
(`locking.py`); scan, dedup and encode tasks write disjoint files and take none. The kept set is the
same for any number of workers; shard bytes are identical for the same input and worker count.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .. import locking, logs, storage
from ..api.datasource import DataSource
from ..pausepoints import pause_point
from . import encode, parts, publish, scan, tokenizer_stage
from .dedup import cluster, search
from .layout import (
    MANIFEST,
    EmptyCorpus,
    current_manifest,
    done,
    mark_done,
    read_json,
    refuse_linked_output,
    spec_hash,
    stage_uri,
    task_uri,
)

log = logging.getLogger("llmtrain.ingest")

STAGES = ("scan", "dedup", "cluster", "tokenizer", "encode", "manifest")
INDEXED = frozenset({"scan", "dedup", "encode"})
#: stages that write the output's own files: they hold its lock
LOCKED = frozenset({"cluster", "tokenizer", "manifest"})


class Task:
    """One task of one stage over an output split into `count` parts."""

    def __init__(self, resource: DataSource, output: str, base_dir: Path, count: int) -> None:
        self.resource, self.output, self.base_dir, self.count = resource, output, base_dir, count
        self.digest = spec_hash(resource.spec)
        self.lock: locking.OutputLock | None = None

    def run(self, stage: str, index: int | None = None) -> dict[str, Any]:
        """The stage's report: its facts (or those recorded when it already ran for this spec)."""
        run: Callable[..., dict[str, Any]] = getattr(self, f"_{stage}")
        with tempfile.TemporaryDirectory(prefix=f"llmtrain-{stage}-") as work:
            return run(Path(work)) if index is None else run(index, Path(work))

    def _parts(self) -> parts.PartSet:
        return parts.PartSet.load(self.output, self.count)

    def _scan(self, index: int, work: Path) -> dict[str, Any]:
        uri = scan.scan(self.resource, self.output, self.base_dir, 1, index, self.count)[index]
        return {"part": uri, "stats": read_json(storage.join(uri, "stats.json"))}

    def _dedup(self, index: int, work: Path) -> dict[str, Any]:
        pause_point("ingest-merge")  # the scan parts written, the shards not yet
        uri = task_uri(self.output, "dedup", index, self.count)
        if (facts := done(uri, self.digest)) is None:
            minhash = self.resource.spec.dedup.minhash
            facts = search.run_task(
                self.output, self._parts(), scan.band_layout(self.resource.spec), minhash.threshold, index, self.count
            )
            pause_point("ingest-dedup")  # the task's pairs written, its DONE not yet
            mark_done(uri, self.digest, **facts)
        return {"task": uri, "stats": facts}

    def _cluster(self, work: Path) -> dict[str, Any]:
        uri = stage_uri(self.output, "cluster")
        if (facts := done(uri, self.digest)) is None:
            facts = self._clustered(uri, work)
            mark_done(uri, self.digest, **facts)
        return {"stats": facts}

    def _clustered(self, uri: str, work: Path) -> dict[str, Any]:
        started = time.monotonic()
        part_set = self._parts()
        tasks = [task_uri(self.output, "dedup", i, self.count) for i in range(self.count)]
        recorded = [done(task, self.digest) for task in tasks]
        if any(facts is None for facts in recorded):
            raise storage.StorageError("the dedup stage has unfinished tasks; run them first", retryable=True)
        paths = []
        for i, task in enumerate(tasks):
            paths.append(work / f"pairs-{i}.npy")
            paths[-1].write_bytes(storage.read_bytes(storage.join(task, "pairs.npy")))
        pairs = cluster.load_pairs(paths)
        drop, exact = cluster.dropped(pairs)
        if part_set.total - len(drop) <= 0:
            raise _empty(part_set)
        np.save(work / "drop.npy", drop)
        storage.upload_file(work / "drop.npy", storage.join(uri, "drop.npy"), move=True)
        return {
            "duplicatesExact": exact,
            "duplicatesNear": len(drop) - exact,
            "verifiedPairs": len(pairs),
            "candidatePairs": sum(facts["candidatePairs"] for facts in recorded if facts),
            "dedupSeconds": max((facts.get("seconds", 0.0) for facts in recorded if facts), default=0.0),
            "seconds": round(time.monotonic() - started, 3),
        }

    def _tokenizer(self, work: Path) -> dict[str, Any]:
        uri = stage_uri(self.output, "tokenizer")
        if (facts := done(uri, self.digest)) is None:
            started = time.monotonic()
            trained = tokenizer_stage.build(self.resource, self._parts(), self.output, self.base_dir, work)
            described = tokenizer_stage.publish(self.resource, trained, self.output, work)
            facts = {"vocabSize": described["vocabSize"], "seconds": round(time.monotonic() - started, 3)}
            mark_done(uri, self.digest, **facts)
        return {"tokenizer": storage.join(self.output, "tokenizer"), "stats": facts}

    def _encode(self, index: int, work: Path) -> dict[str, Any]:
        uri = task_uri(self.output, "encode", index, self.count)
        if (facts := done(uri, self.digest)) is None:
            trained = tokenizer_stage.load_saved(self.output, work)
            encoded = encode.encode_part(self.resource, self._parts(), index, trained, self.output, work)
            documents = encoded["train"]["documents"] + encoded["validation"]["documents"]
            facts = {"documentsIn": documents, "seconds": encoded["seconds"]}
            mark_done(uri, self.digest, **facts)
        return {"task": uri, "stats": facts}

    def _manifest(self, work: Path) -> dict[str, Any]:
        written = publish.manifest(self.resource, self._parts(), self.output)
        pause_point("ingest-manifest")  # shards written, the manifest not yet
        if self.lock is not None:
            self.lock.check()
        publish.write(self.output, written)
        return {
            "manifest": storage.join(self.output, MANIFEST),
            "tokenizer": storage.join(self.output, "tokenizer"),
            "stats": written["stats"],
        }


def _empty(part_set: parts.PartSet) -> EmptyCorpus:
    stats = part_set.scan_stats()
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(stats.rejected.items())) or "none"
    return EmptyCorpus(
        f"no documents survived ({stats.documents_in} read; rejected: {rejected}); check spec.sources,"
        " spec.format, spec.textField and spec.validation"
    )


def _run_task(resource: DataSource, output: str, base_dir: Path, count: int, stage: str, index: int) -> dict[str, Any]:
    """A process-pool entry point (a Task holding the lock does not cross processes)."""
    logs.setup()
    return Task(resource, output, base_dir, count).run(stage, index)


def _run_stage_here(task: Task, stage: str, workers: int) -> dict[str, Any]:
    """Every task of `stage`, the indexed ones in up to `workers` processes; the last report."""
    if stage not in INDEXED:
        return task.run(stage)
    if stage == "scan":  # scan lists the inputs once and scans the unfinished parts itself
        scan.scan(task.resource, task.output, task.base_dir, workers, None, task.count)
        return {}
    if workers > 1 and task.count > 1:
        with ProcessPoolExecutor(max_workers=min(workers, task.count), mp_context=get_context("fork")) as pool:
            arguments = (task.resource, task.output, task.base_dir, task.count, stage)
            reports = list(pool.map(_run_task, *([a] * task.count for a in arguments), range(task.count)))
    else:
        reports = [task.run(stage, i) for i in range(task.count)]
    return reports[-1]


def _skipped(resource: DataSource, output: str, existing: dict[str, Any]) -> dict[str, Any]:
    logs.audit("IngestSkipped", resource=resource.name, reason="manifest with this spec hash exists")
    return {"name": resource.name, "output": output, "skipped": True, "stats": existing["stats"]}


def ingest(
    resource: DataSource,
    output: str,
    base_dir: Path,
    workers: int = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    merge_only: bool = False,
    force: bool = False,
    stage: str | None = None,
) -> dict[str, Any]:
    """Run the whole ingest, one task of one stage (`stage`, `shard_index` of `shard_count`), or every
    stage after the scan (`merge_only`); returns the report printed on stdout."""
    if stage is None and shard_index is not None:
        stage = "scan"
    if not force and (existing := current_manifest(output, resource.spec)):
        return _skipped(resource, output, existing)
    refuse_linked_output(output)
    task = Task(resource, output, base_dir, shard_count or workers)
    if stage in INDEXED:
        return {"name": resource.name, "stage": stage, **task.run(stage, shard_index)}
    if stage is not None:
        with locking.held(output) as task.lock:
            return {"name": resource.name, "stage": stage, **task.run(stage)}
    logs.audit("IngestStarted", resource=resource.name, output=output)
    with locking.held(output) as task.lock:
        if not force and (existing := current_manifest(output, resource.spec)):  # a writer just before us did it
            return _skipped(resource, output, existing)
        for name in STAGES[1:] if merge_only else STAGES:
            report = _run_stage_here(task, name, workers)
    stats = report["stats"]
    logs.audit("IngestFinished", resource=resource.name, documents=stats["documentsOut"], tokens=stats["tokensTrain"])
    return {"name": resource.name, "output": output, **report}
