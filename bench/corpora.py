"""Real public corpora for the benchmarks, assembled from Debian and PyPI packages into bench/.cache/.

- Linux kernel documentation and source (GPL-2.0): `apt-get install linux-source-6.1`
- GCIDE dictionary (GPL): `apt-get install dict-gcide`
- King James Bible (public domain): `apt-get install bible-kjv`
- Shakespeare (public domain): examples/data/shakespeare
`make bench` installs the Debian packages when missing.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
ROOT = Path(__file__).resolve().parent.parent
KERNEL_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


def _need(path: Path, package: str) -> None:
    if not path.exists():
        raise SystemExit(f"{path} is missing: apt-get install {package} (make bench does this)")


def _extract(prefix: str, dest: Path, suffixes: tuple[str, ...]) -> Path:
    if dest.exists():
        return dest
    _need(KERNEL_TARBALL, "linux-source-6.1")
    temp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    with tarfile.open(KERNEL_TARBALL) as archive:
        members = [
            m
            for m in archive
            if m.isfile() and m.name.split("/", 1)[-1].startswith(prefix) and m.name.endswith(suffixes)
        ]
        archive.extractall(temp, members=members, filter="data")
    temp.rename(dest)
    return dest


def kernel_docs() -> Path:
    """~3,000 reStructuredText and text files of the kernel's Documentation/ (about 20 MB)."""
    return _extract("Documentation/", CACHE / "kernel-docs", (".rst", ".txt"))


def kernel_source() -> Path:
    """The kernel's C sources and headers (about 1 GB, full of near-duplicates)."""
    return _extract("", CACHE / "kernel-source", (".c", ".h"))


def gcide() -> Path:
    """The GCIDE dictionary as 1 MB text files (about 40 MB)."""
    dest = CACHE / "gcide"
    if dest.exists():
        return dest
    source = Path("/usr/share/dictd/gcide.dict.dz")
    _need(source, "dict-gcide")
    text = gzip.decompress(source.read_bytes())
    temp = dest.with_name("gcide.tmp")
    temp.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(text), 1 << 20):
        (temp / f"gcide-{i >> 20:03d}.txt").write_bytes(text[i : i + (1 << 20)])
    temp.rename(dest)
    return dest


def kjv() -> Path:
    dest = CACHE / "kjv"
    if dest.exists():
        return dest
    if not shutil.which("bible"):
        raise SystemExit("bible is missing: apt-get install bible-kjv (make bench does this)")
    text = subprocess.run(["bible", "-f", "Genesis 1:1-Revelation 22:21"], capture_output=True, check=True).stdout
    temp = dest.with_name("kjv.tmp")
    temp.mkdir(parents=True, exist_ok=True)
    (temp / "kjv.txt").write_bytes(text)
    temp.rename(dest)
    return dest


def prose_mix(min_bytes: int = 100 * 10**6) -> Path:
    """At least `min_bytes` of mixed real text: kernel docs, dictionary, Bible, Shakespeare, kernel C."""
    dest = CACHE / f"mix-{min_bytes // 10**6}mb"
    if dest.exists():
        return dest
    temp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    total = 0
    sources = [kernel_docs(), gcide(), kjv(), ROOT / "examples/data/shakespeare"]
    for source in sources:
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix in (".rst", ".txt"):
                target = temp / f"{source.name}-{len(list(temp.iterdir())):05d}{path.suffix}"
                shutil.copyfile(path, target)
                total += target.stat().st_size
    for path in sorted(kernel_source().rglob("*.c")):  # top up with source code
        if total >= min_bytes:
            break
        target = temp / f"c-{total:012d}.txt"
        shutil.copyfile(path, target)
        total += target.stat().st_size
    temp.rename(dest)
    return dest


def size_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
