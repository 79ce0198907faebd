"""TrainingRun: a Llama-style model trained from scratch on a DataSource's shards."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import Field

from .base import ApiModel, CelRule, Matches
from .common import (
    POD_CONTROLS,
    QUEUE_PRIORITY_RULE,
    WORKLOAD_PRIORITY,
    Conditions,
    Failure,
    Image,
    LocalObjectReference,
    ObjectName,
    PodControls,
    Quantity,
    SecretReference,
    StorageUri,
    Timestamp,
    Toleration,
)
from .resource import AGE, PrinterColumn, Resource

IMMUTABLE = "self == oldSelf"


class ModelSpec(ApiModel):
    """Model shape; the vocabulary size comes from the DataSource's tokenizer. Immutable. With `spec.init`
    every field may be left out (it is read from the weights' config.json); a field given must then agree
    with it, except maxSeqLen (the training window, not a weight)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.hiddenSize) || !has(self.heads) || self.hiddenSize % self.heads == 0",
            "must divide hiddenSize",
            ".heads",
        ),
        CelRule(
            "!has(self.kvHeads) || !has(self.heads) || self.heads % self.kvHeads == 0", "must divide heads", ".kvHeads"
        ),
        CelRule(
            "!has(self.hiddenSize) || !has(self.heads) || self.hiddenSize % self.heads != 0"
            " || (self.hiddenSize / self.heads) % 2 == 0",
            "hiddenSize / heads (the head size) must be even for RoPE",
            ".heads",
        ),
        CelRule(IMMUTABLE, "spec.model is immutable: create a new TrainingRun to train a different model"),
    )

    architecture: Literal["llama"] = Field(default="llama", description="Model family; llama for now.")
    layers: Annotated[int, Ge(1), Le(512)] | None = Field(
        default=None, description="Transformer blocks (required without spec.init)."
    )
    hidden_size: Annotated[int, Ge(8), Le(65536)] | None = Field(
        default=None, description="Model width (required without spec.init)."
    )
    heads: Annotated[int, Ge(1), Le(1024)] | None = Field(
        default=None, description="Attention heads (required without spec.init)."
    )
    kv_heads: Annotated[int, Ge(1), Le(1024)] | None = Field(
        default=None, description="Key/value heads (grouped-query attention); heads when unset."
    )
    intermediate_size: Annotated[int, Ge(8), Le(262144)] | None = Field(
        default=None, description="SwiGLU width; about 8/3 x hiddenSize rounded up to 256 when unset."
    )
    max_seq_len: Annotated[int, Ge(8), Le(1_048_576)] | None = Field(
        default=None,
        description="Context length in tokens; 2048 when unset (with spec.init: the config's max_position_embeddings).",
    )
    rope_theta: Annotated[float, Gt(0.0)] | None = Field(
        default=None, description="RoPE base frequency; 10000 when unset."
    )
    norm_eps: Annotated[float, Gt(0.0), Lt(1.0)] | None = Field(
        default=None, description="RMSNorm epsilon; 1e-5 when unset."
    )
    tie_embeddings: bool | None = Field(
        default=None, description="Share the input embedding with the output projection; false when unset."
    )


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
    """The learning-rate schedule: linear warmup, then decay to lr x minLrRatio. `wsd` (warmup-stable-decay)
    holds the peak lr until the last decaySteps, then decays: the schedule continued pretraining wants."""

    type: Literal["cosine", "linear", "constant", "wsd"] = Field(
        default="cosine", description="cosine, linear, constant or wsd (warmup-stable-decay)."
    )
    warmup_steps: Annotated[int, Ge(0)] = Field(default=0, description="Linear warmup steps.")
    min_lr_ratio: Annotated[float, Ge(0.0), Le(1.0)] = Field(default=0.1, description="Final lr as a fraction of lr.")
    decay_steps: Annotated[int, Ge(1)] | None = Field(
        default=None, description="wsd: steps of the final decay; a fifth of maxSteps when unset."
    )
    decay_shape: Literal["linear", "sqrt"] = Field(
        default="linear", description="wsd: the decay's shape, linear or sqrt (1 - sqrt of the decay's progress)."
    )


class TrainingSpec(ApiModel):
    """The optimization loop. One step consumes nodes x gpus x microBatchSize x accumulation sequences."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.scheduler.warmupSteps < self.maxSteps", "must be less than maxSteps", ".scheduler.warmupSteps"),
        CelRule(
            "!has(self.scheduler.decaySteps)"
            " || self.scheduler.warmupSteps + self.scheduler.decaySteps <= self.maxSteps",
            "warmupSteps + decaySteps must not exceed maxSteps",
            ".scheduler.decaySteps",
        ),
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
        default="bf16",
        description="Compute precision (parameters and reductions stay fp32): bf16 on GPUs (CPUs compute it in"
        " fp32); fp16 on GPUs and CPUs, with dynamic loss scaling (overflowing steps are skipped and counted).",
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
    async_save: bool = Field(
        default=True,
        description="Write checkpoints in the background: training stalls only while the state is copied"
        " aside; `latest` moves once every rank's files are written. false: training waits for each write.",
    )
    uri: StorageUri | None = Field(
        default=None,
        description="s3://, pvc:// or (local runner) a path; default: the operator's default storage"
        " under <namespace>/trainingruns/<name>/checkpoints/.",
    )


class ComputeSpec(ApiModel):
    """Nodes, accelerators and placement. Per node: one pod."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.sharding != 'hsdp' || self.nodes >= 2",
            "hsdp replicates the model across nodes and needs nodes >= 2; on one node use sharding: fsdp",
            ".sharding",
        ),
    )

    nodes: Annotated[int, Ge(1), Le(1024)] = Field(default=1, description="Pods (one per node), an Indexed Job.")
    gpus_per_node: Annotated[int, Ge(0), Le(64)] = Field(
        default=0, description="Accelerators per pod; one training process each. 0 trains on CPU."
    )
    sharding: Literal["fsdp", "hsdp"] = Field(
        default="fsdp",
        description="How the processes split the model. fsdp: parameters, gradients and AdamW states sharded"
        " over every process (the least memory; every gather crosses nodes). hsdp: a replica per node, sharded"
        " over that node's processes (gathers stay on the node's links, only a gradient all-reduce crosses"
        " nodes; each process holds 1/gpusPerNode of the state). Needs nodes >= 2.",
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


class InitSpec(ApiModel):
    """Weights to start from instead of random ones (continued pretraining). Applied once, at step 0: a run
    that has checkpoints of its own resumes from them. The optimizer starts fresh unless optimizerState."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "(has(self.from) ? 1 : 0) + (has(self.trainingRunRef) ? 1 : 0) + (has(self.modelExportRef) ? 1 : 0) == 1",
            "set exactly one of from, trainingRunRef and modelExportRef",
        ),
        CelRule("has(self.trainingRunRef) || !has(self.checkpoint)", "is only used with trainingRunRef", ".checkpoint"),
        CelRule(
            "!has(self.checkpoint) || self.checkpoint != 'step' || has(self.step)",
            "must be set when checkpoint is step",
            ".step",
        ),
        CelRule(
            "!has(self.step) || (has(self.checkpoint) && self.checkpoint == 'step')",
            "is only used when checkpoint is step",
            ".step",
        ),
        CelRule(
            "!has(self.modelExportRef) || !self.optimizerState",
            "an export holds no optimizer state: use trainingRunRef to continue with it",
            ".optimizerState",
        ),
    )

    from_uri: StorageUri | None = Field(
        default=None,
        alias="from",
        description="A Hugging Face Llama directory (config.json and model.safetensors, or shards with"
        " model.safetensors.index.json) or an llmtrain checkpoint (a step-NNNNNNNN directory, or a checkpoint"
        " root whose `latest` is taken); s3://, pvc:// or (local runner) a path. Never downloaded from a hub.",
    )
    training_run_ref: LocalObjectReference | None = Field(
        default=None, description="Start from a checkpoint of this TrainingRun (same namespace)."
    )
    checkpoint: Literal["latest", "best", "step"] | None = Field(
        default=None,
        description="With trainingRunRef: latest (the default; waits for the run to succeed), best, or step.",
    )
    step: Annotated[int, Ge(0)] | None = Field(
        default=None, description="The checkpoint's step when checkpoint is step."
    )
    model_export_ref: LocalObjectReference | None = Field(
        default=None, description="Start from this ModelExport's safetensors (Hugging Face layout) artifact."
    )
    optimizer_state: bool = Field(
        default=False,
        description="Also load the AdamW moments of the llmtrain checkpoint (continuing a run of one's own);"
        " the step counter, schedule and data order start at 0 either way.",
    )


class DataMixtureEntry(ApiModel):
    """One DataSource of a mixture and its share of the training windows."""

    data_source_ref: LocalObjectReference = Field(description="The DataSource (same namespace).")
    weight: Annotated[float, Gt(0.0), Le(1_000_000.0)] = Field(
        default=1.0, description="Relative weight: the share of windows is weight / the sum of weights."
    )


class MlflowTrackingSpec(ApiModel):
    """An MLflow tracking server rank 0 logs to (its REST API): params, metrics at each log step, the run's
    end. An unreachable server never fails or stalls training: metrics wait in a bounded queue, then are
    dropped and counted. A resumed run continues the same MLflow run."""

    secret_hints: ClassVar[dict[str, str]] = {
        key: "put MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) in a Secret"
        " and set credentialsSecretRef: {name: <secret>}"
        for key in ("token", "password", "username", "credentials")
    }

    uri: Annotated[
        str,
        MaxLen(2048),
        Matches(
            r"^https?://[^\s/@]+(/\S*)?$",
            "must be an http:// or https:// URL without credentials (put them in a Secret and set"
            " credentialsSecretRef)",
        ),
    ] = Field(description="The tracking server, e.g. https://mlflow.example.com.")
    experiment: Annotated[str, MinLen(1), MaxLen(500)] = Field(
        default="llmtrain", description="Experiment name; created when missing."
    )
    credentials_secret_ref: SecretReference | None = Field(
        default=None,
        description="Secret (same namespace) with MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and"
        " MLFLOW_TRACKING_PASSWORD; mounted into the trainer pods, never logged.",
    )


class TrackingSpec(ApiModel):
    """Experiment tracking beyond the run's own metrics files."""

    mlflow: MlflowTrackingSpec | None = Field(default=None, description="Log to an MLflow tracking server.")


class TrainingRunSpec(ApiModel):
    """What to train, on which data, with which resources."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("has(self.dataSourceRef) != has(self.data)", "set exactly one of dataSourceRef and data"),
        CelRule(
            "!has(self.data)"
            " || self.data.all(x, self.data.exists_one(y, y.dataSourceRef.name == x.dataSourceRef.name))",
            "each DataSource may appear once",
            ".data",
        ),
        CelRule(
            "has(self.init) || (has(self.model) && has(self.model.layers) && has(self.model.hiddenSize)"
            " && has(self.model.heads))",
            "spec.model needs layers, hiddenSize and heads unless spec.init names weights to start from",
            ".model",
        ),
        CelRule(
            "!(self.resources.gpuResourceName in self.pod.extraResources)",
            "must not hold the accelerators: set spec.resources.gpusPerNode",
            ".pod.extraResources",
        ),
        QUEUE_PRIORITY_RULE,
    )

    data_source_ref: (
        Annotated[
            LocalObjectReference,
            CelRule(IMMUTABLE, "spec.dataSourceRef is immutable: create a new TrainingRun to train on other data"),
        ]
        | None
    ) = Field(default=None, description="The DataSource whose shards and tokenizer to train on.")
    data: (
        Annotated[
            list[DataMixtureEntry],
            MinLen(1),
            MaxLen(16),
            CelRule(
                IMMUTABLE, "spec.data is immutable: create a new TrainingRun (spec.init can start it from this one)"
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="A weighted mixture of DataSources (instead of dataSourceRef); their tokenizers must be"
        " identical. Each step's windows come from the sources in proportion to the weights.",
    )
    model: ModelSpec | None = Field(default=None, description="Model shape; optional with spec.init.")
    init: InitSpec | None = Field(default=None, description="Start from existing weights (continued pretraining).")
    training: TrainingSpec = Field(description="The optimization loop.")
    validation: ValidationLoopSpec = Field(default_factory=ValidationLoopSpec, description="Validation.")
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec, description="Checkpoints.")
    resources: ComputeSpec = Field(default_factory=ComputeSpec, description="Nodes, accelerators and placement.")
    alerts: AlertsSpec = Field(default_factory=AlertsSpec, description="Anomaly alerts.")
    tracking: TrackingSpec | None = Field(
        default=None, description="Experiment tracking: an MLflow server the trainer logs to."
    )
    queue_name: Annotated[str, MaxLen(253)] | None = Field(
        default=None, description="Kueue LocalQueue; the Job is created suspended and admitted by Kueue."
    )
    workload_priority_class_name: ObjectName | None = Field(default=None, description=WORKLOAD_PRIORITY)
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
    pod: PodControls = Field(default_factory=PodControls, description=POD_CONTROLS)

    def mixture(self) -> list[tuple[str, float]]:
        """(DataSource name, share of the windows) for each source, in order; shares sum to 1."""
        if self.data is None:
            return [(self.data_source_ref.name, 1.0)] if self.data_source_ref else []
        total = sum(entry.weight for entry in self.data)
        return [(entry.data_source_ref.name, entry.weight / total) for entry in self.data]


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


class SourceStatus(ApiModel):
    """One DataSource of the run's data: its share, the tokens drawn from it, its validation loss."""

    name: str = Field(description="The DataSource.")
    weight: float = Field(description="Share of the training windows, 0-1.")
    tokens_seen: int | None = Field(default=None, description="Training tokens drawn from it.")
    epochs: float | None = Field(default=None, description="Tokens drawn over its train tokens: above 1 it repeats.")
    val_loss: float | None = Field(default=None, description="Last validation loss on its validation split.")


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
    val_loss: float | None = Field(
        default=None, description="Last validation loss (a mixture: the weighted mean of its sources')."
    )
    sources: Annotated[list[SourceStatus], MaxLen(16)] = Field(
        default_factory=list, description="Per DataSource of a mixture: share, tokens drawn, validation loss."
    )
    initialized_from: str | None = Field(
        default=None, description="The weights the run started from (spec.init), as the trainer loaded them."
    )
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
    """Train a model with FSDP2 under torchrun, from scratch or from existing weights, on one DataSource or a
    weighted mixture; checkpoints, resume, metrics, alerts."""

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
