"""The validator: its schedule, and the figures it returns."""

from __future__ import annotations

import math

import pytest
import torch

from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train.distributed import World
from llmtrain.train.validation import Validator

CONFIG = LlamaConfig(vocab_size=32, layers=1, hidden_size=16, heads=2, kv_heads=2, intermediate_size=32, max_seq_len=8)
ONE = World(0, 0, 1, torch.device("cpu"))


def batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    tokens = torch.randint(0, CONFIG.vocab_size, (count, 2, 9), generator=torch.Generator().manual_seed(3))
    return [(t[:, :-1], t[:, 1:]) for t in tokens]


def model() -> Llama:
    built = Llama(CONFIG)
    built.init_weights(torch.Generator().manual_seed(0))
    return built


def test_validates_every_n_steps_and_at_the_last_step():
    validator = Validator(model(), batches(1), every_steps=8, world=ONE)
    assert [s for s in range(1, 30) if validator.should_validate(s)] == [8, 16, 24]
    assert validator.should_validate(29, last_step=True) and not validator.should_validate(29)


def test_never_without_validation_batches():
    validator = Validator(model(), [], every_steps=1, world=ONE)
    assert not any(validator.should_validate(s, last_step=True) for s in range(1, 5))


def test_the_figures_are_the_mean_loss_its_perplexity_and_the_accuracy():
    validated, data = model(), batches(3)
    figures = Validator(validated, data, every_steps=8, world=ONE).validate()
    assert validated.training  # back in training mode
    with torch.no_grad():
        logits = torch.cat([validated(x) for x, _ in data])
        targets = torch.cat([y for _, y in data])
    expected = torch.nn.functional.cross_entropy(logits.view(-1, CONFIG.vocab_size), targets.reshape(-1)).item()
    accuracy = (logits.argmax(-1) == targets).float().mean().item()
    assert figures["valLoss"] == pytest.approx(expected, rel=1e-6)
    assert figures["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    assert figures["accuracy"] == pytest.approx(accuracy)
    assert math.log(CONFIG.vocab_size) - 0.5 < figures["valLoss"] < math.log(CONFIG.vocab_size) + 0.5  # untrained
