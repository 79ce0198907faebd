"""One optimizer step: learning rate, forward and backward over the micro-batches, checks, clip, AdamW."""

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
from .optim import lr_factor, set_lr
from .precision import Precision

#: Fault injection (tests, drills), inert unless set: `weight:N` writes NaN into a weight before the
#: 0-based step N's forward pass, `gradient:N` into a gradient after its backward pass.
POISON = os.environ.get("LLMTRAIN_TEST_POISON", "")

MicroBatches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StepOutcome:
    loss: float  # mean over the micro-batches and the ranks
    grad_norm: float | None  # None when the loss diverged before the norm was measured
    lr: float
    seconds: float  # from the first forward pass to the update, data loading left out
    alerts: list[Alert]  # raised by this step, in order; a divergence is the last

    @property
    def divergence(self) -> Alert | None:
        """The alert that stops the run (a non-finite loss or gradient norm), if any."""
        return self.alerts[-1] if self.alerts and is_divergence(self.alerts[-1]) else None


class TrainStep:
    """The learning rate for the step, forward and backward over the micro-batches (gradients synchronised
    on the last only), the loss averaged over ranks, then the checks: a non-finite loss or gradient norm
    stops the step before the update, so a diverged step leaves the weights as they were. Otherwise the
    gradients are clipped to `maxGradNorm` and AdamW steps. No gradient outlives the step."""

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

    def __call__(self, step: int, micro_batches: MicroBatches) -> StepOutcome:
        """Run the 0-based step `step` on this rank's micro-batches."""
        lr = self.training.optimizer.lr * lr_factor(step, self.training.max_steps, self.training.scheduler)
        set_lr(self.optimizer, lr)
        started = time.perf_counter()
        poison(self.model, "weight", step)
        loss = self._forward_backward(micro_batches)
        poison(self.model, "gradient", step)
        alerts = _present(self.detector.check_loss(step, loss))
        norm = None
        if not any(map(is_divergence, alerts)):
            norm = grad_norm(self.model, self.training.max_grad_norm)
            alerts += _present(self.detector.check_grad_norm(step, norm))
        if not any(map(is_divergence, alerts)):  # a non-finite gradient never reaches the weights
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(loss, norm, lr, time.perf_counter() - started, alerts)

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
            loss.backward()
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


def poison(model: torch.nn.Module, kind: str, step: int) -> None:
    """Fault injection (`LLMTRAIN_TEST_POISON`): the first parameter's weight or gradient becomes NaN."""
    if f"{kind}:{step}" != POISON:
        return
    parameter = next(model.parameters())
    target = parameter if kind == "weight" else parameter.grad
    with torch.no_grad():
        (target.to_local() if hasattr(target, "to_local") else target).fill_(float("nan"))
