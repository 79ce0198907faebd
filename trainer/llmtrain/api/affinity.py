"""Pod affinity, typed as Kubernetes core/v1 `Affinity`: node affinity (required and preferred node selector
terms) and pod (anti-)affinity (label selectors with a topologyKey). The fields and rules follow the real
schema closely enough that an `affinity` block copied from a Kubernetes manifest validates unchanged."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import Field

from .base import ApiModel, CelRule, ListType, Matches

#: A label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters.
LabelKey = Annotated[
    str,
    MinLen(1),
    MaxLen(317),
    Matches(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
        "must be a label key: an optional DNS subdomain prefix and '/', then at most 63 of a-z, A-Z, 0-9,"
        " '-', '_', '.', starting and ending with a letter or digit",
    ),
]
#: A label value: at most 63 characters, empty or starting and ending with a letter or digit.
LabelValue = Annotated[
    str,
    MaxLen(63),
    Matches(
        r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
        "must be a label value: at most 63 of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with a letter or digit",
    ),
]
Values = Annotated[list[Annotated[str, MaxLen(63)]], MaxLen(64)]
Weight = Annotated[int, Ge(1), Le(100)]
#: A topology label such as kubernetes.io/hostname or topology.kubernetes.io/zone.
TopologyKey = Annotated[str, MinLen(1), MaxLen(317)]


#: The rules on `values` that node and pod label requirements share.
SET_OPERATOR_RULES = (
    CelRule(
        "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
        "must not be empty with operator In or NotIn",
        ".values",
    ),
    CelRule(
        "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
        "must be empty with operator Exists or DoesNotExist",
        ".values",
    ),
)


class NodeSelectorRequirement(ApiModel):
    """A node label (or field) compared with values: In, NotIn, Exists, DoesNotExist, Gt, Lt."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        *SET_OPERATOR_RULES,
        CelRule(
            "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1"
            " && self.values[0].matches('^-?[0-9]+$'))",
            "must be one integer with operator Gt or Lt",
            ".values",
        ),
    )

    key: LabelKey = Field(description="The node label key (or, in matchFields, metadata.name).")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: Values | None = Field(
        default=None, description="Values: one or more for In/NotIn, one integer for Gt/Lt, none otherwise."
    )


class NodeSelectorTerm(ApiModel):
    """Requirements that must all hold (AND)."""

    match_expressions: Annotated[list[NodeSelectorRequirement], MaxLen(32)] | None = Field(
        default=None, description="Requirements on node labels."
    )
    match_fields: Annotated[list[NodeSelectorRequirement], MaxLen(8)] | None = Field(
        default=None, description="Requirements on node fields (metadata.name)."
    )


class NodeSelector(ApiModel):
    """Terms of which at least one must hold (OR)."""

    node_selector_terms: Annotated[list[NodeSelectorTerm], MinLen(1), MaxLen(16)] = Field(
        description="The terms; a node matching any of them qualifies."
    )


class PreferredSchedulingTerm(ApiModel):
    """A node selector term the scheduler favours with a weight."""

    weight: Weight = Field(description="1-100, added to a node's score when the term matches.")
    preference: NodeSelectorTerm = Field(description="The term.")


class NodeAffinity(ApiModel):
    """Which nodes the pods may (required) or should (preferred) run on, by node labels."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pods must run on; a pod stays Pending until one qualifies."
    )
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[PreferredSchedulingTerm], MaxLen(16)] | None
    ) = Field(default=None, description="Nodes the scheduler favours.")


class LabelSelectorRequirement(ApiModel):
    """A pod label compared with values: In, NotIn, Exists, DoesNotExist."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (*SET_OPERATOR_RULES,)

    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: Values | None = Field(default=None, description="Values for In and NotIn; none otherwise.")


class LabelSelector(ApiModel):
    """Pods (or namespaces) whose labels match every term."""

    match_labels: Annotated[dict[str, LabelValue], MaxLen(32)] | None = Field(
        default=None, description="Labels that must be equal."
    )
    match_expressions: Annotated[list[LabelSelectorRequirement], MaxLen(32)] | None = Field(
        default=None, description="Requirements on labels."
    )


class PodAffinityTerm(ApiModel):
    """Pods matching labelSelector (in namespaces) on the same topology domain (topologyKey)."""

    label_selector: LabelSelector | None = Field(default=None, description="The pods; none when unset.")
    namespaces: Annotated[list[Annotated[str, MaxLen(63)]], MaxLen(32)] | None = Field(
        default=None, description="Namespaces of those pods; the pod's own when empty."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces of those pods by label ({} is every namespace)."
    )
    topology_key: TopologyKey = Field(
        description="Node label whose value is the domain, e.g. kubernetes.io/hostname or topology.kubernetes.io/zone."
    )
    match_label_keys: Annotated[list[LabelKey], MaxLen(16), ListType("set")] | None = Field(
        default=None, description="Label keys whose values are taken from the incoming pod (In)."
    )
    mismatch_label_keys: Annotated[list[LabelKey], MaxLen(16), ListType("set")] | None = Field(
        default=None, description="Label keys whose values are taken from the incoming pod (NotIn)."
    )


class WeightedPodAffinityTerm(ApiModel):
    """A pod affinity term the scheduler favours with a weight."""

    weight: Weight = Field(description="1-100, added to a node's score when the term matches.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    """Run near pods that match (same node, rack or zone); anti-affinity: away from them."""

    required_during_scheduling_ignored_during_execution: Annotated[list[PodAffinityTerm], MaxLen(16)] | None = Field(
        default=None, description="Terms every node must satisfy."
    )
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[WeightedPodAffinityTerm], MaxLen(16)] | None
    ) = Field(default=None, description="Terms the scheduler favours.")


class Affinity(ApiModel):
    """Scheduling constraints, as Kubernetes core/v1 Affinity."""

    node_affinity: NodeAffinity | None = Field(default=None, description="By node labels.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Near pods that match.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Away from pods that match.")
