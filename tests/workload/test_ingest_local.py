"""`llmtrain ingest` end to end on real text: outputs, determinism, workers and parts, atomicity."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmtrain.api.datasource import NormalizationSpec
from llmtrain.data import tokenizer
from llmtrain.data.normalize import Normalizer
from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT


def decoded_documents(output: Path) -> list[str]:
    manifest = json.loads((output / "manifest.json").read_text())
    tok = tokenizer.load(output / manifest["tokenizer"]["path"])
    docs = []
    for split in ("train", "validation"):
        tokens = np.concatenate(
            [np.fromfile(output / s["path"], dtype=manifest["dtype"]) for s in manifest["splits"][split]["shards"]]
        )
        bounds = np.flatnonzero(tokens == manifest["eosId"])
        assert len(bounds) == manifest["splits"][split]["documents"]
        start = 0
        for end in bounds:
            docs.append(tok.decode(tokens[start:end].tolist()))
            start = end + 1
        assert start == len(tokens)  # every document ends with eos
    return docs


def shard_hashes(output: Path) -> dict[str, str]:
    manifest = json.loads((output / "manifest.json").read_text())
    return {s["path"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}


def test_example_run_produces_tokenizer_shards_and_manifest(tmp_path):
    result = run_ingest("-f", str(ROOT / "examples/run.yaml"), "--output", str(tmp_path / "out"))
    assert result.code == 0, result.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocabSize"] == 4096 and manifest["dtype"] == "uint16"
    assert (out / "tokenizer/tokenizer.json").exists()
    stats = result.report["stats"]
    assert stats == manifest["stats"]
    assert stats["documentsIn"] == 12 and stats["documentsOut"] == 12
    assert stats["tokensTrain"] > 300_000 and stats["tokensValidation"] > 0
    # every document comes back from the shards exactly as normalized
    normalize = Normalizer(NormalizationSpec())
    originals = {normalize(p.read_text()) for p in (ROOT / "examples/data/shakespeare").glob("*.txt")}
    assert set(decoded_documents(out)) == originals
    assert not (out / ".work").exists()
    for line in result.stderr.strip().splitlines():
        json.loads(line)  # the system stream is JSON lines


def test_same_input_same_bytes(shakespeare):
    spec = write_spec(shakespeare, data_source())
    first = run_ingest("-f", str(spec), "--output", str(shakespeare / "a"))
    second = run_ingest("-f", str(spec), "--output", str(shakespeare / "b"))
    assert first.code == second.code == 0
    assert shard_hashes(shakespeare / "a") == shard_hashes(shakespeare / "b")
    assert (shakespeare / "a/tokenizer/tokenizer.json").read_bytes() == (
        shakespeare / "b/tokenizer/tokenizer.json"
    ).read_bytes()


def test_workers_and_indexed_parts_agree(shakespeare):
    spec = write_spec(shakespeare, data_source(txtUnit="paragraph", validation={"minChars": 200}))
    one = run_ingest("-f", str(spec), "--output", str(shakespeare / "one"), "--workers", "1")
    two = run_ingest("-f", str(spec), "--output", str(shakespeare / "two"), "--workers", "2")
    assert one.code == two.code == 0, two.stderr
    assert sorted(decoded_documents(shakespeare / "one")) == sorted(decoded_documents(shakespeare / "two"))
    # the same two parts scanned by two "pods", then merged by a third
    for index in ("0", "1"):
        part = run_ingest(
            "-f", str(spec), "--output", str(shakespeare / "pods"), "--shard-index", index, "--shard-count", "2"
        )
        assert part.code == 0 and part.report["stats"]["documentsValid"] > 0
    merged = run_ingest("-f", str(spec), "--output", str(shakespeare / "pods"), "--merge", "--shard-count", "2")
    assert merged.code == 0, merged.stderr
    assert shard_hashes(shakespeare / "pods") == shard_hashes(shakespeare / "two")


def test_rerun_with_same_spec_is_skipped_and_force_redoes(shakespeare):
    spec = write_spec(shakespeare, data_source())
    assert run_ingest("-f", str(spec), "--output", str(shakespeare / "o")).code == 0
    again = run_ingest("-f", str(spec), "--output", str(shakespeare / "o"))
    assert again.code == 0 and again.report["skipped"] is True
    forced = run_ingest("-f", str(spec), "--output", str(shakespeare / "o"), "--force")
    assert forced.code == 0 and "skipped" not in forced.report


def _manifest_is_whole(output: Path) -> bool:
    """A manifest, when present, lists only complete shards with matching hashes."""
    path = output / "manifest.json"
    if not path.exists():
        return True
    import hashlib

    manifest = json.loads(path.read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            data = (output / shard["path"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != shard["sha256"]:
                return False
    return True


def test_killed_at_random_points_then_rerun_matches_clean_run(shakespeare):
    data = shakespeare / "data"
    for copy in range(3):  # a corpus large enough to kill mid-way
        for path in list(data.glob("*.txt"))[:6]:
            (data / f"{copy}-{path.name}").write_text(path.read_text() + f"\nCopy {copy}.\n" * 200)
    spec = write_spec(shakespeare, data_source(txtUnit="paragraph", dedup={"minhash": {"enabled": True}}))
    clean = run_ingest("-f", str(spec), "--output", str(shakespeare / "clean"))
    assert clean.code == 0
    rng = random.Random(42)
    for trial in range(3):
        out = shakespeare / f"crash{trial}"
        process = subprocess.Popen(
            [sys.executable, "-m", "llmtrain.cli", "ingest", "-f", str(spec), "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _manifest_is_whole(out)
        rerun = run_ingest("-f", str(spec), "--output", str(out))
        assert rerun.code == 0, rerun.stderr
        assert shard_hashes(out) == shard_hashes(shakespeare / "clean")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            data_source(validation={"minChars": 10_000_000, "maxChars": 20_000_000}),
            "no documents survived (6 read; rejected: too_short: 6)",
        ),
        (data_source(tokenizer={"vocabSize": 200_000}), "spec.tokenizer.vocabSize: 200000 is more than this corpus"),
        (data_source(sources=[{"local": {"path": "missing/corpus.txt"}}]), "does not exist"),
        (
            data_source(sources=[{"local": {"path": "nothing-matches-*.txt"}}]),
            "no input files, objects or URLs matched",
        ),
    ],
    ids=["empty-corpus", "vocab-too-large", "missing-path", "no-match"],
)
def test_bad_input_is_a_clear_permanent_error_and_no_manifest(shakespeare, spec, message):
    result = run_ingest("-f", str(write_spec(shakespeare, spec)), "--output", str(shakespeare / "out"))
    assert result.code == 2
    assert message in result.report["error"] and "Traceback" not in result.stderr
    assert not (shakespeare / "out/manifest.json").exists()


def test_bad_documents_are_counted_not_fatal(shakespeare):
    import gzip

    data = shakespeare / "data"
    (data / "binary.txt").write_bytes(bytes(range(256)) * 50)
    compressed = gzip.compress((ROOT / "examples/data/shakespeare/sonnets.txt").read_bytes())
    # compression is found by magic bytes, whatever the name
    (data / "truncated-gzip.txt").write_bytes(compressed[: len(compressed) // 2])
    (data / "latin1.txt").write_bytes(
        (
            "Les \u00e9l\u00e8ves \u00e9tudient la litt\u00e9rature fran\u00e7aise \u00e0 l'\u00e9cole, o\u00f9 le"
            " ma\u00eetre enseigne depuis des ann\u00e9es. " * 5
        ).encode("latin-1")
    )
    result = run_ingest("-f", str(write_spec(shakespeare, data_source())), "--output", str(shakespeare / "out"))
    assert result.code == 0, result.stderr
    stats = result.report["stats"]
    assert stats["rejected"] == {"binary": 1, "truncated_input": 1}
    assert stats["repaired"] == 1 and stats["documentsOut"] == 7


def test_spec_from_stdin_and_name_selection(shakespeare):
    two = [data_source("first"), data_source("second", tokenizer={"type": "unigram", "vocabSize": 800})]
    import yaml

    text = yaml.safe_dump_all(two)
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmtrain.cli",
            "ingest",
            "-f",
            "-",
            "--name",
            "second",
            "--output",
            str(shakespeare / "out"),
        ],
        input=text.replace("data/*.txt", str(shakespeare / "data/*.txt")),
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    manifest = json.loads((shakespeare / "out/manifest.json").read_text())
    assert manifest["name"] == "second" and manifest["tokenizer"]["files"][0] == "tokenizer.model"


def test_near_and_exact_duplicates_across_workers(shakespeare):
    """Planted copies in different files (so different parts): each removed once, whatever the split."""
    data = shakespeare / "data"
    original = (data / sorted(p.name for p in data.iterdir())[0]).read_text()
    words = original.split()
    near = list(words)
    for i in range(0, len(near), 400):  # one word in 400 changed: Jaccard of 5-grams ~0.99
        near[i] = "changed"
    (data / "zz-exact-copy.txt").write_text(original)
    (data / "zz-near-copy.txt").write_text(" ".join(near))
    spec = write_spec(shakespeare, data_source())
    for workers in ("1", "3"):
        result = run_ingest("-f", str(spec), "--output", str(shakespeare / f"out{workers}"), "--workers", workers)
        assert result.code == 0, result.stderr
        stats = result.report["stats"]
        assert (stats["duplicatesExact"], stats["duplicatesNear"], stats["documentsOut"]) == (1, 1, 6)


def test_pvc_source_and_output(shakespeare):
    """pvc://claim/path is $LLMTRAIN_PVC_ROOT/claim/path, as the operator mounts claims in pods."""
    volumes = shakespeare / "volumes"
    (volumes / "corpora").mkdir(parents=True)
    (shakespeare / "data").rename(volumes / "corpora" / "plays")
    spec = write_spec(
        shakespeare,
        data_source(
            sources=[{"pvc": {"claimName": "corpora", "path": "plays/*.txt"}}],
            output={"uri": "pvc://datasets/plays", "shardTokens": 50_000},
        ),
    )
    result = run_ingest("-f", str(spec), env={"LLMTRAIN_PVC_ROOT": str(volumes)})
    assert result.code == 0, result.stderr
    assert result.report["manifest"] == "pvc://datasets/plays/manifest.json"
    assert (volumes / "datasets/plays/manifest.json").exists() and result.report["stats"]["inputs"] == 6
    missing = write_spec(shakespeare, data_source(sources=[{"pvc": {"claimName": "absent"}}]))
    result = run_ingest("-f", str(missing), "--output", str(shakespeare / "o"), env={"LLMTRAIN_PVC_ROOT": str(volumes)})
    assert result.code == 2 and "claim 'absent' is not mounted" in result.report["error"]


def test_gzip_bomb_nul_bytes_and_one_giant_line_are_counted_in_bounded_memory(shakespeare):
    """256 MiB of one byte in a 256 KiB gzip (no line break), a file of NUL bytes, and a valid play: the
    bomb and the NULs are counted rejections, the play is kept, and the process stays small."""
    import gzip

    data = shakespeare / "data"
    with gzip.open(data / "bomb.txt.gz", "wb", compresslevel=9) as bomb:
        for _ in range(16):
            bomb.write(b"A" * (16 << 20))
    assert (data / "bomb.txt.gz").stat().st_size < 1 << 20
    (data / "nul.txt").write_bytes(b"\0" * 100_000)
    spec = write_spec(shakespeare, data_source(sources=[{"local": {"path": "data/*"}}], format="txt"))
    probe = (
        "import resource, runpy, sys\n"
        "sys.argv = ['llmtrain', 'ingest', '-f', sys.argv[1], '--output', sys.argv[2]]\n"
        "try:\n    runpy.run_module('llmtrain.cli', run_name='__main__')\n"
        "finally:\n"
        # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss keeps the parent's (pytest's) size
        "    status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "    peak = max(int(status), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "    print('PEAK_KIB', peak, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(spec), str(shakespeare / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(result.stdout.strip().splitlines()[-1])["stats"]
    assert stats["rejected"].get("too_long") == 1 and stats["rejected"].get("binary") == 1, stats
    assert stats["documentsOut"] == 6
    peak_mib = int(result.stderr.rsplit("PEAK_KIB", 1)[1].split()[0]) / 1024
    # ~150 MiB here; holding the 256 MiB line anywhere would put it above 400
    assert peak_mib < 384, f"peak RSS {peak_mib:.0f} MiB while reading a 256 MiB line"
