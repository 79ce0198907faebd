"""One optimizer step: learning rate, forward and backward over the micro-batches, checks, clip, AdamW
(under fp16 through the loss scaler, which skips a step whose gradients overflowed)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from ..api.trainingrun import TrainingSpec
from ..core.progress import Alert
from ..model.llama import Llama
from . import distributed
from .anomalies import AnomalyDetector, is_divergence
from .distributed import World
from .loss_scale import LossScale, LossScaler, loss_scaler, skip_alert
from .optim import lr_factor, set_lr
from .precision import Precision

#: Fault injection (tests, drills), inert unless set: `weight:N` writes NaN into a weight before the
#: 0-based step N's forward pass, `gradient:N` into a gradient after its backward pass, `overflow:N` +inf
#: into a gradient after its backward pass on rank 0 only (fp16 skips the step on every rank).
POISON = os.environ.get("LLMTRAIN_TEST_POISON", "")
POISON_VALUES = {"weight": float("nan"), "gradient": float("nan"), "overflow": float("inf")}

MicroBatches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StepOutcome:
    loss: float  # mean over the micro-batches and the ranks
    grad_norm: float | None  # None when the loss diverged before the norm was measured, or the step was skipped
    lr: float
    seconds: float  # from the first forward pass to the update, data loading left out
    alerts: list[Alert]  # raised by this step, in order; a divergence is the last
    skipped: bool = False  # fp16: the gradients overflowed, the update was skipped (the step still counts)
    loss_scale: LossScale | None = None  # fp16: the loss scaler after this step; None under bf16 and fp32

    @property
    def divergence(self) -> Alert | None:
        """The alert that stops the run (a non-finite loss or gradient norm), if any."""
        return self.alerts[-1] if self.alerts and is_divergence(self.alerts[-1]) else None


class TrainStep:
    """The learning rate for the step, forward and backward over the micro-batches (gradients synchronised
    on the last only), the loss averaged over ranks, then the checks: a non-finite loss or gradient norm
    stops the step before the update, so a diverged step leaves the weights as they were. Otherwise the
    gradients are clipped to `maxGradNorm` and AdamW steps. Under fp16 the loss is scaled before backward
    and non-finite gradients skip the update instead (`loss_scale`); a non-finite loss still diverges.
    No gradient outlives the step."""

    def __init__(
        self,
        model: Llama,
        optimizer: torch.optim.Optimizer,
        training: TrainingSpec,
        precision: Precision,
        world: World,
        detector: AnomalyDetector,
    ) -> None:
        self.model, self.optimizer, self.training = model, optimizer, training
        self.precision, self.world, self.detector = precision, world, detector
        self.scaler = loss_scaler(precision)

    def load_loss_scale(self, state: LossScale | None) -> None:
        """Resume fp16's loss scale from a checkpoint (nothing to do under bf16 and fp32)."""
        if self.scaler is not None:
            self.scaler.load(state)

    def __call__(self, step: int, micro_batches: MicroBatches) -> StepOutcome:
        """Run the 0-based step `step` on this rank's micro-batches."""
        lr = self.training.optimizer.lr * lr_factor(step, self.training.max_steps, self.training.scheduler)
        set_lr(self.optimizer, lr)
        started = time.perf_counter()
        poison(self.model, "weight", step)
        loss = self._forward_backward(micro_batches)
        poison(self.model, "gradient", step)
        poison(self.model, "overflow", step, self.world.rank)
        alerts = _present(self.detector.check_loss(step, loss))
        norm, skipped = None, False
        if not any(map(is_divergence, alerts)):
            if self.scaler is None:
                norm, skipped = self._update(step, alerts), False
            else:
                norm, skipped = self._scaled_update(step, alerts, self.scaler)
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.scaler.state if self.scaler is not None else None
        return StepOutcome(loss, norm, lr, time.perf_counter() - started, alerts, skipped, scale)

    def _update(self, step: int, alerts: list[Alert]) -> float:
        """bf16 and fp32: clip and step, unless the gradient norm is non-finite (a divergence)."""
        norm = grad_norm(self.model, self.training.max_grad_norm)
        alerts += _present(self.detector.check_grad_norm(step, norm))
        if not any(map(is_divergence, alerts)):  # a non-finite gradient never reaches the weights
            self.optimizer.step()
        return norm

    def _scaled_update(self, step: int, alerts: list[Alert], scaler: LossScaler) -> tuple[float | None, bool]:
        """fp16: unscale, clip and step through the scaler; overflowing gradients skip the update (on every
        rank alike) and lower the scale: a warning, or a divergence once the scale falls below its floor."""
        scaler.unscale(self.optimizer)
        norm = grad_norm(self.model, self.training.max_grad_norm)
        if scaler.step(self.optimizer):
            alerts.append(skip_alert(step, scaler.state.scale))
            return None, True
        alerts += _present(self.detector.check_grad_norm(step, norm))
        return norm, False

    def _forward_backward(self, micro_batches: MicroBatches) -> float:
        """Accumulate the gradients of the micro-batches; their mean loss over all ranks (one host sync)."""
        device = self.world.device
        total = torch.zeros((), dtype=torch.float64, device=device)
        for index, (inputs, targets) in enumerate(micro_batches):
            if self.world.distributed:
                self.model.set_requires_gradient_sync(index == len(micro_batches) - 1)
            inputs, targets = inputs.to(device), targets.to(device)
            with self.precision.autocast():
                loss = self.model.loss(inputs, targets) / len(micro_batches)
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            total += loss.detach().double()
        return distributed.mean_across(total.item(), self.world)


def _present(alert: Alert | None) -> list[Alert]:
    return [alert] if alert is not None else []


def grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """The global gradient norm, after clipping to `max_norm` (0: measured only)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def poison(model: torch.nn.Module, kind: str, step: int, rank: int = 0) -> None:
    """Fault injection (`LLMTRAIN_TEST_POISON`): the first parameter's weight or gradient becomes NaN, or
    (`overflow`) its gradient +inf on rank 0 only."""
    if f"{kind}:{step}" != POISON or (kind == "overflow" and rank != 0):
        return
    parameter = next(model.parameters())
    target = parameter if kind == "weight" else parameter.grad
    with torch.no_grad():
        (target.to_local() if hasattr(target, "to_local") else target).fill_(POISON_VALUES[kind])
