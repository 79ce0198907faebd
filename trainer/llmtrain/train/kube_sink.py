"""Progress reports into a ConfigMap, with the pod's own ServiceAccount token (no client library).

The operator creates ConfigMap `<run>-progress` and a Role that lets the run's ServiceAccount get and
patch that one ConfigMap and nothing else; the trainer merge-patches `data["progress.json"]`. The API
server is found the standard in-cluster way ($KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA);
`$LLMTRAIN_KUBE_API` overrides the address (tests, the emulated API server).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KEY = "progress.json"
#: waits before retrying a write the API server refused for now (5xx, 429, a 409 from contention on the
#: object) or a dropped connection: a lost report leaves the run's status one report behind, a lost final
#: report for good
RETRY_DELAYS = (0.2, 0.5, 1.0)


class ConfigMapSink:
    def __init__(self, uri: str, timeout: float = 5.0) -> None:
        """`uri` is configmap://<namespace>/<name>."""
        namespace, _, name = uri[len("configmap://") :].partition("/")
        if not namespace or not name:
            raise ValueError(f"progress URI {uri!r} must be configmap://<namespace>/<name>")
        self.path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        self.timeout = timeout

    def _server(self) -> str:
        explicit = os.environ.get("LLMTRAIN_KUBE_API")
        if explicit:
            return explicit.rstrip("/")
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise OSError("no Kubernetes API: KUBERNETES_SERVICE_HOST is unset")
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def write(self, report: dict[str, Any]) -> None:
        body = json.dumps({"data": {KEY: json.dumps(report, separators=(",", ":"))}}).encode()
        request = urllib.request.Request(self._server() + self.path, data=body, method="PATCH")
        request.add_header("Content-Type", "application/merge-patch+json")
        request.add_header("User-Agent", "llmtrain-trainer")
        token = ACCOUNT_DIR / "token"
        if token.exists():
            request.add_header("Authorization", f"Bearer {token.read_text().strip()}")
        context = None
        if (ACCOUNT_DIR / "ca.crt").exists():
            context = ssl.create_default_context(cafile=str(ACCOUNT_DIR / "ca.crt"))
        for delay in (*RETRY_DELAYS, None):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if delay is None or (exc.code < 500 and exc.code not in (409, 429)):  # 403, 404, 422: final
                    raise OSError(f"progress ConfigMap not updated: {exc}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if delay is None:  # the Reporter logs OSErrors and carries on
                    raise OSError(f"progress ConfigMap not updated: {exc}") from exc
            time.sleep(delay)
