"""One document that makes a cleaning stage raise is a counted `malformed` rejection, not the end of the
ingest; errors that stop the run still do."""

from __future__ import annotations

import logging

import pytest

from llmtrain.api.datasource import DataSource
from llmtrain.data import pipeline, scan
from llmtrain.data.sources import SourceError
from llmtrain.errors import Retryable
from llmtrain.storage import StorageError
from support.paths import ROOT

POISON = "poison"
#: distinct paragraphs of a play, one file each (the tokenizer needs some variety)
DOCUMENTS = [p for p in (ROOT / "examples/data/shakespeare/hamlet.txt").read_text().split("\n\n") if len(p) > 200][:40]


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "data").mkdir()
    for i, text in enumerate(DOCUMENTS):
        (tmp_path / "data" / f"{i:02d}.txt").write_text(text)
    (tmp_path / "data" / "99-bad.txt").write_text(f"A {POISON} document that one stage cannot handle, long enough.")
    resource = DataSource.model_validate(
        {
            "apiVersion": "llmtrain.dev/v1alpha1",
            "kind": "DataSource",
            "metadata": {"name": "corpus"},
            "spec": {
                "sources": [{"local": {"path": "data/*.txt"}}],
                "txtUnit": "file",
                "tokenizer": {"type": "bpe", "vocabSize": 384},
                "validation": {"minChars": 20},
                "dedup": {"exact": False, "minhash": {"enabled": False}},
                "split": {"validationFraction": 0.1},
            },
        }
    )
    return resource, tmp_path


def raise_on_poison(monkeypatch, stage: str, error: Exception) -> None:
    """Make `stage` raise `error` on the poisoned document only."""

    def poisoned(original):
        def wrapper(*args):
            if any(POISON in (a.decode() if isinstance(a, bytes) else a) for a in args if isinstance(a, (str, bytes))):
                raise error
            return original(*args)

        return wrapper

    if stage == "decode":
        monkeypatch.setattr(scan, "decode", poisoned(scan.decode))
    elif stage == "hash":
        monkeypatch.setattr(scan, "content_hash", poisoned(scan.content_hash))
    elif stage == "normalize":
        monkeypatch.setattr(scan.Normalizer, "__call__", poisoned(scan.Normalizer.__call__))
    else:
        monkeypatch.setattr(scan.Filter, "reason_to_reject", poisoned(scan.Filter.reason_to_reject))


@pytest.fixture
def warnings():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("llmtrain.ingest")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stage", ["decode", "normalize", "filter", "hash"])
def test_a_document_that_makes_a_stage_raise_is_counted_as_malformed(corpus, monkeypatch, warnings, stage):
    resource, root = corpus
    raise_on_poison(monkeypatch, stage, RecursionError("maximum recursion depth exceeded"))
    report = pipeline.ingest(resource, str(root / "out"), root)
    stats = report["stats"]
    assert stats["rejected"] == {"malformed": 1}
    assert stats["documentsIn"] == len(DOCUMENTS) + 1 and stats["documentsOut"] == len(DOCUMENTS)
    logged = [r for r in warnings if getattr(r, "reason", None) == "malformed"]
    assert len(logged) == 1 and logged[0].error == "builtins.RecursionError"
    assert logged[0].input.endswith("99-bad.txt") and POISON not in logged[0].getMessage()


def test_malformed_documents_are_logged_once_per_error(corpus, monkeypatch, warnings):
    resource, root = corpus
    for i in range(3):
        (root / "data" / f"98-bad-{i}.txt").write_text(f"Another {POISON} document, long enough to be read.")
    raise_on_poison(monkeypatch, "normalize", ValueError("odd"))
    report = pipeline.ingest(resource, str(root / "out"), root)
    assert report["stats"]["rejected"] == {"malformed": 4}
    assert len([r for r in warnings if getattr(r, "reason", None) == "malformed"]) == 1


@pytest.mark.parametrize(
    "error",
    [
        Retryable("the network went away"),
        SourceError("a peer is gone", retryable=True),
        StorageError("the disk is read-only"),
        MemoryError(),
    ],
    ids=["retryable", "maybe-retryable", "storage", "memory"],
)
def test_errors_that_stop_the_run_still_stop_it(corpus, monkeypatch, error):
    resource, root = corpus
    raise_on_poison(monkeypatch, "normalize", error)
    with pytest.raises(type(error)):
        pipeline.ingest(resource, str(root / "out"), root)
    assert not (root / "out" / "manifest.json").exists()
