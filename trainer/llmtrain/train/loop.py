"""The training loop: one process per device (torchrun starts one each).

`Trainer` builds the pieces in order (the checked dataset, the model sharded under one `Precision`,
the optimizer, the step, the validator, the reporter, the checkpoint manager); `Trainer.train()` resumes
and runs them step by step, each piece deciding for itself when it acts. Exit codes: 0 done (or paused at
`--stop-at-step`), 3 diverged (non-finite loss; the last good state is saved first), 75 interrupted by
SIGTERM after a checkpoint (resume by rerunning the same command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import exitcodes
from ..api.trainingrun import TrainingRun
from ..core.progress import Alert
from ..errors import BadInput
from ..model.flops import flops_per_token, peak_flops
from ..model.shape import LlamaConfig, parameter_count
from . import distributed, initial, memory
from .anomalies import AnomalyDetector
from .build import build_model, make_batches, model_config, open_datasets
from .checkpoint import Checkpointer
from .checkpointing import CheckpointManager
from .optim import build_optimizer
from .precision import Precision
from .progress import Reporter, make_sink, open_metrics
from .reporting import StepReporter, Throughput
from .sources import SourceTracker
from .state import TrainState
from .step import TrainStep
from .stopping import PAUSED, StopRequest
from .tracking import terminal_status
from .validation import Validator


@dataclass
class Options:
    data: list[str]  # one dataset per DataSource of spec.mixture(), in order
    checkpoints: str
    progress: str | None = None
    metrics_dir: Path | None = None
    stop_at_step: int | None = None  # checkpoint and exit after this step; the schedule still spans maxSteps
    cache: Path = Path(os.environ.get("LLMTRAIN_CACHE_DIR", "/tmp/llmtrain-cache"))
    init: str | None = None  # starting weights (spec.init resolved by the operator): a model dir or checkpoint
    init_select: str = "latest"  # a checkpoint root's latest, best or step
    init_step: int | None = None


class OutOfMemory(BadInput, ValueError):
    """The configuration does not fit the device (permanent: the same spec fails the same way)."""


def train(run: TrainingRun, options: Options) -> int:
    import warnings

    warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # DCP in a world of one
    if run.spec.training.deterministic:
        distributed.make_deterministic()
    world = distributed.setup()
    try:
        return Trainer(run, options, world).train()
    except (torch.OutOfMemoryError, MemoryError) as exc:
        training = run.spec.training
        raise OutOfMemory(
            f"out of memory on {world.device} (rank {world.rank}) with microBatchSize {training.micro_batch_size},"
            f" maxSeqLen {run.spec.model.max_seq_len}: lower spec.training.microBatchSize (raise"
            " gradientAccumulationSteps to keep the batch), set activationCheckpointing: true, or add GPUs"
        ) from exc
    finally:
        distributed.teardown()


class Trainer:
    """The pieces of one training process, built in order; `train()` runs them."""

    def __init__(self, run: TrainingRun, options: Options, world: distributed.World) -> None:
        spec, training = run.spec, run.spec.training
        self.options, self.world, self.total_steps = options, world, training.max_steps
        datasets = open_datasets(options.data, [name for name, _ in spec.mixture()], options.cache, world)
        self.origin = self._origin(options, world)
        config = model_config(run, datasets[0], self.origin)
        memory.ensure_fits(config, run, world.device, world.size)  # refuse before allocating what cannot fit
        precision = Precision(training.precision, world.device.type, world.distributed)
        self.model = build_model(config, run, world, precision, empty=self.origin is not None)
        fused = world.device.type == "cuda" or not world.distributed  # fused AdamW: GPUs, and unsharded CPU params
        self.optimizer = build_optimizer(self.model, training.optimizer, fused=fused)
        self.load_optimizer = bool(spec.init and spec.init.optimizer_state)
        self.state = TrainState()
        self.batches = make_batches(datasets, run, config, training, world)
        self.tokens_per_step = self.batches.global_sequences * config.max_seq_len
        self.sources = SourceTracker(self.batches, config.max_seq_len)
        self.parameters = parameter_count(config)
        detector = AnomalyDetector(spec.alerts)
        self.train_step = TrainStep(self.model, self.optimizer, training, precision, world, detector)
        validation = self.batches.validation(spec.validation.batches)
        self.validator = Validator(
            self.model, validation, spec.validation.every_steps, world, shares=dict(spec.mixture())
        )
        self.reporter = self._reporter(run, config, precision, detector)
        checkpointer = Checkpointer(
            options.checkpoints,
            world,
            spec.checkpointing.keep_last,
            spec.checkpointing.keep_best,
            options.cache / "checkpoints" / run.name,
            background=spec.checkpointing.async_save,
        )
        record = {
            "seed": training.seed,
            "model": dict(vars(config)),
            "vocabularyHash": initial.vocabulary_hash(datasets[0].tokenizer_json(), datasets[0].location),
            **world.layout(spec.resources.sharding).to_json(),  # how the saving world was sharded
        }
        if self.origin is not None:
            record["init"] = self.origin.description
        every = spec.checkpointing.every_steps
        self.checkpoints = CheckpointManager(
            checkpointer, self.model, self.optimizer, self.state, every, record, self.reporter.progress, run.name
        )
        self.checkpoints.on_complete.append(lambda saved: self.reporter.metrics.sync())  # beside each checkpoint

    @staticmethod
    def _origin(options: Options, world: distributed.World) -> initial.Origin | None:
        if options.init is None:
            return None
        return initial.locate(options.init, options.init_select, options.init_step, options.cache, world)

    def _reporter(
        self, run: TrainingRun, config: LlamaConfig, precision: Precision, detector: AnomalyDetector
    ) -> StepReporter:
        """Rank 0 reports (progress sinks, metrics); the other ranks keep count silently."""
        main = self.world.is_main
        sinks = [make_sink(self.options.progress)] if self.options.progress and main else []
        progress = Reporter(run.name, self.total_steps, sinks)
        metrics = open_metrics(run, self.options.metrics_dir, self.options.checkpoints, main)
        flops = flops_per_token(config, parameter_count(config, exclude_embedding=True))
        peak = peak_flops(self.world.device.type, precision.low_precision_peak)
        throughput = Throughput(flops, peak, self.world.size)
        every = run.spec.training.log_every_steps
        return StepReporter(
            run.name, self.world, self.total_steps, every, self.tokens_per_step, throughput, progress, metrics, detector
        )

    def train(self) -> int:
        ended: int | None = None  # the exit code; None: an exception ended training
        try:
            code = self._train()
            self.checkpoints.wait()  # a normal exit leaves no save in flight (last step, stop, divergence wait)
            ended = code
            return code
        finally:
            self.checkpoints.close()  # the staging buffers; after an error a write in flight ends with the process
            # the metrics copied beside the checkpoints, the MLflow run's final status
            self.reporter.metrics.end(terminal_status(ended, self.state.step == self.total_steps))

    def _train(self) -> int:
        skipped = self.checkpoints.resume()
        self.train_step.load_loss_scale(self.state.loss_scale)  # fp16: the scale resumes where it was
        self._initialize()
        stop = StopRequest(self.world, self.options.stop_at_step)  # from here SIGTERM waits for a checkpoint
        self.reporter.started(self.state.step, self.parameters)
        for alert in skipped:
            self.reporter.alert(alert)
        self.model.train()
        for step in range(self.state.step, self.total_steps):
            outcome = self.train_step(step, self.batches.step(step))
            for alert in outcome.alerts:
                self.reporter.alert(alert)
            if outcome.divergence:
                return self._diverge(step, outcome.divergence)
            drawn = self.sources.drawn(step)
            self.state.advance(
                outcome.loss, self.tokens_per_step, drawn, skipped=outcome.skipped, loss_scale=outcome.loss_scale
            )
            for alert in self.sources.repeated(self.state, drawn):
                self.reporter.alert(alert)
            last_step = self.state.step == self.total_steps
            validation = self._validate(last_step)
            self.reporter.trained(outcome, self.state, validation, self.sources.figures(self.state, validation))
            halt = stop.check(self.state.step)
            with self.reporter.paused():  # a checkpoint never reads as a throughput drop
                self.checkpoints.save(self.state.step, last_step=last_step, stopping=halt is not None)
            if halt:
                return self._halt(halt)
        self.reporter.finished(self.state)
        return exitcodes.OK

    def _initialize(self) -> None:
        """At step 0 (no checkpoint of its own resumed): load the starting weights, and say where they came from."""
        resumed = self.checkpoints.checkpointed_step is not None
        if self.origin is not None and not resumed:
            optimizer = self.optimizer if self.load_optimizer else None
            initial.load(self.origin, self.model, optimizer, self.world)
        if resumed and not self.state.tokens_by_source:  # a checkpoint from before mixtures: count again
            self.state.tokens_by_source = self.sources.drawn_until(self.state.step)
        origin = self.checkpoints.record.get("init")
        if origin:
            self.reporter.progress.record(initialized_from=origin)

    def _validate(self, last_step: bool) -> dict[str, Any] | None:
        """The validation figures after this step, or None when it is not the time."""
        if not self.validator.should_validate(self.state.step, last_step):
            return None
        with self.reporter.paused():
            figures = self.validator.validate()
        self.state.val_loss = figures.get("valLoss")
        return figures

    def _diverge(self, step: int, alert: Alert) -> int:
        """Stop on a non-finite loss or gradient, the state checkpointed first if every weight is finite."""
        message = alert.message
        if not self.checkpoints.save_diverged(step):
            message += (
                f"; the weights are non-finite, not saved: the last good checkpoint is {self.checkpoints.latest()}"
            )
        self.reporter.failed(step, "NonFiniteLoss", message)
        return exitcodes.DIVERGED

    def _halt(self, phase: str) -> int:
        self.reporter.halted(self.state.step, phase)
        return exitcodes.OK if phase == PAUSED else exitcodes.RETRYABLE
