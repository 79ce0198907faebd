"""The tiny TrainingRun the trainer's workload tests and the reliability drills (bench/reliability.py) train."""

from __future__ import annotations

from typing import Any


def tiny_run(name: str, source: str, steps: int, micro: int = 4, accumulation: int = 2, **sections: Any) -> dict:
    """2 layers, width 64, 4 heads over 2 kv heads, sequences of 64, fp32 (exact on CPUs); a log line every
    step; lr 3e-3 after 4 warmup steps; validation (2 batches) and checkpoints (keepLast 2, keepBest 1)
    every 8 steps. One step takes `micro x accumulation x ranks` sequences. `sections` update the spec's
    sections key by key (`training={"deterministic": True}`, `model={"hiddenSize": 128}`)."""
    spec: dict[str, Any] = {
        "dataSourceRef": {"name": source},
        "model": {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "intermediateSize": 128, "maxSeqLen": 64},
        "training": {
            "maxSteps": steps,
            "microBatchSize": micro,
            "gradientAccumulationSteps": accumulation,
            "precision": "fp32",
            "logEverySteps": 1,
            "optimizer": {"lr": 0.003},
            "scheduler": {"warmupSteps": 4},
        },
        "validation": {"everySteps": 8, "batches": 2},
        "checkpointing": {"everySteps": 8, "keepLast": 2, "keepBest": 1},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return {"apiVersion": "llmtrain.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": name}, "spec": spec}
