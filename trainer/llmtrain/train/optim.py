"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedule as a function
of the step (so the schedule needs no state of its own to resume)."""

from __future__ import annotations

import math

import torch

from ..api.trainingrun import OptimizerSpec, SchedulerSpec


def build_optimizer(model: torch.nn.Module, spec: OptimizerSpec, fused: bool = False) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps, fused=fused or None)


def lr_factor(step: int, total: int, spec: SchedulerSpec) -> float:
    """Multiplier of the peak lr at (0-based) `step`: linear warmup, then cosine/linear/constant decay, or
    wsd: the peak held until the last `decaySteps` (a fifth of the run when unset), then decayed."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.type == "constant":
        return 1.0
    if spec.type == "wsd":
        return _wsd(step, total, spec)
    progress = min(1.0, (step - spec.warmup_steps) / max(1, total - spec.warmup_steps))
    if spec.type == "linear":
        return 1.0 - (1.0 - spec.min_lr_ratio) * progress
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _wsd(step: int, total: int, spec: SchedulerSpec) -> float:
    """Warmup-stable-decay after the warmup: 1 until the decay starts, then down to minLrRatio at the last step
    (linear, or sqrt: 1 - sqrt(progress), which keeps the lr high longer and drops it at the end)."""
    decay = min(spec.decay_steps or max(1, total // 5), total - spec.warmup_steps)
    start = total - decay
    if step < start:
        return 1.0
    progress = min(1.0, (step - start + 1) / max(1, decay))
    shape = math.sqrt(progress) if spec.decay_shape == "sqrt" else progress
    return 1.0 - (1.0 - spec.min_lr_ratio) * shape


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
