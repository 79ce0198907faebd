"""Hugging Face `datasets` on disk: a `save_to_disk` folder or a folder of data files. Offline only:
nothing is fetched from a hub."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ... import storage
from ...api.datasource import HuggingFaceSource
from ..formats import BadSpec, Raw, Rejected
from . import InputRef, SourceError


def resolve(index: int, source: HuggingFaceSource, base_dir: Path) -> InputRef:
    path = storage.local_path(source.path) if source.path.startswith("pvc://") else base_dir / source.path
    if not path.exists():
        raise SourceError(f"spec.sources[{index}].huggingface.path: {path} does not exist")
    return InputRef(index, str(path))


def iter_rows(path: str, source: HuggingFaceSource, text_field: str) -> Iterator[Raw | Rejected]:
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    folder = Path(path)
    cache = tempfile.mkdtemp(prefix="llmtrain-hf-")
    try:
        if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise BadSpec(
                        f"{path}: no split {source.split!r} (splits: {', '.join(loaded)}); set huggingface.split"
                    )
                loaded = loaded[source.split]
        else:
            try:
                loaded = datasets.load_dataset(str(folder), split=source.split, cache_dir=cache)
            except ValueError as exc:  # unknown split, no data files
                raise BadSpec(f"{path}: {exc}") from None
        if text_field not in loaded.column_names:
            raise BadSpec(
                f"{path}: the dataset has no column {text_field!r} (columns: {', '.join(loaded.column_names)});"
                " set spec.textField"
            )
        for batch in loaded.select_columns([text_field]).iter(batch_size=1000):
            for value in batch[text_field]:
                yield Raw(value) if isinstance(value, str) else Rejected("missing_text_field")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
