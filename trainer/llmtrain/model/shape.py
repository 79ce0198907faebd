"""The Llama's shape and its arithmetic, without torch: what a spec's `model` resolves to, and how many
parameters that holds. The model (`llama.py`), the FLOPs and memory estimates, and the operator (the
grace period a save needs) all count from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pydantic.alias_generators import to_camel

from ..errors import BadInput

if TYPE_CHECKING:
    from ..api.trainingrun import ModelSpec


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    @property
    def kv_width(self) -> int:
        """Width of the key (and of the value) projection: kv heads x head size (grouped-query attention)."""
        return self.kv_heads * self.head_dim

    @classmethod
    def from_spec(cls, spec: ModelSpec | None, vocab_size: int) -> LlamaConfig:
        """The shape a TrainingRun's `spec.model` asks for, its defaults resolved (layers, hiddenSize and
        heads are required: without spec.init nothing else names them)."""
        missing = [name for name in ("layers", "hidden_size", "heads") if getattr(spec, name, None) is None]
        if spec is None or missing:
            fields = ", ".join(to_camel(name) for name in missing or ["layers", "hidden_size", "heads"])
            raise ShapeMismatch(f"spec.model: {fields} must be set (or spec.init must name weights to start from)")
        assert spec.layers and spec.hidden_size and spec.heads  # for the type checker: checked above
        return cls(
            vocab_size=vocab_size,
            layers=spec.layers,
            hidden_size=spec.hidden_size,
            heads=spec.heads,
            kv_heads=spec.kv_heads or spec.heads,
            intermediate_size=spec.intermediate_size or default_intermediate_size(spec.hidden_size),
            max_seq_len=spec.max_seq_len or DEFAULT_MAX_SEQ_LEN,
            rope_theta=DEFAULT_ROPE_THETA if spec.rope_theta is None else spec.rope_theta,
            norm_eps=DEFAULT_NORM_EPS if spec.norm_eps is None else spec.norm_eps,
            tie_embeddings=bool(spec.tie_embeddings),
        )


class ShapeMismatch(BadInput, ValueError):
    """A spec.model that cannot be built, or that contradicts the weights it starts from (exit 2)."""


DEFAULT_MAX_SEQ_LEN = 2048
DEFAULT_ROPE_THETA = 10000.0
DEFAULT_NORM_EPS = 1e-5
#: spec.model's fields a starting point's config fixes (maxSeqLen, the training window, is free).
WEIGHT_FIELDS = (
    "layers",
    "hidden_size",
    "heads",
    "kv_heads",
    "intermediate_size",
    "rope_theta",
    "norm_eps",
    "tie_embeddings",
)


def resolve(spec: ModelSpec | None, vocab_size: int, base: LlamaConfig | None, origin: str = "") -> LlamaConfig:
    """The shape a run trains: `spec.model` alone, or the starting weights' shape `base` (from `origin`)
    with which every field the spec gives must agree; maxSeqLen may differ (it is no weight's shape)."""
    if base is None:
        return LlamaConfig.from_spec(spec, vocab_size)
    for name in WEIGHT_FIELDS:
        given = getattr(spec, name, None) if spec is not None else None
        if given is not None and given != getattr(base, name):
            raise ShapeMismatch(
                f"spec.model.{to_camel(name)} is {given}, but the weights in {origin} have {getattr(base, name)}:"
                f" remove spec.model.{to_camel(name)} (it is read from the weights) or start from other weights"
            )
    max_seq_len = (spec.max_seq_len if spec is not None else None) or base.max_seq_len
    return replace(base, max_seq_len=max_seq_len)


def default_intermediate_size(hidden_size: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4 x hidden, rounded up to a multiple of 256."""
    size = int(2 * 4 * hidden_size / 3)
    return multiple_of * math.ceil(size / multiple_of)


def block_parameters(config: LlamaConfig) -> int:
    """Parameters of one transformer block: attention, SwiGLU MLP and two norms."""
    hidden = config.hidden_size
    attention = 2 * hidden * config.heads * config.head_dim + 2 * hidden * config.kv_width
    return attention + 3 * hidden * config.intermediate_size + 2 * hidden


def embedding_parameters(config: LlamaConfig) -> int:
    """The input embedding (with tied embeddings also the output projection: one matrix)."""
    return config.vocab_size * config.hidden_size


def root_parameters(config: LlamaConfig) -> int:
    """Parameters outside the blocks: the embedding, the final norm and the (untied) output projection."""
    output = 0 if config.tie_embeddings else config.vocab_size * config.hidden_size
    return embedding_parameters(config) + output + config.hidden_size


def parameter_count(config: LlamaConfig, exclude_embedding: bool = False) -> int:
    """Distinct parameters of `Llama(config)` (tied weights once), without building it; without the input
    embedding when asked (tied: the one shared matrix), as `llama.count_parameters` counts them."""
    total = config.layers * block_parameters(config) + root_parameters(config)
    return total - embedding_parameters(config) if exclude_embedding else total


def spec_parameter_count(spec: ModelSpec | None, vocab_size: int) -> int:
    """Parameters of the Llama a TrainingRun's `spec.model` trains over a vocabulary of `vocab_size`."""
    return parameter_count(LlamaConfig.from_spec(spec, vocab_size))
