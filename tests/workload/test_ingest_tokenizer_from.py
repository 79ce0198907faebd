"""`llmtrain ingest` with `spec.tokenizer.from`: no training, the shards are what the imported tokenizer
encodes, the output's tokenizer/ is laid out as a trained one, and a tokenizer that does not fit is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmtrain.api.datasource import NormalizationSpec
from llmtrain.data import tokenizer
from llmtrain.data.normalize import Normalizer
from support.ingest import data_source, run_ingest, write_spec


def documents_in_shards(output: Path) -> list[list[int]]:
    manifest = json.loads((output / "manifest.json").read_text())
    documents = []
    for split in manifest["splits"].values():  # a document may continue into the next shard
        shards = [np.fromfile(output / s["path"], dtype=manifest["dtype"]) for s in split["shards"]]
        tokens = np.concatenate(shards).tolist()
        while tokens:
            end = tokens.index(manifest["eosId"])
            documents.append(tokens[:end])
            tokens = tokens[end + 1 :]
    return documents


def shard_hashes(output: Path) -> dict[str, str]:
    manifest = json.loads((output / "manifest.json").read_text())
    return {s["path"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}


def test_a_previous_ingests_tokenizer_gives_the_same_shards(shakespeare):
    first = run_ingest("-f", str(write_spec(shakespeare, data_source())), "--output", str(shakespeare / "first"))
    assert first.code == 0, first.stderr
    spec = data_source(tokenizer={"type": "bpe", "vocabSize": 1024, "from": "first/tokenizer"})
    second = run_ingest("-f", str(write_spec(shakespeare, spec)), "--output", str(shakespeare / "second"))
    assert second.code == 0, second.stderr
    assert shard_hashes(shakespeare / "second") == shard_hashes(shakespeare / "first")
    for name in ("tokenizer.json", "tokenizer_meta.json"):
        assert (shakespeare / "second/tokenizer" / name).read_bytes() == (
            shakespeare / "first/tokenizer" / name
        ).read_bytes()
    manifest = json.loads((shakespeare / "second/manifest.json").read_text())
    assert manifest["tokenizer"]["from"] == "first/tokenizer" and manifest["tokenizer"]["vocabSize"] == 1024


def test_a_datasource_shares_another_ones_tokenizer_from_the_same_run_file(shakespeare):
    """tokenizer.fromDataSourceRef: `llmtrain ingest` takes the named DataSource's output in the same run
    file, once it is ingested (before that: exit 2 saying so)."""
    import yaml

    plays = data_source("plays", output={"uri": "plays-out", "shardTokens": 50_000})
    sharing = data_source(
        "sharing", tokenizer={"type": "bpe", "vocabSize": 1024, "fromDataSourceRef": {"name": "plays"}}
    )
    run_file = shakespeare / "two.yaml"
    run_file.write_text(yaml.safe_dump_all([plays, sharing]))
    early = run_ingest("-f", str(run_file), "--name", "sharing", "--output", str(shakespeare / "sharing"))
    assert early.code == 2 and "DataSource plays has not been ingested yet" in early.report["error"]
    assert run_ingest("-f", str(run_file), "--name", "plays").code == 0
    shared = run_ingest("-f", str(run_file), "--name", "sharing", "--output", str(shakespeare / "sharing"))
    assert shared.code == 0, shared.stderr
    for name in ("tokenizer.json", "tokenizer_meta.json"):
        assert (shakespeare / "sharing/tokenizer" / name).read_bytes() == (
            shakespeare / "plays-out/tokenizer" / name
        ).read_bytes()
    manifest = json.loads((shakespeare / "sharing/manifest.json").read_text())
    assert manifest["tokenizer"]["from"] == str(shakespeare / "plays-out" / "tokenizer")


def test_a_tokenizers_library_bpe_encodes_the_shards(shakespeare):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [p.read_text() for p in sorted((shakespeare / "data").glob("*.txt"))]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts[:2], trainer=trainer)
    backend.save(str(shakespeare / "made.json"))
    size = backend.get_vocab_size(with_added_tokens=True)
    spec = data_source(tokenizer={"type": "bpe", "vocabSize": size, "from": str(shakespeare / "made.json")})
    result = run_ingest("-f", str(write_spec(shakespeare, spec)), "--output", str(shakespeare / "out"))
    assert result.code == 0, result.stderr
    normalize = Normalizer(NormalizationSpec())
    expected = sorted(e.ids for e in backend.encode_batch([normalize(t) for t in texts], add_special_tokens=False))
    assert sorted(documents_in_shards(shakespeare / "out")) == expected
    loaded = tokenizer.load(shakespeare / "out/tokenizer")
    assert loaded.kind == "bpe" and loaded.vocab_size == size


def test_a_tokenizer_that_does_not_fit_the_spec_is_refused(shakespeare):
    first = run_ingest("-f", str(write_spec(shakespeare, data_source())), "--output", str(shakespeare / "first"))
    assert first.code == 0, first.stderr
    spec = data_source(tokenizer={"type": "bpe", "vocabSize": 2048, "from": "first/tokenizer/tokenizer.json"})
    result = run_ingest("-f", str(write_spec(shakespeare, spec)), "--output", str(shakespeare / "out"))
    assert result.code == 2
    assert result.report["error"].startswith("spec.tokenizer.from: the tokenizer has 1024 tokens")
    assert "set vocabSize: 1024" in result.report["error"] and "Traceback" not in result.stderr
    assert not (shakespeare / "out/manifest.json").exists()
