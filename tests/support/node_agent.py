"""The node agent: a kubelet for the real control plane, running bound pods as local processes.

It registers a Node (capacity configurable, `nvidia.com/gpu` included), keeps it Ready (node status and
its Lease in kube-node-lease), and runs every pod the real scheduler binds to it with the project's own
kubelet (`llmtrain.local.kubelet`, the code the local runner uses: one way to run a pod) and the sandbox
launcher (`sandbox.py`: volumes at their mount paths, the image's Python environment at /opt/llmtrain).
On top of that kubelet it does what only a node of a real cluster does: it authenticates as
`system:node:<name>` (the Node authorizer and NodeRestriction admission apply), fetches ServiceAccount
tokens through the TokenRequest API for the projected volume, points `KUBERNETES_SERVICE_HOST/PORT` at
the API server, keeps a hosts file per namespace so Service and pod names resolve to 127.0.0.1, honours
deletion with its grace period (then deletes the pod for good, as a kubelet does), and serves
`/containerLogs` over TLS so `kubectl logs` works through the API server.

It also plays two cluster add-ons, under their own (admin) credentials: the cluster DNS, as a hosts file
per namespace, and a local-path provisioner: a default StorageClass, and a hostPath PersistentVolume for
every pending claim, a directory per claim under `<root>/volumes`.

    python tests/support/node_agent.py --kubeconfig K --admin-kubeconfig A --name node-1 --root DIR \\
        --pki DIR --images .tools/images [--capacity cpu=16,memory=64Gi,nvidia.com/gpu=2]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, as pytest's pythonpath

from llmtrain.control.store import Conflict, NotFound
from llmtrain.local.kubelet import Kubelet, Process, kill_container
from llmtrain_operator.kubestore import Connection, KubeStore
from support.sandbox import SandboxLauncher

log = logging.getLogger("llmtrain.node-agent")
STORAGE_CLASS = "llmtrain-local"
PROVISIONER = "llmtrain.dev/local-path"
DEFAULT_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
HEARTBEAT = 10.0
CLUSTER_DOMAIN = "cluster.local"
#: in every pod process's environment: the agent's root
AGENT_ENV = "LLMTRAIN_NODE_AGENT_ROOT"
#: on SIGTERM (cluster-down) pods get at most this grace period
SHUTDOWN_GRACE = 5.0


@dataclass(frozen=True)
class ImageEnv:
    """An image this node can run: its Dockerfile's parsed final stage and the Python environment built for it."""

    spec: Any  # support.image_envs.ImageSpec
    path: Path


def store_from_kubeconfig(path: Path, component: str) -> KubeStore:
    """A KubeStore with the certificate credentials of a kubeconfig written by real_cluster.write_kubeconfig."""
    config = json.loads(Path(path).read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    connection = Connection(
        server=cluster["server"],
        ca_path=cluster["certificate-authority"],
        cert_path=user["client-certificate"],
        key_path=user["client-key"],
    )
    return KubeStore(connection, component=component)


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HostsFiles:
    """One hosts file per namespace, bind-mounted over each pod's /etc/hosts: the host's entries, then every
    name the cluster DNS would serve there (Services, pods with hostname+subdomain), all at 127.0.0.1.
    Lines are only appended, in place: a pod reading while it grows never sees a truncated file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.base = Path("/etc/hosts").read_text()
        self.names: dict[str, list[str]] = {}

    def path(self, namespace: str) -> Path:
        path = self.directory / namespace
        if not path.exists():
            path.write_text(self.base + "\n# the node agent's cluster names (all pods share the host network)\n")
            self.names[namespace] = []
        return path

    def add(self, namespace: str, names: list[str]) -> None:
        path = self.path(namespace)
        known = self.names.setdefault(namespace, [])
        new = [n for n in dict.fromkeys(names) if n not in known]
        if not new:
            return
        known.extend(new)
        with path.open("a") as out:
            out.write("".join(f"127.0.0.1 {n}\n" for n in new))


def service_names(name: str, namespace: str) -> list[str]:
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]


def pod_names(pod: dict[str, Any]) -> list[str]:
    spec, namespace = pod["spec"], pod["metadata"]["namespace"]
    hostname = spec.get("hostname") or pod["metadata"]["name"]
    names = [hostname]
    if spec.get("subdomain"):
        names += [f"{hostname}.{n}" for n in service_names(spec["subdomain"], namespace)]
    return names


class NodeAgent:
    def __init__(
        self,
        store: KubeStore,
        admin: KubeStore | None,
        dns: KubeStore | None,
        name: str,
        root: Path,
        images: dict[str, ImageEnv],
        capacity: dict[str, str] | None = None,
        log_port: int = 0,
        pki: Path | None = None,
        kube_version: str = "v1.34.4",
    ) -> None:
        self.store, self.admin, self.dns, self.name, self.root = store, admin, dns, name, Path(root)
        self.capacity = {**DEFAULT_CAPACITY, **(capacity or {})}
        self.kube_version = kube_version
        self.hosts = HostsFiles(self.root / "hosts")
        server = urllib.parse.urlparse(store.connection.server)
        self.api_host, self.api_port = server.hostname or "127.0.0.1", str(server.port or 443)
        self.hosts.base += "127.0.0.1 " + " ".join(service_names("kubernetes", "default")) + "\n"
        launcher = SandboxLauncher(images, self.hosts.path)
        self.kubelet = Kubelet(
            store,
            self.root,
            node_name=name,
            launcher=launcher,
            pvc_path=self._pvc_path,
            env_hook=self._env,
            token=self._token,
            backoff=2.0,
            pod_ip=self._pod_ip,
        )
        digits = "".join(c for c in name if c.isdigit())
        self._subnet, self._ips = f"10.244.{int(digits or 0) % 256}", 1
        self.logs = LogServer(self, log_port, pki) if pki else None
        self._last_heartbeat = 0.0
        self._stopping = threading.Event()

    # -- node -----------------------------------------------------------------------------------------

    def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "llmtrain-node-agent",
                },
            },
        }
        with contextlib.suppress(Conflict):
            self.store._call("POST", "/api/v1/nodes", node)
        self.heartbeat(force=True)

    def node_status(self) -> dict[str, Any]:
        t = _now()
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "node agent is posting ready"}
        conditions = [{**ready, "lastHeartbeatTime": t}]
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            conditions.append(
                {"type": kind, "status": "False", "reason": f"KubeletHasNo{kind}", "lastHeartbeatTime": t}
            )
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs.port if self.logs else 0}},
            "nodeInfo": {
                "machineID": "llmtrain",
                "systemUUID": self.name,
                "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release,
                "osImage": "llmtrain node agent",
                "containerRuntimeVersion": "llmtrain-sandbox://0.1.0",
                "kubeletVersion": self.kube_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def heartbeat(self, force: bool = False) -> None:
        """Node status and the node's Lease, every 10 s (the node lifecycle controller watches both)."""
        if not force and time.monotonic() - self._last_heartbeat < HEARTBEAT:
            return
        self._last_heartbeat = time.monotonic()
        self.store._call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self.node_status()},
            content_type="application/merge-patch+json",
        )
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}
        try:
            self.store._call("PATCH", path, {"spec": spec}, content_type="application/merge-patch+json")
        except NotFound:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            self.store._call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    # -- pods -----------------------------------------------------------------------------------------

    def sync(self) -> None:
        """One pass: heartbeat, start new pods, honour deletions, reap and write status."""
        self.heartbeat()
        query = {"fieldSelector": f"spec.nodeName={self.name}"}
        pods = self.store._call("GET", "/api/v1/pods", query=query).get("items") or []
        self._names([p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")])
        seen = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            process = self.kubelet.processes.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                self._deleting(pod, process)
            elif process is None and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                self._admit(pod)
        for uid, process in list(self.kubelet.processes.items()):
            if uid not in seen:  # deleted for good (force): stop at once
                self.kubelet.stop(process, "Deleted", grace=0)
        for process in self.kubelet.sync():
            if process.pod["metadata"].get("deletionTimestamp"):
                self._remove(process.pod)

    def _admit(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if pod.get("status", {}).get("phase") == "Running":  # ours before this agent restarted
            kill_container(uid)
            if pod["spec"].get("restartPolicy", "Always") != "Always":
                self.kubelet.fail(pod, 137, "the node agent restarted and lost the container", "NodeAgentRestart")
                return
        self.kubelet.start(pod)

    def _deleting(self, pod: dict[str, Any], process: Process | None) -> None:
        if process is None:
            self._remove(pod)
            return
        process.pod["metadata"]["deletionTimestamp"] = pod["metadata"]["deletionTimestamp"]
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        self.kubelet.stop(process, "Deleted", grace=float(grace) if grace is not None else None)

    def _remove(self, pod: dict[str, Any]) -> None:
        """The kubelet's final delete once the containers are gone (grace 0, this pod's uid only)."""
        meta = pod["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        body["preconditions"] = {"uid": meta["uid"]}
        with contextlib.suppress(NotFound, Conflict):
            self.store._call("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)

    def _names(self, pods: list[dict[str, Any]]) -> None:
        """What the cluster DNS serves in the namespaces of our pods, read as CoreDNS reads it (with the DNS
        add-on's credentials: a node may not list other nodes' pods): Services, and the hostnames in their
        EndpointSlices (a pod of an Indexed Job rendezvous with its index 0 wherever that runs); our pods' own
        hostnames too, as the kubelet writes them into /etc/hosts."""
        for namespace in sorted({p["metadata"]["namespace"] for p in pods}):
            names = [n for p in pods if p["metadata"]["namespace"] == namespace for n in pod_names(p)]
            if self.dns is not None:
                base = f"/api/v1/namespaces/{namespace}/services"
                services = self.dns._call("GET", base).get("items") or []
                names += [n for s in services for n in service_names(s["metadata"]["name"], namespace)]
                path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
                for piece in self.dns._call("GET", path).get("items") or []:
                    service = (piece["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
                    for endpoint in piece.get("endpoints") or [] if service else []:
                        if endpoint.get("hostname"):
                            names += [f"{endpoint['hostname']}.{n}" for n in service_names(service, namespace)]
            self.hosts.add(namespace, names)

    # -- what the kubelet asks of a node ----------------------------------------------------------------

    def _pod_ip(self, pod: dict[str, Any]) -> str:
        """A pod address from this node's pod CIDR (10.244.<node>.0/24), for the API's sake: EndpointSlices
        refuse loopback addresses. It routes nowhere: pods share the host network, and every cluster name
        resolves to 127.0.0.1 (the hosts files); gloo binds the address its hostname resolves to, 127.0.0.1."""
        self._ips = self._ips % 253 + 1
        return f"{self._subnet}.{self._ips + 1}"

    def _env(self, pod: dict[str, Any], env: dict[str, str]) -> None:
        env[AGENT_ENV] = str(self.root)  # `cluster-down` finds the pods' processes by it, should the agent die
        env.setdefault("KUBERNETES_SERVICE_HOST", self.api_host)
        env.setdefault("KUBERNETES_SERVICE_PORT", self.api_port)
        env.setdefault("KUBERNETES_SERVICE_PORT_HTTPS", self.api_port)

    def _token(self, pod: dict[str, Any], source: dict[str, Any]) -> str:
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": int(source.get("expirationSeconds", 3607)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        return self.store._call("POST", path, request)["status"]["token"]

    def _pvc_path(self, namespace: str, claim: str) -> Path:
        pvc = self.store._call("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        volume = pvc["spec"].get("volumeName")
        if not volume or pvc.get("status", {}).get("phase") != "Bound":
            raise NotFound(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.store._call("GET", f"/api/v1/persistentvolumes/{volume}")
        path = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
        if not path:
            raise ValueError(f"persistentvolume {volume}: this node mounts hostPath and local volumes only")
        return Path(path)

    # -- the local-path provisioner ---------------------------------------------------------------------

    def ensure_storage_class(self) -> None:
        if self.admin is None:
            return
        sc = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }
        with contextlib.suppress(Conflict):
            self.admin._call("POST", "/apis/storage.k8s.io/v1/storageclasses", sc)

    def provision(self) -> None:
        """A hostPath PersistentVolume, pre-bound, for each pending claim of our StorageClass."""
        if self.admin is None:
            return
        claims = self.admin._call("GET", "/api/v1/persistentvolumeclaims").get("items") or []
        for pvc in claims:
            meta, spec = pvc["metadata"], pvc["spec"]
            if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
                continue
            path = self.root / "volumes" / meta["namespace"] / meta["name"]
            path.mkdir(parents=True, exist_ok=True)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"pvc-{meta['uid']}",
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            with contextlib.suppress(Conflict):
                self.admin._call("POST", "/api/v1/persistentvolumes", pv)
                log.info("provisioned", extra={"claim": f"{meta['namespace']}/{meta['name']}", "path": str(path)})

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self, interval: float = 0.5) -> None:
        while not self._stopping.is_set():  # the API server may still be starting
            try:
                self.register()
                self.ensure_storage_class()
                break
            except Exception as exc:
                log.warning("registration failed: %s: %s", type(exc).__name__, str(exc)[:500])
                self._stopping.wait(1.0)
        if self.logs is not None:
            self.logs.start()
        while not self._stopping.wait(interval):
            for step in (self.provision, self.sync):
                try:
                    step()
                except Exception as exc:  # the API server restarting, a conflict, ...: the next pass retries
                    log.warning("%s failed: %s: %s", step.__name__, type(exc).__name__, str(exc)[:500])
        for process in self.kubelet.processes.values():
            process.grace = min(process.grace, SHUTDOWN_GRACE)
        self.kubelet.shutdown("TerminationByKubelet", wait=True)
        if self.logs is not None:
            self.logs.stop()

    def stop(self) -> None:
        self._stopping.set()

    def log_file(self, namespace: str, pod: str, previous: bool = False) -> Path:
        return self.root / "pods" / namespace / pod / ("log.previous" if previous else "log")


class LogServer:
    """`GET /containerLogs/<namespace>/<pod>/<container>` over TLS (client certificates from the cluster CA):
    what the API server calls for `kubectl logs` (tailLines, limitBytes, previous, follow)."""

    def __init__(self, agent: NodeAgent, port: int, pki: Path) -> None:
        self.agent = agent
        handler = type("Handler", (_LogHandler,), {"agent": agent})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki / "kubelet.crt"), str(pki / "kubelet.key"))
        context.load_verify_locations(str(pki / "ca.crt"))
        context.verify_mode = ssl.CERT_REQUIRED
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="logs", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()


class _LogHandler(BaseHTTPRequestHandler):
    agent: NodeAgent

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404)
            return
        query = urllib.parse.parse_qs(url.query)
        _, namespace, pod, _container = parts
        path = self.agent.log_file(namespace, pod, query.get("previous", ["false"])[0] == "true")
        if not path.exists():
            self.send_error(404, f"no log for {namespace}/{pod}")
            return
        data = path.read_bytes()
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else b""
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"][0])]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(data)
        if query.get("follow", ["false"])[0] == "true":
            self._follow(path, len(path.read_bytes()), namespace, pod)

    def _follow(self, path: Path, offset: int, namespace: str, pod: str) -> None:
        while any(p.name == pod and p.exit_code is None for p in self.agent.kubelet.processes.values()):
            time.sleep(0.5)
            size = path.stat().st_size
            if size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    self.wfile.write(f.read(size - offset))
                    self.wfile.flush()
                offset = size


def load_images(directory: Path, version: str) -> dict[str, ImageEnv]:
    """The project's images as the Makefile names them (ghcr.io/llmtrain/<name>:<version>), built by
    support.image_envs from images/<name>.Dockerfile."""
    from support.image_envs import build_image_env, parse_dockerfile
    from support.paths import ROOT

    images = {}
    for dockerfile in sorted((ROOT / "images").glob("*.Dockerfile")):
        spec = parse_dockerfile(dockerfile)
        path = build_image_env(spec, directory / spec.name, shebang_python="/opt/llmtrain/bin/python")
        images[f"ghcr.io/llmtrain/{spec.name}:{version}"] = ImageEnv(spec, path)
    return images


def main(argv: list[str] | None = None) -> int:
    from support.paths import ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the node's credentials (system:node:NAME)")
    parser.add_argument("--admin-kubeconfig", type=Path, help="credentials for the local-path provisioner")
    parser.add_argument("--dns-kubeconfig", type=Path, help="the DNS add-on's credentials (Service names)")
    parser.add_argument("--name", default="node-1")
    parser.add_argument("--root", type=Path, required=True, help="pod folders, volumes, hosts files")
    parser.add_argument("--pki", type=Path, help="ca.crt, kubelet.crt/key: serve container logs")
    parser.add_argument("--images", type=Path, default=ROOT / ".tools" / "images")
    parser.add_argument("--capacity", default="", help="e.g. cpu=16,memory=64Gi,nvidia.com/gpu=2")
    parser.add_argument("--kube-version", default="v1.34.4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    version = next(
        line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version")
    )
    capacity = dict(item.split("=", 1) for item in args.capacity.split(",") if item)
    agent = NodeAgent(
        store_from_kubeconfig(args.kubeconfig, f"node-agent/{args.name}"),
        store_from_kubeconfig(args.admin_kubeconfig, "local-path-provisioner") if args.admin_kubeconfig else None,
        store_from_kubeconfig(args.dns_kubeconfig, "cluster-dns") if args.dns_kubeconfig else None,
        args.name,
        args.root,
        load_images(args.images, version),
        capacity,
        pki=args.pki,
        kube_version=args.kube_version,
    )
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
