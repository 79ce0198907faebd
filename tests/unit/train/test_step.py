"""The training step on its own: accumulation, the schedule, and a divergence that never reaches the weights."""

from __future__ import annotations

import math

import pytest
import torch

from llmtrain.api.trainingrun import AlertsSpec, TrainingSpec
from llmtrain.model.llama import Llama, LlamaConfig
from llmtrain.train.anomalies import AnomalyDetector
from llmtrain.train.distributed import World
from llmtrain.train.optim import build_optimizer, lr_factor
from llmtrain.train.precision import Precision
from llmtrain.train.step import TrainStep

CONFIG = LlamaConfig(vocab_size=64, layers=2, hidden_size=16, heads=2, kv_heads=1, intermediate_size=32, max_seq_len=8)
ONE = World(0, 0, 1, torch.device("cpu"))


def training(**changes) -> TrainingSpec:
    fields = {"max_steps": 10, "max_grad_norm": 1.0, "scheduler": {"warmup_steps": 4}, **changes}
    return TrainingSpec.model_validate(fields)


def step_of(spec: TrainingSpec, grad_norm_max: float | None = None) -> TrainStep:
    model = Llama(CONFIG)
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = build_optimizer(model, spec.optimizer)
    detector = AnomalyDetector(AlertsSpec(grad_norm_max=grad_norm_max))
    return TrainStep(model, optimizer, spec, Precision("fp32", "cpu", False), ONE, detector)


def batch(sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, CONFIG.vocab_size, (sequences, 9), generator=torch.Generator().manual_seed(7))
    return tokens[:, :-1], tokens[:, 1:]


def split(inputs: torch.Tensor, targets: torch.Tensor, parts: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(inputs.chunk(parts), targets.chunk(parts), strict=True))


def test_accumulated_micro_batches_make_the_step_of_the_whole_batch():
    whole, accumulated = step_of(training()), step_of(training())
    inputs, targets = batch(4)
    one = whole(0, [(inputs, targets)])
    four = accumulated(0, split(inputs, targets, 4))
    assert one.loss == pytest.approx(four.loss, rel=1e-6) and one.grad_norm == pytest.approx(four.grad_norm, rel=1e-5)
    for a, b in zip(whole.model.parameters(), accumulated.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(p.grad is None for p in whole.model.parameters())  # no gradient outlives the step


def test_the_learning_rate_follows_the_schedule_and_the_weights_move():
    spec = training()
    step = step_of(spec)
    before = [p.detach().clone() for p in step.model.parameters()]
    outcome = step(2, [batch(2)])
    assert outcome.lr == spec.optimizer.lr * lr_factor(2, 10, spec.scheduler) == step.optimizer.param_groups[0]["lr"]
    assert outcome.alerts == [] and outcome.divergence is None and outcome.seconds > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters(), strict=True))


def test_a_nan_weight_diverges_before_the_update():
    step = step_of(training())
    with torch.no_grad():
        step.model.model.norm.weight[0] = float("nan")  # every position's logits go through the final norm
    before = [p.detach().clone() for p in step.model.parameters()]
    outcome = step(5, [batch(2)])
    assert math.isnan(outcome.loss) and outcome.grad_norm is None  # stopped at the loss: no norm measured
    assert outcome.divergence is not None and outcome.divergence.type == "NonFiniteLoss"
    assert outcome.divergence.severity == "critical" and outcome.divergence.step == 5
    for a, b in zip(before, step.model.parameters(), strict=True):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())  # AdamW did not step
    assert all(p.grad is None for p in step.model.parameters())
    assert step.optimizer.state == {}


def test_warnings_are_raised_in_order_and_do_not_stop_the_step():
    step = step_of(training(max_grad_norm=0.0), grad_norm_max=1e-9)
    outcome = step(0, [batch(2)])
    assert [a.type for a in outcome.alerts] == ["GradNormHigh"] and outcome.divergence is None
    assert step.optimizer.state  # the update happened
