"""`llmtrain report`: a run's curves from its metrics.jsonl as one self-contained HTML page (inline SVG).

`locate` finds the file (a cluster's TrainingRun, a work directory, or a path/URI given), `series` reads it
into charts, `svg` draws each chart and `page` lays them out. No torch, no plotting library.
"""

from __future__ import annotations

from pathlib import Path

from .. import storage
from .page import render
from .series import Metrics, read_metrics


class MetricsNotFound(storage.StorageError):
    """No metrics file where the run's metrics should be."""


def read(source: str) -> Metrics:
    """The metrics file at `source` (a path, pvc:// or s3:// URI), read."""
    if not storage.exists(source):
        raise MetricsNotFound(
            f"{source}: no metrics file: the trainer copies it beside the checkpoints at each checkpoint and at"
            " the end (a pvc:// URI is read under $LLMTRAIN_PVC_ROOT: mount or copy the claim there)"
        )
    return read_metrics(storage.read_bytes(source).decode("utf-8", errors="replace"))


def write(run: str, source: str, output: Path) -> Metrics:
    """Read the metrics at `source` and write the report page for `run` to `output` (atomically)."""
    metrics = read(source)
    storage.write_bytes(str(output), render(run, source, metrics).encode())
    return metrics
