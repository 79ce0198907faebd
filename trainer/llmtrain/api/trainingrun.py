"""TrainingRun: a Llama-style model trained from scratch on a DataSource's shards."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import Field

from .base import ApiModel, CelRule, Matches
from .common import (
    Conditions,
    Failure,
    Image,
    LocalObjectReference,
    Quantity,
    StorageUri,
    Timestamp,
    Toleration,
)
from .resource import AGE, PrinterColumn, Resource

IMMUTABLE = "self == oldSelf"


class ModelSpec(ApiModel):
    """Model shape; the vocabulary size comes from the DataSource's tokenizer. Immutable."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.hiddenSize % self.heads == 0", "must divide hiddenSize", ".heads"),
        CelRule("!has(self.kvHeads) || self.heads % self.kvHeads == 0", "must divide heads", ".kvHeads"),
        CelRule(
            "self.hiddenSize % self.heads != 0 || (self.hiddenSize / self.heads) % 2 == 0",
            "hiddenSize / heads (the head size) must be even for RoPE",
            ".heads",
        ),
        CelRule(IMMUTABLE, "spec.model is immutable: create a new TrainingRun to train a different model"),
    )

    architecture: Literal["llama"] = Field(default="llama", description="Model family; llama for now.")
    layers: Annotated[int, Ge(1), Le(512)] = Field(description="Transformer blocks.")
    hidden_size: Annotated[int, Ge(8), Le(65536)] = Field(description="Model width.")
    heads: Annotated[int, Ge(1), Le(1024)] = Field(description="Attention heads.")
    kv_heads: Annotated[int, Ge(1), Le(1024)] | None = Field(
        default=None, description="Key/value heads (grouped-query attention); heads when unset."
    )
    intermediate_size: Annotated[int, Ge(8), Le(262144)] | None = Field(
        default=None, description="SwiGLU width; about 8/3 x hiddenSize rounded up to 256 when unset."
    )
    max_seq_len: Annotated[int, Ge(8), Le(1_048_576)] = Field(default=2048, description="Context length in tokens.")
    rope_theta: Annotated[float, Gt(0.0)] = Field(default=10000.0, description="RoPE base frequency.")
    norm_eps: Annotated[float, Gt(0.0), Lt(1.0)] = Field(default=1e-5, description="RMSNorm epsilon.")
    tie_embeddings: bool = Field(default=False, description="Share the input embedding with the output projection.")


class OptimizerSpec(ApiModel):
    """The optimizer."""

    type: Literal["adamw"] = Field(default="adamw", description="adamw.")
    lr: Annotated[float, Gt(0.0), Le(10.0)] = Field(default=3e-4, description="Peak learning rate.")
    betas: Annotated[list[Annotated[float, Ge(0.0), Lt(1.0)]], MinLen(2), MaxLen(2)] = Field(
        default_factory=lambda: [0.9, 0.95], description="Adam betas [beta1, beta2], each in [0, 1)."
    )
    eps: Annotated[float, Gt(0.0), Lt(1.0)] = Field(default=1e-8, description="Adam epsilon.")
    weight_decay: Annotated[float, Ge(0.0), Le(1.0)] = Field(default=0.1, description="Decoupled weight decay.")


class SchedulerSpec(ApiModel):
    """The learning-rate schedule: linear warmup, then decay to lr x minLrRatio."""

    type: Literal["cosine", "linear", "constant"] = Field(default="cosine", description="cosine, linear or constant.")
    warmup_steps: Annotated[int, Ge(0)] = Field(default=0, description="Linear warmup steps.")
    min_lr_ratio: Annotated[float, Ge(0.0), Le(1.0)] = Field(default=0.1, description="Final lr as a fraction of lr.")


class TrainingSpec(ApiModel):
    """The optimization loop. One step consumes nodes x gpus x microBatchSize x accumulation sequences."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.scheduler.warmupSteps < self.maxSteps", "must be less than maxSteps", ".scheduler.warmupSteps"),
    )

    max_steps: Annotated[int, Gt(0)] = Field(description="Optimizer steps to train for; may be raised to train longer.")
    micro_batch_size: Annotated[int, Ge(1), Le(65536)] = Field(
        default=1, description="Sequences per process per micro-step."
    )
    gradient_accumulation_steps: Annotated[int, Ge(1), Le(65536)] = Field(
        default=1, description="Micro-steps per optimizer step."
    )
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="The optimizer.")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="The learning-rate schedule.")
    max_grad_norm: Annotated[float, Ge(0.0)] = Field(default=1.0, description="Gradient clipping norm; 0 disables.")
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        default="bf16", description="Compute precision on GPUs (parameters and reductions stay fp32); CPUs use fp32."
    )
    activation_checkpointing: bool = Field(default=False, description="Recompute block activations in backward.")
    compile: bool = Field(default=False, description="torch.compile each block.")
    deterministic: bool = Field(
        default=False,
        description="Deterministic GPU kernels (torch.use_deterministic_algorithms; slower): a resumed GPU run"
        " then equals an uninterrupted one bit for bit. CPU runs are deterministic regardless.",
    )
    seed: Annotated[int, Ge(0)] = Field(default=0, description="Seed of initialization and data order.")
    log_every_steps: Annotated[int, Ge(1)] = Field(default=10, description="Steps between metric reports.")


class ValidationLoopSpec(ApiModel):
    """Periodic evaluation on the validation split."""

    every_steps: Annotated[int, Ge(1)] = Field(default=200, description="Steps between validations.")
    batches: Annotated[int, Ge(1), Le(100000)] = Field(default=20, description="Micro-batches per validation.")


class CheckpointingSpec(ApiModel):
    """Sharded checkpoints with retention; resume is automatic."""

    every_steps: Annotated[int, Ge(1)] = Field(default=500, description="Steps between checkpoints (also on SIGTERM).")
    keep_last: Annotated[int, Ge(1), Le(1000)] = Field(default=3, description="Most recent checkpoints kept.")
    keep_best: Annotated[int, Ge(0), Le(1000)] = Field(default=1, description="Best checkpoints (by val loss) kept.")
    uri: StorageUri | None = Field(
        default=None,
        description="s3://, pvc:// or (local runner) a path; default: the operator's default storage"
        " under <namespace>/trainingruns/<name>/checkpoints/.",
    )


class ComputeSpec(ApiModel):
    """Nodes, accelerators and placement. Per node: one pod."""

    nodes: Annotated[int, Ge(1), Le(1024)] = Field(default=1, description="Pods (one per node), an Indexed Job.")
    gpus_per_node: Annotated[int, Ge(0), Le(64)] = Field(
        default=0, description="Accelerators per pod; one training process each. 0 trains on CPU."
    )
    gpu_resource_name: Annotated[
        str, Matches(r"^[a-z0-9.-]+/[a-z0-9.-]+$", "must be an extended resource name such as nvidia.com/gpu")
    ] = Field(default="nvidia.com/gpu", description="Extended resource that counts accelerators.")
    cpu: Quantity | None = Field(default=None, description="CPU per pod, e.g. 32.")
    memory: Quantity | None = Field(default=None, description="Memory per pod, e.g. 256Gi.")
    node_selector: Annotated[dict[str, Annotated[str, MaxLen(63)]], MaxLen(64)] = Field(
        default_factory=dict, description="Node labels the pods require."
    )
    tolerations: Annotated[list[Toleration], MaxLen(64)] = Field(
        default_factory=list, description="Taints the pods tolerate."
    )


class AlertsSpec(ApiModel):
    """Built-in anomaly alerts, raised into status.alerts and as Events."""

    loss_spike_factor: Annotated[float, Gt(1.0)] = Field(
        default=3.0, description="Alert when the loss exceeds this multiple of its running mean."
    )
    grad_norm_max: Annotated[float, Gt(0.0)] | None = Field(
        default=None, description="Alert when the gradient norm (before clipping) exceeds this."
    )
    throughput_drop_fraction: Annotated[float, Gt(0.0), Lt(1.0)] = Field(
        default=0.5, description="Alert when tokens/s falls below this fraction of its running mean."
    )
    stall_seconds: Annotated[int, Ge(30)] = Field(
        default=900, description="Mark the run Stalled after this long without progress."
    )


class TrainingRunSpec(ApiModel):
    """What to train, on which data, with which resources."""

    data_source_ref: Annotated[
        LocalObjectReference,
        CelRule(IMMUTABLE, "spec.dataSourceRef is immutable: create a new TrainingRun to train on other data"),
    ] = Field(description="The DataSource whose shards and tokenizer to train on.")
    model: ModelSpec = Field(description="Model shape.")
    training: TrainingSpec = Field(description="The optimization loop.")
    validation: ValidationLoopSpec = Field(default_factory=ValidationLoopSpec, description="Validation.")
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec, description="Checkpoints.")
    resources: ComputeSpec = Field(default_factory=ComputeSpec, description="Nodes, accelerators and placement.")
    alerts: AlertsSpec = Field(default_factory=AlertsSpec, description="Anomaly alerts.")
    queue_name: Annotated[str, MaxLen(253)] | None = Field(
        default=None, description="Kueue LocalQueue; the Job is created suspended and admitted by Kueue."
    )
    suspend: bool = Field(
        default=False, description="Suspend the run (its pods stop after a checkpoint); unset to resume."
    )
    active_deadline_seconds: Annotated[int, Gt(0)] | None = Field(
        default=None, description="Fail the run after this long running."
    )
    pending_timeout_seconds: Annotated[int, Gt(0)] | None = Field(
        default=None, description="Fail the run when its pods are not all running after this long."
    )
    max_restarts: Annotated[int, Ge(0), Le(1000)] = Field(
        default=3, description="Retryable failures (preemption, node loss, NCCL timeout) resumed from a checkpoint."
    )
    image: Image | None = Field(default=None, description="Workload image; the operator's default when unset.")


class CheckpointRef(ApiModel):
    """A saved checkpoint."""

    step: int = Field(description="Optimizer step.")
    uri: str = Field(description="Where it is.")
    time: Timestamp | None = Field(default=None, description="When it was saved.")
    val_loss: float | None = Field(default=None, description="Validation loss at that step, when measured.")


class Alert(ApiModel):
    """An anomaly the trainer or operator noticed."""

    type: Annotated[str, MaxLen(64)] = Field(
        description="LossSpike, NonFiniteLoss, GradNormHigh, ThroughputDrop, Stalled."
    )
    severity: Literal["warning", "critical"] = Field(description="warning or critical.")
    message: Annotated[str, MaxLen(4096)] = Field(description="What was seen.")
    step: int | None = Field(default=None, description="Step at which it was seen.")
    time: Timestamp | None = Field(default=None, description="When it was seen.")


class TrainingRunStatus(ApiModel):
    """What the operator observed, from Jobs, pods and the trainer's progress reports."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"] | None = Field(
        default=None, description="Summary phase."
    )
    conditions: Conditions = Field(default_factory=list, description="Conditions; Succeeded is the summary.")
    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    message: str | None = Field(default=None, description="What is happening, or why it failed.")
    step: int | None = Field(default=None, description="Last completed optimizer step.")
    total_steps: int | None = Field(default=None, description="spec.training.maxSteps.")
    progress: str | None = Field(default=None, description="step/totalSteps, for kubectl get.")
    tokens_seen: int | None = Field(default=None, description="Training tokens consumed.")
    loss: float | None = Field(default=None, description="Recent training loss.")
    val_loss: float | None = Field(default=None, description="Last validation loss.")
    perplexity: float | None = Field(default=None, description="exp(valLoss).")
    tokens_per_second: int | None = Field(default=None, description="Recent training throughput, all ranks.")
    mfu: float | None = Field(default=None, description="Model FLOPs utilization, 0-1.")
    eta: str | None = Field(default=None, description="Estimated time to completion, e.g. 1h20m.")
    last_progress_time: Timestamp | None = Field(default=None, description="When the step last advanced.")
    latest_checkpoint: CheckpointRef | None = Field(default=None, description="The most recent checkpoint.")
    best_checkpoint: CheckpointRef | None = Field(default=None, description="The checkpoint with the lowest val loss.")
    alerts: Annotated[list[Alert], MaxLen(64)] = Field(default_factory=list, description="Recent alerts, newest last.")
    restarts: int = Field(default=0, description="Times the run was resumed after a retryable failure.")
    failure: Failure | None = Field(default=None, description="Why the run failed.")
    last_failure: Failure | None = Field(
        default=None, description="The last retryable failure, from which the run resumed."
    )
    start_time: Timestamp | None = Field(default=None, description="When the pods first ran.")
    completion_time: Timestamp | None = Field(default=None, description="When the run finished.")


class TrainingRun(Resource):
    """Train a model from scratch with FSDP2 under torchrun; checkpoints, resume, metrics, alerts."""

    KIND: ClassVar[str] = "TrainingRun"
    PLURAL: ClassVar[str] = "trainingruns"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tr",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("Phase", "string", ".status.phase", "Summary phase."),
        PrinterColumn("Step", "string", ".status.progress", "Completed steps of total."),
        PrinterColumn("Loss", "number", ".status.loss", "Recent training loss."),
        PrinterColumn("Tok/s", "integer", ".status.tokensPerSecond", "Training tokens per second."),
        PrinterColumn("ETA", "string", ".status.eta", "Estimated time to completion."),
        AGE,
        PrinterColumn("Nodes", "integer", ".spec.resources.nodes", "Pods (nodes).", priority=1),
        PrinterColumn("GPUs", "integer", ".spec.resources.gpusPerNode", "Accelerators per node.", priority=1),
        PrinterColumn(
            "Checkpoint", "integer", ".status.latestCheckpoint.step", "Step of the latest checkpoint.", priority=1
        ),
        PrinterColumn("Message", "string", ".status.message", "What is happening.", priority=1),
    )

    kind: Literal["TrainingRun"] = Field(default="TrainingRun", description="TrainingRun")
    spec: TrainingRunSpec = Field(description="Desired state.")
    status: TrainingRunStatus | None = Field(default=None, description="Observed state.")
