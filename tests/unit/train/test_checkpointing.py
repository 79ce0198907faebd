"""The checkpoint manager: when it saves, what meta.json records, who hears of it, and what resume restores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train.checkpoint import Checkpointer
from llmtrain.train.checkpointing import CheckpointManager
from llmtrain.train.distributed import World
from llmtrain.train.progress import FileSink, Reporter
from llmtrain.train.state import TrainState

CONFIG = LlamaConfig(vocab_size=64, layers=1, hidden_size=16, heads=2, kv_heads=1, intermediate_size=32, max_seq_len=16)
RECORD = {"seed": 7, "model": dict(vars(CONFIG))}
ONE = World(0, 0, 1, torch.device("cpu"))


class Setup:
    """A manager over a real Checkpointer in `root`, its progress report in `root`-progress.json."""

    def __init__(self, root: Path, every_steps: int = 8, keep_last: int = 10) -> None:
        self.model = Llama(CONFIG)
        self.model.init_weights(torch.Generator().manual_seed(0))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.state = TrainState()
        self.progress_file = root.parent / f"{root.name}-progress.json"
        self.progress = Reporter("tiny", 20, [FileSink(str(self.progress_file))], min_interval=3600)
        saver = Checkpointer(str(root), ONE, keep_last, keep_best=1, staging=root.parent / "staging")
        self.manager = CheckpointManager(
            saver, self.model, self.optimizer, self.state, every_steps, RECORD, self.progress, "tiny"
        )

    def report(self) -> dict:
        return json.loads(self.progress_file.read_text())


def saved_steps(root: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in root.glob("step-*"))


def test_when_to_save(tmp_path):
    manager = Setup(tmp_path / "ckpt").manager
    assert [s for s in range(1, 30) if manager.should_save(s)] == [8, 16, 24]
    assert manager.should_save(13, last_step=True) and manager.should_save(13, stopping=True)
    assert not manager.should_save(13)


def test_saves_on_schedule_at_the_last_step_and_before_stopping(tmp_path, caplog):
    root = tmp_path / "ckpt"
    setup = Setup(root)
    caplog.set_level(logging.INFO, logger="llmtrain.audit")
    saved = []
    for step in range(1, 21):
        setup.state.advance(loss=10.0 - step / 4, tokens=128)
        setup.state.val_loss = {8: 3.0, 16: 2.5, 20: 2.75}.get(step, setup.state.val_loss)
        if setup.manager.save(step, last_step=step == 20, stopping=step == 13):
            saved.append(step)
    assert saved == saved_steps(root) == [8, 13, 16, 20]
    meta = json.loads((root / "step-00000013" / "meta.json").read_text())
    assert {k: meta[k] for k in ("step", "tokensSeen", "seed", "model", "loss", "valLoss")} == {
        "step": 13,
        "tokensSeen": 13 * 128,
        "seed": 7,
        "model": RECORD["model"],
        "loss": 10.0 - 13 / 4,
        "valLoss": 3.0,
    }
    assert "diverged" not in meta and (root / "latest").read_text() == "step-00000020"
    assert (root / "best").read_text() == "step-00000016"
    report = setup.report()  # every save is written at once, whatever the throttle
    assert report["latestCheckpoint"]["step"] == 20 and report["latestCheckpoint"]["uri"] == str(root / "step-00000020")
    assert report["latestCheckpoint"]["time"] == json.loads((root / "step-00000020" / "meta.json").read_text())["time"]
    assert report["bestCheckpoint"] == {"step": 16, "uri": str(root / "step-00000016"), "valLoss": 2.5}
    events = [(r.event, r.step) for r in caplog.records if getattr(r, "event", None) == "CheckpointSaved"]
    assert events == [("CheckpointSaved", s) for s in (8, 13, 16, 20)]


def test_a_diverged_state_is_saved_only_with_finite_weights(tmp_path):
    root = tmp_path / "ckpt"
    setup = Setup(root)
    setup.state.advance(loss=3.0, tokens=64)
    assert setup.manager.save_diverged(5)
    assert json.loads((root / "step-00000005" / "meta.json").read_text())["diverged"] is True
    with torch.no_grad():
        next(setup.model.parameters()).fill_(float("nan"))
    assert not setup.manager.save_diverged(6)
    assert saved_steps(root) == [5] and setup.manager.latest() == "step-00000005"


def test_a_divergence_right_after_a_checkpoint_keeps_it(tmp_path):
    """The step after a save (or a resume) diverges: its good state is that checkpoint, which is not
    written again (a second save of a complete checkpoint is refused: the run exited 2, not 3)."""
    root = tmp_path / "ckpt"
    setup = Setup(root)
    for step in range(1, 9):
        setup.state.advance(loss=3.0, tokens=64)
        setup.manager.save(step)
    before = (root / "step-00000008" / "meta.json").read_text()
    assert setup.manager.save_diverged(8)
    assert saved_steps(root) == [8] and (root / "step-00000008" / "meta.json").read_text() == before
    resumed = Setup(root)
    resumed.manager.resume()
    assert resumed.manager.save_diverged(8) and saved_steps(root) == [8]


def test_resume_restores_the_state_and_reports_what_it_skipped(tmp_path):
    root = tmp_path / "ckpt"
    first = Setup(root)
    for step in range(1, 17):
        first.state.advance(loss=1.0, tokens=100)
        first.state.val_loss = 2.0
        first.manager.save(step)
    (root / "latest").write_text("../elsewhere")
    first.progress_file.unlink()
    again = Setup(root)
    alerts = again.manager.resume()
    assert (again.state.step, again.state.tokens_seen) == (16, 1600)
    assert [(a.type, a.severity, a.step) for a in alerts] == [("CheckpointSkipped", "warning", 16)]
    assert alerts[0].message.startswith("resumed from step-00000016: `latest` names '../elsewhere'")
    assert not again.progress_file.exists()  # recorded, not written: the next write carries it
    report = again.progress.report.to_json()
    assert report["latestCheckpoint"] == {"step": 16, "uri": str(root / "step-00000016")}
    assert report["bestCheckpoint"] == {"step": 8, "uri": str(root / "step-00000008"), "valLoss": 2.0}


def test_a_fresh_start_resumes_nothing(tmp_path):
    setup = Setup(tmp_path / "ckpt")
    assert setup.manager.resume() == [] and setup.state == TrainState()
    with pytest.raises(FileNotFoundError):
        setup.report()
