"""Hugging Face `datasets` on disk: a `save_to_disk` folder or a folder of data files. Offline only:
nothing is fetched from a hub.

A saved dataset is memory-mapped; a folder of data files is streamed (no arrow cache is written).
Either way the text column is read as arrow arrays, so the bounds of files apply: a value past the
per-document limit is a counted `too_long` rejection without being copied, and the text read may not
exceed the expansion budget of the folder's stored size (`formats.ExpansionBudget`:
`decompression_bomb`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ... import storage
from ...api.datasource import HuggingFaceSource
from ..formats import BadSpec, ExpansionBudget, Raw, Rejected, column_documents
from . import InputRef, SourceError

BATCH_ROWS = 256


def resolve(index: int, source: HuggingFaceSource, base_dir: Path) -> InputRef:
    path = storage.local_path(source.path) if source.path.startswith("pvc://") else base_dir / source.path
    if not path.exists():
        raise SourceError(f"spec.sources[{index}].huggingface.path: {path} does not exist")
    return InputRef(index, str(path))


def iter_rows(path: str, source: HuggingFaceSource, text_field: str, limit: int) -> Iterator[Raw | Rejected]:
    folder = Path(path)
    with tempfile.TemporaryDirectory(prefix="llmtrain-hf-") as cache:
        loaded = _load(folder, source.split, cache)
        columns = loaded.column_names
        if columns is not None and text_field not in columns:
            raise BadSpec(
                f"{path}: the dataset has no column {text_field!r} (columns: {', '.join(columns)}); set spec.textField"
            )
        if columns is not None:
            loaded = loaded.select_columns([text_field])
        budget = ExpansionBudget.of_stored_size(path, stored_size(folder))
        for batch in loaded.with_format("arrow").iter(batch_size=BATCH_ROWS):
            if text_field not in batch.column_names:
                raise BadSpec(f"{path}: the dataset has no column {text_field!r}; set spec.textField")
            for chunk in batch.column(text_field).chunks:
                yield from column_documents(chunk, limit, budget)


def _load(folder: Path, split: str, cache: str) -> Any:
    """The split as a memory-mapped Dataset (saved with save_to_disk) or a streamed IterableDataset."""
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise BadSpec(f"{folder}: no split {split!r} (splits: {', '.join(loaded)}); set huggingface.split")
            loaded = loaded[split]
        return loaded
    try:
        return datasets.load_dataset(str(folder), split=split, streaming=True, cache_dir=cache)
    except ValueError as exc:  # unknown split, no data files, mixed formats
        raise BadSpec(f"{folder}: {exc}") from None


def stored_size(folder: Path) -> int:
    """Bytes of the regular files below `folder` (links are not followed)."""
    total = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            entry = Path(directory) / name
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
    return total
