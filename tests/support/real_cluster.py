"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The binaries come from `make cluster-bins` (tests/cluster/build.sh). `ControlPlane(bin_dir, state_dir)`
generates a CA, the API server's serving certificate, client certificates (admin in system:masters, the
controller-manager and the scheduler under their own identities) and a ServiceAccount signing key, starts
the four processes on free loopback ports (each in its own session, logging to `<state>/logs/<name>.log`,
its PID in `<state>/pids/<name>.pid`) and writes an admin kubeconfig to `<state>/kubeconfig`.
`stop()` (or `stop_pids(state_dir)` from another process) stops them by PID, newest first.

Light imports only: `cryptography` is imported when certificates are made.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from llmtrain.local.kubelet import marked_processes
from support.paths import ROOT

CLUSTER_DIR = ROOT / "tests" / "cluster"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
AGENT = "node_agent.py"
AGENT_ENV = "LLMTRAIN_NODE_AGENT_ROOT"  # as node_agent.AGENT_ENV (not imported: that module is heavier)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# start order; stop() goes the other way
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _modver(module: str, gomod: Path) -> str:
    """The version of `module` required in `gomod` (as build.sh's modver does)."""
    for line in gomod.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "require" and parts[1] == module:
            return parts[2]
        if len(parts) >= 2 and parts[0] == module and parts[1].startswith("v"):
            return parts[1]
    raise ValueError(f"no {module} in {gomod}")


def versions() -> tuple[str, str]:
    """(Kubernetes version, etcd version) pinned in tests/cluster/*/go.mod."""
    return (
        _modver("k8s.io/kubernetes", CLUSTER_DIR / "kube" / "go.mod"),
        _modver("go.etcd.io/etcd/server/v3", CLUSTER_DIR / "etcd" / "go.mod"),
    )


def default_bin_dir() -> Path:
    """$LLMTRAIN_CLUSTER_BIN, else build.sh's default: ~/.cache/llmtrain-cluster/<k8s>-etcd-<etcd>/bin."""
    if os.environ.get("LLMTRAIN_CLUSTER_BIN"):
        return Path(os.environ["LLMTRAIN_CLUSTER_BIN"])
    kube, etcd = versions()
    return Path.home() / ".cache" / "llmtrain-cluster" / f"{kube}-etcd-{etcd}" / "bin"


def missing_binaries(bin_dir: Path) -> list[str]:
    return [n for n in BINARIES if not os.access(Path(bin_dir) / n, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- certificates ------------------------------------------------------------------------------------------


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, client certs (admin, controller-manager, scheduler), SA key pair."""

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=365)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmtrain-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digitalSignature, keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki / "ca.key", ca_key)
    _write_cert(pki / "ca.crt", ca)

    def leaf(name: str, cn: str, orgs: tuple[str, ...] = (), server: bool = False) -> None:
        _leaf(pki, ca_key, ca_name, start, end, name, cn, orgs, server)

    leaf("apiserver", "kube-apiserver", server=True)
    leaf("admin", "llmtrain-admin", ("system:masters",))
    leaf("controller-manager", "system:kube-controller-manager")
    leaf("scheduler", "system:kube-scheduler")
    leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
    leaf("kubelet", "llmtrain-node-agent", server=True)  # serves container logs to the API server

    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa)
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def node_credentials(pki: Path, node: str) -> None:
    """A client certificate for `system:node:<node>` in `system:nodes` (the Node authorizer's identity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    _leaf(
        pki,
        ca_key,
        ca.subject,
        ca.not_valid_before_utc,
        ca.not_valid_after_utc,
        node,
        f"system:node:{node}",
        ("system:nodes",),
        server=False,
    )


def _leaf(pki: Path, ca_key, ca_name, start, end, name: str, cn: str, orgs: tuple[str, ...], server: bool) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )  # digitalSignature, keyEncipherment
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        dns.append("kubernetes.default.svc.cluster.local")
        ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(SERVICE_IP)]
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(i) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_key(pki / f"{name}.key", key)
    _write_cert(pki / f"{name}.crt", builder.sign(ca_key, hashes.SHA256()))


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str = "admin") -> None:
    """A kubeconfig (JSON is YAML) with absolute file references."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "llmtrain", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "llmtrain", "context": {"cluster": "llmtrain", "user": user, "namespace": "default"}}],
        "current-context": "llmtrain",
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    path.chmod(0o600)


# --- processes ---------------------------------------------------------------------------------------------


def _alive(pid: int, name: str) -> bool:
    """True when `pid` runs and is still our `name` binary, or a node agent (not a recycled PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    cmdline = argv[0]
    if name.startswith("node-") and any(os.path.basename(a.decode(errors="replace")) == AGENT for a in argv):
        cmdline = name.encode()
    try:  # a zombie of ours still has /proc; reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    return os.path.basename(cmdline.decode(errors="replace")) == name


def stop_pids(state_dir: Path, grace: float = 10.0) -> list[str]:
    """Stop every process with a PID file under `<state_dir>/pids`, newest first: SIGTERM, SIGKILL after `grace`."""
    pids_dir = Path(state_dir) / "pids"
    if not pids_dir.is_dir():
        return []
    # newest first: the reverse of the start order (a name not in ORDER first)
    files = sorted(pids_dir.glob("*.pid"), key=lambda p: ORDER.index(p.stem) if p.stem in ORDER else len(ORDER))
    files.reverse()
    stopped = []
    for f in files:
        name = f.stem
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            f.unlink(missing_ok=True)
            continue
        if _alive(pid, name):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid, name) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid, name):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while _alive(pid, name) and time.monotonic() < deadline:
                    time.sleep(0.05)
            stopped.append(name)
        f.unlink(missing_ok=True)
    for node in sorted((Path(state_dir) / "nodes").glob("*")):  # pods an agent killed by SIGKILL left behind
        for pid in marked_processes(f"{AGENT_ENV}={node}".encode()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return stopped


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def spawn(state_dir: Path, name: str, argv: list[str]) -> subprocess.Popen:
    """Start a component in a session of its own, logging to `<state>/logs/<name>.log`, its PID in a file."""
    with open(Path(state_dir) / "logs" / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=state_dir
        )
    (Path(state_dir) / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def restart(state_dir: Path, name: str, grace: float = 10.0) -> subprocess.Popen:
    """Stop a component of a running cluster (from any process: PID file) and start it with the same argv."""
    pid_file = Path(state_dir) / "pids" / f"{name}.pid"
    pid = int(pid_file.read_text().strip())
    if _alive(pid, name):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid, name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid, name):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid, name):
                time.sleep(0.05)
    argv = json.loads((Path(state_dir) / "argv" / f"{name}.json").read_text())
    return spawn(state_dir, name, argv)


def running(state_dir: Path) -> list[str]:
    pids_dir = Path(state_dir) / "pids"
    out = []
    for f in sorted(pids_dir.glob("*.pid")) if pids_dir.is_dir() else []:
        try:
            if _alive(int(f.read_text().strip()), f.stem):
                out.append(f.stem)
        except (OSError, ValueError):
            pass
    return out


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    """The control plane and `nodes` node agents (tests/support/node_agent.py), each with `capacity`."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        state_dir: Path | None = None,
        nodes: int = 0,
        capacity: str = "cpu=16,memory=64Gi,nvidia.com/gpu=2",
        apiserver_args: tuple[str, ...] = (),
    ) -> None:
        self.apiserver_args = apiserver_args
        self.node_names = [f"node-{i + 1}" for i in range(nodes)]
        self.capacity = capacity
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.state_dir = Path(state_dir if state_dir else ROOT / ".tools" / "cluster").resolve()
        self.pki = self.state_dir / "pki"
        self.logs = self.state_dir / "logs"
        self.pids = self.state_dir / "pids"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.started_at: float | None = None
        self.startup_seconds: float | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self) -> ControlPlane:
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(f"missing {', '.join(missing)} in {self.bin_dir}: run `make cluster-bins`")
        live = running(self.state_dir)
        if live:
            raise ControlPlaneError(f"already running from {self.state_dir}: {', '.join(live)} (cluster-down first)")
        self.started_at = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # a fresh cluster each time: new keys, empty etcd
        for sub in ("pki", "etcd", "logs", "pids", "kcm", "scheduler", "apiserver", "nodes", "argv"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        for d in (self.logs, self.pids):
            d.mkdir(parents=True)
        make_pki(self.pki)
        for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler"):
            self.ports[name] = free_port()
        pki = self.pki
        write_kubeconfig(self.kubeconfig, self.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")
        kcm_kc = self.state_dir / "controller-manager.kubeconfig"
        write_kubeconfig(
            kcm_kc, self.server, pki / "ca.crt", pki / "controller-manager.crt", pki / "controller-manager.key", "kcm"
        )
        sched_kc = self.state_dir / "scheduler.kubeconfig"
        write_kubeconfig(sched_kc, self.server, pki / "ca.crt", pki / "scheduler.crt", pki / "scheduler.key", "sched")

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",  # a throwaway test cluster
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={self.state_dir / 'apiserver'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",  # kubeadm's choice: nodes touch only their pods
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # the `kubernetes` Service's Endpoints refuse a loopback address: no endpoint reconciler
                "--endpoint-reconciler-type=none",
                *self.apiserver_args,
            ],
        )
        # the controller-manager and scheduler read kube-system's extension-apiserver-authentication at start
        # and exit when RBAC's bootstrap policy is not there yet (a kubelet would restart them): wait for /readyz
        self._wait_for("/readyz", timeout=60.0)
        common = [
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                f"--kubeconfig={kcm_kc}",
                f"--authentication-kubeconfig={kcm_kc}",
                f"--authorization-kubeconfig={kcm_kc}",
                f"--secure-port={self.ports['kcm']}",
                f"--cert-dir={self.state_dir / 'kcm'}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                *common,
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={self.state_dir / 'scheduler'}",
            ],
        )
        for index, node in enumerate(self.node_names):
            self._start_node(node, provisioner=index == 0)
        (self.state_dir / "ports.json").write_text(json.dumps(self.ports) + "\n")

    def node_root(self, node: str) -> Path:
        """Where a node agent keeps pod folders, hosts files and (the first one) provisioned volumes."""
        return self.state_dir / "nodes" / node

    @property
    def volumes(self) -> Path:
        """The local-path provisioner's volumes: `<volumes>/<namespace>/<claim>`."""
        return self.node_root(self.node_names[0]) / "volumes"

    def _start_node(self, node: str, provisioner: bool) -> None:
        node_credentials(self.pki, node)
        kubeconfig = self.state_dir / f"{node}.kubeconfig"
        write_kubeconfig(
            kubeconfig, self.server, self.pki / "ca.crt", self.pki / f"{node}.crt", self.pki / f"{node}.key"
        )
        args = [
            str(Path(__file__).with_name(AGENT)),
            f"--kubeconfig={kubeconfig}",
            f"--name={node}",
            f"--root={self.node_root(node)}",
            f"--pki={self.pki}",
            f"--capacity={self.capacity}",
            f"--kube-version={versions()[0]}",
            f"--dns-kubeconfig={self.kubeconfig}",  # the DNS add-on (CoreDNS reads Services and EndpointSlices)
        ]
        if provisioner:
            args.append(f"--admin-kubeconfig={self.kubeconfig}")
        self._spawn(node, args, executable=sys.executable)

    def _spawn(self, name: str, args: list[str], executable: str | None = None) -> None:
        argv = [executable or str(self.bin_dir / name), *args]
        (self.state_dir / "argv").mkdir(exist_ok=True)
        (self.state_dir / "argv" / f"{name}.json").write_text(json.dumps(argv))
        self.procs[name] = spawn(self.state_dir, name, argv)

    def compact_etcd(self) -> int:
        """Compact etcd at its newest revision (its gRPC gateway): older resourceVersions are gone (410 Gone
        for a watch that reaches etcd, i.e. with the API server's watch cache off). Returns the revision."""
        url = f"http://127.0.0.1:{self.ports['etcd']}/v3"
        revision = _post_json(f"{url}/kv/range", {"key": "Lw=="})["header"]["revision"]  # the key "/"
        _post_json(f"{url}/kv/compaction", {"revision": revision, "physical": True})
        return int(revision)

    def prepare_namespace(self, namespace: str, claims: tuple[str, ...] = ()) -> None:
        """The project's CRDs (Established), a namespace and PersistentVolumeClaims in it (Bound by the first
        node agent's provisioner): what a benchmark or drill needs before the operator starts."""
        kubectl = [str(ROOT / ".tools" / "bin" / "kubectl"), f"--kubeconfig={self.kubeconfig}"]
        pvcs = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
            for name in claims
        ]
        steps = [
            (["apply", "--server-side", "-f", str(ROOT / "crds")], None),
            (["wait", "--for=condition=Established", "crd", "--all"], None),
            (["create", "namespace", namespace], None),
        ]
        if pvcs:
            steps.append((["apply", "-f", "-"], "\n---\n".join(json.dumps(p) for p in pvcs)))
            bound = "--for=jsonpath={.status.phase}=Bound"
            steps += [(["wait", "-n", namespace, bound, f"pvc/{c}", "--timeout=60s"], None) for c in claims]
        for args, stdin in steps:
            subprocess.run([*kubectl, *args], input=stdin, text=True, check=True, timeout=90, capture_output=True)

    def restart(self, name: str, grace: float = 10.0) -> None:
        """Stop one component by its PID and start it again with the same arguments (state kept)."""
        self.procs[name] = restart(self.state_dir, name, grace)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.log(name).read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with {proc.returncode}; {self.log(name)} ends:\n{tail}")

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Until /readyz is ok and the `default` ServiceAccount exists; returns seconds since start()."""
        self._wait_for("/readyz", "/api/v1/namespaces/default/serviceaccounts/default", timeout=timeout)
        for node in self.node_names:
            self._wait_node(node, timeout)
        assert self.started_at is not None
        self.startup_seconds = time.monotonic() - self.started_at
        (self.state_dir / "startup_seconds").write_text(f"{self.startup_seconds:.2f}\n")
        return self.startup_seconds

    def _wait_node(self, node: str, timeout: float) -> None:
        """Until the node is Ready and without the not-ready taint (the scheduler then binds pods to it)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            status, body = self.get(f"/api/v1/nodes/{node}")
            if status == 200:
                found = json.loads(body)
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in found.get("status", {}).get("conditions", [])
                )
                if ready and not found["spec"].get("taints"):
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"node {node} not ready after {timeout:.0f} s: see {self.log(node)}")
            time.sleep(0.2)

    def _wait_for(self, *paths: str, timeout: float = 60.0) -> None:
        """Until GET of each path answers 200 (admin credentials), watching that every process still runs."""
        deadline = time.monotonic() + timeout
        checks = list(paths)
        last = ""
        while checks:
            self._check_alive()
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"not ready after {timeout:.0f} s: {checks[0]}: {last[-500:]}")
            try:
                status, body = self.get(checks[0])
            except (OSError, ssl.SSLError) as e:
                status, body = 0, str(e).encode()
            if status == 200:
                checks.pop(0)
                continue
            last = body.decode(errors="replace")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> list[str]:
        if not self.procs:  # this one started nothing (e.g. another cluster-up already runs there): leave it
            return []
        stopped = stop_pids(self.state_dir, grace)
        for proc in self.procs.values():  # reap
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        return stopped

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
