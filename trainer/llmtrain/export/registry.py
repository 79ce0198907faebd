"""Every export format by its API name (`spec.formats`): the one table the pipeline looks formats up in."""

from __future__ import annotations

from . import gguf, hf, onnx, torchscript
from .formats import ExportFormat

FORMATS: dict[str, ExportFormat] = {
    "safetensors": hf.FORMAT,
    "onnx": onnx.FORMAT,
    "gguf": gguf.FORMAT,
    "torchscript": torchscript.FORMAT,
}
