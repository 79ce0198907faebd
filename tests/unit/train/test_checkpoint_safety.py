"""Checkpoint storage is untrusted: nothing in it runs code, pointers stay inside the root, every file is
checked against meta.json, a bad pointer or a corrupt checkpoint never costs a complete one."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from llmtrain.errors import BadInput, exit_code_for
from llmtrain.export import checkpoint as export_checkpoint
from llmtrain.export.checkpoint import ExportError
from llmtrain.export.checks import check_tokenizer
from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train import checkpoint_meta, safe_load
from llmtrain.train.checkpoint import Checkpointer, CheckpointError
from llmtrain.train.distributed import World
from llmtrain.train.loader import DataError, Dataset
from llmtrain.train.safe_load import CorruptCheckpoint

CONFIG = LlamaConfig(vocab_size=64, layers=1, hidden_size=16, heads=2, kv_heads=1, intermediate_size=32, max_seq_len=16)
SHAPE = dict(vars(CONFIG))
ONE = World(0, 0, 1, torch.device("cpu"))


class Marker:
    """Pickles to a call that creates a file: what a crafted checkpoint file would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def fresh() -> tuple[Llama, torch.optim.Optimizer]:
    model = Llama(CONFIG)
    model.init_weights(torch.Generator().manual_seed(0))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def train_step(model: Llama, optimizer: torch.optim.Optimizer) -> None:
    inputs = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    model.loss(inputs[:, :-1], inputs[:, 1:]).backward()
    optimizer.step()
    optimizer.zero_grad()


def checkpointer(root: Path) -> Checkpointer:
    return Checkpointer(str(root), ONE, keep_last=5, keep_best=1, staging=root.parent / "staging")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkpoint root holding complete checkpoints of steps 2 and 4 (latest: step 4)."""
    model, optimizer = fresh()
    saver = checkpointer(tmp_path / "ckpt")
    for step in (2, 4):
        train_step(model, optimizer)
        saver.save(step, model, optimizer, {"tokensSeen": step, "model": SHAPE, "valLoss": 1.0 / step})
    return tmp_path / "ckpt"


def resume(root: Path):
    model, optimizer = fresh()
    return checkpointer(root).resume(model, optimizer, SHAPE), model


def rewrite_meta(directory: Path, **changes) -> None:
    """meta.json changed as an attacker with write access to storage would (digests made to match)."""
    meta = json.loads((directory / "meta.json").read_text())
    meta.update(changes)
    meta["files"] = {p.name: safe_load.digest(p) for p in directory.iterdir() if p.name != "meta.json"}
    (directory / "meta.json").write_text(json.dumps(meta))


def flip_kib(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1024] = bytes(b ^ 0xFF for b in data[middle : middle + 1024])
    path.write_bytes(bytes(data))


def test_meta_records_every_file_and_resume_restores_weights_and_rng(root):
    meta = json.loads((root / "step-00000004" / "meta.json").read_text())
    on_disk = {p.name for p in (root / "step-00000004").iterdir()} - {"meta.json"}
    assert set(meta["files"]) == on_disk and {".metadata", "__0_0.distcp", "rng-0.safetensors"} <= on_disk
    assert meta["files"][".metadata"] == safe_load.digest(root / "step-00000004" / ".metadata")
    expected_random = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    found, model = resume(root)
    assert found.name == "step-00000004" and found.skipped == []
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected_random  # the saved states
    reference, optimizer = fresh()
    train_step(reference, optimizer)
    train_step(reference, optimizer)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )


def test_a_crafted_metadata_file_is_refused_and_runs_nothing(root, tmp_path):
    marker = tmp_path / "pwned"
    directory = root / "step-00000004"
    (directory / ".metadata").write_bytes(pickle.dumps(Marker(marker)))
    rewrite_meta(directory)
    model, optimizer = fresh()
    with pytest.raises(CorruptCheckpoint, match=r"\.metadata: not a checkpoint metadata file") as caught:
        checkpointer(root).load("step-00000004", model, optimizer, SHAPE)
    assert exit_code_for(caught.value) == 2 and not marker.exists()
    found = export_checkpoint.resolve(str(root))
    with pytest.raises(BadInput, match=r"\.metadata"):
        export_checkpoint.load(found, tmp_path)
    assert not marker.exists()


def test_a_crafted_non_tensor_entry_in_a_shard_runs_nothing(tmp_path):
    """DCP stores non-tensor values (optimizer hyperparameters) pickled inside the .distcp shards."""
    marker = tmp_path / "pwned"
    model, optimizer = fresh()
    saver = checkpointer(tmp_path / "ckpt")
    saver.save(2, model, optimizer, {"model": SHAPE})
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    optim_state["param_groups"][0]["lr"] = Marker(marker)
    directory = tmp_path / "ckpt" / "step-00000002"
    for path in directory.iterdir():
        if path.name != "meta.json":
            path.unlink()
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))
    assert not marker.exists()
    rewrite_meta(directory, step=2, model=SHAPE, worldSize=1)
    with pytest.raises(CheckpointError, match="no complete checkpoint verifies"):
        resume(tmp_path / "ckpt")
    assert not marker.exists()


def test_a_crafted_rng_file_is_refused_and_runs_nothing(root, tmp_path):
    marker = tmp_path / "pwned"
    directory = root / "step-00000004"
    torch.save({"python": Marker(marker)}, directory / "rng-0.pt")  # the former format: never read now
    rewrite_meta(directory)
    model, optimizer = fresh()
    checkpointer(root).load("step-00000004", model, optimizer, SHAPE)
    assert not marker.exists()
    torch.save({"python": Marker(marker)}, directory / "rng-0.safetensors")
    rewrite_meta(directory)
    model, optimizer = fresh()
    with pytest.raises(CorruptCheckpoint, match=r"rng-0.safetensors: not an RNG state file"):
        checkpointer(root).load("step-00000004", model, optimizer, SHAPE)
    assert not marker.exists()


@pytest.mark.parametrize(
    "text", ["../../elsewhere", "/etc", "step-00000004/../../x", "step-4", "step-00000004/", "", "\x00garbage"]
)
def test_a_pointer_names_a_checkpoint_directory_inside_the_root_or_nothing(root, tmp_path, text):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "latest").write_text(text)
    assert checkpoint_meta.pointer_target(text) is None
    assert checkpointer(root).latest() is None
    with pytest.raises(ExportError, match=r"not the name of a checkpoint directory|no 'latest' pointer"):
        export_checkpoint.resolve(str(root))


@pytest.mark.parametrize("pointer", [None, "", "garbage", "step-00000009", "step-00000002"])
def test_a_bad_pointer_resumes_from_the_newest_complete_checkpoint_and_says_so(root, pointer):
    if pointer is None:
        (root / "latest").unlink()
    else:
        (root / "latest").write_text(pointer)
    found, _ = resume(root)
    assert found.name == "step-00000004" and found.meta["step"] == 4
    assert len(found.skipped) == 1 and "`latest`" in found.skipped[0]


def test_a_pointer_to_a_deleted_or_incomplete_checkpoint_falls_back(root):
    (root / "step-00000004" / "meta.json").unlink()  # an interrupted save
    found, _ = resume(root)
    assert found.name == "step-00000002" and "`latest` names 'step-00000004'" in found.skipped[0]


def test_a_corrupt_newest_checkpoint_is_skipped_quarantined_and_never_overwritten(root):
    shard = root / "step-00000004" / "__0_0.distcp"
    flip_kib(shard)
    corrupt = shard.read_bytes()
    found, model = resume(root)
    assert found.name == "step-00000002"
    assert "step-00000004" in found.skipped[0] and "__0_0.distcp: SHA-256 differs" in found.skipped[0]
    (quarantined,) = (root / "quarantine").iterdir()
    assert quarantined.name.startswith("step-00000004-") and (quarantined / "__0_0.distcp").read_bytes() == corrupt
    saver = checkpointer(root)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    saver.save(4, model, optimizer, {"model": SHAPE})  # the step is free again; the corrupt one is kept aside
    assert (quarantined / "__0_0.distcp").read_bytes() == corrupt
    assert resume(root)[0].name == "step-00000004"


def test_a_truncated_file_is_named_and_export_fails(root, tmp_path):
    shard = root / "step-00000004" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpoint, match=r"__0_0.distcp: \d+ bytes, but meta.json records"):
        export_checkpoint.load(export_checkpoint.resolve(str(root)), tmp_path)
    flip_kib(root / "step-00000002" / "__0_0.distcp")
    with pytest.raises(CorruptCheckpoint, match=r"__0_0.distcp: SHA-256 differs from meta.json"):
        export_checkpoint.load(export_checkpoint.resolve(str(root), "step", 2), tmp_path)


def test_no_checkpoint_that_verifies_is_a_clear_failure_that_changes_nothing(root):
    flip_kib(root / "step-00000004" / "__0_0.distcp")
    flip_kib(root / "step-00000002" / "__0_0.distcp")
    with pytest.raises(CheckpointError, match="no complete checkpoint verifies") as caught:
        resume(root)
    assert exit_code_for(caught.value) == 2
    assert not (root / "quarantine").exists() and (root / "step-00000004" / "meta.json").exists()


def test_save_never_overwrites_a_complete_checkpoint(root):
    before = (root / "step-00000004" / "meta.json").read_bytes()
    model, optimizer = fresh()
    with pytest.raises(CheckpointError, match="is a complete checkpoint already and is not overwritten"):
        checkpointer(root).save(4, model, optimizer, {"model": SHAPE})
    assert (root / "step-00000004" / "meta.json").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": 10**12}, "step 1000000000000 is not a whole number"),
        ({"step": -4}, "step -4 is not a whole number"),
        ({"step": "4"}, "step '4' is not a whole number"),
        ({"step": 2}, "step 2 is not the directory's step"),
        ({"tokensSeen": -1}, "tokensSeen -1 is not a valid count"),
        ({"files": {"../x": {"size": 1, "sha256": "0" * 64}}}, "is not a plain file name"),
        ({"files": {}}, "no file digests"),
    ],
)
def test_a_hostile_meta_json_is_refused_and_resume_falls_back(root, change, message):
    path = root / "step-00000004" / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CorruptCheckpoint, match=message):
        checkpointer(root).meta("step-00000004")
    with pytest.raises(BadInput, match=message):
        export_checkpoint.resolve(str(root))
    assert resume(root)[0].name == "step-00000002"


def test_meta_json_that_is_not_json_is_refused(root):
    (root / "step-00000004" / "meta.json").write_text("{not json")
    with pytest.raises(CorruptCheckpoint, match="not valid JSON"):
        export_checkpoint.resolve(str(root))


def test_a_model_shape_that_lies_is_refused_before_loading(root, tmp_path):
    rewrite_meta(root / "step-00000004", model={**SHAPE, "hidden_size": 32, "intermediate_size": 64})
    with pytest.raises(CorruptCheckpoint, match=r"implies model.model.embed_tokens.weight of shape \[64, 32\]"):
        export_checkpoint.load(export_checkpoint.resolve(str(root)), tmp_path)
    rewrite_meta(root / "step-00000004", model={**SHAPE, "layers": 10**12})
    with pytest.raises(CorruptCheckpoint, match=r"model.layers 1000000000000 is out of range"):
        export_checkpoint.load(export_checkpoint.resolve(str(root)), tmp_path)


class FakeTokenizer:
    def __init__(self, vocab_size: int, ids: list[int], text: str) -> None:
        self.vocab_size, self.ids, self.text = vocab_size, ids, text

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.ids]

    def decode(self, ids: list[int]) -> str:
        return self.text


def test_the_tokenizer_must_fit_the_model():
    from llmtrain.export.checks import PROBE

    check_tokenizer(FakeTokenizer(64, [1, 63], PROBE.upper()), 64, "tok")  # case and spaces aside, it fits
    with pytest.raises(ExportError, match="tok: the tokenizer has 80 ids, the model 64"):
        check_tokenizer(FakeTokenizer(80, [1], PROBE), 64, "tok")
    with pytest.raises(ExportError, match=r"ids outside the model's 0..63"):
        check_tokenizer(FakeTokenizer(64, [1, 64], PROBE), 64, "tok")
    with pytest.raises(ExportError, match="does not decode its own ids back"):
        check_tokenizer(FakeTokenizer(64, [1, 2], "something else"), 64, "tok")


def test_an_overwritten_dataset_shard_is_named(tmp_path):
    shard = np.arange(100, dtype=np.uint16)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "shard-00000.bin").write_bytes(shard.tobytes())
    import hashlib

    record = {"path": "train/shard-00000.bin", "tokens": 100, "sha256": hashlib.sha256(shard.tobytes()).hexdigest()}
    manifest = {"dtype": "uint16", "splits": {"train": {"shards": [record]}, "validation": {"shards": []}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    dataset = Dataset.open(tmp_path)
    dataset.verify_shards()
    (tmp_path / "train" / "shard-00000.bin").write_bytes(shard[::-1].tobytes())  # same size, other tokens
    with pytest.raises(DataError, match=r"shard-00000.bin: SHA-256 differs from manifest.json"):
        dataset.verify_shards()
    dataset.verify_shards(1, 2)  # the other rank's share does not include it


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"path": "../../etc/passwd", "tokens": 1, "sha256": "0" * 64}, "lists a shard at '../../etc/passwd'"),
        ({"path": "/etc/passwd", "tokens": 1, "sha256": "0" * 64}, "lists a shard at '/etc/passwd'"),
        ({"path": "train/shard-00000.bin", "tokens": 1, "sha256": "../x"}, "digests of train/shard-00000.bin"),
        (
            {"path": "train/shard-00000.bin", "tokens": 1, "sha256": "0" * 64, "blockSha256": ["../../x"]},
            "digests of train/shard-00000.bin are malformed",
        ),
    ],
)
def test_a_hostile_manifest_names_no_file_outside_the_dataset(tmp_path, record, words):
    """A reader follows the manifest's shard paths, and the block cache names files by its digests."""
    manifest = {"dtype": "uint16", "splits": {"train": {"shards": [record]}, "validation": {"shards": []}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=re.escape(words)):
        Dataset.open(tmp_path)
