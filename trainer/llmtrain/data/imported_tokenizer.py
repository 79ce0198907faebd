"""`spec.tokenizer.from`: an existing tokenizer used instead of training one.

Accepted: a Hugging Face `tokenizer.json` (BPE or WordPiece), a SentencePiece `.model` (unigram, byte
fallback, identity normalization: what `unigram_as_hf` reproduces), or a folder holding one of them (a
previous ingest's `<output>/tokenizer/`). It must match the spec: `type` and `vocabSize` describe it, the
special tokens sit at this project's fixed ids (bos=0, eos=1, pad=2, unk=3), and every id fits the shard
dtype. Anything else is refused with BadInput naming the field and the fix.

`spec.tokenizer.fromDataSourceRef` names another DataSource instead: the operator resolves it from that
DataSource's status; `llmtrain ingest` from the same run file (`shared_from_run_file`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import storage
from ..api.datasource import DataSource, TokenizerSpec
from .shards import token_dtype
from .tokenizer import SPECIAL_ORDER, Tokenizer, TokenizerError

FIELD = "spec.tokenizer.from"
HF_FILE, SPM_FILE = "tokenizer.json", "tokenizer.model"
_HF_KINDS = {"BPE": "bpe", "WordPiece": "wordpiece"}


def shared_from_run_file(source: DataSource, resources: list, base_dir: Path) -> DataSource:
    """`source` with `tokenizer.fromDataSourceRef` replaced by `tokenizer.from`: the tokenizer folder of
    the DataSource it names in the same run file, which must have been ingested."""
    ref = source.spec.tokenizer.from_data_source_ref
    if ref is None:
        return source
    field = "spec.tokenizer.fromDataSourceRef"
    other = next((r for r in resources if isinstance(r, DataSource) and r.name == ref.name), None)
    if other is None or other.name == source.name or not other.spec.output.uri:
        raise TokenizerError(
            f"{field}: no other DataSource {ref.name} with an output.uri in this run file; add it, or point"
            " tokenizer.from at its output's tokenizer folder"
        )
    output = resolve(other.spec.output.uri, base_dir)
    if not storage.exists(storage.join(output, "manifest.json")):
        raise TokenizerError(f"{field}: DataSource {ref.name} has not been ingested yet ({output}): ingest it first")
    tokenizer = source.spec.tokenizer.model_copy(
        update={"from_uri": storage.join(output, "tokenizer"), "from_data_source_ref": None}
    )
    return source.model_copy(update={"spec": source.spec.model_copy(update={"tokenizer": tokenizer})})


def resolve(uri: str, base_dir: Path) -> str:
    """The URI with a relative local path taken relative to the run file's folder."""
    if "://" in uri or Path(uri).is_absolute():
        return uri
    return str(base_dir / uri)


def fetch(uri: str, work: Path) -> Path:
    """The tokenizer file behind `uri` (a .json or .model file, or a folder holding tokenizer.model or
    tokenizer.json), copied into `work`."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if Path(name).suffix in (".json", ".model"):
        source = uri
    else:
        entries = {e.relative: e.uri for e in storage.list_files(uri)}
        name = SPM_FILE if SPM_FILE in entries else HF_FILE
        if name not in entries:
            raise TokenizerError(f"{FIELD}: {uri} holds neither {SPM_FILE} nor {HF_FILE}; point it at one of them")
        source = entries[name]
    if not storage.exists(source):
        raise TokenizerError(
            f"{FIELD}: {source} does not exist; point it at a tokenizer.json, a .model or their folder"
        )
    target = work / name
    target.write_bytes(storage.read_bytes(source))
    return target


def load(spec: TokenizerSpec, path: Path) -> Tokenizer:
    """The tokenizer in `path`, checked against the spec."""
    special = {name: getattr(spec.special_tokens, name) for name in SPECIAL_ORDER}
    if path.suffix == ".model":
        tokenizer = _sentencepiece(path, special)
    elif path.suffix == ".json":
        tokenizer = _hugging_face(path, special)
    else:
        raise TokenizerError(
            f"{FIELD}: {path.name} is neither a Hugging Face tokenizer.json nor a SentencePiece .model;"
            " point it at one of them"
        )
    check(spec, tokenizer, tokenizer.vocabulary())
    return tokenizer


def _hugging_face(path: Path, special: dict[str, str]) -> Tokenizer:
    from tokenizers import Tokenizer as HfTokenizer

    try:
        backend = HfTokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception on malformed files
        raise TokenizerError(f"{FIELD}: {path.name} is not a Hugging Face tokenizer.json ({exc})") from None
    model = json.loads(path.read_text()).get("model", {}).get("type")
    if model not in _HF_KINDS:
        fix = "give the SentencePiece .model instead" if model == "Unigram" else "use a BPE or WordPiece tokenizer"
        raise TokenizerError(f"{FIELD}: a {model} tokenizer.json is not supported; {fix}")
    return Tokenizer(_HF_KINDS[model], backend, special)


def _sentencepiece(path: Path, special: dict[str, str]) -> Tokenizer:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
        processor = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    except Exception as exc:  # protobuf DecodeError or sentencepiece's RuntimeError
        raise TokenizerError(f"{FIELD}: {path.name} is not a SentencePiece model ({exc})") from None
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    unsupported = [
        reason
        for reason, holds in (
            ("a unigram model (model_type=unigram)", trainer.model_type == trainer.UNIGRAM),
            ("byte fallback (byte_fallback=true)", trainer.byte_fallback),
            ("identity normalization (normalization_rule_name=identity)", normalizer.name == "identity"),
            ("a dummy prefix (add_dummy_prefix=true)", normalizer.add_dummy_prefix),
            ("whitespace kept (remove_extra_whitespaces=false)", not normalizer.remove_extra_whitespaces),
        )
        if not holds
    ]
    if unsupported:
        raise TokenizerError(
            f"{FIELD}: {path.name} needs {', '.join(unsupported)} so that its Hugging Face copy encodes"
            " identically; train it so, or use a tokenizer.json"
        )
    return Tokenizer("unigram", processor, special)


def check(spec: TokenizerSpec, tokenizer: Tokenizer, ids: dict[str, int]) -> None:
    """Refuse a tokenizer whose type, size, special tokens or ids do not fit the spec and the shards."""
    if tokenizer.kind != spec.type:
        raise TokenizerError(f"{FIELD}: the tokenizer is {tokenizer.kind}; set spec.tokenizer.type: {tokenizer.kind}")
    if tokenizer.vocab_size != spec.vocab_size:
        raise TokenizerError(
            f"{FIELD}: the tokenizer has {tokenizer.vocab_size} tokens, spec.tokenizer.vocabSize says"
            f" {spec.vocab_size}; set vocabSize: {tokenizer.vocab_size}"
        )
    for index, name in enumerate(SPECIAL_ORDER):
        token = getattr(spec.special_tokens, name)
        if ids.get(token) != index:
            found = "is missing" if token not in ids else f"has id {ids[token]}"
            raise TokenizerError(
                f"{FIELD}: special token {name} {token!r} {found}; it must have id {index} (bos=0, eos=1, pad=2,"
                " unk=3): set spec.tokenizer.specialTokens to the tokenizer's tokens or renumber them"
            )
    dtype = token_dtype(tokenizer.vocab_size)
    largest = max(ids.values(), default=0)
    if largest > np.iinfo(dtype).max or largest >= tokenizer.vocab_size:
        raise TokenizerError(
            f"{FIELD}: token id {largest} does not fit a vocabulary of {tokenizer.vocab_size} ({dtype.name} shards);"
            " ids must be 0 to vocabSize-1: renumber the vocabulary without gaps"
        )
