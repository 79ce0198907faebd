"""Types shared by the three kinds: references, storage URIs, resources, conditions, metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

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
