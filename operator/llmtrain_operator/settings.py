"""Operator settings from the environment (the Helm chart sets them); bad values fail at start-up, clearly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from llmtrain import netpolicy
from llmtrain.core import Context
from llmtrain.core.context import DEFAULT_IMAGE


class ConfigurationError(ValueError):
    """A setting that cannot work; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace (cluster scope)
    image: str = DEFAULT_IMAGE
    storage_root: str = "pvc://llmtrain-storage"
    storage_secret: str | None = None
    s3_endpoint: str | None = None
    status_interval: float = 10.0
    resync_seconds: float = 30.0
    workers: int = 4  # threads running reconciles (each resource under its own lock)
    metrics_port: int | None = 8080
    #: Talk to this API server instead of the in-cluster or kubeconfig one (tests, port-forwards).
    api_url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: What HTTP sources in ingest pods may not reach, and the exceptions (the chart's ingest.httpSources).
    http_denied_cidrs: tuple[str, ...] = netpolicy.CLUSTER_DENIED
    http_allowed_cidrs: tuple[str, ...] = ()
    #: Seconds one network input may take to read (the chart's ingest.readDeadlineSeconds); None: 3600.
    read_deadline_seconds: float | None = None

    def context(self) -> Context:
        return Context(
            storage_root=self.storage_root,
            image=self.image,
            storage_secret=self.storage_secret,
            s3_endpoint=self.s3_endpoint,
            status_interval=self.status_interval,
            labels=self.labels,
            http_denied_cidrs=self.http_denied_cidrs,
            http_allowed_cidrs=self.http_allowed_cidrs,
            read_deadline_seconds=self.read_deadline_seconds,
        )


def _number(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _cidrs(env: dict[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated CIDR list; unset: `default`, empty: none."""
    if name not in env:
        return default
    try:
        return tuple(str(net) for net in netpolicy.parse(env[name], name))
    except netpolicy.PolicyError as exc:
        raise ConfigurationError(str(exc)) from None


def from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    root = env.get("LLMTRAIN_STORAGE_ROOT", "pvc://llmtrain-storage").rstrip("/")
    if not root.startswith(("s3://", "pvc://")):
        raise ConfigurationError(
            f"LLMTRAIN_STORAGE_ROOT={root!r}: in a cluster outputs go to s3://<bucket>/<prefix> or pvc://<claim>/<path>"
        )
    if root.startswith("s3://") and not env.get("LLMTRAIN_STORAGE_SECRET"):
        raise ConfigurationError(
            "LLMTRAIN_STORAGE_ROOT is s3:// but LLMTRAIN_STORAGE_SECRET is unset: name the Secret holding"
            " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (pods get it as envFrom)"
        )
    port = env.get("LLMTRAIN_METRICS_PORT", "8080")
    return Settings(
        namespaces=tuple(n for n in env.get("LLMTRAIN_NAMESPACES", "").replace(" ", "").split(",") if n),
        image=env.get("LLMTRAIN_IMAGE", DEFAULT_IMAGE),
        storage_root=root,
        storage_secret=env.get("LLMTRAIN_STORAGE_SECRET") or None,
        s3_endpoint=env.get("LLMTRAIN_S3_ENDPOINT") or None,
        status_interval=_number(env, "LLMTRAIN_STATUS_INTERVAL", 10.0, 0.0),
        resync_seconds=_number(env, "LLMTRAIN_RESYNC_SECONDS", 30.0, 1.0),
        workers=int(_number(env, "LLMTRAIN_WORKERS", 4, 1)),
        metrics_port=int(_number(env, "LLMTRAIN_METRICS_PORT", 8080, 0)) if port not in ("", "0") else None,
        api_url=env.get("LLMTRAIN_KUBE_API") or None,
        http_denied_cidrs=_cidrs(env, netpolicy.DENIED_ENV, netpolicy.CLUSTER_DENIED),
        http_allowed_cidrs=_cidrs(env, netpolicy.ALLOWED_ENV, ()),
        read_deadline_seconds=_number(env, "LLMTRAIN_READ_DEADLINE_SECONDS", 0, 1) or None,
    )
