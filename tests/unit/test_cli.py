"""`llmtrain validate`: exit codes and messages a user (or CI) can act on."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from llmtrain import exitcodes
from llmtrain.cli import main
from support.paths import ROOT


def test_validate_example(capsys):
    assert main(["validate", "-f", str(ROOT / "examples" / "run.yaml")]) == exitcodes.OK
    assert capsys.readouterr().out.splitlines() == [
        "datasource/shakespeare valid",
        "trainingrun/tiny-llama valid",
        "modelexport/tiny-llama-export valid",
    ]


def test_validate_prints_defaults_as_json(capsys):
    assert main(["validate", "-f", str(ROOT / "examples" / "run.yaml"), "-o", "json"]) == exitcodes.OK
    objects = json.loads(capsys.readouterr().out)
    assert objects[1]["spec"]["training"]["optimizer"]["betas"] == [0.9, 0.95]


def test_invalid_spec_exits_with_bad_input(tmp_path, valid, capsys):
    valid["TrainingRun"]["spec"]["model"]["kvHeads"] = 3
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(valid["TrainingRun"]))
    assert main(["validate", "-f", str(path)]) == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert "TrainingRun/run: spec.model.kvHeads: must divide heads" in err
    assert "Traceback" not in err


def test_file_without_resources_is_bad_input(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["validate", "-f", str(path)]) == exitcodes.BAD_INPUT
    assert "no llmtrain.dev resources found" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "llmtrain.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("llmtrain ")


def test_exit_codes_are_distinct():
    codes = [exitcodes.OK, exitcodes.BAD_INPUT, exitcodes.DIVERGED, exitcodes.RETRYABLE]
    assert len(set(codes)) == 4 and set(exitcodes.PERMANENT) == {exitcodes.BAD_INPUT, exitcodes.DIVERGED}
