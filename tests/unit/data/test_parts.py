"""A scan part's documents: streamed whole across zstd frames, or picked sparsely by frame."""

from __future__ import annotations

import random

import numpy as np

from llmtrain.data import parts
from llmtrain.data.dedup.exact import content_hash


def test_sparse_picks_read_only_their_frames_and_match_the_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "FRAME_BYTES", 300)
    rng = random.Random(1)
    docs = [" ".join(f"w{rng.randrange(500)}" for _ in range(rng.randint(1, 120))) for _ in range(200)]
    docs[7] = "x" * 5000  # a document larger than a frame
    writer = parts.PartWriter(tmp_path / "staging", parts.BandLayout(0, exact=True))
    for text in docs:
        writer.add(text, content_hash(text))
    uri = str(tmp_path / "part")
    writer.publish(uri, {})
    files = parts.PartFiles(uri, len(docs))
    assert list(files.documents_text()) == docs  # one stream across every frame
    frames = np.fromfile(tmp_path / "part" / "frames.bin", dtype=np.int64).reshape(-1, 2)
    assert (
        len(frames) > 50 and frames[-1, 1] == len(docs) and frames[-1, 0] == (tmp_path / "part/docs.zst").stat().st_size
    )
    wanted = np.array(sorted({*rng.sample(range(len(docs)), 9), 0, 7, 199}))
    read: list[int] = []
    original = files.slice

    def counting(name, dtype, start, stop):
        if name == "docs.zst":
            read.append(stop - start)
        return original(name, dtype, start, stop)

    monkeypatch.setattr(files, "slice", counting)
    assert list(files.documents_at(wanted)) == [(int(i), docs[i]) for i in wanted]
    assert len(read) <= len(wanted) and sum(read) < 0.25 * frames[-1, 0]  # only the frames holding them


def test_a_tokenizer_entry_naming_a_path_outside_its_folder_is_refused(tmp_path):
    """The encode stage copies the tokenizer files `.work/tokenizer/tokenizer.json` lists: only plain names."""
    import json

    import pytest

    from llmtrain import storage
    from llmtrain.data import tokenizer_stage

    entry = tmp_path / "out/.work/tokenizer/tokenizer.json"
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps({"files": ["../../escaped.json"]}))
    with pytest.raises(storage.StorageError, match="bad file name"):
        tokenizer_stage.load_saved(str(tmp_path / "out"), tmp_path / "work")
    assert not (tmp_path / "escaped.json").exists()
