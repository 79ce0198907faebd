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
