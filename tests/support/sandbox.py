"""A container's filesystem for a pod's process, without a container runtime: the node agent's launcher.

`SandboxLauncher` starts each container as `python -I sandbox.py SPEC` which, as root, enters a private
mount and UTS namespace, builds a root filesystem on a tmpfs (the host's directories bound in read-write,
except those a container has of its own: /dev, /etc as an overlay of the host's, /tmp, /run, /var, /mnt,
/opt), binds the image's Python environment at /opt/llmtrain (as the Dockerfile installs it), mounts each
volume at its mountPath, bind-mounts the namespace's hosts file over /etc/hosts (so Service and pod names
resolve to 127.0.0.1: pods share the host network), sets the pod's hostname, chroots and execs the
container's command with the image's environment under the pod's. Nothing outside the pod's processes
sees any of it: the host's /etc/hosts and directories are untouched, and the namespace goes with the
last process of the pod.

What it does not isolate: network, PIDs, users (processes run as the agent's user; `runAsUser` is not
applied), resource limits.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS, CLONE_NEWUTS = 0x00020000, 0x04000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
#: top-level directories a container has of its own (not bound from the host)
PRIVATE = {"dev", "etc", "tmp", "run", "var", "mnt", "opt", "proc", "media", "srv", "boot", "old_root", "lost+found"}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_ROOT = "/opt/llmtrain"
PROJECT = Path(__file__).resolve().parents[2]


class SandboxError(RuntimeError):
    pass


# --- inside: runs as the container's first process, before exec ---------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: Path | str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(str(target)), enc(fstype), flags, enc(data)), f"mount {source} on {target}")


def inside(root: Path, path: str) -> Path:
    """`path` as seen from `root` after chroot: symlinks resolved inside `root`, never out of it."""
    current = root
    parts = [p for p in path.split("/") if p not in ("", ".")]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise SandboxError(f"too many symlinks in {path}")
            link = os.readlink(candidate)
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            current = root if link.startswith("/") else current
            continue
        current = candidate
    return current


def _make_dirs(root: Path, shared: set[Path], target: Path) -> None:
    """mkdir -p inside the new root, refusing to create anything inside a directory bound from the host."""
    missing = []
    probe = target
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        if any(path.is_relative_to(s) for s in shared):
            raise SandboxError(f"{path.relative_to(root)} would be created on the host: mount it elsewhere")
        path.mkdir()


def build_root(spec: dict[str, Any]) -> Path:
    root = Path(spec["root"])
    root.mkdir(parents=True, exist_ok=True)
    mount("tmpfs", root, "tmpfs", 0, "mode=755")
    shared: set[Path] = set()
    for entry in sorted(os.listdir("/")):
        host = Path("/") / entry
        if entry in PRIVATE and entry != "proc":
            continue
        if host.is_symlink():
            (root / entry).symlink_to(os.readlink(host))
        elif host.is_dir():
            (root / entry).mkdir()
            mount(str(host), root / entry, None, MS_BIND | MS_REC)
            shared.add(root / entry)
    _devices(root)
    etc_upper, etc_work = Path(spec["etc"]) / "upper", Path(spec["etc"]) / "work"
    etc_upper.mkdir(parents=True, exist_ok=True)
    etc_work.mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir()
    mount("overlay", root / "etc", "overlay", 0, f"lowerdir=/etc,upperdir={etc_upper},workdir={etc_work}")
    (root / "etc" / "hostname").write_text(spec["hostname"] + "\n")
    _bind_file(Path(spec["hosts"]), root / "etc" / "hosts", read_only=True)
    for name, mode in (("tmp", 0o1777), ("run", 0o755), ("mnt", 0o755), ("var", 0o755), ("var/tmp", 0o1777)):
        (root / name).mkdir(exist_ok=True)
        (root / name).chmod(mode)
    (root / "var" / "run").symlink_to("/run")
    if spec.get("image_env"):
        _make_dirs(root, shared, root / IMAGE_ROOT.lstrip("/"))
        mount(spec["image_env"], root / IMAGE_ROOT.lstrip("/"), None, MS_BIND | MS_REC)
        mount(None, root / IMAGE_ROOT.lstrip("/"), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for item in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
        _volume(root, shared, item)
    # the project and its interpreter where they sit in a folder the container has of its own (/tmp, /opt),
    # after the volumes: an emptyDir at /tmp must not hide them
    for host in spec.get("shared", []):
        target = root / host.lstrip("/")
        if Path(host).is_dir() and not any(target.is_relative_to(s) for s in shared):
            _make_dirs(root, shared, target)
            mount(host, target, None, MS_BIND | MS_REC)
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    return root


def _devices(root: Path) -> None:
    dev = root / "dev"
    dev.mkdir()
    mount("tmpfs", dev, "tmpfs", 0, "mode=755")
    for name in DEVICES:
        if Path("/dev", name).exists():
            _bind_file(Path("/dev", name), dev / name)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        (dev / name).symlink_to(target)
    (dev / "stderr").symlink_to("/proc/self/fd/2")
    (dev / "shm").mkdir()
    mount("tmpfs", dev / "shm", "tmpfs", 0, "mode=1777")


def _bind_file(source: Path, target: Path, read_only: bool = False) -> None:
    target.touch()
    mount(str(source), target, None, MS_BIND)
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _volume(root: Path, shared: set[Path], item: dict[str, Any]) -> None:
    target = inside(root, item["target"])
    host = Path(item["host"])
    if host.is_dir() or item.get("memory"):
        _make_dirs(root, shared, target)
        if item.get("memory"):
            mount("tmpfs", target, "tmpfs", 0, "mode=1777")
        else:
            mount(str(host), target, None, MS_BIND | MS_REC)
    else:
        _make_dirs(root, shared, target.parent)
        if not target.exists():
            if any(target.is_relative_to(s) for s in shared):
                raise SandboxError(f"{item['target']} would be created on the host")
            target.touch()
        mount(str(host), target, None, MS_BIND)
    if item.get("read_only"):
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def enter(spec: dict[str, Any]) -> None:
    """Build the container's view and exec its command (never returns)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare (needs root)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = build_root(spec)
    socket.sethostname(spec["hostname"])
    os.chroot(root)
    os.chdir(spec.get("workdir") or "/")
    env = spec["env"]
    os.execvpe(spec["argv"][0], spec["argv"], env)


# --- outside: the launcher the kubelet calls ------------------------------------------------------------------


class SandboxLauncher:
    """Starts containers in sandboxes; `images` maps an image reference to its `ImageEnv`."""

    def __init__(self, images: dict[str, Any], hosts_file: Any) -> None:
        self.images = images
        self.hosts_file = hosts_file  # namespace -> Path of the hosts file for it

    def image(self, process) -> Any:
        ref = process.container.get("image", "")
        found = self.images.get(ref)
        if found is None:
            raise SandboxError(f'ErrImagePull: image "{ref}" is not known to this node (it has {sorted(self.images)})')
        return found

    def command(self, process) -> list[str]:
        """command + args as written; the image's ENTRYPOINT and CMD where the manifest has none."""
        container, image = process.container, self.image(process)
        if container.get("command"):
            return list(container["command"]) + list(container.get("args") or [])
        return list(image.spec.entrypoint) + list(container.get("args") or image.spec.cmd)

    def translate(self, value: str, process) -> str:
        return value  # every path is where the container expects it

    def environment(self, process, env: dict[str, str]) -> dict[str, str]:
        """The image's ENV (with $PATH expanded), then the pod's."""
        out = {"PATH": DEFAULT_PATH}
        for key, value in self.image(process).spec.env.items():
            out[key] = value.replace("${PATH}", out.get("PATH", "")).replace("$PATH", out.get("PATH", ""))
        out.update(env)
        return out

    def launch(self, process, argv: list[str], env: dict[str, str], log_file: Any) -> subprocess.Popen:
        container = process.container
        termination = container.get("terminationMessagePath", "/dev/termination-log")
        mounts = [
            {"target": m.target, "host": str(m.host), "read_only": m.read_only, "memory": m.memory}
            for m in process.mounts
        ]
        mounts.append({"target": termination, "host": str(process.termination_log)})
        image = self.image(process)
        spec = {
            "root": str(process.directory / "rootfs"),
            "etc": str(process.directory / "etc"),
            "hosts": str(self.hosts_file(process.pod["metadata"]["namespace"])),
            "hostname": process.pod["spec"].get("hostname") or process.pod["metadata"]["name"],
            "image_env": str(image.path),
            # what the image's environment links to: the project (its .venv, the editable sources) and the
            # interpreter, bound read-only at their own paths should they sit under /tmp or /opt
            "shared": sorted({str(PROJECT), sys.base_prefix, str(Path(sys.prefix).resolve())}),
            "mounts": mounts,
            "workdir": container.get("workingDir") or image.spec.workdir or "/",
            "argv": argv,
            "env": self.environment(process, env),
        }
        path = process.directory / "sandbox.json"
        path.write_text(json.dumps(spec))
        return subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), str(path)],
            env=spec["env"],
            cwd=process.directory,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        enter(spec)
    except (SandboxError, OSError) as exc:
        message = f"the container could not start: {exc}"
        print(message, file=sys.stderr)
        termination = Path(spec["root"]).parent / "termination-log"
        if termination.exists() and not termination.stat().st_size:
            termination.write_text(message)
        sys.exit(128)


if __name__ == "__main__":
    main()
