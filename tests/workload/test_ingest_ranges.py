"""Parts divide large inputs into record-aligned byte ranges: any worker count, same kept documents, token
stream and tokenizer; the same worker count, the same files; empty parts included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT
from support.pause import kill_paused, pause_env, wait_until_paused

PLAYS = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))


def manifest_bytes(output: Path) -> dict[str, bytes]:
    """Every shard and tokenizer file the manifest lists, by path."""
    manifest = json.loads((output / "manifest.json").read_text())
    paths = [s["path"] for split in manifest["splits"].values() for s in split["shards"]]
    paths += [f"tokenizer/{name}" for name in manifest["tokenizer"]["files"]]
    return {path: (output / path).read_bytes() for path in paths}


def token_streams(output: Path) -> dict[str, bytes]:
    """Each split's shards concatenated in manifest order, and the tokenizer files: what any number of
    workers must agree on (shards are cut per part)."""
    manifest = json.loads((output / "manifest.json").read_text())
    streams = {
        split: b"".join((output / s["path"]).read_bytes() for s in listed["shards"])
        for split, listed in manifest["splits"].items()
    }
    return {
        **streams,
        **{f"tokenizer/{n}": (output / "tokenizer" / n).read_bytes() for n in manifest["tokenizer"]["files"]},
    }


def run_parts(spec: Path, output: Path, count: int) -> dict:
    """Run every stage as the operator's Jobs would, one process per task; the manifest stage's report."""
    for stage in ("scan", "dedup", "cluster", "tokenizer", "encode", "manifest"):
        tasks = [["--shard-index", str(i)] for i in range(count)] if stage in ("scan", "dedup", "encode") else [[]]
        for task in tasks:
            ran = run_ingest(
                "-f", str(spec), "--output", str(output), "--stage", stage, *task, "--shard-count", str(count)
            )
            assert ran.code == 0, ran.stderr
    return ran.report


def test_one_text_file_with_two_workers_has_an_empty_part_that_merges(tmp_path):
    """A single ~170 KB file read whole (txtUnit: file) is one unit: the second part is empty."""
    data = tmp_path / "data"
    data.mkdir()
    text = PLAYS[0].read_text()[:170_000]
    (data / "play.txt").write_text(text)
    spec = write_spec(tmp_path, data_source(tokenizer={"type": "bpe", "vocabSize": 512}))
    pods = run_parts(spec, tmp_path / "pods", 2)
    assert pods["stats"]["documentsOut"] == 1
    workers = run_ingest("-f", str(spec), "--output", str(tmp_path / "two"), "--workers", "2")
    assert workers.code == 0, workers.stderr
    assert manifest_bytes(tmp_path / "two") == manifest_bytes(tmp_path / "pods")  # same count: same files


def paragraphs(play: Path) -> list[str]:
    return [p for p in play.read_text().split("\n\n") if len(p) > 120]


def jsonl_corpus(data: Path) -> dict:
    """One large jsonl file of five plays' paragraphs and a small one: several ranges and a whole file."""
    records = [json.dumps({"text": p}) for play in PLAYS[:5] for p in paragraphs(play)]
    (data / "a-large.jsonl").write_text("\n".join(records) + "\n")
    (data / "b-small.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in paragraphs(PLAYS[5])) + "\n")
    # a sample of about a third of the text: the tokenizer stage picks documents from a few frames
    tokenizer = {"type": "bpe", "vocabSize": 1024, "trainSampleBytes": 300_000}
    return {"sources": [{"local": {"path": "data/*.jsonl"}}], "tokenizer": tokenizer}


def txt_line_corpus(data: Path) -> dict:
    """Two plays as txt, one document a line."""
    for play in PLAYS[:2]:
        (data / play.name).write_bytes(play.read_bytes())
    return {"txtUnit": "line", "validation": {"minChars": 30}}


def parquet_corpus(data: Path) -> dict:
    """Four plays' paragraphs in one parquet file of many row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [p for play in PLAYS[:4] for p in paragraphs(play)]
    (data / "b.txt").write_bytes(PLAYS[4].read_bytes())  # and a whole-file txt input after it
    pq.write_table(pa.table({"text": texts}), data / "a.parquet", row_group_size=100, compression="none")
    return {"sources": [{"local": {"path": "data/*.parquet"}}, {"local": {"path": "data/*.txt"}}]}


@pytest.mark.parametrize(  # jsonl in the default tier; the other formats in the slow tier (~15 s each)
    "corpus",
    [
        jsonl_corpus,
        pytest.param(txt_line_corpus, marks=pytest.mark.slow),
        pytest.param(parquet_corpus, marks=pytest.mark.slow),
    ],
)
def test_any_worker_count_gives_the_same_kept_documents_and_bytes(tmp_path, corpus):
    data = tmp_path / "data"
    data.mkdir()
    spec = write_spec(tmp_path, data_source(**corpus(data)))
    outputs, reports = {}, {}
    for workers in (1, 2, 3):
        result = run_ingest("-f", str(spec), "--output", str(tmp_path / f"w{workers}"), "--workers", str(workers))
        assert result.code == 0, result.stderr
        outputs[workers], reports[workers] = token_streams(tmp_path / f"w{workers}"), result.report["stats"]
    assert outputs[1] == outputs[2] == outputs[3]
    counted = ("inputs", "documentsIn", "documentsOut", "duplicatesExact", "duplicatesNear", "tokensTrain")
    assert {tuple(reports[w][key] for key in counted) for w in reports} == {tuple(reports[1][key] for key in counted)}
    assert reports[1]["inputs"] == 2 and reports[1]["documentsOut"] > 100
    assert run_parts(spec, tmp_path / "pods", 3)["stats"]["documentsOut"] == reports[1]["documentsOut"]
    assert manifest_bytes(tmp_path / "pods") == manifest_bytes(tmp_path / "w3")  # same count: same files


def test_more_pods_than_units_leaves_empty_parts_that_merge(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    records = [json.dumps({"text": p}) for p in paragraphs(PLAYS[0])]
    (data / "one.jsonl").write_text("\n".join(records) + "\n")
    spec = write_spec(tmp_path, data_source(sources=[{"local": {"path": "data/*.jsonl"}}]))
    whole = run_ingest("-f", str(spec), "--output", str(tmp_path / "whole"))
    assert whole.code == 0, whole.stderr
    for index in range(6):
        part = run_ingest(
            "-f", str(spec), "--output", str(tmp_path / "pods"), "--shard-index", str(index), "--shard-count", "6"
        )
        assert part.code == 0, part.stderr
    documents = [
        json.loads((part / "DONE").read_text())["documents"] for part in sorted((tmp_path / "pods/.work").iterdir())
    ]
    assert documents.count(0) >= 3 and sum(documents) > 0
    merged = run_ingest("-f", str(spec), "--output", str(tmp_path / "pods"), "--merge", "--shard-count", "6")
    assert merged.code == 0, merged.stderr
    assert token_streams(tmp_path / "pods") == token_streams(tmp_path / "whole")


@pytest.mark.parametrize(  # the scan stage in the default tier; dedup and encode in the slow tier (~15 s each)
    ("stage", "point"),
    [
        ("scan", "ingest-part"),
        pytest.param("dedup", "ingest-dedup", marks=pytest.mark.slow),
        pytest.param("encode", "ingest-encode", marks=pytest.mark.slow),
    ],
)
def test_a_stage_task_killed_mid_write_reruns_to_the_same_bytes(tmp_path, stage, point):
    """SIGKILL one task of a stage while it writes (as a node failure would): the rerun of that task
    alone (the Job's retry) finishes the stage, and the dataset is byte for byte a clean run's."""
    data = tmp_path / "data"
    data.mkdir()
    spec = write_spec(tmp_path, data_source(**jsonl_corpus(data), output={"shardTokens": 20_000}))
    run_parts(spec, tmp_path / "clean", 2)
    out, marker = tmp_path / "killed", tmp_path / "paused"
    for name in ("scan", "dedup", "cluster", "tokenizer", "encode", "manifest"):
        tasks = [["--shard-index", str(i)] for i in range(2)] if name in ("scan", "dedup", "encode") else [[]]
        for task in tasks:
            command = ["-f", str(spec), "--output", str(out), "--stage", name, *task, "--shard-count", "2"]
            if name == stage and task[-1] == "1":
                process = subprocess.Popen(
                    [sys.executable, "-m", "llmtrain.cli", "ingest", *command],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, **pause_env(point, marker)},
                )
                wait_until_paused(process, marker)
                kill_paused(process, marker)
                marker.unlink()
                assert not (out / "manifest.json").exists()
            ran = run_ingest(*command)
            assert ran.code == 0, ran.stderr
    assert manifest_bytes(out) == manifest_bytes(tmp_path / "clean")
    assert not (out / ".work").exists()
