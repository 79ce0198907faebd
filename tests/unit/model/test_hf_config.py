"""Hugging Face config.json read as our shape; spec.model resolved against it; what is refused, by key."""

from __future__ import annotations

import json

import pytest

from llmtrain.api.trainingrun import ModelSpec
from llmtrain.model import hf_config
from llmtrain.model.shape import LlamaConfig, ShapeMismatch, resolve

BASE = {
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}


def parse(**changes) -> LlamaConfig:
    return hf_config.parse(json.dumps({**BASE, **changes}), "m/config.json")


def test_transformers_4_and_5_spell_rope_theta_differently():
    assert parse(rope_theta=500000.0).rope_theta == 500000.0
    five = parse(rope_parameters={"rope_theta": 250000.0, "rope_type": "default"})
    assert five == LlamaConfig(512, 2, 64, 4, 2, 128, 128, 250000.0, 1e-6, True)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"model_type": "mistral"}, "model_type is 'mistral'"),
        ({"attention_bias": True}, "attention_bias is True"),
        ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "RoPE scaling"),
        ({"head_dim": 32}, "head_dim 32"),
        ({"num_key_value_heads": 3}, "num_key_value_heads 3"),
        ({"num_hidden_layers": 10**9}, "num_hidden_layers is 1000000000, not a whole number from 1 to 512"),
        ({"max_position_embeddings": True}, "max_position_embeddings is True"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings is .yes."),
        ({"vocab_size": 0}, "vocab_size is 0"),
        ({"rms_norm_eps": "tiny"}, "rms_norm_eps is 'tiny'"),
    ],
)
def test_what_is_not_our_llama_is_refused_by_key(changes, named):
    with pytest.raises(ShapeMismatch, match=named):
        parse(**changes)


def test_spec_model_must_agree_with_the_weights_field_by_field():
    base = parse(rope_theta=500000.0)
    assert resolve(None, 512, base, "m") == base
    assert resolve(ModelSpec(layers=2, kv_heads=2, tie_embeddings=True), 512, base, "m") == base
    assert resolve(ModelSpec(max_seq_len=32), 512, base, "m").max_seq_len == 32  # the window is free
    with pytest.raises(ShapeMismatch, match=r"spec.model.layers is 3, but the weights in m have 2"):
        resolve(ModelSpec(layers=3, hidden_size=64), 512, base, "m")
    with pytest.raises(ShapeMismatch, match=r"spec.model.ropeTheta is 10000.0, .* have 500000.0"):
        resolve(ModelSpec(rope_theta=10000.0), 512, base, "m")


def test_a_spec_without_weights_needs_its_shape():
    with pytest.raises(ShapeMismatch, match=r"spec\.model: hiddenSize, heads must be set"):
        LlamaConfig.from_spec(ModelSpec(layers=2), 512)
    config = LlamaConfig.from_spec(ModelSpec(layers=2, hidden_size=64, heads=4), 512)
    assert (config.max_seq_len, config.rope_theta, config.norm_eps, config.tie_embeddings) == (2048, 1e4, 1e-5, False)
