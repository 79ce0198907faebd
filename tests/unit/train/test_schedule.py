"""The learning-rate schedules as functions of the step, warmup-stable-decay among them."""

from __future__ import annotations

import itertools

import pytest

from llmtrain.api.trainingrun import SchedulerSpec
from llmtrain.train.optim import lr_factor


def test_wsd_warms_up_holds_the_peak_then_decays_to_the_floor():
    spec = SchedulerSpec(type="wsd", warmup_steps=10, decay_steps=20, min_lr_ratio=0.1)
    factors = [lr_factor(step, 100, spec) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert all(f == 1.0 for f in factors[10:80])  # stable until the last decaySteps
    assert all(a > b for a, b in itertools.pairwise(factors[79:]))  # strictly decaying
    assert factors[99] == pytest.approx(0.1)
    assert factors[89] == pytest.approx(1 - 0.9 * 0.5)  # halfway through a linear decay


def test_wsd_sqrt_decay_and_the_default_decay_length():
    sqrt = SchedulerSpec(type="wsd", decay_steps=20, decay_shape="sqrt", min_lr_ratio=0.0)
    assert lr_factor(84, 100, sqrt) == pytest.approx(1 - (5 / 20) ** 0.5)
    default = SchedulerSpec(type="wsd", min_lr_ratio=0.0)  # the last fifth decays
    assert lr_factor(79, 100, default) == 1.0 and lr_factor(80, 100, default) < 1.0
    assert lr_factor(99, 100, default) == 0.0


def test_the_api_refuses_a_decay_longer_than_the_run():
    from pydantic import ValidationError

    from llmtrain.api.trainingrun import TrainingSpec

    with pytest.raises(ValidationError, match="warmupSteps \\+ decaySteps must not exceed maxSteps"):
        TrainingSpec(max_steps=10, scheduler=SchedulerSpec(type="wsd", warmup_steps=5, decay_steps=6))
