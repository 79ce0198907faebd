"""Metrics beside the checkpoints: copied incrementally and atomically (local and S3), restored by a new
pod, never mistaken by retention, resume or quarantine for a checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llmtrain import storage
from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train.checkpoint import Checkpointer
from llmtrain.train.checkpointing import CheckpointManager
from llmtrain.train.distributed import World
from llmtrain.train.metrics_sync import MetricsSync, metrics_uri
from llmtrain.train.progress import Metrics, Reporter
from llmtrain.train.state import TrainState

CONFIG = LlamaConfig(vocab_size=64, layers=1, hidden_size=16, heads=2, kv_heads=1, intermediate_size=32, max_seq_len=16)
ONE = World(0, 0, 1, torch.device("cpu"))


def lines(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_only_changed_files_are_copied_and_a_partial_line_waits(tmp_path):
    local, stored = tmp_path / "scratch", tmp_path / "ckpt" / "metrics"
    (local / "tensorboard").mkdir(parents=True)
    (local / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # a line being written
    (local / "tensorboard" / "events.out.tfevents.1").write_bytes(b"\x00event")
    sync = MetricsSync(local, str(stored))
    assert sync.sync() == 2
    assert lines(stored / "metrics.jsonl") == [1, 2]  # up to the last complete line
    assert (stored / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"\x00event"
    assert sync.sync() == 0  # nothing changed, nothing copied
    with (local / "metrics.jsonl").open("a") as handle:
        handle.write('ss": 1.0}\n')
    assert sync.sync() == 1 and lines(stored / "metrics.jsonl") == [1, 2, 3]
    assert sorted(p.name for p in stored.rglob("*") if p.is_file()) == ["events.out.tfevents.1", "metrics.jsonl"]


def test_a_new_pod_restores_the_stored_file_and_keeps_appending(tmp_path):
    stored = tmp_path / "ckpt" / "metrics"
    first = MetricsSync(tmp_path / "pod-1", str(stored))
    (tmp_path / "pod-1").mkdir()
    (tmp_path / "pod-1" / "metrics.jsonl").write_text("".join(f'{{"step": {s}}}\n' for s in range(1, 9)))
    first.sync()
    second = MetricsSync(tmp_path / "pod-2", str(stored))
    assert second.restore() is True and lines(tmp_path / "pod-2" / "metrics.jsonl") == list(range(1, 9))
    assert second.sync() == 0  # the restored file is what storage holds
    with (tmp_path / "pod-2" / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 9}\n')
    assert second.sync() == 1 and lines(stored / "metrics.jsonl") == list(range(1, 10))
    longer = MetricsSync(tmp_path / "pod-2", str(stored))
    assert longer.restore() is False  # a local file at least as long is kept
    assert MetricsSync(tmp_path / "pod-3", str(tmp_path / "nothing")).restore() is False


def test_s3_copies_are_one_put_each(tmp_path, s3):
    local = tmp_path / "scratch"
    local.mkdir()
    (local / "metrics.jsonl").write_text('{"step": 1}\n')
    sync = MetricsSync(local, "s3://bucket/runs/tiny/checkpoints/metrics")
    assert sync.sync() == 1
    assert storage.read_bytes("s3://bucket/runs/tiny/checkpoints/metrics/metrics.jsonl", s3) == b'{"step": 1}\n'
    restored = MetricsSync(tmp_path / "pod-2", "s3://bucket/runs/tiny/checkpoints/metrics")
    assert restored.restore() and lines(tmp_path / "pod-2" / "metrics.jsonl") == [1]


def test_a_storage_failure_warns_and_training_goes_on(tmp_path, caplog):
    local = tmp_path / "scratch"
    local.mkdir()
    (local / "metrics.jsonl").write_text('{"step": 1}\n')
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the metrics folder should be")
    sync = MetricsSync(local, str(blocked / "metrics"))
    with caplog.at_level(logging.WARNING, "llmtrain.train"):
        assert sync.sync() == 0 and sync.restore() is False
    assert "not copied" in caplog.text
    blocked.unlink()
    assert sync.sync() == 1  # tried again at the next checkpoint


def test_checkpoints_retention_and_resume_ignore_the_metrics_folder(tmp_path):
    """The loop's wiring: each completed checkpoint copies the metrics; retention keeps 2 step directories and
    never touches metrics/; resume (and its quarantine of a corrupt newest checkpoint) ignores it."""
    root = tmp_path / "ckpt"
    model = Llama(CONFIG)
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state, record = TrainState(), {"seed": 7, "model": dict(vars(CONFIG))}
    metrics = Metrics(tmp_path / "scratch", "tiny", None, MetricsSync(tmp_path / "scratch", metrics_uri(str(root))))
    saver = Checkpointer(str(root), ONE, keep_last=2, keep_best=0, staging=tmp_path / "staging")
    manager = CheckpointManager(saver, model, optimizer, state, 4, record, Reporter("tiny", 16, []), "tiny")
    copied: list[tuple[int, int]] = []  # (checkpoint step, the last step in the stored metrics then)

    def completed(saved) -> None:
        metrics.sync()
        copied.append((saved.step, lines(root / "metrics" / "metrics.jsonl")[-1]))

    manager.on_complete.append(completed)
    for step in range(1, 17):
        state.advance(loss=4.0 - step / 8, tokens=64)
        metrics.log(step, {"loss": state.loss})
        manager.save(step, last_step=step == 16)
    metrics.end("FINISHED")
    assert [s for s, _ in copied] == [4, 8, 12, 16] and all(last >= s for s, last in copied)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "metrics", "step-00000012", "step-00000016"]
    assert lines(root / "metrics" / "metrics.jsonl") == list(range(1, 17))
    assert list((root / "metrics" / "tensorboard").iterdir())  # the event files too
    (root / "step-00000016" / "meta.json").write_text(
        (root / "step-00000016" / "meta.json").read_text().replace('"files"', '"filez"')
    )
    resumed = CheckpointManager(
        Checkpointer(str(root), ONE, 2, 0, tmp_path / "staging"), model, optimizer, TrainState(), 4, record,
        Reporter("tiny", 16, []), "tiny",
    )  # fmt: skip
    resumed.resume()
    assert resumed.state.step == 12
    assert sorted(p.name for p in root.iterdir()) == ["latest", "metrics", "quarantine", "step-00000012"]
    assert lines(root / "metrics" / "metrics.jsonl") == list(range(1, 17))
