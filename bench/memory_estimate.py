"""The training memory estimate (`llmtrain/train/memory.py`) against the measured peak of real CPU steps.

Each shape runs in its own process: a tiny warm-up model first (so the baseline holds torch's own
allocations), then the model, fused AdamW and two fp32 training steps; the peak is VmHWM less the
baseline. The refusal rule (estimate > 1.25 x available) is sound while the ratio stays below 1.25.

    python bench/memory_estimate.py    (one JSON line per shape; ratios 0.73-1.12 on the development machine)
"""

from __future__ import annotations

import json
import subprocess
import sys

#: layers, hidden, heads, kv heads, intermediate, sequence, vocabulary, micro-batch, activation checkpointing
SHAPES = [
    (4, 256, 8, 4, 704, 256, 4096, 8, False),
    (4, 256, 8, 4, 704, 256, 4096, 8, True),
    (8, 512, 8, 8, 1408, 512, 8192, 4, False),
    (8, 512, 8, 8, 1408, 512, 8192, 4, True),
    (2, 1024, 16, 4, 2816, 1024, 32000, 2, False),
    (12, 768, 12, 12, 2048, 1024, 2000, 4, False),
    (12, 768, 12, 12, 2048, 1024, 2000, 4, True),
]

MEASURE = """
import json, sys, torch
from llmtrain.api import TrainingRun
from llmtrain.api.trainingrun import OptimizerSpec
from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train import memory
from llmtrain.train.optim import build_optimizer

layers, hidden, heads, kv, inter, seq, vocab, micro, checkpointing = json.loads(sys.argv[1])

def peak_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

torch.set_num_threads(2)
warm = Llama(LlamaConfig(64, 1, 16, 2, 2, 16, 8))
warm.loss(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)).backward()
config = LlamaConfig(vocab, layers, hidden, heads, kv, inter, seq)
tokens, targets = torch.randint(0, vocab, (micro, seq)), torch.randint(0, vocab, (micro, seq))
base = peak_bytes()
model = Llama(config)
model.init_weights()
for block in model.model.layers:
    block.checkpointing = checkpointing
optimizer = build_optimizer(model, OptimizerSpec(), fused=True)
for _ in range(2):
    model.loss(tokens, targets).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
measured = peak_bytes() - base
model_spec = {"layers": layers, "hiddenSize": hidden, "heads": heads, "kvHeads": kv, "intermediateSize": inter,
              "maxSeqLen": seq}
training = {"maxSteps": 1, "microBatchSize": micro, "activationCheckpointing": checkpointing, "precision": "fp32"}
run = TrainingRun.model_validate({"apiVersion": "llmtrain.dev/v1alpha1", "kind": "TrainingRun",
    "metadata": {"name": "bench"}, "spec": {"dataSourceRef": {"name": "d"}, "model": model_spec, "training": training}})
estimate = memory.estimate(config, run, "cpu", 1).total
print(json.dumps({"shape": sys.argv[1], "measured_gib": round(measured / 2**30, 3),
                  "estimate_gib": round(estimate / 2**30, 3), "ratio": round(estimate / measured, 2)}))
"""


def main() -> int:
    for shape in SHAPES:
        result = subprocess.run(
            [sys.executable, "-c", MEASURE, json.dumps(shape)], capture_output=True, text=True, timeout=900
        )
        print(result.stdout.strip() or result.stderr[-2000:], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
