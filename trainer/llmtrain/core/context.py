"""What the shells tell the core about where it runs: cluster-wide settings or the local runner's."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_IMAGE = "ghcr.io/llmtrain/trainer:0.1.0"


@dataclass(frozen=True)
class Context:
    """Settings the child manifests depend on, besides the resource itself."""

    #: Where outputs go when a spec names none: `<storage_root>/<namespace>/<plural>/<name>/`.
    storage_root: str = "pvc://llmtrain-storage"
    #: Workload image when the spec names none.
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    #: A Secret whose keys (AWS_ACCESS_KEY_ID, ...) become every workload pod's environment, for s3:// storage.
    storage_secret: str | None = None
    #: S3 endpoint for s3:// storage (SeaweedFS, MinIO, ...); AWS when unset.
    s3_endpoint: str | None = None
    #: True for the local runner: local paths are allowed and resolved against `base_dir`.
    local: bool = False
    base_dir: str | None = None
    #: Seconds between progress-only status writes of one resource (phase changes are written at once).
    status_interval: float = 10.0
    #: Extra labels on every child.
    labels: dict[str, str] = field(default_factory=dict)
    #: CIDRs HTTP sources may not reach / may reach after all (`llmtrain.netpolicy`); None: the
    #: workload's own default (the local runner's, which allows loopback and private networks).
    http_denied_cidrs: tuple[str, ...] | None = None
    http_allowed_cidrs: tuple[str, ...] = ()
    #: Seconds one network input may take to read; None: the workload's default.
    read_deadline_seconds: float | None = None
