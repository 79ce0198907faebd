"""Termination messages stay within the kubelet's 4 KiB; the launcher keeps the workers' exit codes."""

from __future__ import annotations

import json
import sys

from llmtrain import launch, termination


def test_small_reports_pass_whole_and_big_ones_shed_details(tmp_path, monkeypatch):
    monkeypatch.setenv(termination.ENV, str(tmp_path / "log"))
    termination.write({"stats": {"documentsOut": 3}})
    assert json.loads((tmp_path / "log").read_text()) == {"stats": {"documentsOut": 3}}
    artifacts = [
        {"format": "gguf", "uri": "s3://b/" + "x" * 200, "validation": {"passed": True, "runtime": "y" * 400}}
        for _ in range(8)
    ]
    termination.write({"artifacts": artifacts})
    slim = json.loads((tmp_path / "log").read_text())
    assert len((tmp_path / "log").read_bytes()) <= termination.LIMIT
    assert slim["artifacts"][0]["validation"] == {"passed": True} and len(slim["artifacts"]) == 8
    termination.write({"error": "e" * 10000, "exitCode": 2})
    cut = json.loads((tmp_path / "log").read_text())
    assert cut["exitCode"] == 2 and cut["truncated"] and len((tmp_path / "log").read_bytes()) <= termination.LIMIT


def test_launcher_returns_the_workers_exit_code(tmp_path, monkeypatch):
    log = tmp_path / "termination-log"
    monkeypatch.setenv(termination.ENV, str(log))
    fake = tmp_path / "torchrun"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "open(os.environ['LLMTRAIN_TERMINATION_LOG'], 'w').write(json.dumps({'exitCode': int(sys.argv[1])}))\n"
        "sys.exit(1)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(launch.sys, "executable", str(tmp_path / "python"))  # torchrun is looked up beside it
    assert launch.main(["--", "3"]) == 3
    assert launch.main(["--", "75"]) == 75
    assert launch.main(["--", "9"]) == 1  # not a contract code: torchrun's own


def test_a_mounted_termination_log_is_emptied_and_written_in_place(tmp_path, monkeypatch):
    """The kubelet bind-mounts /dev/termination-log: unlinking or renaming onto it fails with EBUSY (found on
    the real control plane: every trainer pod crashed at start). The launcher empties it, the report is
    written in place, and no temporary file is left beside it."""
    import errno
    import os
    from pathlib import Path

    log = tmp_path / "termination-log"
    log.write_text('{"exitCode": 3}')  # a previous attempt's report
    monkeypatch.setenv(termination.ENV, str(log))

    def busy(*_args, **_kwargs):
        raise OSError(errno.EBUSY, "Device or resource busy")

    unlink = Path.unlink
    monkeypatch.setattr(
        Path, "unlink", lambda self, missing_ok=False: busy() if self == log else unlink(self, missing_ok)
    )
    monkeypatch.setattr(os, "replace", busy)
    fake = tmp_path / "torchrun"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(0)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(launch.sys, "executable", str(tmp_path / "python"))
    assert launch.main(["--"]) == 0
    assert log.read_bytes() == b""  # the old report is gone
    termination.write({"error": "bad input", "exitCode": 2})
    assert json.loads(log.read_text())["exitCode"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["termination-log", "torchrun"]
