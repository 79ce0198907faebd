"""The one interface every export format implements, and what the pipeline hands it.

A format writes the model as a full-precision artifact and proves it in its runtime against the training
model (`validate`); when it holds the spec's quantization it also writes a quantized artifact beside it
and judges that by validation perplexity against the full-precision one (`validate_quantized`). The
pipeline finds each format in `registry.FORMATS` by its API name and drives it through this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..api.modelexport import ExportValidationSpec
    from ..model.llama import Llama

#: The quantization of every full-precision artifact.
FULL_PRECISION = "none"


@dataclass(frozen=True)
class ExportInputs:
    """The model and what its artifacts are checked with: the training tokenizer, validation prompts,
    a tokenizer test corpus, perplexity windows (drawn when a quantized artifact needs them) and limits."""

    model: Llama
    tokenizer_dir: Path
    training_tokenizer: Any
    prompts: list[list[int]]
    corpus: list[str]
    draw_windows: Callable[[], list[list[int]]]
    limits: ExportValidationSpec


class ExportFormat(Protocol):
    """One deployable format: writes its artifacts into a staging directory and checks them there."""

    def quantization(self, model: Llama, requested: str) -> str | None:
        """The quantization of the quantized artifact written for the spec's `requested` one (None: this
        format writes none for it); raises ExportError, before anything is written, if the model cannot
        take it."""
        ...

    def write(self, inputs: ExportInputs, staging: Path, quantization: str) -> Path:
        """Write the artifact (`FULL_PRECISION` first, then the quantized one beside it) into `staging`;
        its name there is its name under the output URI."""
        ...

    def validate(self, inputs: ExportInputs, artifact: Path) -> dict[str, Any]:
        """The full-precision artifact's check in its runtime against the training model."""
        ...

    def validate_quantized(self, inputs: ExportInputs, artifact: Path, full: Path, quantization: str) -> dict[str, Any]:
        """The quantized artifact's check: validation perplexity against the full-precision `full`."""
        ...


class FullPrecisionOnly:
    """Base of a format that holds no quantization: it writes and checks its full-precision artifact only."""

    def quantization(self, model: Llama, requested: str) -> None:
        return None

    def validate_quantized(self, inputs: ExportInputs, artifact: Path, full: Path, quantization: str) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} writes no quantized artifact to validate")
