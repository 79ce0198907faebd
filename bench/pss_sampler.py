"""Peak proportional set size (PSS) of running process trees, sampled from /proc on a background thread.

PSS counts a page shared by k processes as 1/k of a page in each, so the sum over a process and its
descendants is the tree's real share of memory (a sum of RSS would count shared pages once per process).
Anonymous PSS (`Pss_Anon`: heap, stacks) is tracked beside it: the rest is file-backed, such as
memory-mapped input files, which the kernel can drop and read again under memory pressure.
"""

from __future__ import annotations

import threading
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (via /proc/PID/task/TID/children)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:  # the process (or a thread) may end while it is walked
            for children in list(Path(f"/proc/{current}/task").glob("*/children")):
                stack += [int(child) for child in children.read_text().split()]
        except OSError:
            continue
    return found


def process_pss(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of one process in bytes; zeros when it is gone (or a zombie)."""
    pss = anon = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Pss_Anon:"):
                    anon = int(line.split()[1]) * 1024
                    break
    except OSError:
        return 0, 0
    return pss, anon


def tree_pss(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of a process and all its descendants, in bytes."""
    pss = anon = 0
    for member in descendants(pid):
        member_pss, member_anon = process_pss(member)
        pss, anon = pss + member_pss, anon + member_anon
    return pss, anon


class PeakPssSampler:
    """Samples the PSS of every watched process tree every `interval_s` seconds until stopped.

    `peaks[key]` is the highest PSS seen for the tree watched under `key` (`anon_peaks[key]`: the highest
    anonymous PSS); `peak_total` the highest sum over all trees watched at the same instant (what processes
    running side by side need together).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self.anon_peaks: dict[str, int] = {}
        self.peak_total = 0
        self.samples = 0
        self._watched: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def watch(self, key: str, pid: int) -> None:
        with self._lock:
            self._watched[key] = pid
            self.peaks.setdefault(key, 0)
            self.anon_peaks.setdefault(key, 0)

    def unwatch(self, key: str) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def sample_once(self) -> None:
        with self._lock:
            watched = dict(self._watched)
        total = 0
        for key, pid in watched.items():
            pss, anon = tree_pss(pid)
            total += pss
            self.peaks[key] = max(self.peaks[key], pss)
            self.anon_peaks[key] = max(self.anon_peaks[key], anon)
        self.peak_total = max(self.peak_total, total)
        self.samples += 1

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.sample_once()

    def __enter__(self) -> PeakPssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join()
