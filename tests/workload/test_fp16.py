"""`precision: fp16` on real shards: it trains in 16 bits on one process and under FSDP2 (2 gloo ranks), an
injected gradient overflow is skipped on every rank and counted (not a divergence), and a resumed run
continues with the scale it had. Same tiny model and data as test_train.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workload.test_train import dataset, final_weights, losses, run_spec, train  # noqa: F401 - dataset: a fixture

OVERFLOW_STEP = 5  # 0-based: the 6th step's update is skipped


def fp16_spec(tmp: Path, steps: int, accumulation: int = 2, every_step: bool = True) -> Path:
    """The tiny run in fp16; `every_step`: a checkpoint after each step (to see the skipped step's weights)."""
    checkpointing = {"everySteps": 1, "keepLast": steps} if every_step else {}
    return run_spec(tmp, steps, 4, accumulation, training={"precision": "fp16"}, checkpointing=checkpointing)


def metrics(checkpoints: Path) -> dict[int, dict]:
    """The metrics JSONL by step (a resumed run appends: the later line wins)."""
    path = checkpoints.parent / f"{checkpoints.name}-metrics" / "metrics.jsonl"
    return {record["step"]: record for record in map(json.loads, path.read_text().splitlines())}


def weights_at(checkpoints: Path, step: int) -> dict:
    (checkpoints / "latest").write_text(f"step-{step:08d}")  # final_weights reads what `latest` names
    return final_weights(checkpoints)


def assert_overflow_skipped(tmp_path: Path, checkpoints: Path, steps: int) -> None:
    """The overflowing step was skipped (weights as before it, the scale halved), counted once, warned of."""
    records = metrics(checkpoints)
    assert sorted(records) == list(range(1, steps + 1))
    before, skipped = records[OVERFLOW_STEP], records[OVERFLOW_STEP + 1]
    assert before["skippedSteps"] == 0 and skipped["skippedSteps"] == 1 == records[steps]["skippedSteps"]
    assert skipped["lossScale"] == before["lossScale"] / 2 == records[steps]["lossScale"]
    assert "gradNorm" not in skipped and "gradNorm" in before
    assert records[steps]["loss"] < records[1]["loss"] - 0.5  # it learns
    unchanged = weights_at(checkpoints, OVERFLOW_STEP), weights_at(checkpoints, OVERFLOW_STEP + 1)
    assert all(unchanged[0][k].equal(unchanged[1][k]) for k in unchanged[0])
    moved = weights_at(checkpoints, OVERFLOW_STEP + 2)
    assert any(not moved[k].equal(unchanged[1][k]) for k in moved)
    report = json.loads((tmp_path / f"{checkpoints.name}-progress.json").read_text())
    assert report["phase"] == "Succeeded" and "failure" not in report
    warned = [alert for alert in report["alerts"] if alert["type"] == "StepSkipped"]
    assert [(a["step"], a["severity"]) for a in warned] == [(OVERFLOW_STEP, "warning")]
    meta = json.loads((checkpoints / f"step-{steps:08d}" / "meta.json").read_text())
    assert meta["skippedSteps"] == 1 and meta["lossScale"]["scale"] == records[steps]["lossScale"]


def test_fp16_one_process_trains_and_skips_an_overflowing_step(tmp_path, dataset):  # noqa: F811
    checkpoints = tmp_path / "one"
    env = {"LLMTRAIN_TEST_POISON": f"overflow:{OVERFLOW_STEP}"}
    assert train(fp16_spec(tmp_path, steps=16), dataset, checkpoints, env=env) == 0
    assert_overflow_skipped(tmp_path, checkpoints, 16)


@pytest.mark.slow
def test_fp16_two_ranks_train_and_all_skip_an_overflow_on_rank_0(tmp_path, dataset):  # noqa: F811
    """FSDP2 with fp16 parameters: the +inf lands on rank 0's gradient shard only, yet the weights of both
    ranks' shards stay as they were (the checkpoint gathers them all)."""
    checkpoints = tmp_path / "two"
    env = {"LLMTRAIN_TEST_POISON": f"overflow:{OVERFLOW_STEP}"}
    assert train(fp16_spec(tmp_path, steps=16, accumulation=1), dataset, checkpoints, 2, env=env) == 0
    assert_overflow_skipped(tmp_path, checkpoints, 16)


@pytest.mark.slow  # three runs one after another
def test_fp16_resume_is_bit_exact_and_keeps_the_scale(tmp_path, dataset):  # noqa: F811
    """Stopped at step 8 after a skipped step, resumed to 16: the same losses bit for bit, the halved scale
    and the skipped count carried over (a fresh scaler would report the initial scale and 0 skips)."""
    spec, env = fp16_spec(tmp_path, steps=16, every_step=False), {"LLMTRAIN_TEST_POISON": "overflow:2"}
    assert train(spec, dataset, tmp_path / "clean", env=env) == 0
    resumed = tmp_path / "resumed"
    assert train(spec, dataset, resumed, 1, "--stop-at-step", "8", env=env) == 0
    assert train(spec, dataset, resumed) == 0
    clean, again = metrics(tmp_path / "clean"), metrics(resumed)
    assert again[16]["skippedSteps"] == clean[16]["skippedSteps"] == 1
    assert [again[s]["lossScale"] for s in range(9, 17)] == [clean[s]["lossScale"] for s in range(9, 17)]
    assert losses(resumed) == losses(tmp_path / "clean")
    a, b = final_weights(tmp_path / "clean"), final_weights(resumed)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
