"""`make cluster-up` / `make cluster-down`: the real control plane (tests/support/real_cluster.py) on 127.0.0.1.

Usage: python tests/cluster/up.py up [--bin DIR] [--state DIR] [--nodes N] | deploy | down [--state DIR]
(`deploy`: the chart and team-a's claims, as `make e2e` needs them; tests/support/real_deploy.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, as pytest's pythonpath

from support.paths import ROOT
from support.real_cluster import ControlPlane, ControlPlaneError, default_bin_dir, running, stop_pids

CAPACITY = "cpu=3,memory=16Gi,nvidia.com/gpu=2"


def _deploy(state: Path) -> int:
    """helm install into the cluster cluster-up started (already installed: nothing to do)."""
    from support.real_deploy import RELEASE, deploy, team_volumes, tool

    if "kube-apiserver" not in running(state):
        print(f"no cluster running from {state}: make cluster-up first", file=sys.stderr)
        return 1
    cp = ControlPlane(state_dir=state)
    cp.node_names = sorted(p.name for p in (cp.state_dir / "nodes").iterdir())
    if RELEASE in tool(cp.kubeconfig, "helm", "list", "-A", "-q").split():
        print(f"{RELEASE} already installed")
    else:
        deploy(cp)
        print(f"installed the chart; team-a's volumes: {team_volumes(cp)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "deploy", "down"])
    parser.add_argument("--bin", type=Path, default=None, help="binaries (default: make cluster-bins' cache)")
    parser.add_argument("--state", type=Path, default=ROOT / ".tools" / "cluster", help="certs, etcd, logs, PIDs")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for ready")
    parser.add_argument("--nodes", type=int, default=2, help="node agents (each runs its pods as local processes)")
    parser.add_argument("--capacity", default=CAPACITY, help="each node's capacity (default: one 2-CPU trainer each)")
    args = parser.parse_args(argv)

    if args.action == "deploy":
        return _deploy(args.state)
    if args.action == "down":
        stopped = stop_pids(args.state)
        print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing running from {args.state}")
        return 0

    cp = ControlPlane(args.bin or default_bin_dir(), args.state, nodes=args.nodes, capacity=args.capacity)
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
    if cp.node_names:
        print(f"nodes: {', '.join(cp.node_names)} (node agents; volumes under {cp.volumes})")
    print(f"kubeconfig: {cp.kubeconfig}")
    print(f"  export KUBECONFIG={cp.kubeconfig}")
    print("stop it with `make cluster-down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
