"""`llmtrain train` refuses a model that cannot fit before allocating it: exit 2 with the estimate and the fix."""

from __future__ import annotations

import subprocess
import sys

import yaml

from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT


def test_a_model_too_large_for_this_machine_is_refused_before_allocation(tmp_path):
    (tmp_path / "data").mkdir()
    play = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[0]
    (tmp_path / "data" / play.name).write_bytes(play.read_bytes())
    spec = write_spec(tmp_path, data_source(tokenizer={"vocabSize": 512}, split={"validationFraction": 0.2}))
    ingested = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"))
    assert ingested.code == 0, ingested.stderr
    # about 26 trillion parameters: 400 TiB of fp32 weights and optimizer states on one CPU process
    model = {"layers": 512, "hiddenSize": 65536, "heads": 512, "kvHeads": 512, "maxSeqLen": 64}
    run = {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "huge"},
        "spec": {"dataSourceRef": {"name": "corpus"}, "model": model, "training": {"maxSteps": 1, "precision": "fp32"}},
    }
    run_file = tmp_path / "huge.yaml"
    run_file.write_text(yaml.safe_dump(run))
    checkpoints = tmp_path / "checkpoints"
    command = [sys.executable, "-m", "llmtrain.cli", "train", "-f", str(run_file), "--data", str(tmp_path / "out")]
    process = subprocess.run([*command, "--checkpoints", str(checkpoints)], capture_output=True, text=True, timeout=300)
    assert process.returncode == 2, process.stderr[-2000:]
    assert "the model does not fit: training needs about" in process.stderr
    assert "GiB available" in process.stderr and "more nodes or GPUs" in process.stderr
    assert "Traceback" not in process.stderr
    assert not any(checkpoints.glob("step-*"))
