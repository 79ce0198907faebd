"""A Hugging Face Llama `config.json` read as our shape, or refused with the key that does not fit.

torch-free: the trainer reads it before building anything. What a Llama of this codebase is: no biases,
SiLU gating, head size hidden/heads, plain RoPE (no `rope_scaling`), RMSNorm. Anything else is refused
naming the key, rather than loaded into a model that would compute something else.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..json_object import parse_object
from .shape import LlamaConfig, ShapeMismatch

#: config.json keys whose value must be exactly this for our Llama to compute what the weights expect.
FIXED = {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu"}
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
#: The largest value of each size key: spec.model's limits (and the tokenizer's), so a hostile config.json
#: cannot make the trainer allocate what a spec could not ask for.
LIMITS = {
    "vocab_size": 1_048_576,
    "hidden_size": 65536,
    "intermediate_size": 262144,
    "num_hidden_layers": 512,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "max_position_embeddings": 1_048_576,
}


def parse(raw: bytes | str, where: str) -> LlamaConfig:
    """The shape `config.json` (at `where`) describes; ShapeMismatch naming the key when it is no Llama we load."""
    config = parse_object(raw, where, ShapeMismatch)
    _check_family(config, where)
    sizes = {key: _whole(config, key, where) for key in LIMITS if key in config or key in REQUIRED}
    heads, hidden = sizes["num_attention_heads"], sizes["hidden_size"]
    kv_heads = sizes.get("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ShapeMismatch(f"{where}: num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")
    if hidden % heads or (hidden // heads) % 2:
        raise ShapeMismatch(f"{where}: hidden_size {hidden} / num_attention_heads {heads} is not an even head size")
    if config.get("head_dim") not in (None, hidden // heads):
        raise ShapeMismatch(
            f"{where}: head_dim {config['head_dim']} is not hidden_size / num_attention_heads ({hidden // heads}):"
            " not supported"
        )
    tied = config.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise ShapeMismatch(f"{where}: tie_word_embeddings is {tied!r}, not true or false")
    return LlamaConfig(
        vocab_size=sizes["vocab_size"],
        layers=sizes["num_hidden_layers"],
        hidden_size=hidden,
        heads=heads,
        kv_heads=kv_heads,
        intermediate_size=sizes["intermediate_size"],
        max_seq_len=sizes.get("max_position_embeddings", 2048),
        rope_theta=_rope_theta(config, where),
        norm_eps=_positive_float(config, "rms_norm_eps", where, 1e-6),
        tie_embeddings=tied,
    )


def _check_family(config: dict[str, Any], where: str) -> None:
    """A LlamaForCausalLM with no feature our model lacks."""
    if config.get("model_type") != "llama":
        raise ShapeMismatch(
            f"{where}: model_type is {config.get('model_type')!r}; only Hugging Face Llama models (model_type llama)"
            " can be loaded"
        )
    for key, value in FIXED.items():
        if key in config and config[key] != value:
            raise ShapeMismatch(f"{where}: {key} is {config[key]!r}; only {value!r} is supported")
    parameters = config.get("rope_parameters") or {}
    kind = parameters.get("rope_type", "default") if isinstance(parameters, dict) else "unreadable"
    if config.get("rope_scaling") or kind != "default":
        described = json.dumps(config.get("rope_scaling") or parameters)[:200]
        raise ShapeMismatch(
            f"{where}: RoPE scaling {described} is not supported (plain RoPE only; rope_theta may be anything):"
            " start from a model without RoPE scaling"
        )


def _rope_theta(config: dict[str, Any], where: str) -> float:
    """RoPE's base: `rope_theta` (transformers 4) or `rope_parameters.rope_theta` (transformers 5)."""
    if "rope_theta" in config:
        return _positive_float(config, "rope_theta", where, 10000.0)
    return _positive_float(config.get("rope_parameters") or {}, "rope_theta", f"{where} (rope_parameters)", 10000.0)


def _whole(config: dict[str, Any], key: str, where: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= LIMITS[key]:
        raise ShapeMismatch(f"{where}: {key} is {value!r}, not a whole number from 1 to {LIMITS[key]}")
    return value


def _positive_float(config: dict[str, Any], key: str, where: str, default: float) -> float:
    value = config.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ShapeMismatch(f"{where}: {key} is {value!r}, not a positive number")
    return float(value)
