"""The export formats behind one interface: every API format is registered, each writes the quantized
artifacts the API promises, and a quantization a model cannot take is refused before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from llmtrain.api.modelexport import QUANTIZED_FORMATS, ExportValidationSpec, Format, Quantization
from llmtrain.export.checkpoint import ExportError
from llmtrain.export.formats import ExportInputs
from llmtrain.export.pipeline import _export_format
from llmtrain.export.registry import FORMATS
from llmtrain.model.llama import Llama, LlamaConfig

#: Widths that are multiples of the GGUF block size (32): every quantization fits.
BLOCKS = LlamaConfig(vocab_size=64, layers=1, hidden_size=64, heads=2, kv_heads=2, intermediate_size=64, max_seq_len=16)
#: A hidden size of 48: no block quantization fits.
ODD = LlamaConfig(vocab_size=64, layers=1, hidden_size=48, heads=2, kv_heads=2, intermediate_size=96, max_seq_len=16)


def inputs_for(model: Llama) -> ExportInputs:
    return ExportInputs(
        model=model,
        tokenizer_dir=Path("no-tokenizer"),
        training_tokenizer=None,
        prompts=[[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11]],
        corpus=[],
        draw_windows=lambda: pytest.fail("full precision draws no perplexity windows"),
        limits=ExportValidationSpec(greedy_tokens=4),
    )


def test_every_api_format_has_a_registered_format():
    assert set(FORMATS) == set(get_args(Format))


@pytest.mark.parametrize("requested", get_args(Quantization))
def test_each_format_writes_the_quantized_artifacts_the_api_promises(requested):
    model = Llama(BLOCKS)
    written = {name: fmt.quantization(model, requested) for name, fmt in FORMATS.items()}
    assert {name for name, kind in written.items() if kind} == set(QUANTIZED_FORMATS[requested])
    assert {kind for kind in written.values() if kind} <= set(get_args(Quantization)) - {"none"}


@pytest.mark.parametrize(
    ("requested", "kind"),
    [("int8", "Q8_0"), ("q8_0", "Q8_0"), ("int4", "Q4_0"), ("q4_0", "Q4_0")],
)
def test_gguf_refuses_a_block_quantization_the_model_cannot_take_before_writing(tmp_path, requested, kind):
    message = rf"GGUF {kind} needs rows that are multiples of 32; \{{'hiddenSize': 48\}} are not"
    with pytest.raises(ExportError, match=message):
        _export_format("gguf", inputs_for(Llama(ODD)), tmp_path, requested)
    assert list(tmp_path.iterdir()) == []
    assert FORMATS["gguf"].quantization(Llama(ODD), "none") is None  # full precision has no block size


def test_a_format_is_written_checked_and_named_as_in_its_output(tmp_path):
    """TorchScript holds no int8: one full-precision artifact, named as under the output URI, proven."""
    (artifact,) = _export_format("torchscript", inputs_for(Llama(BLOCKS).eval()), tmp_path, "int8")
    assert (artifact.format, artifact.quantization, artifact.name) == ("torchscript", "none", "model.torchscript.pt")
    assert artifact.path == tmp_path / "model.torchscript.pt" and artifact.path.is_file()
    assert artifact.passed and artifact.validation["greedyMatch"] is True
