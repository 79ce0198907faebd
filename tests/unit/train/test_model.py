"""The model against transformers' LlamaForCausalLM, and the pure pieces of training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmtrain.api.trainingrun import ModelSpec, SchedulerSpec
from llmtrain.model.flops import device_peak, flops_per_token
from llmtrain.model.hf import hf_model
from llmtrain.model.llama import Llama, LlamaConfig, count_parameters, default_intermediate_size
from llmtrain.train.loader import Batches, TokenStream
from llmtrain.train.optim import lr_factor


def sharp(model: Llama) -> Llama:
    """Seeded weights with large query/key projections: attention far from uniform, so that position
    handling (RoPE) decides the logits; at the 0.02 init scale a wrong RoPE would hardly show."""
    model.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.q_proj.weight.mul_(40)
            block.self_attn.k_proj.weight.mul_(40)
    return model


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_logits_identical_to_transformers(tied, kv_heads):
    config = LlamaConfig(
        vocab_size=512,
        layers=2,
        hidden_size=64,
        heads=4,
        kv_heads=kv_heads,
        intermediate_size=160,
        max_seq_len=48,
        rope_theta=500000.0,
        tie_embeddings=tied,
    )
    ours = sharp(Llama(config))
    theirs = hf_model(config)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # the same names: export is a plain save
    tokens = torch.randint(0, 512, (3, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(ours(tokens), theirs(tokens).logits, atol=1e-4, rtol=1e-4)


def test_a_wrong_rope_convention_would_be_caught():
    """The equality test can fail: swapping q/k rows into the interleaved convention breaks it."""
    config = LlamaConfig(
        vocab_size=128, layers=1, hidden_size=32, heads=2, kv_heads=2, intermediate_size=64, max_seq_len=16
    )
    ours = sharp(Llama(config))
    state = ours.state_dict()
    q = state["model.layers.0.self_attn.q_proj.weight"]
    state["model.layers.0.self_attn.q_proj.weight"] = q.view(2, 2, 8, 32).transpose(1, 2).reshape(32, 32)
    theirs = hf_model(config)
    theirs.load_state_dict(state)
    tokens = torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(tokens) - theirs(tokens).logits).abs().max() > 0.05


def test_sizes_parameters_and_flops():
    spec = ModelSpec(layers=4, hidden_size=256, heads=8)
    config = LlamaConfig.from_spec(spec, vocab_size=4096)
    assert config.kv_heads == 8 and config.intermediate_size == default_intermediate_size(256) == 768
    model = Llama(config)
    embedding = 4096 * 256
    per_block = 4 * 256 * 256 + 3 * 256 * 768 + 2 * 256
    assert count_parameters(model) == 2 * embedding + 4 * per_block + 256
    assert count_parameters(model, exclude_embedding=True) == embedding + 4 * per_block + 256
    tied = Llama(LlamaConfig.from_spec(ModelSpec(layers=4, hidden_size=256, heads=8, tie_embeddings=True), 4096))
    assert count_parameters(tied) == embedding + 4 * per_block + 256
    n = count_parameters(model, exclude_embedding=True)
    assert flops_per_token(config, n) == 6 * n + 12 * 4 * 256 * 2048
    assert device_peak("NVIDIA H100 80GB HBM3", True) == 989e12 and device_peak("Tesla T4", True) is None


def test_initialization_is_seeded_and_scaled():
    config = LlamaConfig(
        vocab_size=256, layers=8, hidden_size=128, heads=4, kv_heads=4, intermediate_size=256, max_seq_len=16
    )
    a, b = Llama(config), Llama(config)
    a.init_weights(torch.Generator().manual_seed(3))
    b.init_weights(torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    q = a.model.layers[0].self_attn.q_proj.weight.std().item()
    o = a.model.layers[0].self_attn.o_proj.weight.std().item()
    assert q == pytest.approx(0.02, rel=0.05) and o == pytest.approx(0.02 / 4, rel=0.05)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.5, 1.0, 1.0, 0.55, 0.1]),
        ("cosine", [0.5, 1.0, 1.0, 0.55, 0.1]),  # halfway through the decay cosine and linear agree
    ],
)
def test_schedules(kind, expected):
    spec = SchedulerSpec(type=kind, warmup_steps=2, min_lr_ratio=0.1)
    assert [lr_factor(step, 4, spec) for step in range(5)] == pytest.approx(expected)
    if kind == "cosine":
        assert lr_factor(1, 6, SchedulerSpec(type=kind, min_lr_ratio=0.0)) > lr_factor(
            1, 6, SchedulerSpec(type="linear", min_lr_ratio=0.0)
        )


def test_batches_are_a_function_of_seed_and_step_and_split_by_rank():
    stream = TokenStream([np.arange(5000, dtype=np.uint16), np.arange(5000, 9000, dtype=np.uint16)])
    assert np.array_equal(stream.window(4990, 20), np.arange(4990, 5010))  # across a shard boundary
    whole = Batches(stream, stream, seq_len=16, micro_batch=2, accumulation=2, rank=0, world=1, seed=5)
    halves = [Batches(stream, stream, 16, 2, 1, rank, 2, 5) for rank in (0, 1)]
    for step in (0, 7, 123):
        mine = torch.cat([x for x, _ in whole.step(step)])
        theirs = torch.cat([x for h in halves for x, _ in h.step(step)])
        assert torch.equal(mine, theirs)
        x, y = whole.step(step)[0]
        assert torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(whole.step(1)[0][0], whole.step(2)[0][0])
    assert len(whole.validation_batches(3)) == 3
