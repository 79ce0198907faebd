"""Export with an imported tokenizer (`spec.tokenizer.from`): the Hugging Face layout and GGUF carry a
byte-level BPE made with the `tokenizers` library; a SentencePiece unigram goes to the HF layout and GGUF
refuses it; GGUF refuses a BPE that llama.cpp's gpt2 tokenizer would split differently, saying why."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from workload.test_export import export, train_tiny

from llmtrain.export import gguf
from llmtrain.export.checkpoint import ExportError
from support.llama import require_llama_cpp
from support.paths import ROOT

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


def texts() -> list[str]:
    return [p.read_text() for p in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:4]]


def byte_level_bpe(path: Path, pre_tokenizer: object | None = None) -> int:
    """A byte-level BPE made in the test (never downloaded), saved to `path`; its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts(), trainer=trainer)
    backend.save(str(path))
    return backend.get_vocab_size(with_added_tokens=True)


@pytest.fixture(scope="module")
def trained_imported_bpe(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("imported-bpe")
    size = byte_level_bpe(root / "made.json")
    return train_tiny(root, {"type": "bpe", "vocabSize": size, "from": str(root / "made.json")})


@pytest.fixture(scope="module")
def trained_imported_unigram(tmp_path_factory) -> tuple[Path, Path]:
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("imported-unigram")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for text in texts() for line in text.splitlines() if line.strip()]),
        model_writer=model,
        model_type="unigram",
        vocab_size=512,
        bos_id=0,
        eos_id=1,
        pad_id=2,
        unk_id=3,
        pad_piece="<pad>",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    (root / "made.model").write_bytes(model.getvalue())
    return train_tiny(root, {"type": "unigram", "vocabSize": 512, "from": str(root / "made.model")})


def test_an_imported_bpe_exports_to_the_hf_layout(tmp_path, trained_imported_bpe):
    data, checkpoints = trained_imported_bpe
    assert json.loads((data / "manifest.json").read_text())["tokenizer"]["from"].endswith("made.json")
    code, report, stderr = export(tmp_path, data, checkpoints, formats=["safetensors"])
    assert code == 0, stderr
    validation = report["artifacts"][0]["validation"]
    assert validation["tokenizerMatch"] is True and validation["passed"]


def test_an_imported_bpe_exports_to_gguf(tmp_path, trained_imported_bpe):
    require_llama_cpp()
    data, checkpoints = trained_imported_bpe
    code, report, stderr = export(tmp_path, data, checkpoints, formats=["gguf"])
    assert code == 0, stderr
    validation = report["artifacts"][0]["validation"]
    assert validation["tokenizerMatch"] and validation["greedyMatch"]


def test_an_imported_sentencepiece_exports_to_the_hf_layout_but_not_gguf(tmp_path, trained_imported_unigram):
    data, checkpoints = trained_imported_unigram
    code, report, stderr = export(tmp_path, data, checkpoints, formats=["safetensors"])
    assert code == 0, stderr
    assert report["artifacts"][0]["validation"]["tokenizerMatch"] is True
    code, report, _ = export(tmp_path, data, checkpoints, formats=["gguf"])
    assert code == 2 and "GGUF cannot carry a unigram tokenizer" in report["error"]


def test_gguf_names_why_it_cannot_carry_a_bpe_with_another_pre_tokenizer(tmp_path):
    from tokenizers import pre_tokenizers

    size = byte_level_bpe(tmp_path / "tokenizer.json", pre_tokenizers.Whitespace())
    specials = {
        name: {"token": token, "id": i}
        for i, (name, token) in enumerate(zip(("bos", "eos", "pad", "unk"), SPECIALS, strict=True))
    }
    meta = {"type": "bpe", "vocabSize": size, "specialTokens": specials}
    (tmp_path / "tokenizer_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="GGUF cannot carry this bpe tokenizer: its pre-tokenizer is Whitespace"):
        gguf._tokenizer(None, tmp_path)
