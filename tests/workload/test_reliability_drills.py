"""The reliability drills (bench/reliability.py) with one trial each, so the script that produced the
figures in docs/reliability.md keeps working and keeps checking what it claims."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # each drill may take its subprocess's 600 s


def drill(name: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reliability.py"), name, "--trials", "1", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_trainer_killed_rank_resumes_bit_for_bit():
    figures = drill("trainer", "--seed", "3")
    assert figures["completed"] == figures["losses_bit_exact"] == figures["weights_bit_exact"] == 1
    assert 0 <= figures["lost_steps_max"] < figures["checkpoint_interval"]


def test_a_kill_during_a_background_save_keeps_the_previous_checkpoint_and_resumes_bit_for_bit():
    figures = drill("background", "--seed", "3")
    assert figures["trials"] == figures["trained_on_during_the_write"] == figures["previous_checkpoint_is_latest"] == 1
    assert figures["completed"] == figures["losses_bit_exact"] == figures["weights_bit_exact"] == 1


def test_sigterm_loses_no_step():
    figures = drill("sigterm", "--ranks", "1")
    assert figures["exited_75"] == figures["zero_lost_steps"] == 1


def test_killed_ingest_never_leaves_a_broken_manifest():
    figures = drill("ingest")
    assert figures["manifest_never_broken"] == figures["rerun_identical_to_clean"] == 1


def test_killed_export_never_leaves_a_report_without_its_artifacts():
    figures = drill("export")
    assert figures["report_broken_after_the_kill"] == 0 and figures["rerun_identical_to_clean"] == 1
