"""`llmtrain ingest` end to end on real text: outputs, determinism, workers and parts, atomicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmtrain.api.datasource import NormalizationSpec
from llmtrain.data import tokenizer
from llmtrain.data.normalize import Normalizer
from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT
from support.pause import kill_paused, pause_env, wait_until_paused


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


@pytest.mark.parametrize("point", ["ingest-merge", "ingest-manifest"])
def test_killed_mid_write_then_rerun_matches_clean_run(shakespeare, point):
    """SIGKILL while the ingest waits at a pause point inside its writes (after the scan parts; after the
    shards, before the manifest): no manifest is left pointing at partial data, and the rerun is whole."""
    data = shakespeare / "data"
    for copy in range(3):
        for path in list(data.glob("*.txt"))[:6]:
            (data / f"{copy}-{path.name}").write_text(path.read_text() + f"\nCopy {copy}.\n" * 200)
    spec = write_spec(shakespeare, data_source(txtUnit="paragraph", dedup={"minhash": {"enabled": True}}))
    clean = run_ingest("-f", str(spec), "--output", str(shakespeare / "clean"))
    assert clean.code == 0
    out, marker = shakespeare / "crash", shakespeare / "paused"
    process = subprocess.Popen(
        [sys.executable, "-m", "llmtrain.cli", "ingest", "-f", str(spec), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **pause_env(point, marker)},
    )
    wait_until_paused(process, marker)
    assert any((out / ".work").glob("part-*/DONE"))  # mid-write: the parts are there
    if point == "ingest-manifest":
        assert not (out / "manifest.json").exists() and any((out / "train").iterdir())  # new shards, no manifest
    kill_paused(process, marker)
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
        timeout=300,
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


def test_gzip_bomb_nul_bytes_and_one_giant_line_are_counted(shakespeare):
    """256 MiB of one byte in a 256 KiB gzip (no line break), a file of NUL bytes, and the plays: the bomb
    and the NULs are counted rejections and the plays are kept (the peak memory: bench/ingest_bomb.py)."""
    import gzip

    data = shakespeare / "data"
    with gzip.open(data / "bomb.txt.gz", "wb", compresslevel=9) as bomb:
        for _ in range(16):
            bomb.write(b"A" * (16 << 20))
    assert (data / "bomb.txt.gz").stat().st_size < 1 << 20
    (data / "nul.txt").write_bytes(b"\0" * 100_000)
    spec = write_spec(shakespeare, data_source(sources=[{"local": {"path": "data/*"}}], format="txt"))
    result = run_ingest("-f", str(spec), "--output", str(shakespeare / "out"), timeout=600)
    assert result.code == 0, result.stderr[-3000:]
    stats = result.report["stats"]
    # gzip's ratio (~1030:1) passes the expansion bound (1000:1) before the end: refused as a bomb
    assert stats["rejected"].get("decompression_bomb") == 1 and stats["rejected"].get("binary") == 1, stats
    assert stats["documentsOut"] == 6


def test_rerun_deletes_only_the_files_the_previous_manifest_listed(shakespeare):
    """A user's files next to the shards survive a re-ingest; shards the new manifest drops are removed."""
    out = shakespeare / "out"
    first = run_ingest("-f", str(write_spec(shakespeare, data_source())), "--output", str(out))
    assert first.code == 0, first.stderr
    assert (out / "train/shard-00000-00001.bin").exists()  # several shards of 50,000 tokens
    (out / "train/notes.txt").write_text("mine")
    (out / "validation/shard-99999.bin").write_bytes(b"not listed by any manifest")
    bigger = data_source(output={"shardTokens": 10_000_000})
    second = run_ingest("-f", str(write_spec(shakespeare, bigger)), "--output", str(out), "--force")
    assert second.code == 0, second.stderr
    assert sorted(p.name for p in (out / "train").iterdir()) == ["notes.txt", "shard-00000-00000.bin"]
    assert (out / "train/notes.txt").read_text() == "mine"
    assert (out / "validation/shard-99999.bin").read_bytes() == b"not listed by any manifest"


def test_output_directory_linked_elsewhere_is_refused_and_left_alone(shakespeare):
    elsewhere = shakespeare / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shard-00000.bin").write_bytes(b"someone else's")
    (elsewhere / "precious.txt").write_text("keep me")
    out = shakespeare / "out"
    out.mkdir()
    (out / "train").symlink_to(elsewhere, target_is_directory=True)
    result = run_ingest("-f", str(write_spec(shakespeare, data_source())), "--output", str(out))
    assert result.code == 2 and f"{out / 'train'} is a symbolic link" in result.report["error"]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt", "shard-00000.bin"]
    assert (elsewhere / "shard-00000.bin").read_bytes() == b"someone else's"


def _agrees(out: Path) -> None:
    """The manifest matches the tokenizer and every shard in place."""
    import hashlib

    manifest = json.loads((out / "manifest.json").read_text())
    meta = json.loads((out / "tokenizer/tokenizer_meta.json").read_text())
    assert meta["vocabSize"] == manifest["tokenizer"]["vocabSize"]
    assert tokenizer.load(out / "tokenizer").vocab_size == manifest["tokenizer"]["vocabSize"]
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert hashlib.sha256((out / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(shakespeare):
    """The first ingest waits between its shards and its manifest; a second one into the same output
    exits 75 naming the lock's owner; the first then finishes, and its output agrees with itself."""
    from support.pause import release

    out, marker = shakespeare / "out", shakespeare / "paused"
    small = write_spec(shakespeare, data_source(tokenizer={"type": "bpe", "vocabSize": 512}))
    first = subprocess.Popen(
        [sys.executable, "-m", "llmtrain.cli", "ingest", "-f", str(small), "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **pause_env("ingest-manifest", marker)},
    )
    try:
        wait_until_paused(first, marker)
        other = shakespeare / "other.yaml"  # another spec (vocabulary 1024) into the same output
        other.write_text(json.dumps(data_source()))
        second = run_ingest("-f", str(other), "--output", str(out), timeout=120)
        assert second.code == 75, second.stderr
        assert f"pid {first.pid} until " in second.report["error"] and "another ingest" in second.report["error"]
        release(marker)
        _stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert first.returncode == 0, stderr[-3000:]
    _agrees(out)
    assert json.loads((out / "manifest.json").read_text())["tokenizer"]["vocabSize"] == 512
    assert not (out / ".lock").exists()  # released


def test_stale_lock_is_taken_over_and_a_failed_ingest_releases_its_lock(shakespeare):
    import socket

    out = shakespeare / "out"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, timeout=60)
    dead = {"host": socket.gethostname(), "pid": int(gone.stdout), "token": "t1", "expires": 4e9}
    expired = {"host": "another-pod", "pid": 1, "token": "t2", "expires": 1.0}
    spec = write_spec(shakespeare, data_source())
    for stale in (dead, expired):
        (out / ".lock").write_text(json.dumps(stale))
        result = run_ingest("-f", str(spec), "--output", str(out), "--force")
        assert result.code == 0, result.stderr[-3000:]
        assert "stale lock taken over" in result.stderr and not (out / ".lock").exists()
    alive = {"host": "another-pod", "pid": 1, "token": "t3", "expires": 4e9}
    (out / ".lock").write_text(json.dumps(alive))
    held = run_ingest("-f", str(spec), "--output", str(out), "--force")
    assert held.code == 75 and "locked by another-pod/pid 1 until 2096-" in held.report["error"]
    (out / ".lock").unlink()
    empty = write_spec(shakespeare, data_source(validation={"minChars": 10_000_000}))
    failed = run_ingest("-f", str(empty), "--output", str(out))
    assert failed.code == 2 and not (out / ".lock").exists()


def test_a_read_only_output_is_exit_2_with_one_line(shakespeare):
    """An output on a read-only filesystem (as root, permissions would not stop the write): exit 2 naming the
    path and the cause, no traceback."""
    output = shakespeare / "readonly"
    output.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(output)], capture_output=True, timeout=30
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        result = run_ingest("-f", str(write_spec(shakespeare, data_source())), "--output", str(output / "out"))
    finally:
        subprocess.run(["umount", "--lazy", str(output)], check=False, timeout=30)
    assert result.code == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Read-only file system" in result.report["error"]
    assert str(output) in result.report["error"]
