"""The mixture's window assignment: proportional, deterministic by (seed, step), identical to one dataset's
batches with one source, and the same global batch on any world size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmtrain.train.loader import Batches, TokenStream
from llmtrain.train.mixture import Mixture, Source
from llmtrain.train.sources import SourceTracker
from llmtrain.train.state import TrainState


def stream(tokens: int, offset: int) -> TokenStream:
    return TokenStream([np.arange(offset, offset + tokens, dtype=np.uint32)])


def mixture(shares, rank=0, world=1, micro=2, accumulation=2, seed=3, tokens=(5000, 7000, 3000)) -> Mixture:
    sources = [
        Source(
            f"s{i}",
            share,
            Batches(stream(tokens[i], 20_000 * i), stream(400, 0), 16, micro, accumulation, rank, world, seed),
        )
        for i, share in enumerate(shares)
    ]
    return Mixture(sources, seed)


def test_proportions_within_one_percent_over_10000_windows():
    shares = [0.5, 0.3, 0.2]
    mix = mixture(shares, micro=5, accumulation=2)  # 10 windows a step
    counts = sum(mix.windows(step) for step in range(1000))
    assert counts.sum() == 10_000
    for count, share in zip(counts, shares, strict=True):
        assert abs(count / 10_000 - share) < 0.01 * share  # within 1% of the weight (relative)
    assert np.abs(counts - np.array(shares) * 10_000).max() <= 10  # a handful of windows, not sampling noise


def test_a_steps_windows_come_from_their_sources_and_depend_only_on_seed_and_step():
    mix = mixture([0.6, 0.4])
    inputs = torch.cat([x for x, _ in mix.step(7)])
    which = mix.assignment(7 * mix.global_sequences, mix.global_sequences)
    assert [int(row[0]) // 20_000 for row in inputs] == which.tolist()  # source i holds tokens from i x 20000
    assert torch.equal(inputs, torch.cat([x for x, _ in mixture([0.6, 0.4]).step(7)]))  # no history
    assert not torch.equal(inputs, torch.cat([x for x, _ in mixture([0.6, 0.4], seed=4).step(7)]))
    for x, y in mix.step(7):
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_one_source_is_exactly_the_plain_batches():
    plain = Batches(stream(5000, 0), stream(400, 0), 16, 2, 2, 0, 1, 3)
    mix = mixture([1.0], tokens=(5000,))
    for step in (0, 1, 9):
        for (a, b), (c, d) in zip(plain.step(step), mix.step(step), strict=True):
            assert torch.equal(a, c) and torch.equal(b, d)


def test_the_global_batch_is_the_same_on_any_world_size():
    whole = mixture([0.7, 0.3], micro=2, accumulation=2, world=1)
    halves = [mixture([0.7, 0.3], micro=2, accumulation=1, rank=r, world=2) for r in (0, 1)]
    for step in range(4):
        mine = torch.cat([x for x, _ in whole.step(step)])
        theirs = torch.cat([x for h in halves for x, _ in h.step(step)])
        assert torch.equal(mine, theirs)
        assert (whole.windows(step) == halves[0].windows(step)).all()


def test_tokens_by_source_and_the_repeat_alert():
    mix = mixture([0.5, 0.5], tokens=(400, 9000), micro=4, accumulation=2)  # source 0 holds 400 tokens
    tracker, state = SourceTracker(mix, 16), TrainState()
    alerts = []
    for step in range(8):
        drawn = tracker.drawn(step)
        state.advance(1.0, mix.global_sequences * 16, drawn)
        alerts += tracker.repeated(state, drawn)
    assert state.tokens_by_source == tracker.drawn_until(8)
    assert sum(state.tokens_by_source.values()) == state.tokens_seen
    repeated = [a for a in alerts if a.type == "DataRepeated"]
    assert repeated and all("DataSource s0" in a.message for a in repeated)
    assert len(repeated) == state.tokens_by_source["s0"] // 400  # once per epoch
    figures = tracker.figures(state, {"valLoss": 2.0, "sources": {"s0": 1.5, "s1": 2.5}})
    assert [f["valLoss"] for f in figures] == [1.5, 2.5]
    assert figures[0]["epochs"] == pytest.approx(state.tokens_by_source["s0"] / 400, abs=1e-4)


def test_validation_sets_by_source():
    sets = mixture([0.5, 0.5]).validation(3)
    assert list(sets) == ["s0", "s1"] and all(len(batches) == 3 for batches in sets.values())
