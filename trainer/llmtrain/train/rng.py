"""Per-rank RNG states (torch, CUDA, numpy, Python) as safetensors plus JSON: no pickle either way.

`rng-<rank>.safetensors` holds the states' integer arrays as tensors and the few scalars as JSON in
the file's metadata; loading it builds tensors and plain numbers only, so the file cannot run code.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .safe_load import CorruptCheckpoint


def file_name(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def save(path: Path) -> None:
    path.write_bytes(capture())


def capture() -> bytes:
    """This process's RNG states now, as the bytes of an RNG state file (to write later)."""
    _kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "python": torch.tensor(python_state, dtype=torch.int64),
    }
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    scalars = {
        "numpy": {"pos": int(pos), "hasGauss": int(has_gauss), "cachedGaussian": float(cached)},
        "python": {"version": int(version), "gaussNext": gauss_next},
    }
    return safetensors_bytes(tensors, metadata={"scalars": json.dumps(scalars)})


def restore(path: Path) -> None:
    """Set this process's RNG states from the file; a malformed file is refused, nothing is set."""
    try:
        tensors = load_file(str(path))
        scalars = json.loads(_metadata(path)["scalars"])
        numpy_state = (
            "MT19937",
            tensors["numpy"].numpy().astype(np.uint32),
            int(scalars["numpy"]["pos"]),
            int(scalars["numpy"]["hasGauss"]),
            float(scalars["numpy"]["cachedGaussian"]),
        )
        gauss = scalars["python"]["gaussNext"]
        python_state = (
            int(scalars["python"]["version"]),
            tuple(int(x) for x in tensors["python"].tolist()),
            None if gauss is None else float(gauss),
        )
        states = (tensors["torch"], numpy_state, python_state, tensors.get("cuda"))
        _apply(*states)
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
        raise CorruptCheckpoint(f"{path}: not an RNG state file of this trainer ({exc})") from None


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def _apply(torch_state: torch.Tensor, numpy_state: Any, python_state: Any, cuda_state: torch.Tensor | None) -> None:
    previous = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    except BaseException:
        torch.set_rng_state(previous[0])
        np.random.set_state(previous[1])
        random.setstate(previous[2])
        raise
    if cuda_state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_state)
