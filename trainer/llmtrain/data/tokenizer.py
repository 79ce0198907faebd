"""Tokenizer training, saving, loading and batch encoding.

- bpe: byte-level BPE (HF `tokenizers`, GPT-2 pre-tokenization regex), saved as `tokenizer.json`;
- wordpiece: BERT-style WordPiece (HF `tokenizers`), saved as `tokenizer.json`;
- unigram: SentencePiece unigram with byte fallback, saved as `tokenizer.model` (what llama.cpp and
  transformers' LlamaTokenizer read).
Special tokens have fixed ids: bos=0, eos=1, pad=2, unk=3. `tokenizer_meta.json` records the type,
the vocabulary size and the special tokens, so readers need not guess.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..api.datasource import TokenizerSpec
from ..errors import BadInput

META_FILE = "tokenizer_meta.json"
SPECIAL_ORDER = ("bos", "eos", "pad", "unk")


class TokenizerError(BadInput, ValueError):
    """The tokenizer cannot be trained as specified (bad input, permanent)."""


class Tokenizer:
    """A trained tokenizer of any of the three types, behind one small interface."""

    def __init__(self, kind: str, backend: Any, special: dict[str, str]) -> None:
        self.kind, self._backend, self.special = kind, backend, special

    @property
    def vocab_size(self) -> int:
        if self.kind == "unigram":
            return int(self._backend.get_piece_size())
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def special_ids(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(SPECIAL_ORDER)}

    def vocabulary(self) -> dict[str, int]:
        """Every token with its id."""
        if self.kind == "unigram":
            return {self._backend.id_to_piece(i): i for i in range(self._backend.get_piece_size())}
        return dict(self._backend.get_vocab(with_added_tokens=True))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without special tokens; parallel across texts in native code."""
        if self.kind == "unigram":
            return self._backend.encode(texts, num_threads=os.cpu_count() or 1)
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids)

    def files(self) -> list[str]:
        return (["tokenizer.model"] if self.kind == "unigram" else []) + ["tokenizer.json", META_FILE]

    def save(self, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "unigram":
            (directory / "tokenizer.model").write_bytes(self._backend.serialized_model_proto())
            unigram_as_hf(self._backend).save(str(directory / "tokenizer.json"))
        else:
            self._backend.save(str(directory / "tokenizer.json"))
        meta = {
            "type": self.kind,
            "vocabSize": self.vocab_size,
            "specialTokens": {name: {"token": self.special[name], "id": i} for i, name in enumerate(SPECIAL_ORDER)},
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return self.files()


def _special(spec: TokenizerSpec) -> dict[str, str]:
    return {name: getattr(spec.special_tokens, name) for name in SPECIAL_ORDER}


def train(spec: TokenizerSpec, texts: Iterable[str]) -> Tokenizer:
    """Train on `texts` (already sampled to spec.trainSampleBytes); checks the vocabulary was reached."""
    special = _special(spec)
    tokenizer = _train_unigram(spec, special, texts) if spec.type == "unigram" else _train_hf(spec, special, texts)
    if tokenizer.vocab_size < spec.vocab_size:
        raise TokenizerError(
            f"spec.tokenizer.vocabSize: {spec.vocab_size} is more than this corpus supports (training stopped at"
            f" {tokenizer.vocab_size}); lower vocabSize or add text"
        )
    return tokenizer


def _train_hf(spec: TokenizerSpec, special: dict[str, str], texts: Iterable[str]) -> Tokenizer:
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokens = [special[name] for name in SPECIAL_ORDER]
    if spec.type == "bpe":
        backend = HfTokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            special_tokens=tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        backend = HfTokenizer(models.WordPiece(unk_token=special["unk"]))
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=spec.vocab_size, special_tokens=tokens, show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    for index, token in enumerate(tokens):
        if backend.token_to_id(token) != index:
            raise TokenizerError(f"special token {token!r} did not get id {index}")
    return Tokenizer(spec.type, backend, special)


def _lines(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line


def _train_unigram(spec: TokenizerSpec, special: dict[str, str], texts: Iterable[str]) -> Tokenizer:
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(texts),
            model_writer=model,
            model_type="unigram",
            vocab_size=spec.vocab_size,
            bos_id=0,
            eos_id=1,
            pad_id=2,
            unk_id=3,
            bos_piece=special["bos"],
            eos_piece=special["eos"],
            pad_piece=special["pad"],
            unk_piece=special["unk"],
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            max_sentence_length=1 << 16,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as exc:
        if "Vocabulary size" in str(exc) or "vocab_size" in str(exc):
            raise TokenizerError(
                f"spec.tokenizer.vocabSize: {spec.vocab_size} is more than this corpus supports; lower vocabSize"
                f" or add text ({str(exc).strip().splitlines()[-1]})"
            ) from None
        raise
    return Tokenizer("unigram", spm.SentencePieceProcessor(model_proto=model.getvalue()), special)


def unigram_as_hf(processor: Any) -> Any:
    """The SentencePiece unigram model as an HF `tokenizers` Unigram that encodes identically (identity
    normalization, a dummy prefix, spaces as U+2581, byte fallback), for the Hugging Face layout."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, normalizers

    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    backend = HfTokenizer(models.Unigram(vocab, unk_id=SPECIAL_ORDER.index("unk"), byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return backend


def load(directory: Path) -> Tokenizer:
    """A tokenizer saved by `Tokenizer.save`."""
    meta = json.loads((directory / META_FILE).read_text())
    special = {name: meta["specialTokens"][name]["token"] for name in SPECIAL_ORDER}
    if meta["type"] == "unigram":
        import sentencepiece as spm

        return Tokenizer("unigram", spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model")), special)
    from tokenizers import Tokenizer as HfTokenizer

    return Tokenizer(meta["type"], HfTokenizer.from_file(str(directory / "tokenizer.json")), special)
