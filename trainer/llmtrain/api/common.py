"""Types shared by the three kinds: references, storage URIs, resources, pod controls, conditions, metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from .affinity import Affinity, LabelValue
from .base import ApiModel, CelRule, IntOrString, ListType, Matches, rule_error

GROUP = "llmtrain.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Longest resource name: leaves room for child suffixes ("-train-<index>") within 63 characters.
MAX_NAME_LENGTH = 48

DNS_LABEL = Matches(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "must be a lowercase RFC 1123 label: a-z, 0-9 and '-', starting and ending with a letter or digit",
)
DNS_SUBDOMAIN = Matches(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "must be a lowercase RFC 1123 subdomain: a-z, 0-9, '-' and '.', starting and ending with a letter or digit",
)

#: A Kubernetes object name (Secrets, PVCs, resources referred to by name).
ObjectName = Annotated[str, MinLen(1), MaxLen(253), DNS_SUBDOMAIN]

#: A storage location: `s3://bucket/prefix`, `pvc://claim/path`, or a local path (local runner only).
StorageUri = Annotated[
    str,
    MinLen(1),
    MaxLen(1024),
    Matches(
        r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|[^:]+)$",
        "must be s3://<bucket>/<prefix>, pvc://<claim>/<path> or a local path (local runner only);"
        " other schemes are not supported",
    ),
    CelRule(r"!self.matches('(^|/)\\.\\.(/|$)')", "must not contain '..' path segments"),
]

#: A Kubernetes resource quantity such as `8`, `500m`, `32Gi`; never negative (pods refuse negative resources).
Quantity = Annotated[
    str,
    IntOrString(minimum=0),
    MaxLen(64),
    Matches(
        r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "must be a Kubernetes quantity, not negative, such as 4, 500m, 16Gi",
    ),
]

#: A container image reference.
Image = Annotated[str, MinLen(1), MaxLen(512), Matches(r"^[^\s]+$", "must be an image reference without spaces")]

#: An RFC 3339 time: a string on the wire (the one field type parsed from a string).
Timestamp = Annotated[datetime, Strict(False)]


class LocalObjectReference(ApiModel):
    """A reference to another llmtrain resource in the same namespace."""

    name: ObjectName = Field(description="Name of the resource, in the same namespace.")


class _SecretRef(ApiModel):
    """Refuses a bare string where a Secret reference belongs: the credential itself, most likely."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise rule_error("must reference a Secret as {name: <secret-name>}; never write the credential itself here")
        return data


class SecretReference(_SecretRef):
    """A Secret in the same namespace whose keys become the pod's environment."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")


class SecretKeySelector(_SecretRef):
    """One key of a Secret in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")
    key: Annotated[
        str,
        MinLen(1),
        MaxLen(253),
        Matches(r"^[-._a-zA-Z0-9]+$", "must be a Secret key: letters, digits, '-', '_', '.'"),
    ] = Field(description="Key within the Secret.")


class Toleration(ApiModel):
    """A pod toleration, as in the Kubernetes core API."""

    key: Annotated[str, MaxLen(316)] | None = Field(
        default=None, description="Taint key; empty with Exists matches all."
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: Annotated[str, MaxLen(63)] | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: Annotated[int, Ge(0)] | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint appears."
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.operator != 'Exists' || !has(self.value)", "must be empty when operator is Exists", ".value"),
    )


class PodResources(ApiModel):
    """CPU and memory for each pod (requests = limits, so pods get the Guaranteed QoS class)."""

    cpu: Quantity | None = Field(default=None, description="CPU per pod, e.g. 4 or 500m.")
    memory: Quantity | None = Field(default=None, description="Memory per pod, e.g. 16Gi.")


#: Environment variables of the workload contract (docs/operator.md): the operator sets them.
RESERVED_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "JOB_COMPLETION_INDEX",
    "POD_NAME",
    "POD_NAMESPACE",
    "HOME",
    "TMPDIR",
    "PYTHONUNBUFFERED",
)
RESERVED_ENV_PREFIXES = ("LLMTRAIN_", "TORCHELASTIC_")
#: Pod label and annotation keys the operator, the Job controller or Kueue own: (prefixes, exact keys).
RESERVED_KEY_PREFIXES = ("llmtrain.dev/", "batch.kubernetes.io/")
RESERVED_LABELS = (
    "job-name",
    "controller-uid",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)
KUEUE_LABELS = ("kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class")


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _no_prefix(variable: str, prefixes: tuple[str, ...]) -> str:
    return " && ".join(f"!{variable}.startsWith('{prefix}')" for prefix in prefixes)


EnvName = Annotated[
    str,
    MinLen(1),
    MaxLen(256),
    Matches(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", "must be an environment variable name: letters, digits, '_', '-', '.'"),
    CelRule(
        f"{_no_prefix('self', RESERVED_ENV_PREFIXES)} && !(self in {_cel_list(RESERVED_ENV)})",
        f"is set by the operator (the workload contract: {', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)},"
        f" {', '.join(RESERVED_ENV)}): choose another name",
    ),
]


class SecretEnvSource(ApiModel):
    """Where an environment variable's value comes from: a key of a Secret, never a literal credential."""

    secret_key_ref: SecretKeySelector = Field(description="The Secret key whose value the variable takes.")


class EnvVar(ApiModel):
    """An environment variable of every workload container: a literal value, or a Secret key (credentials)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both"),
    )

    name: EnvName = Field(description="The variable, e.g. NCCL_IB_HCA or FI_PROVIDER.")
    value: Annotated[str, MaxLen(32768)] | None = Field(default=None, description="A literal value.")
    value_from: SecretEnvSource | None = Field(
        default=None, description="The value from a Secret key: {secretKeyRef: {name, key}}."
    )


class PullSecretReference(ApiModel):
    """A Secret of type kubernetes.io/dockerconfigjson in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")


#: Keys of `extraResources`: extended resource names <domain>/<name> outside the kubernetes.io domain.
EXTENDED_RESOURCE_KEYS = CelRule(
    "self.all(k, k.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')"
    " && !k.startsWith('kubernetes.io/') && !k.contains('.kubernetes.io/') && !k.startsWith('requests.'))",
    "keys must be extended resource names <domain>/<name> outside the kubernetes.io domain, such as rdma/ib"
    " or vpc.amazonaws.com/efa",
)
#: Label (and annotation) keys: an optional DNS subdomain prefix and '/', then a name of at most 63 characters.
LABEL_KEYS = CelRule(
    "self.all(k, k.size() <= 317 && k.matches("
    "'^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",
    "keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 of a-z, A-Z, 0-9,"
    " '-', '_', '.', starting and ending with a letter or digit",
)


def _reserved_keys(kind: str, exact: tuple[str, ...] = ()) -> CelRule:
    """Refuses the label or annotation keys the operator and the Job controller set on every pod."""
    rule = _no_prefix("k", RESERVED_KEY_PREFIXES) + (f" && !(k in {_cel_list(exact)})" if exact else "")
    owned = ", ".join([*(p + "*" for p in RESERVED_KEY_PREFIXES), *exact])
    return CelRule(f"self.all(k, {rule})", f"must not set {kind} the operator or the Job controller own ({owned})")


class PodControls(ApiModel):
    """What a cluster needs on the workload pods besides CPU, memory and accelerators: environment (NCCL,
    EFA), scheduling (affinity, priority, a scheduler such as Volcano), pod labels and annotations, image
    pull Secrets, extended resources (RDMA, EFA) and the /dev/shm size. The same block on every kind (where
    the pods run, nodeSelector and tolerations, is spec.resources'); the local runner applies env and
    ignores the rest."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.env.all(e, self.env.exists_one(f, f.name == e.name))", "each variable may appear once", ".env"),
        CelRule(
            f"!self.labels.exists(k, k in {_cel_list(KUEUE_LABELS)})",
            "set Kueue's labels with spec.queueName and spec.workloadPriorityClassName",
            ".labels",
        ),
    )

    env: Annotated[list[EnvVar], MaxLen(128), ListType("map", ("name",))] = Field(
        default_factory=list,
        description="Environment variables of every workload container (NCCL_*, FI_*, ...): a value, or"
        " valueFrom.secretKeyRef for a credential. LLMTRAIN_*, TORCHELASTIC_* and the torchrun variables"
        " are the operator's.",
    )
    affinity: Affinity | None = Field(
        default=None, description="Node affinity and pod (anti-)affinity, as Kubernetes core/v1 Affinity."
    )
    priority_class_name: ObjectName | None = Field(
        default=None,
        description="The pods' PriorityClass (scheduling priority and preemption); it must exist in the cluster.",
    )
    scheduler_name: ObjectName | None = Field(
        default=None,
        description="The scheduler that places the pods, e.g. volcano or scheduler-plugins-scheduler"
        " (coscheduling); the default scheduler when unset.",
    )
    labels: Annotated[dict[str, LabelValue], MaxLen(32), LABEL_KEYS, _reserved_keys("labels", RESERVED_LABELS)] = Field(
        default_factory=dict,
        description="Extra pod labels (a PodGroup or coscheduling label, a cost centre); keys must not be the"
        " operator's, the Job controller's or Kueue's.",
    )
    annotations: Annotated[
        dict[str, Annotated[str, MaxLen(4096)]], MaxLen(32), LABEL_KEYS, _reserved_keys("annotations")
    ] = Field(
        default_factory=dict,
        description="Extra pod annotations (e.g. scheduling.k8s.io/group-name for Volcano); llmtrain.dev/* and"
        " batch.kubernetes.io/* are refused.",
    )
    image_pull_secrets: Annotated[list[PullSecretReference], MaxLen(8)] = Field(
        default_factory=list, description="Secrets holding credentials for a private registry."
    )
    extra_resources: Annotated[dict[str, Annotated[int, Ge(1), Le(1_000_000)]], MaxLen(8), EXTENDED_RESOURCE_KEYS] = (
        Field(
            default_factory=dict,
            description="Extended resources per pod, as requests = limits, e.g. {rdma/ib: 1} or"
            " {vpc.amazonaws.com/efa: 4}; counts are whole numbers. A TrainingRun's accelerators are"
            " spec.resources.gpusPerNode.",
        )
    )
    shm_size: Quantity | None = Field(
        default=None,
        description="Size limit of /dev/shm (an in-memory emptyDir; it counts against the pod's memory), e.g. 16Gi.",
    )


POD_CONTROLS = "Env, affinity, priority, scheduler, labels, annotations, pull Secrets, extended resources, /dev/shm."
QUEUE_NAME = "Kueue LocalQueue; the Job is created suspended and admitted by Kueue (ignored by the local runner)."
WORKLOAD_PRIORITY = (
    "Kueue WorkloadPriorityClass (the Job's kueue.x-k8s.io/priority-class label); with queueName."
    " Applies to Jobs created after a change."
)
#: A spec's Kueue priority needs its queue.
QUEUE_PRIORITY_RULE = CelRule(
    "!has(self.workloadPriorityClassName) || has(self.queueName)",
    "is only used with queueName (Kueue admits queued Jobs by it)",
    ".workloadPriorityClassName",
)

#: Node labels pods require (`nodeSelector`).
NodeSelectorMap = Annotated[dict[str, Annotated[str, MaxLen(63)]], MaxLen(64)]
Tolerations = Annotated[list[Toleration], MaxLen(64)]


class PlacedPodResources(PodResources):
    """CPU and memory of each pod (requests = limits) and the nodes it may run on."""

    node_selector: NodeSelectorMap = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: Tolerations = Field(default_factory=list, description="Taints the pods tolerate.")


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: Annotated[str, MinLen(1), MaxLen(316)] = Field(description="Condition type, e.g. Ready, Succeeded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Annotated[str, MaxLen(1024)] = Field(default="", description="CamelCase reason for the last transition.")
    message: Annotated[str, MaxLen(32768)] = Field(default="", description="Human-readable details.")
    last_transition_time: Timestamp | None = Field(default=None, description="When the status last changed.")
    observed_generation: Annotated[int, Ge(0)] | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
    )


Conditions = Annotated[list[Condition], MaxLen(32), ListType("map", ("type",))]


class ObjectMeta(BaseModel):
    """The metadata the API types read; every other metadata field is kept as it is."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[
        str,
        MinLen(1),
        MaxLen(MAX_NAME_LENGTH),
        Matches(
            r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
            f"must be at most {MAX_NAME_LENGTH} characters of a-z, 0-9 and '-', starting with a letter"
            " and ending with a letter or digit (child Jobs, Services and pods derive their names from it)",
        ),
    ]
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None


#: The rule the API server applies to a resource's name (the only metadata a CRD rule may read).
NAME_RULE = CelRule(
    f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters of a-z, 0-9 and '-', starting with a letter",
)


class Failure(ApiModel):
    """Why a resource failed, pinned to the pod (and rank) that explains it."""

    reason: Annotated[str, MaxLen(128)] = Field(
        description="e.g. OOMKilled, NonFiniteLoss, InvalidSpec, ImagePullBackOff."
    )
    message: Annotated[str, MaxLen(32768)] = Field(description="Details and the fix.")
    pod: str | None = Field(default=None, description="The failing pod.")
    rank: int | None = Field(default=None, description="The failing rank (node index).")
    exit_code: int | None = Field(default=None, description="The container's exit code.")
