"""`make cluster-up` / `make cluster-down`: the real control plane (tests/support/real_cluster.py) on 127.0.0.1.

Usage: python tests/cluster/up.py up [--bin DIR] [--state DIR] | down [--state DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, as pytest's pythonpath

from support.paths import ROOT
from support.real_cluster import ControlPlane, ControlPlaneError, default_bin_dir, stop_pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--bin", type=Path, default=None, help="binaries (default: make cluster-bins' cache)")
    parser.add_argument("--state", type=Path, default=ROOT / ".tools" / "cluster", help="certs, etcd, logs, PIDs")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for ready")
    args = parser.parse_args(argv)

    if args.action == "down":
        stopped = stop_pids(args.state)
        print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing running from {args.state}")
        return 0

    cp = ControlPlane(args.bin or default_bin_dir(), args.state)
    try:
        cp.start()
        seconds = cp.wait_ready(args.timeout)
    except ControlPlaneError as e:
        cp.stop()
        print(f"cluster-up failed: {e}", file=sys.stderr)
        return 1
    except BaseException:
        cp.stop()
        raise
    print(f"control plane ready in {seconds:.1f} s: {cp.server} (logs in {cp.logs})")
    print(f"kubeconfig: {cp.kubeconfig}")
    print(f"  export KUBECONFIG={cp.kubeconfig}")
    print("stop it with `make cluster-down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
