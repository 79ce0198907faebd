"""`spec.tokenizer.from`: loading an existing tokenizer and refusing one that does not fit the spec."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmtrain.api.datasource import DataSource, TokenizerSpec
from llmtrain.core import uris
from llmtrain.data import imported_tokenizer, tokenizer
from llmtrain.errors import BadInput
from support.paths import ROOT

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [f.read_text() for f in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:2]]


def hf_bpe(corpus: list[str], specials: list[str] = SPECIALS) -> tuple[object, int]:
    """A byte-level BPE made with the `tokenizers` library (never downloaded), and its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    return backend, backend.get_vocab_size(with_added_tokens=True)


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory, corpus) -> tuple[Path, int]:
    backend, size = hf_bpe(corpus)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    backend.save(str(path))
    return path, size


def refused(spec: TokenizerSpec, path: Path) -> str:
    with pytest.raises(BadInput) as caught:
        imported_tokenizer.load(spec, path)
    message = str(caught.value)
    assert message.startswith("spec.tokenizer.from: ")
    return message


def test_a_hugging_face_bpe_is_loaded_and_encodes_as_the_library_does(bpe_file, corpus):
    path, size = bpe_file
    loaded = imported_tokenizer.load(TokenizerSpec(type="bpe", vocab_size=size), path)
    assert loaded.kind == "bpe" and loaded.vocab_size == size
    from tokenizers import Tokenizer

    expected = [e.ids for e in Tokenizer.from_file(str(path)).encode_batch(corpus, add_special_tokens=False)]
    assert loaded.encode_batch(corpus) == expected


def test_a_wrong_vocabulary_size_is_refused_with_the_size_to_set(bpe_file):
    path, size = bpe_file
    message = refused(TokenizerSpec(type="bpe", vocab_size=size + 1), path)
    assert f"has {size} tokens" in message and f"set vocabSize: {size}" in message


def test_a_wrong_type_is_refused(bpe_file):
    path, size = bpe_file
    assert "set spec.tokenizer.type: bpe" in refused(TokenizerSpec(type="wordpiece", vocab_size=size), path)


def test_a_missing_or_misplaced_special_token_is_refused(tmp_path, bpe_file, corpus):
    path, size = bpe_file
    spec = TokenizerSpec.model_validate({"type": "bpe", "vocabSize": size, "specialTokens": {"bos": "<|begin|>"}})
    assert "special token bos '<|begin|>' is missing; it must have id 0" in refused(spec, path)
    backend, size = hf_bpe(corpus, ["</s>", "<s>", "<pad>", "<unk>"])
    backend.save(str(tmp_path / "tokenizer.json"))
    message = refused(TokenizerSpec(type="bpe", vocab_size=size), tmp_path / "tokenizer.json")
    assert "special token bos '<s>' has id 1; it must have id 0" in message


def test_ids_beyond_the_shard_dtype_are_refused(tmp_path, bpe_file):
    path, size = bpe_file
    document = json.loads(path.read_text())
    vocab = document["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    vocab[last] = 70_000  # a gap: 500 tokens fit uint16 shards, this id does not
    (tmp_path / "tokenizer.json").write_text(json.dumps(document))
    message = refused(TokenizerSpec(type="bpe", vocab_size=size), tmp_path / "tokenizer.json")
    assert f"token id 70000 does not fit a vocabulary of {size} (uint16 shards)" in message


def test_an_unknown_file_type_is_refused(tmp_path, bpe_file):
    _, size = bpe_file
    (tmp_path / "vocab.txt").write_text("hello\n")
    message = refused(TokenizerSpec(type="bpe", vocab_size=size), tmp_path / "vocab.txt")
    assert "neither a Hugging Face tokenizer.json nor a SentencePiece .model" in message
    (tmp_path / "broken.json").write_text("{}")
    assert "is not a Hugging Face tokenizer.json" in refused(TokenizerSpec(), tmp_path / "broken.json")


def test_sentencepiece_unigram_is_loaded_and_bpe_is_refused(tmp_path, corpus):
    spec = TokenizerSpec(type="unigram", vocab_size=600)
    tokenizer.train(spec, iter(corpus)).save(tmp_path / "trained")
    loaded = imported_tokenizer.load(spec, tmp_path / "trained/tokenizer.model")
    assert loaded.kind == "unigram" and loaded.encode_batch(corpus) == tokenizer.load(
        tmp_path / "trained"
    ).encode_batch(corpus)
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[0].splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=600,
        minloglevel=2,
    )
    (tmp_path / "bpe.model").write_bytes(model.getvalue())
    message = refused(spec, tmp_path / "bpe.model")
    assert "a unigram model (model_type=unigram)" in message and "byte fallback" in message


def test_a_hugging_face_unigram_asks_for_the_sentencepiece_model(tmp_path, corpus):
    spec = TokenizerSpec(type="unigram", vocab_size=600)
    tokenizer.train(spec, iter(corpus)).save(tmp_path)
    assert "give the SentencePiece .model instead" in refused(spec, tmp_path / "tokenizer.json")


def test_fetch_prefers_the_sentencepiece_model_of_a_folder(tmp_path, corpus):
    tokenizer.train(TokenizerSpec(type="unigram", vocab_size=600), iter(corpus)).save(tmp_path / "out")
    (tmp_path / "work").mkdir()
    assert imported_tokenizer.fetch(str(tmp_path / "out"), tmp_path / "work").name == "tokenizer.model"
    assert imported_tokenizer.fetch(str(tmp_path / "out/tokenizer.json"), tmp_path / "work").name == "tokenizer.json"
    with pytest.raises(BadInput, match=r"holds neither tokenizer\.model nor tokenizer\.json"):
        imported_tokenizer.fetch(str(tmp_path / "work-empty"), tmp_path / "work")
    with pytest.raises(BadInput, match="does not exist"):
        imported_tokenizer.fetch(str(tmp_path / "missing.json"), tmp_path / "work")


def test_relative_paths_are_taken_from_the_run_folder():
    assert imported_tokenizer.resolve("tok/tokenizer.json", Path("/runs/a")) == "/runs/a/tok/tokenizer.json"
    assert imported_tokenizer.resolve("pvc://shared/tok", Path("/runs/a")) == "pvc://shared/tok"


def test_the_field_is_from_on_the_wire_and_refuses_dotdot():
    assert TokenizerSpec.model_validate({"from": "s3://bucket/tok"}).to_wire()["from"] == "s3://bucket/tok"
    with pytest.raises(ValidationError, match=r"'\.\.' path segments"):
        TokenizerSpec.model_validate({"from": "pvc://claim/../other"})
    with pytest.raises(ValidationError, match="other schemes are not supported"):
        TokenizerSpec.model_validate({"from": "https://example.com/tokenizer.json"})


def test_the_claim_of_a_pvc_tokenizer_is_mounted():
    source = DataSource.model_validate(
        {
            "metadata": {"name": "corpus"},
            "spec": {"sources": [{"pvc": {"claimName": "texts"}}], "tokenizer": {"from": "pvc://vocab/tok"}},
        }
    )
    assert uris.source_claims(source) == ["texts", "vocab"]
