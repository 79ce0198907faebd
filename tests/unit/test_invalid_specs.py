"""Every invalid spec is refused twice: by the pydantic models (local runner, CLIs) with a message
that names the field and the fix, and by the generated CRD as the API server would (schema, strict
fields, CEL)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from llmtrain.api import SpecError, parse_resource
from support.apiserver import admit

Mutation = Callable[[dict[str, Any]], None]


def set_path(path: str, value: Any) -> Mutation:
    """A mutation setting a dotted path (list indices as numbers) in the object."""

    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = obj
        for part in parents:
            target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
        target[last] = value

    return mutate


def drop_path(path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[int(part) if part.isdigit() else part]
        del target[last]

    return mutate


def use_mixture(entries: list[dict[str, Any]]) -> Mutation:
    """A mutation training the run on the mixture `entries` (spec.data) instead of its dataSourceRef."""

    def mutate(obj: dict[str, Any]) -> None:
        del obj["spec"]["dataSourceRef"]
        obj["spec"]["data"] = copy.deepcopy(entries)

    return mutate


CASES: list[tuple[str, str, Mutation, str, str]] = [
    # (id, kind, mutation, field path in the error, what the message says)
    (
        "absolute-pvc-path",
        "DataSource",
        set_path("spec.sources.0", {"pvc": {"claimName": "corpus", "path": "/etc/*"}}),
        "spec.sources[0].pvc.path",
        "must be relative to the volume's root",
    ),
    (
        "unknown-field",
        "DataSource",
        set_path("spec.tokenizer.vocab", 10),
        "spec.tokenizer.vocab",
        "unknown field; did you mean 'vocabSize'?",
    ),
    (
        "two-source-kinds",
        "DataSource",
        set_path("spec.sources.0.s3", {"bucket": "corpora"}),
        "spec.sources[0]",
        "each source must set exactly one of s3, http, pvc, local, sql, huggingface",
    ),
    (
        "no-source-kind",
        "DataSource",
        set_path("spec.sources.0", {}),
        "spec.sources[0]",
        "each source must set exactly one of s3, http, pvc, local, sql, huggingface",
    ),
    ("no-sources", "DataSource", set_path("spec.sources", []), "spec.sources", "must have at least 1 item"),
    (
        "uri-dotdot",
        "DataSource",
        set_path("spec.output.uri", "pvc://data/corpus/../../etc"),
        "spec.output.uri",
        "must not contain '..' path segments",
    ),
    (
        "uri-unknown-scheme",
        "DataSource",
        set_path("spec.output.uri", "ftp://host/corpus"),
        "spec.output.uri",
        "other schemes are not supported",
    ),
    (
        "uri-file-scheme",
        "DataSource",
        set_path("spec.output.uri", "file:///data"),
        "spec.output.uri",
        "other schemes are not supported",
    ),
    (
        "inline-s3-secret",
        "DataSource",
        set_path("spec.sources.0", {"s3": {"bucket": "corpora", "secretAccessKey": "hunter2"}}),
        "spec.sources[0].s3.secretAccessKey",
        "credentials must not be written into the spec; put AWS_ACCESS_KEY_ID",
    ),
    (
        "secret-as-string",
        "DataSource",
        set_path("spec.sources.0", {"s3": {"bucket": "corpora", "credentialsSecret": "AKIAIOSFODNN7EXAMPLE"}}),
        "spec.sources[0].s3.credentialsSecret",
        "must reference a Secret as {name: <secret-name>}",
    ),
    (
        "inline-sql-url",
        "DataSource",
        set_path("spec.sources.0", {"sql": {"url": "postgresql://u:p@db/x", "query": "SELECT text FROM docs"}}),
        "spec.sources[0].sql.url",
        "put the SQLAlchemy URL in a Secret and set urlSecret",
    ),
    (
        "http-url-credentials",
        "DataSource",
        set_path("spec.sources.0", {"http": {"urls": ["https://user:pw@example.org/corpus.txt"]}}),
        "spec.sources[0].http.urls[0]",
        "must be an http:// or https:// URL without credentials (put them in a Secret and set authSecret)",
    ),
    (
        "http-bad-scheme",
        "DataSource",
        set_path("spec.sources.0", {"http": {"urls": ["gopher://example.org/x"]}}),
        "spec.sources[0].http.urls[0]",
        "must be an http:// or https:// URL",
    ),
    (
        "bands-not-dividing",
        "DataSource",
        set_path("spec.dedup", {"minhash": {"numPerm": 100, "bands": 14}}),
        "spec.dedup.minhash.bands",
        "must divide numPerm",
    ),
    (
        "vocab-wrong-type",
        "DataSource",
        set_path("spec.tokenizer.vocabSize", "big"),
        "spec.tokenizer.vocabSize",
        "must be an integer",
    ),
    (
        "vocab-too-small",
        "DataSource",
        set_path("spec.tokenizer.vocabSize", 100),
        "spec.tokenizer.vocabSize",
        "must be >= 384",
    ),
    (
        "split-too-large",
        "DataSource",
        set_path("spec.split", {"validationFraction": 0.9}),
        "spec.split.validationFraction",
        "must be <= 0.5",
    ),
    ("unknown-format", "DataSource", set_path("spec.format", "csv"), "spec.format", "must be one of"),
    (
        "chars-bounds",
        "DataSource",
        set_path("spec.validation", {"minChars": 500, "maxChars": 100}),
        "spec.validation.maxChars",
        "must be greater than minChars",
    ),
    ("negative-workers", "DataSource", set_path("spec.workers", -2), "spec.workers", "must be >= 1"),
    (
        "heads-not-dividing-hidden",
        "TrainingRun",
        set_path("spec.model", {"layers": 2, "hiddenSize": 100, "heads": 3}),
        "spec.model.heads",
        "must divide hiddenSize",
    ),
    (
        "kvheads-not-dividing-heads",
        "TrainingRun",
        set_path("spec.model", {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 3}),
        "spec.model.kvHeads",
        "must divide heads",
    ),
    (
        "odd-head-size",
        "TrainingRun",
        set_path("spec.model", {"layers": 2, "hiddenSize": 60, "heads": 4}),
        "spec.model.heads",
        "head size) must be even for RoPE",
    ),
    ("negative-layers", "TrainingRun", set_path("spec.model.layers", -1), "spec.model.layers", "must be >= 1"),
    ("zero-steps", "TrainingRun", set_path("spec.training.maxSteps", 0), "spec.training.maxSteps", "must be > 0"),
    (
        "unknown-precision",
        "TrainingRun",
        set_path("spec.training.precision", "fp8"),
        "spec.training.precision",
        "must be one of 'bf16', 'fp16' or 'fp32'",
    ),
    (
        "warmup-too-long",
        "TrainingRun",
        set_path("spec.training.scheduler", {"warmupSteps": 10}),
        "spec.training.scheduler.warmupSteps",
        "must be less than maxSteps",
    ),
    (
        "three-betas",
        "TrainingRun",
        set_path("spec.training.optimizer", {"betas": [0.9, 0.95, 0.99]}),
        "spec.training.optimizer.betas",
        "must have at most 2 item(s)",
    ),
    (
        "neither-data-ref-nor-data",
        "TrainingRun",
        drop_path("spec.dataSourceRef"),
        "spec",
        "set exactly one of dataSourceRef and data",
    ),
    (
        "both-data-ref-and-data",
        "TrainingRun",
        set_path("spec.data", [{"dataSourceRef": {"name": "web"}, "weight": 3}, {"dataSourceRef": {"name": "code"}}]),
        "spec",
        "set exactly one of dataSourceRef and data",
    ),
    (
        "repeated-mixture-source",
        "TrainingRun",
        use_mixture([{"dataSourceRef": {"name": "web"}}, {"dataSourceRef": {"name": "web"}, "weight": 2}]),
        "spec.data",
        "each DataSource may appear once",
    ),
    (
        "zero-mixture-weight",
        "TrainingRun",
        use_mixture([{"dataSourceRef": {"name": "web"}, "weight": 0}]),
        "spec.data[0].weight",
        "must be > 0",
    ),
    (
        "two-init-sources",
        "TrainingRun",
        set_path("spec.init", {"from": "s3://models/base", "trainingRunRef": {"name": "base"}}),
        "spec.init",
        "set exactly one of from, trainingRunRef and modelExportRef",
    ),
    (
        "init-step-without-checkpoint-step",
        "TrainingRun",
        set_path("spec.init", {"trainingRunRef": {"name": "base"}, "step": 500}),
        "spec.init.step",
        "is only used when checkpoint is step",
    ),
    (
        "init-checkpoint-step-without-step",
        "TrainingRun",
        set_path("spec.init", {"trainingRunRef": {"name": "base"}, "checkpoint": "step"}),
        "spec.init.step",
        "must be set when checkpoint is step",
    ),
    (
        "optimizer-state-from-an-export",
        "TrainingRun",
        set_path("spec.init", {"modelExportRef": {"name": "base-export"}, "optimizerState": True}),
        "spec.init.optimizerState",
        "an export holds no optimizer state: use trainingRunRef to continue with it",
    ),
    (
        "model-without-layers-and-no-init",
        "TrainingRun",
        drop_path("spec.model.layers"),
        "spec.model",
        "spec.model needs layers, hiddenSize and heads unless spec.init names weights to start from",
    ),
    ("zero-nodes", "TrainingRun", set_path("spec.resources", {"nodes": 0}), "spec.resources.nodes", "must be >= 1"),
    (
        "bad-quantity",
        "TrainingRun",
        set_path("spec.resources", {"memory": "lots"}),
        "spec.resources.memory",
        "must be a Kubernetes quantity",
    ),
    (
        "toleration-exists-value",
        "TrainingRun",
        set_path("spec.resources", {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}),
        "spec.resources.tolerations[0].value",
        "must be empty when operator is Exists",
    ),
    ("unknown-export-format", "ModelExport", set_path("spec.formats", ["tflite"]), "spec.formats[0]", "must be one of"),
    (
        "unknown-quantization",
        "ModelExport",
        set_path("spec.quantization", "int2"),
        "spec.quantization",
        "must be one of",
    ),
    (
        "both-checkpoint-sources",
        "ModelExport",
        set_path("spec.checkpointUri", "s3://ckpts/run"),
        "spec",
        "set exactly one of trainingRunRef and checkpointUri",
    ),
    (
        "quantization-format-mismatch",
        "ModelExport",
        lambda o: o["spec"].update(formats=["onnx"], quantization="q4_0"),
        "spec.quantization",
        "quantization q4_0 needs format gguf in formats",
    ),
    (
        "step-without-number",
        "ModelExport",
        set_path("spec.checkpoint", "step"),
        "spec.step",
        "must be set when checkpoint is step",
    ),
    (
        "repeated-format",
        "ModelExport",
        set_path("spec.formats", ["gguf", "gguf"]),
        "spec.formats",
        "must not repeat an entry",
    ),
    (
        "bad-name",
        "ModelExport",
        set_path("metadata.name", "Export_1"),
        "metadata.name",
        "must be at most 48 characters of a-z, 0-9 and '-', starting with a letter",
    ),
    # spec.pod: the pod controls every kind shares
    (
        "env-owned-by-the-workload-contract",
        "TrainingRun",
        set_path("spec.pod", {"env": [{"name": "LLMTRAIN_SPEC", "value": "x"}]}),
        "spec.pod.env[0].name",
        "is set by the operator (the workload contract: LLMTRAIN_*",
    ),
    (
        "env-torchrun-variable",
        "TrainingRun",
        set_path("spec.pod", {"env": [{"name": "MASTER_ADDR", "value": "10.0.0.1"}]}),
        "spec.pod.env[0].name",
        "choose another name",
    ),
    (
        "env-bad-name",
        "DataSource",
        set_path("spec.pod", {"env": [{"name": "NCCL DEBUG", "value": "INFO"}]}),
        "spec.pod.env[0].name",
        "must be an environment variable name",
    ),
    (
        "env-repeated",
        "ModelExport",
        set_path("spec.pod", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
        "spec.pod.env",
        "each variable may appear once",
    ),
    (
        "env-value-and-secret",
        "TrainingRun",
        set_path(
            "spec.pod",
            {"env": [{"name": "HF_TOKEN", "value": "x", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}]},
        ),
        "spec.pod.env[0]",
        "set value or valueFrom, not both",
    ),
    (
        "env-from-configmap",
        "DataSource",
        set_path("spec.pod", {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}),
        "spec.pod.env[0].valueFrom.configMapKeyRef",
        "unknown field; allowed here: secretKeyRef",
    ),
    (
        "label-owned-by-the-operator",
        "TrainingRun",
        set_path("spec.pod", {"labels": {"llmtrain.dev/trainingrun": "other"}}),
        "spec.pod.labels",
        "must not set labels the operator or the Job controller own",
    ),
    (
        "label-job-name",
        "DataSource",
        set_path("spec.pod", {"labels": {"job-name": "x"}}),
        "spec.pod.labels",
        "job-name",
    ),
    (
        "label-kueue-queue",
        "ModelExport",
        set_path("spec.pod", {"labels": {"kueue.x-k8s.io/queue-name": "team"}}),
        "spec.pod.labels",
        "set Kueue's labels with spec.queueName and spec.workloadPriorityClassName",
    ),
    (
        "label-bad-key",
        "TrainingRun",
        set_path("spec.pod", {"labels": {"-bad key": "x"}}),
        "spec.pod.labels",
        "keys must be label keys",
    ),
    (
        "label-bad-value",
        "TrainingRun",
        set_path("spec.pod", {"labels": {"team": "a b"}}),
        "spec.pod.labels.team",
        "must be a label value",
    ),
    (
        "annotation-job-controller",
        "DataSource",
        set_path("spec.pod", {"annotations": {"batch.kubernetes.io/job-completion-index": "3"}}),
        "spec.pod.annotations",
        "must not set annotations the operator or the Job controller own",
    ),
    (
        "extra-resource-not-extended",
        "TrainingRun",
        set_path("spec.pod", {"extraResources": {"memory": 1}}),
        "spec.pod.extraResources",
        "keys must be extended resource names",
    ),
    (
        "extra-resource-fraction",
        "ModelExport",
        set_path("spec.pod", {"extraResources": {"rdma/ib": "500m"}}),
        "spec.pod.extraResources.rdma/ib",
        "must be an integer",
    ),
    (
        "extra-resource-holds-the-gpus",
        "TrainingRun",
        set_path("spec.pod", {"extraResources": {"nvidia.com/gpu": 8}}),
        "spec.pod.extraResources",
        "set spec.resources.gpusPerNode",
    ),
    (
        "shm-size-negative",
        "TrainingRun",
        set_path("spec.pod", {"shmSize": "-16Gi"}),
        "spec.pod.shmSize",
        "must be a Kubernetes quantity, not negative",
    ),
    (
        "unknown-scheduler-field",
        "DataSource",
        set_path("spec.pod", {"scheduler": "volcano"}),
        "spec.pod.scheduler",
        "did you mean 'schedulerName'?",
    ),
    (
        "bad-priority-class-name",
        "ModelExport",
        set_path("spec.pod", {"priorityClassName": "High_Priority"}),
        "spec.pod.priorityClassName",
        "must be a lowercase RFC 1123 subdomain",
    ),
    (
        "node-affinity-in-without-values",
        "TrainingRun",
        set_path(
            "spec.pod",
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In"}]}]
                        }
                    }
                }
            },
        ),
        "spec.pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].values",
        "must not be empty with operator In or NotIn",
    ),
    (
        "pod-anti-affinity-without-topology-key",
        "TrainingRun",
        set_path(
            "spec.pod",
            {
                "affinity": {
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]}
                }
            },
        ),
        "spec.pod.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
        "required",
    ),
    (
        "node-affinity-gt-not-a-number",
        "DataSource",
        set_path(
            "spec.pod",
            {
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 10,
                                "preference": {
                                    "matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["h100"]}]
                                },
                            }
                        ]
                    }
                }
            },
        ),
        "spec.pod.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
        ".matchExpressions[0].values",
        "must be one integer with operator Gt or Lt",
    ),
    (
        "workload-priority-without-queue",
        "DataSource",
        set_path("spec.workloadPriorityClassName", "high"),
        "spec.workloadPriorityClassName",
        "is only used with queueName",
    ),
    (
        "placement-in-spec-pod",
        "ModelExport",
        set_path("spec.pod", {"nodeSelector": {"pool": "cpu"}}),
        "spec.pod.nodeSelector",
        "unknown field",
    ),
]


def _normalize(path: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", path).strip(".")


@pytest.mark.parametrize(("kind", "mutate", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_models_refuse_with_field_and_fix(valid, kind, mutate, path, message):
    obj = valid[kind]
    mutate(obj)
    with pytest.raises(SpecError) as caught:
        parse_resource(obj)
    problems = {p.path: p.message for p in caught.value.problems}
    assert path in problems, f"expected an error at {path}, got {problems}"
    assert message in problems[path]


@pytest.mark.parametrize(("kind", "mutate", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_api_server_refuses_the_same(valid, crds, kind, mutate, path, message):
    obj = valid[kind]
    mutate(obj)
    errors = admit(crds[kind], obj)
    assert errors, "the CRD accepted an object the models refuse"
    paths = [_normalize(e.split(": ")[0]) for e in errors]
    target = _normalize(path)
    # The schema reports a field's error at the field or at its parent (unknown fields, required).
    assert any(
        target == p or target.startswith(p + ".") or (p == "" and "metadata.name" in e)
        for p, e in zip(paths, errors, strict=True)
    ), errors


def test_enough_invalid_cases_across_the_three_kinds():
    kinds = {c[1] for c in CASES}
    assert len(CASES) >= 15 and kinds == {"DataSource", "TrainingRun", "ModelExport"}


def test_cel_rules_say_the_same_on_both_sides(valid, crds):
    """A CEL rule is written once: the API server's message equals the models'."""
    obj = valid["TrainingRun"]
    obj["spec"]["model"].update(hiddenSize=100, heads=3, kvHeads=None)
    del obj["spec"]["model"]["kvHeads"]
    with pytest.raises(SpecError) as caught:
        parse_resource(obj)
    assert [str(p) for p in caught.value.problems] == admit(crds["TrainingRun"], obj)


def test_every_error_is_reported_at_once(valid):
    obj = valid["TrainingRun"]
    obj["spec"]["training"]["maxSteps"] = 0
    obj["spec"]["model"]["layers"] = 0
    obj["spec"]["bogus"] = True
    with pytest.raises(SpecError) as caught:
        parse_resource(obj)
    assert {p.path for p in caught.value.problems} == {"spec.training.maxSteps", "spec.model.layers", "spec.bogus"}


def test_secret_values_never_echoed(valid):
    obj = valid["DataSource"]
    obj["spec"]["sources"][0] = {"s3": {"bucket": "corpora", "credentialsSecret": "AKIAIOSFODNN7EXAMPLE"}}
    with pytest.raises(SpecError) as caught:
        parse_resource(obj)
    assert "AKIAIOSFODNN7EXAMPLE" not in str(caught.value)
