"""`llmtrain train` with checkpoints written in the background (asyncSave, the default): training goes on
while a write is held, `latest` waits for it, a kill during it keeps the previous checkpoint and the
resume is bit for bit, SIGTERM waits for it; the same on 2 ranks (slow tier)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from workload.test_train import (  # noqa: F401 - `dataset` is a fixture
    dataset,
    final_weights,
    losses,
    run_spec,
    train,
    train_command,
    wait_for_step,
)

from support.pause import kill_paused, pause_env, release, wait_until_paused


def logged_steps(checkpoints: Path) -> list[int]:
    path = checkpoints.parent / f"{checkpoints.name}-metrics" / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env}, start_new_session=True
    )


def test_a_kill_during_a_background_save_keeps_the_previous_checkpoint_and_resumes_bit_exact(tmp_path, dataset):  # noqa: F811
    """The write of step 16 held in its thread (state staged, nothing written): training goes on past it,
    `latest` still names step 8; the kill lands there. The rerun resumes from step 8 and reproduces an
    uninterrupted run bit for bit (its checkpoints, written in the background too, hold their step's state)."""
    spec = run_spec(tmp_path, steps=64)
    assert train(spec, dataset, tmp_path / "clean") == 0
    checkpoints, marker = tmp_path / "killed", tmp_path / "paused"
    process = start(train_command(spec, dataset, checkpoints), pause_env("checkpoint-write:16", marker))
    wait_until_paused(process, marker)
    wait_for_step(checkpoints, 20)  # the save of step 16 does not stall training
    assert (checkpoints / "latest").read_text() == "step-00000008"
    assert not (checkpoints / "step-00000016" / "meta.json").exists()
    kill_paused(process, marker)
    trained_before_the_kill = len(logged_steps(checkpoints))
    assert 20 <= trained_before_the_kill <= 24  # the save of step 24 waits for step 16's write
    assert (checkpoints / "latest").read_text() == "step-00000008"
    assert train(spec, dataset, checkpoints) == 0
    assert logged_steps(checkpoints) == [*range(1, trained_before_the_kill + 1), *range(9, 65)]
    clean, resumed = losses(tmp_path / "clean"), losses(checkpoints)
    assert all(resumed[s] == clean[s] for s in range(9, 65))  # bit for bit
    a, b = final_weights(tmp_path / "clean"), final_weights(checkpoints)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_during_a_background_save_waits_for_it_then_saves_the_last_step(tmp_path, dataset):  # noqa: F811
    spec = run_spec(tmp_path, steps=400)
    checkpoints, marker = tmp_path / "term", tmp_path / "paused"
    process = start(train_command(spec, dataset, checkpoints), pause_env("checkpoint-write:8", marker))
    wait_until_paused(process, marker)
    wait_for_step(checkpoints, 10)
    process.send_signal(signal.SIGTERM)
    release(marker)  # the save of step 8 may end now; the trainer stops at its next step boundary
    assert process.wait(timeout=120) == 75
    saved = int((checkpoints / "latest").read_text().split("-")[1])
    assert saved == max(losses(checkpoints)) > 8  # zero lost steps
    for step in (8, saved):
        assert json.loads((checkpoints / f"step-{step:08d}" / "meta.json").read_text())["step"] == step
    report = json.loads((tmp_path / "term-progress.json").read_text())
    assert report["phase"] == "Interrupted" and report["latestCheckpoint"]["step"] == saved


@pytest.mark.slow
def test_two_ranks_resume_bit_exact_from_a_checkpoint_written_while_training_went_on(tmp_path, dataset):  # noqa: F811
    """2 FSDP2 ranks: the write of step 8 held on both while they train to step 12 (`--stop-at-step 12`,
    whose save waits for it); then the run resumes from step 8 alone and matches an uninterrupted run."""
    spec = run_spec(tmp_path, steps=24, micro=4, accumulation=1)
    assert train(spec, dataset, tmp_path / "clean", 2) == 0
    checkpoints, marker = tmp_path / "held", tmp_path / "paused"
    command = train_command(spec, dataset, checkpoints, 2, "--stop-at-step", "12")
    process = start(command, pause_env("checkpoint-write:8", marker))
    wait_until_paused(process, marker)
    wait_for_step(checkpoints, 12)
    assert not (checkpoints / "latest").exists()
    release(marker)
    assert process.wait(timeout=300) == 0
    assert (checkpoints / "latest").read_text() == "step-00000012"
    shutil.rmtree(checkpoints / "step-00000012")  # resume from step 8: the write held while training went on
    (checkpoints / "latest").unlink()
    assert train(spec, dataset, checkpoints, 2) == 0
    assert logged_steps(checkpoints) == [*range(1, 13), *range(9, 25)]
    clean, resumed = losses(tmp_path / "clean"), losses(checkpoints)
    assert all(resumed[s] == clean[s] for s in range(9, 25))
    a, b = final_weights(tmp_path / "clean"), final_weights(checkpoints)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
