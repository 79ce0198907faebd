"""Hugging Face datasets on disk get the bounds of files: per-document size and the expansion budget."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmtrain.api.datasource import HuggingFaceSource
from llmtrain.data import formats
from llmtrain.data.formats import InputError, Raw, Rejected
from llmtrain.data.sources import hf

TEXTS = ["short", "x" * 5000, None, "also short", "\u00e9" * 600]
EXPECTED = [Raw("short"), Rejected("too_long"), Rejected("missing_text_field"), Raw("also short"), Rejected("too_long")]


def read(folder, limit: int = 1000) -> list[Raw | Rejected]:
    return list(hf.iter_rows(str(folder), HuggingFaceSource.model_validate({"path": "x"}), "text", limit))


def test_a_saved_dataset_bounds_each_document(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})}).save_to_disk(str(tmp_path / "saved"))
    assert read(tmp_path / "saved") == EXPECTED


def test_a_folder_of_data_files_bounds_each_document(tmp_path):
    (tmp_path / "files").mkdir()
    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "files" / "train-00000.parquet")
    assert read(tmp_path / "files") == EXPECTED


def test_text_past_the_expansion_budget_of_the_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "EXPANSION_ALLOWANCE", 50_000)
    monkeypatch.setattr(formats, "MAX_EXPANSION_RATIO", 2)
    (tmp_path / "files").mkdir()
    repeated = pa.table({"text": ["a" * 1000] * 200})  # 200 kB of text in a few kB of parquet
    pq.write_table(repeated, tmp_path / "files" / "train-00000.parquet", compression="zstd")
    seen = []
    with pytest.raises(InputError, match="expands to more than 50000 bytes") as caught:
        for document in hf.iter_rows(
            str(tmp_path / "files"), HuggingFaceSource.model_validate({"path": "x"}), "text", 2000
        ):
            seen.append(document)
    assert caught.value.reason == "decompression_bomb" and 0 < len(seen) <= 50
