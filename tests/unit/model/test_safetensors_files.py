"""A Hugging Face model directory's safetensors files, checked before any tensor is read: hostile or damaged
files are refused naming the file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from llmtrain.model import safetensors_files as files
from llmtrain.model.shape import ShapeMismatch

EXPECTED = {"a.weight": (4, 2), "b.weight": (3,)}


def weights(directory: Path, tensors: dict[str, torch.Tensor], name: str = files.SINGLE) -> Path:
    directory.mkdir(exist_ok=True)
    save_file(tensors, directory / name)
    return directory / name


def good() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.ones(4, 2, dtype=torch.bfloat16), "b.weight": torch.zeros(3)}


def test_a_sharded_directory_is_read_through_its_index(tmp_path):
    weights(tmp_path, {"a.weight": torch.ones(4, 2)}, "m-1.safetensors")
    weights(tmp_path, {"b.weight": torch.zeros(3), "model.rotary_emb.inv_freq": torch.ones(2)}, "m-2.safetensors")
    index = {"weight_map": {"a.weight": "m-1.safetensors", "b.weight": "m-2.safetensors"}}
    (tmp_path / files.INDEX).write_text(json.dumps(index))
    entries = files.match(files.index_tensors(tmp_path, "m"), EXPECTED, tied=False, where="m")
    assert {n: (e.file.name, e.shape) for n, e in entries.items()} == {
        "a.weight": ("m-1.safetensors", (4, 2)),
        "b.weight": ("m-2.safetensors", (3,)),
    }


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda p: p.write_bytes(p.read_bytes()[:-5]),
            r"truncated: a.weight ends at byte 28 of the tensor data, but the file holds 23",
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:6]), "truncated or not safetensors"),
        (lambda p: p.write_bytes((2**40).to_bytes(8, "little") + b"{}"), "truncated or not safetensors"),
        (lambda p: p.write_bytes((6).to_bytes(8, "little") + b"{nope}"), "header is not valid JSON"),
    ],
)
def test_damaged_files_are_named(tmp_path, damage, message):
    path = weights(tmp_path, good())
    damage(path)
    with pytest.raises(ShapeMismatch, match=message):
        files.index_tensors(tmp_path, "m")


def write_header(path: Path, header: dict, data: bytes = b"\0" * 64) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}, "is I8; only F32, F16 and BF16"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "offsets do not fit its shape"),
        ({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}, "malformed"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [0]}, "malformed"),
    ],
)
def test_malformed_header_entries_are_refused(tmp_path, entry, message):
    tmp_path.mkdir(exist_ok=True)
    write_header(tmp_path / files.SINGLE, {"a.weight": entry})
    with pytest.raises(ShapeMismatch, match=message):
        files.index_tensors(tmp_path, "m")


def test_what_the_model_lacks_or_does_not_have_is_refused(tmp_path):
    weights(tmp_path, good())
    found = files.index_tensors(tmp_path, "m")
    with pytest.raises(ShapeMismatch, match=r"lack c\.weight"):
        files.match(found, {**EXPECTED, "c.weight": (1,)}, tied=False, where="m")
    with pytest.raises(ShapeMismatch, match=r"a.weight has shape \[4, 2\] .* is \[2, 4\]"):
        files.match(found, {"a.weight": (2, 4), "b.weight": (3,)}, tied=False, where="m")
    with pytest.raises(ShapeMismatch, match=r"holds b\.weight, which a Llama"):
        files.match(found, {"a.weight": (4, 2)}, tied=False, where="m")
    with pytest.raises(ShapeMismatch, match=r"lack lm_head.weight \(config.json's tie_word_embeddings is false\)"):
        files.match(found, {**EXPECTED, "lm_head.weight": (4, 2)}, tied=False, where="m")


def test_an_index_naming_paths_outside_the_directory_or_pickles_is_refused(tmp_path):
    (tmp_path / files.INDEX).write_text(json.dumps({"weight_map": {"a.weight": "../../etc/x.safetensors"}}))
    with pytest.raises(ShapeMismatch, match="expected shard file names"):
        files.index_tensors(tmp_path, "m")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ShapeMismatch, match="pickled weights: loading it would run code"):
        files.index_tensors(pickled, "m")


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    weights(tmp_path, good(), "m-1.safetensors")
    weights(tmp_path, {"a.weight": torch.ones(4, 2)}, "m-2.safetensors")
    index = {"weight_map": {"a.weight": "m-1.safetensors", "b.weight": "m-2.safetensors"}}
    (tmp_path / files.INDEX).write_text(json.dumps(index))
    with pytest.raises(ShapeMismatch, match=r"a\.weight is in both m-1\.safetensors and m-2\.safetensors"):
        files.index_tensors(tmp_path, "m")


def test_rows_are_read_into_a_tensor_cast_to_its_dtype(tmp_path):
    full = torch.arange(24, dtype=torch.float32).view(6, 4)
    weights(tmp_path, {"w": full, "h": full.to(torch.bfloat16)})
    found = files.index_tensors(tmp_path, "m")
    direct = torch.empty(2, 4)
    found["w"].read_rows_into(direct, 3)  # fp32 into fp32: read in place
    assert torch.equal(direct, full[3:5])
    cast = torch.empty(6, 4)
    found["h"].read_rows_into(cast)  # bf16 into fp32: read, then cast
    assert torch.equal(cast, full)
    with pytest.raises(ValueError, match=r"rows 5\.\.7"):
        found["w"].read_rows_into(torch.empty(2, 4), 5)
