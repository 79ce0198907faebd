"""fp16's loss scaler: skipped steps that leave the weights alone, the scale's floor, its state in checkpoints,
and the figures the trainer reports."""

from __future__ import annotations

import math

import pytest
import torch
from unit.train.test_reporting import Clock, reporter_for
from unit.train.test_step import batch, training
from unit.train.test_step import step_of as fp32_step_of

from llmtrain.train import step as step_module
from llmtrain.train.anomalies import is_divergence
from llmtrain.train.loss_scale import INIT_SCALE, MIN_SCALE, LossScale, LossScaler, loss_scaler, skip_alert
from llmtrain.train.precision import Precision
from llmtrain.train.state import TrainState
from llmtrain.train.step import StepOutcome, poison


def fp16_step_of(init_scale: float = INIT_SCALE):
    step = fp32_step_of(training())
    step.precision = Precision("fp16", "cpu", False)
    step.scaler = LossScaler("cpu", False, init_scale=init_scale)
    return step


def weights(step) -> list[torch.Tensor]:
    return [p.detach().clone() for p in step.model.parameters()]


def unchanged(before: list[torch.Tensor], step) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, step.model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("name", "device", "sharded"), [("bf16", "cuda", True), ("bf16", "cpu", False), ("fp32", "cuda", False)]
)
def test_only_fp16_gets_a_scaler(name, device, sharded):
    assert loss_scaler(Precision(name, device, sharded)) is None


def test_fp16_on_one_process_gets_a_scaler_at_the_initial_scale():
    scaler = loss_scaler(Precision("fp16", "cpu", False))
    assert scaler is not None and scaler.state == LossScale(INIT_SCALE, 0)


def test_a_good_step_updates_and_an_overflowing_one_is_skipped_with_the_scale_halved():
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    scaler = LossScaler("cpu", False, init_scale=8.0)
    for overflow in (False, True):
        scaler.scale(layer(torch.ones(2, 4)).mean()).backward()
        if overflow:
            layer.weight.grad[0, 0] = float("inf")
        before = [p.detach().clone() for p in layer.parameters()]
        scaler.unscale(optimizer)
        skipped = scaler.step(optimizer)
        moved = any(not torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
        assert skipped == overflow and moved != overflow
        optimizer.zero_grad(set_to_none=True)
    assert scaler.state == LossScale(4.0, 0)  # one good step counted, then reset by the overflow


def test_the_state_round_trips_through_a_checkpoint_record():
    scaler = LossScaler("cpu", False, init_scale=8.0)
    scaler.load(LossScale(512.0, 17))
    assert scaler.state == LossScale(512.0, 17)
    assert LossScale.from_json(scaler.state.to_json()) == LossScale(512.0, 17)
    assert scaler.state.to_json() == {"scale": 512.0, "growthTracker": 17}
    scaler.load(None)  # nothing recorded: the scale stays
    assert scaler.state == LossScale(512.0, 17)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"scale": 2.0},
        {"scale": 0, "growthTracker": 0},
        {"scale": -2.0, "growthTracker": 0},
        {"scale": float("nan"), "growthTracker": 0},
        {"scale": float("inf"), "growthTracker": 0},
        {"scale": True, "growthTracker": 0},
        {"scale": "2", "growthTracker": 0},
        {"scale": 2.0, "growthTracker": -1},
        {"scale": 2.0, "growthTracker": 1.5},
        {"scale": 2.0, "growthTracker": False},
    ],
)
def test_a_malformed_record_is_not_a_state(raw):
    assert LossScale.from_json(raw) is None


def test_a_skip_warns_above_the_floor_and_diverges_below_it_suggesting_bf16():
    warning = skip_alert(7, MIN_SCALE)
    assert warning.type == "StepSkipped" and warning.severity == "warning" and warning.step == 7
    assert not is_divergence(warning) and "lowered to 1" in warning.message
    divergence = skip_alert(7, MIN_SCALE / 2)
    assert is_divergence(divergence) and divergence.severity == "critical"
    assert "fp16" in divergence.message and "bf16" in divergence.message


def test_fp16_trains_on_cpus_in_16_bits_with_the_scale_reported():
    step = fp16_step_of()
    seen: list[torch.dtype] = []
    step.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    before = weights(step)
    outcome = step(2, [batch(2)])
    assert seen == [torch.float16]  # autocast ran the matmuls in fp16
    assert not outcome.skipped and outcome.divergence is None and outcome.alerts == []
    assert outcome.loss_scale == LossScale(INIT_SCALE, 1) and math.isfinite(outcome.grad_norm)
    assert not unchanged(before, step) and all(p.dtype == torch.float32 for p in step.model.parameters())
    assert all(p.grad is None for p in step.model.parameters())


@pytest.mark.parametrize("kind", ["overflow", "gradient"])
def test_fp16_skips_a_step_whose_gradients_overflow(monkeypatch, kind):
    monkeypatch.setattr(step_module, "POISON", f"{kind}:3")
    step = fp16_step_of()
    before = weights(step)
    outcome = step(3, [batch(2)])
    assert outcome.skipped and outcome.grad_norm is None and math.isfinite(outcome.loss)
    assert outcome.divergence is None and [a.type for a in outcome.alerts] == ["StepSkipped"]
    assert outcome.loss_scale == LossScale(INIT_SCALE / 2, 0)
    assert unchanged(before, step) and step.optimizer.state == {}  # AdamW never stepped
    assert all(p.grad is None for p in step.model.parameters())
    after = step(4, [batch(2)])  # the next step trains again
    assert not after.skipped and not unchanged(before, step)


def test_fp16_diverges_when_the_scale_falls_below_its_floor(monkeypatch):
    monkeypatch.setattr(step_module, "POISON", "overflow:0")
    outcome = fp16_step_of(init_scale=MIN_SCALE)(0, [batch(2)])
    assert outcome.skipped and outcome.loss_scale.scale == MIN_SCALE / 2
    assert outcome.divergence is not None and "bf16" in outcome.divergence.message


def test_an_overflow_under_fp32_is_still_a_divergence(monkeypatch):
    monkeypatch.setattr(step_module, "POISON", "overflow:1")
    step = fp32_step_of(training())
    outcome = step(1, [batch(2)])
    assert not outcome.skipped and outcome.loss_scale is None
    assert outcome.divergence is not None and outcome.grad_norm == float("inf")


def test_the_overflow_poison_strikes_rank_0_only(monkeypatch):
    monkeypatch.setattr(step_module, "POISON", "overflow:5")
    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.zeros(2, 2)
    poison(model, "overflow", 5, rank=1)
    assert torch.equal(model.weight.grad, torch.zeros(2, 2))
    poison(model, "overflow", 5, rank=0)
    assert torch.isinf(model.weight.grad).all()


def test_the_state_counts_skipped_steps_and_checkpoints_the_scale():
    state = TrainState()
    state.advance(3.0, 10, skipped=True, loss_scale=LossScale(32768.0, 0))
    state.advance(2.9, 10, loss_scale=LossScale(32768.0, 1))
    assert state.skipped_steps == 1 and state.step == 2
    record = state.scaling_record()
    assert record == {"skippedSteps": 1, "lossScale": {"scale": 32768.0, "growthTracker": 1}}
    resumed = TrainState()
    resumed.restore_scaling({"step": 2, **record})
    assert (resumed.skipped_steps, resumed.loss_scale) == (1, LossScale(32768.0, 1))
    resumed.restore_scaling({"step": 2, "skippedSteps": -3, "lossScale": {"scale": "big"}})  # malformed: afresh
    assert (resumed.skipped_steps, resumed.loss_scale) == (0, None)
    assert TrainState().scaling_record() == {"skippedSteps": 0}  # bf16 and fp32: no scale


def test_fp16_metrics_carry_the_scale_and_the_skipped_steps(tmp_path, caplog):
    reporter, metrics = reporter_for(tmp_path, Clock(), log_every=1)
    state = TrainState()
    scale = LossScale(16384.0, 0)
    state.advance(3.0, 100, skipped=True, loss_scale=scale)
    skipped = StepOutcome(3.0, None, 1e-3, 2.0, [], skipped=True, loss_scale=scale)
    with caplog.at_level("INFO", logger="llmtrain.train"):
        reporter.trained(skipped, state, None)
    values = metrics.logged[-1][1]
    assert values["lossScale"] == 16384.0 and values["skippedSteps"] == 1 and values["gradNorm"] is None
    assert any("grad skipped scale 16384" in r.getMessage() for r in caplog.records)
    state.advance(3.0, 100)
    reporter.trained(StepOutcome(3.0, 0.5, 1e-3, 2.0, []), state, None)
    assert not {"lossScale", "skippedSteps"} & set(metrics.logged[-1][1])  # bf16 and fp32 report no scale


@pytest.fixture
def world_of_one():
    """A gloo process group of one process, for FSDP2 and the sharded scaler."""
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield
    dist.destroy_process_group()


def test_the_sharded_scaler_skips_with_fused_adamw_on_fsdp2(world_of_one):
    """FSDP2 with fp16 parameters and fused AdamW (the GPU combination): a good step updates the sharded
    weights, an overflowing one leaves them and halves the scale."""
    from torch.distributed.fsdp import fully_shard

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    policy = Precision("fp16", "cpu", True).fsdp_policy()
    for layer in model:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    scaler = loss_scaler(Precision("fp16", "cpu", True))
    for overflow in (False, True):
        scaler.scale(model(torch.ones(2, 8)).float().mean()).backward()
        if overflow:
            next(model.parameters()).grad.to_local().fill_(float("inf"))
        before = [p.to_local().clone() for p in model.parameters()]
        scaler.unscale(optimizer)
        assert scaler.step(optimizer) == overflow
        moved = any(not torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters(), strict=True))
        assert moved != overflow
        optimizer.zero_grad(set_to_none=True)
    assert scaler.state == LossScale(INIT_SCALE / 2, 0)
