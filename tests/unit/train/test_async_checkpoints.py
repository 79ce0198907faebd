"""Checkpoints written in the background: the staged state is the save step's, `latest` moves only once
the write is complete, one save at a time, SIGTERM waits for the save in flight, listeners hear of each."""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train.checkpoint import Checkpointer
from llmtrain.train.checkpointing import CheckpointManager
from llmtrain.train.distributed import World
from llmtrain.train.progress import Reporter
from llmtrain.train.state import TrainState
from llmtrain.train.stopping import INTERRUPTED, StopRequest
from support.pause import pause_env, release

CONFIG = LlamaConfig(vocab_size=64, layers=1, hidden_size=16, heads=2, kv_heads=1, intermediate_size=32, max_seq_len=16)
RECORD = {"seed": 7, "model": dict(vars(CONFIG))}
ONE = World(0, 0, 1, torch.device("cpu"))


class Trained:
    """A tiny model and AdamW trained a step at a time, checkpointed by a background manager in `root`."""

    def __init__(self, root: Path, every_steps: int = 4, keep_last: int = 10) -> None:
        torch.manual_seed(0)
        self.model = Llama(CONFIG)
        self.model.init_weights(torch.Generator().manual_seed(0))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.state = TrainState()
        self.root = root
        saver = Checkpointer(str(root), ONE, keep_last, keep_best=0, staging=root.parent / "s", background=True)
        progress = Reporter("tiny", 100, [], min_interval=3600)
        self.manager = CheckpointManager(
            saver, self.model, self.optimizer, self.state, every_steps, RECORD, progress, "tiny"
        )

    def step(self) -> None:
        tokens = torch.randint(0, CONFIG.vocab_size, (2, 8))
        self.optimizer.zero_grad()
        self.model.loss(tokens, tokens.roll(1, dims=1)).backward()
        self.optimizer.step()
        self.state.advance(loss=1.0, tokens=16, by_source={"corpus": 16})

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Every weight and AdamW moment, copied."""
        state = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for index, moments in self.optimizer.state_dict()["state"].items():
            state |= {f"optim.{index}.{k}": v for k, v in moments.items()}
        return copy.deepcopy(state)


def wait_for(marker: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert time.monotonic() < deadline, "the write never reached its pause point"
        time.sleep(0.01)


def complete(manager: CheckpointManager, timeout: float = 60) -> None:
    """Poll at "step boundaries" until the save in flight completes (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while manager.pending is not None:
        assert time.monotonic() < deadline, "the background save did not complete"
        manager.poll()
        time.sleep(0.02)


def loaded(root: Path, name: str) -> dict[str, torch.Tensor]:
    """The checkpoint `name` loaded into a fresh model and optimizer, as `Trained.snapshot` lists it."""
    fresh = Trained(root.parent / "fresh")
    fresh.step()  # AdamW state to load into
    reader = Checkpointer(str(root), ONE, keep_last=10, keep_best=1, staging=root.parent / "s")
    reader.load(name, fresh.model, fresh.optimizer, RECORD["model"])
    return fresh.snapshot()


def test_the_state_written_in_the_background_is_the_save_steps_and_latest_waits_for_it(tmp_path, monkeypatch):
    """The write of step 8 is held in its thread (the state staged, nothing written) while training takes
    three more steps, changing every weight and moment in place: the checkpoint still holds step 8's state.
    `latest` names step 4 until step 8 completes at a step boundary after its write is done."""
    root, marker = tmp_path / "ckpt", tmp_path / "paused"
    run = Trained(root)
    for step in range(1, 5):
        run.step()
        assert run.manager.save(step) == (step == 4)
    complete(run.manager)
    assert run.manager.latest() == "step-00000004"
    for name, value in pause_env("checkpoint-write:8", marker).items():
        monkeypatch.setenv(name, value)
    for step in range(5, 9):
        run.step()
        run.manager.save(step)
    expected = run.snapshot()
    wait_for(marker)  # the write of step 8 waits in its thread: training goes on
    for _ in range(3):
        run.step()
        assert not run.manager.poll()
    assert run.manager.latest() == "step-00000004" and not (root / "step-00000008" / "meta.json").exists()
    changed = run.snapshot()
    assert all(not torch.equal(changed[k], expected[k]) for k in expected if k.endswith(("weight", "exp_avg")))
    release(marker)
    deadline = time.monotonic() + 30
    while not run.manager.pending.written():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert run.manager.latest() == "step-00000004"  # written, not yet complete: that is the next boundary's
    assert run.manager.poll() and run.manager.pending is None
    assert run.manager.latest() == "step-00000008" and run.manager.checkpointed_step == 8
    meta = json.loads((root / "step-00000008" / "meta.json").read_text())  # as at step 8, not step 11
    assert (meta["step"], meta["tokensSeen"], meta["tokensBySource"]) == (8, 128, {"corpus": 128})
    restored = loaded(root, "step-00000008")
    assert restored.keys() == expected.keys()
    assert all(torch.equal(restored[k], expected[k]) for k in expected)


def test_one_save_at_a_time_and_listeners_hear_of_each_completed_one(tmp_path, monkeypatch):
    """The save of step 8 begins only once step 4's is complete; the last step's save is complete when
    save returns; `on_complete` hears of each, in order, after `latest` names it."""
    run = Trained(tmp_path / "ckpt")
    heard: list[tuple[int, str | None]] = []
    run.manager.on_complete.append(lambda saved: heard.append((saved.step, run.manager.latest())))
    marker = tmp_path / "paused"
    for name, value in pause_env("checkpoint-write:4", marker).items():
        monkeypatch.setenv(name, value)
    for step in range(1, 5):
        run.step()
        run.manager.save(step)
    wait_for(marker)
    threading.Timer(0.5, release, (marker,)).start()
    for step in range(5, 9):
        run.step()
        started = time.monotonic()
        run.manager.save(step, last_step=step == 8)
    assert time.monotonic() - started >= 0.3  # step 8 waited for step 4's write, held until released
    assert heard == [(4, "step-00000004"), (8, "step-00000008")] and run.manager.pending is None


@pytest.fixture
def keep_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_a_write_waits_for_it_then_saves_the_last_step(tmp_path, monkeypatch, keep_sigterm):
    root, marker = tmp_path / "ckpt", tmp_path / "paused"
    run = Trained(root)
    stop = StopRequest(ONE, stop_at_step=None)
    for name, value in pause_env("checkpoint-write:4", marker).items():
        monkeypatch.setenv(name, value)
    for step in range(1, 6):
        run.step()
        run.manager.save(step)
    wait_for(marker)
    os.kill(os.getpid(), signal.SIGTERM)  # the save of step 4 is in flight, held
    assert stop.check(5) == INTERRUPTED
    threading.Timer(0.3, release, (marker,)).start()
    assert run.manager.save(5, stopping=True)
    assert {p.parent.name for p in root.glob("step-*/meta.json")} == {"step-00000004", "step-00000005"}
    assert run.manager.latest() == "step-00000005" and run.manager.pending is None
    assert torch.equal(loaded(root, "step-00000005")["model.model.norm.weight"], run.model.model.norm.weight)


def test_retention_renames_dropped_checkpoints_away_at_once_and_deletes_them_behind(tmp_path):
    """keepLast 1: each completed save drops the one before; it leaves the root's names at once (a kill
    cannot leave half of it under its name) and is deleted by a thread, as is a leftover of a killed run."""
    root = tmp_path / "ckpt"
    leftover = root / ".removing-step-00000002-1-1"
    leftover.mkdir(parents=True)
    (leftover / "__0_0.distcp").write_bytes(b"x")
    run = Trained(root, keep_last=1)
    for step in range(1, 13):
        run.step()
        run.manager.save(step, last_step=step == 12)
        pending, latest = run.manager.pending, run.manager.latest()
        in_flight = {f"step-{pending.step:08d}"} if pending else set()
        assert {p.name for p in root.glob("step-*")} - in_flight == ({latest} if latest else set())
    run.manager.close()  # the deletions end before the process does
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000012"]
