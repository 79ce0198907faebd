"""Tokenizers (BPE, WordPiece, unigram) with fixed special ids, and token shards."""

from __future__ import annotations

import numpy as np
import pytest

from llmtrain.api.datasource import TokenizerSpec
from llmtrain.data import tokenizer
from llmtrain.data.shards import ShardWriter, read_shard, token_dtype, validation_mask
from support.paths import ROOT


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    files = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:4]
    return [f.read_text() for f in files]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_train_save_load_encode(tmp_path, corpus, kind):
    spec = TokenizerSpec(type=kind, vocab_size=1000)
    trained = tokenizer.train(spec, iter(corpus))
    assert trained.vocab_size == 1000
    assert trained.special_ids() == {"bos": 0, "eos": 1, "pad": 2, "unk": 3}
    files = trained.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    loaded = tokenizer.load(tmp_path)
    sample = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
    ids = loaded.encode_batch(sample)
    assert ids == trained.encode_batch(sample)
    assert all(0 < len(row) < len(text) for row, text in zip(ids, sample, strict=True))
    assert all(i >= 4 for row in ids for i in row)  # ordinary text never yields special ids
    if kind != "wordpiece":  # WordPiece drops whitespace by design; the others are lossless here
        assert [loaded.decode(row) for row in ids] == sample


def test_byte_level_bpe_encodes_any_text(corpus):
    trained = tokenizer.train(TokenizerSpec(type="bpe", vocab_size=600), iter(corpus))
    text = "\u4f60\u597d \U0001f600 \u00e9\u00e8"
    assert trained.decode(trained.encode_batch([text])[0]) == text


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_vocab_larger_than_corpus_supports(kind):
    spec = TokenizerSpec(type=kind, vocab_size=50000)
    with pytest.raises(tokenizer.TokenizerError, match=r"spec\.tokenizer\.vocabSize: 50000 is more than this corpus"):
        tokenizer.train(spec, iter(["a tiny corpus with few words"] * 3))


def test_dtype_by_vocab():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_shard_writer_rolls_over_exactly(tmp_path):
    writer = ShardWriter("train", str(tmp_path / "out"), np.dtype(np.uint16), 1000, tmp_path / "staging")
    data = np.arange(2500, dtype=np.uint16)
    writer.add(data[:1700], documents=3)
    writer.add(data[1700:], documents=2)
    shards = writer.close()
    assert [s.tokens for s in shards] == [1000, 1000, 500]
    assert [s.path for s in shards] == [f"train/shard-0000{i}.bin" for i in range(3)]
    joined = np.concatenate([read_shard(tmp_path / "out" / s.path, "uint16") for s in shards])
    assert np.array_equal(joined, data) and writer.documents == 5
    assert not list((tmp_path / "staging").iterdir())


def test_validation_split_is_deterministic_and_sized():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(20000, 2), dtype=np.uint64)
    mask = validation_mask(hashes, 0.1, seed=7)
    assert abs(mask.mean() - 0.1) < 0.01
    assert np.array_equal(mask, validation_mask(hashes, 0.1, seed=7))
    assert not np.array_equal(mask, validation_mask(hashes, 0.1, seed=8))
    assert not validation_mask(hashes, 0.0, seed=7).any()
