"""Stopping before maxSteps: SIGTERM interrupts at the next step boundary, `--stop-at-step` pauses."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from llmtrain.train.distributed import World
from llmtrain.train.stopping import INTERRUPTED, PAUSED, StopRequest

ONE = World(0, 0, 1, torch.device("cpu"))


@pytest.fixture
def keep_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_goes_on_until_the_pause_step(keep_sigterm):
    stop = StopRequest(ONE, stop_at_step=16)
    assert [stop.check(step) for step in (1, 15, 17)] == [None, None, None]
    assert stop.check(16) == PAUSED


def test_sigterm_is_held_for_the_step_boundary_and_wins_over_a_pause(keep_sigterm):
    stop = StopRequest(ONE, stop_at_step=16)
    os.kill(os.getpid(), signal.SIGTERM)  # the process lives on: the handler only takes note
    assert stop.check(3) == INTERRUPTED and stop.check(16) == INTERRUPTED


def test_without_a_pause_step_only_sigterm_stops(keep_sigterm):
    stop = StopRequest(ONE, stop_at_step=None)
    assert all(stop.check(step) is None for step in range(1, 50))
