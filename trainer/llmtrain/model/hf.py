"""The Hugging Face twin of a model: the same shape as a transformers `LlamaConfig`."""

from __future__ import annotations

from typing import Any

from .llama import LlamaConfig


def hf_config(config: LlamaConfig) -> Any:
    """transformers' LlamaConfig for our config: `LlamaForCausalLM(hf_config(c))` loads our state dict."""
    from transformers import LlamaConfig as HfConfig

    return HfConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=config.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )


def hf_model(config: LlamaConfig) -> Any:
    """An (untrained) transformers `LlamaForCausalLM` of the same shape."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(hf_config(config))
