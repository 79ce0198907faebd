"""The training loop: build, shard, resume, step, validate, checkpoint, report.

One call per process (torchrun starts one per device). Exit codes: 0 done, 3 diverged (non-finite
loss; the last good state is saved first), 75 interrupted by SIGTERM after a checkpoint (resume by
rerunning the same command).
"""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import exitcodes, logs, storage
from ..api.trainingrun import TrainingRun
from ..errors import BadInput
from ..model.flops import flops_per_token, peak_flops
from ..model.llama import Llama, LlamaConfig, count_parameters
from . import distributed, memory
from .anomalies import AnomalyDetector, RaisedAlert
from .checkpoint import Checkpointer
from .loader import Batches, DataError, Dataset
from .optim import build_optimizer, lr_factor, set_lr
from .progress import Metrics, Reporter, format_eta, make_sink, prometheus_port

log = logging.getLogger("llmtrain.train")

#: Fault injection (tests, drills), inert unless set: `weight:N` writes NaN into a weight before the
#: 0-based step N's forward pass, `gradient:N` into a gradient after its backward pass.
POISON = os.environ.get("LLMTRAIN_TEST_POISON", "")


@dataclass
class Options:
    data: str
    checkpoints: str
    progress: str | None = None
    metrics_dir: Path | None = None
    stop_at_step: int | None = None  # checkpoint and exit after this step; the schedule still spans maxSteps
    cache: Path = Path(os.environ.get("LLMTRAIN_CACHE_DIR", "/tmp/llmtrain-cache"))


class Stop:
    """SIGTERM (forwarded by torchrun when the pod is evicted or the Job suspended) asks for a
    checkpoint and a clean exit at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def model_config(run: TrainingRun, dataset: Dataset) -> LlamaConfig:
    config = LlamaConfig.from_spec(run.spec.model, dataset.vocab_size)
    if dataset.manifest["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"unsupported shard dtype {dataset.manifest['dtype']}")
    return config


def build_model(config: LlamaConfig, run: TrainingRun, world: distributed.World) -> Llama:
    """The same full model on every rank (one seed), then sharded: initialization never depends on the
    world size, and no two shards are correlated."""
    generator = torch.Generator().manual_seed(run.spec.training.seed)
    model = Llama(config)
    model.init_weights(generator)
    model.to(world.device)
    if run.spec.training.activation_checkpointing:
        for block in model.model.layers:
            block.checkpointing = True
    if run.spec.training.compile:
        if world.distributed:  # FSDP2: compile each block, between the sharding hooks
            for block in model.model.layers:
                block.compile()
        else:  # one process: the whole forward and loss as one graph (fuses the output projection's loss)
            model.loss = torch.compile(model.loss)  # type: ignore[method-assign]
    return distributed.shard(model, world, run.spec.training.precision)


def evaluate(model: Llama, batches: list[tuple[torch.Tensor, torch.Tensor]], world: distributed.World) -> dict:
    """Mean validation loss, perplexity and next-token accuracy over all ranks' batches."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for inputs, targets in batches:
            inputs, targets = inputs.to(world.device), targets.to(world.device)
            logits = model(inputs).float()
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            )
            totals += torch.tensor(
                [loss.item(), (logits.argmax(-1) == targets).sum().item(), targets.numel()], dtype=torch.float64
            )
    model.train()
    if world.distributed:
        totals = totals.to(world.device) if world.device.type == "cuda" else totals
        torch.distributed.all_reduce(totals)
    if totals[2] == 0:
        return {}
    val_loss = float(totals[0] / totals[2])
    return {"valLoss": val_loss, "perplexity": math.exp(min(val_loss, 50)), "accuracy": float(totals[1] / totals[2])}


def grad_norm(model: torch.nn.Module, max_norm: float) -> float:
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


def weights_finite(model: torch.nn.Module, world: distributed.World) -> bool:
    """Whether every weight, on every rank, is finite (a checkpoint of NaN weights is no good state)."""
    local = all(bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()) for p in model.parameters())
    return not distributed.any_true(not local, world)


def memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class OutOfMemory(BadInput, ValueError):
    """The configuration does not fit the device (permanent: the same spec fails the same way)."""


def train(run: TrainingRun, options: Options) -> int:
    import warnings

    warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # DCP in a world of one
    if run.spec.training.deterministic:
        distributed.make_deterministic()
    world = distributed.setup()
    try:
        return _train(run, options, world)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        training = run.spec.training
        raise OutOfMemory(
            f"out of memory on {world.device} (rank {world.rank}) with microBatchSize {training.micro_batch_size},"
            f" maxSeqLen {run.spec.model.max_seq_len}: lower spec.training.microBatchSize (raise"
            " gradientAccumulationSteps to keep the batch), set activationCheckpointing: true, or add GPUs"
        ) from exc
    finally:
        distributed.teardown()


def _verify_shards(dataset: Dataset, world: distributed.World) -> None:
    """Each rank hashes its share of the shards; a mismatch anywhere stops every rank (exit 2)."""
    problem = None
    try:
        dataset.verify_shards(world.rank, world.size)
    except DataError as exc:
        problem = exc
    if not distributed.all_true(problem is None, world):
        raise problem or DataError(f"{dataset.root}: a dataset shard does not match manifest.json (another rank's log)")


def _train(run: TrainingRun, options: Options, world: distributed.World) -> int:
    spec, training = run.spec, run.spec.training
    dataset = Dataset.open(storage.local_dataset(options.data, options.cache))
    _verify_shards(dataset, world)
    dataset.check_token_range()
    config = model_config(run, dataset)
    memory.ensure_fits(config, run, world.device, world.size)  # refuse before allocating what cannot fit
    model = build_model(config, run, world)
    fused = world.device.type == "cuda" or not world.distributed  # fused AdamW: GPUs, and unsharded CPU params
    optimizer = build_optimizer(model, training.optimizer, fused=fused)
    checkpoints = Checkpointer(
        options.checkpoints,
        world,
        spec.checkpointing.keep_last,
        spec.checkpointing.keep_best,
        options.cache / "checkpoints" / run.name,
    )
    shape = dict(vars(config))
    start, tokens_seen = 0, 0
    resumed = checkpoints.resume(model, optimizer, shape)  # the newest complete checkpoint that verifies
    latest = resumed.name
    if world.is_main:
        for reason in resumed.skipped:
            logs.audit("CheckpointSkipped", run=run.name, checkpoints=options.checkpoints, reason=reason)
    if latest:
        meta = resumed.meta
        start, tokens_seen = meta["step"], meta.get("tokensSeen", 0)
        logs.audit(
            "Resumed",
            run=run.name,
            step=start,
            checkpoint=storage.join(options.checkpoints, latest),
            fromWorldSize=meta.get("worldSize"),
            worldSize=world.size,
        )
    batches = Batches(
        dataset.stream("train"),
        dataset.stream("validation"),
        config.max_seq_len,
        training.micro_batch_size,
        training.gradient_accumulation_steps,
        world.rank,
        world.size,
        training.seed,
    )
    validation = batches.validation_batches(spec.validation.batches)
    tokens_per_step = batches.global_sequences * config.max_seq_len
    with torch.device("meta"):
        shapes_only = Llama(config)
    parameters = count_parameters(shapes_only)
    flops = flops_per_token(config, count_parameters(shapes_only, exclude_embedding=True))
    peak = peak_flops(world.device.type, training.precision != "fp32")

    sinks = [make_sink(options.progress)] if options.progress and world.is_main else []
    reporter = Reporter(run.name, training.max_steps, sinks)
    metrics = Metrics(
        options.metrics_dir if world.is_main else None, run.name, prometheus_port() if world.is_main else None
    )
    detector = AnomalyDetector(spec.alerts)
    stop = Stop()
    if world.is_main:
        logs.audit(
            "TrainingStarted",
            run=run.name,
            step=start,
            totalSteps=training.max_steps,
            worldSize=world.size,
            parameters=parameters,
        )
    latest_saved = None

    def describe(entry: tuple[str, dict] | None) -> dict | None:
        if entry is None:
            return None
        name, meta = entry
        return {"step": meta["step"], "valLoss": meta["valLoss"], "uri": storage.join(options.checkpoints, name)}

    if latest:
        reporter.report["latestCheckpoint"] = {"step": start, "uri": storage.join(options.checkpoints, latest)}
        reporter.report["bestCheckpoint"] = describe(checkpoints.best())

    def diverge(step: int, alert: RaisedAlert) -> int:
        """Stop on a non-finite loss or gradient; checkpoint the state first only if every weight is finite
        (otherwise `latest` keeps naming the last good checkpoint)."""
        optimizer.zero_grad(set_to_none=True)
        raise_alert(alert)
        message = alert.message
        if weights_finite(model, world):
            save(step, {"loss": last_loss, "valLoss": last_val, "diverged": True})
        else:
            message += f"; the weights are non-finite, not saved: the last good checkpoint is {checkpoints.latest()}"
        reporter.update(force=True, phase="Failed", failure={"reason": "NonFiniteLoss", "message": message})
        logs.audit("TrainingFailed", run=run.name, reason="NonFiniteLoss", step=step, message=message)
        return exitcodes.DIVERGED

    def raise_alert(alert: RaisedAlert | None) -> None:
        if alert is not None and world.is_main:
            logs.audit("Alert", run=run.name, **alert.to_json())
            reporter.alert(alert.to_json())

    for reason in resumed.skipped:  # the operator shows these in status.alerts
        raise_alert(RaisedAlert("CheckpointSkipped", "warning", f"resumed from {latest or 'step 0'}: {reason}", start))

    def save(step: int, losses: dict) -> None:
        nonlocal latest_saved
        saved = checkpoints.save(
            step, model, optimizer, {"tokensSeen": tokens_seen, "seed": training.seed, "model": shape, **losses}
        )
        latest_saved = step
        if world.is_main:
            logs.audit("CheckpointSaved", run=run.name, step=step, uri=saved.uri)
            latest_entry = {"step": step, "uri": saved.uri, "time": saved.time}
            reporter.update(force=True, latestCheckpoint=latest_entry, bestCheckpoint=describe(saved.best))

    # one GPU without FSDP: autocast stands in for FSDP's mixed-precision policy
    autocast = world.device.type == "cuda" and not world.distributed and training.precision == "bf16"
    model.train()
    # tokens/s counts training time only: validation and checkpoint saves are timed apart (`paused`),
    # or every checkpoint would read as a throughput drop
    window_started, window_tokens, paused, step_time = time.perf_counter(), 0, 0.0, None
    last_loss, last_val = None, None
    for step in range(start, training.max_steps):
        set_lr(optimizer, training.optimizer.lr * lr_factor(step, training.max_steps, training.scheduler))
        micro_batches = batches.step(step)
        loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
        started = time.perf_counter()
        poison(model, "weight", step)
        for index, (inputs, targets) in enumerate(micro_batches):
            if world.distributed:
                model.set_requires_gradient_sync(index == len(micro_batches) - 1)
            inputs, targets = inputs.to(world.device), targets.to(world.device)
            with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model.loss(inputs, targets) / len(micro_batches)
            loss.backward()
            loss_sum += loss.detach().double()
        poison(model, "gradient", step)
        loss_value = distributed.mean_across(loss_sum.item(), world)  # one host sync per step
        alert = detector.check_loss(step, loss_value)
        if alert is not None and alert.type == "NonFiniteLoss":
            return diverge(step, alert)
        raise_alert(alert)
        norm = grad_norm(model, training.max_grad_norm)
        alert = detector.check_grad_norm(step, norm)
        if alert is not None and alert.type == "NonFiniteLoss":  # before the step writes it into the weights
            return diverge(step, alert)
        raise_alert(alert)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        completed = step + 1
        tokens_seen += tokens_per_step
        window_tokens += tokens_per_step
        last_loss = loss_value
        elapsed = time.perf_counter() - started
        step_time = elapsed if step_time is None else 0.9 * step_time + 0.1 * elapsed

        values: dict[str, float | None] = {}
        if completed % training.log_every_steps == 0 or completed == training.max_steps:
            window = max(time.perf_counter() - window_started - paused, 1e-9)
            tokens_per_second = window_tokens / window
            mfu = tokens_per_second * flops / (peak * world.size) if peak else None
            values = {
                "loss": loss_value,
                "lr": optimizer.param_groups[0]["lr"],
                "gradNorm": norm,
                "tokensPerSecond": tokens_per_second,
                "mfu": mfu,
                "memoryMiB": memory_mib(world.device),
            }
            raise_alert(detector.check_throughput(step, tokens_per_second))
            window_started, window_tokens, paused = time.perf_counter(), 0, 0.0
            if world.is_main:
                line = (
                    f"step {completed}/{training.max_steps} loss {loss_value:.4f} lr {values['lr']:.2e}"
                    f" grad {norm:.3f} {tokens_per_second:,.0f} tok/s mfu {f'{mfu:.1%}' if mfu else 'n/a'}"
                    f" eta {format_eta(step_time * (training.max_steps - completed))}"
                )
                log.info(line, extra={"step": completed, **{k: v for k, v in values.items() if v is not None}})
                logs.human(line)
        if validation and (completed % spec.validation.every_steps == 0 or completed == training.max_steps):
            pause_started = time.perf_counter()
            figures = evaluate(model, validation, world)
            paused += time.perf_counter() - pause_started
            values.update({f"val/{k}": v for k, v in figures.items()})
            last_val = figures.get("valLoss")
            reporter.update(force=True, valLoss=last_val, perplexity=figures.get("perplexity"))
        if world.is_main and values:
            metrics.log(completed, values)
        reporter.update(
            step=completed,
            tokensSeen=tokens_seen,
            loss=round(loss_value, 4),
            tokensPerSecond=round(values["tokensPerSecond"])
            if "tokensPerSecond" in values
            else reporter.report["tokensPerSecond"],
            mfu=round(values["mfu"], 4) if values.get("mfu") else reporter.report["mfu"],
            eta=format_eta(step_time * (training.max_steps - completed)),
        )
        stopping = distributed.any_true(stop.requested, world)
        pausing = completed == options.stop_at_step
        if completed % spec.checkpointing.every_steps == 0 or completed == training.max_steps or stopping or pausing:
            pause_started = time.perf_counter()
            save(completed, {"loss": loss_value, "valLoss": last_val})
            paused += time.perf_counter() - pause_started
        if pausing and not stopping:
            if world.is_main:
                logs.audit("TrainingPaused", run=run.name, step=completed)
                reporter.update(force=True, phase="Paused")
            metrics.close()
            return exitcodes.OK
        if stopping:
            if world.is_main:
                logs.audit("TrainingInterrupted", run=run.name, step=completed, reason="SIGTERM")
                reporter.update(force=True, phase="Interrupted")
            return exitcodes.RETRYABLE
    if latest_saved != training.max_steps and start < training.max_steps:
        save(training.max_steps, {"loss": last_loss, "valLoss": last_val})
    metrics.close()
    if world.is_main:
        reporter.update(force=True, phase="Succeeded", step=training.max_steps, eta=None)
        logs.audit("TrainingFinished", run=run.name, step=training.max_steps, loss=last_loss, valLoss=last_val)
    return exitcodes.OK
