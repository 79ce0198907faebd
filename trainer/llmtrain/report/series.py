"""A run's metrics.jsonl as the curves the report draws: rows, the timeline a resumed run leaves, charts.

The trainer appends one line per logged step (`train.progress.Metrics`). A run that resumed from a
checkpoint logs the steps after it again: the later attempt's lines supersede the earlier attempt's from
that step on, so each chart shows the run as it ended up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True)
class Series:
    """One curve: (step, value) pairs by step, finite values only; `non_finite` counts those left out."""

    label: str
    points: list[tuple[int, float]]
    non_finite: int = 0


@dataclass(frozen=True)
class Chart:
    """One chart: its series (only those with points), what to say when there are none, and how many
    values were left out for not being finite (a diverged run's last loss)."""

    key: str
    title: str
    series: list[Series]
    empty: str
    log_scale: bool = False
    non_finite: int = 0


@dataclass(frozen=True)
class Metrics:
    """What a metrics file holds, read: its rows on the run's timeline, and what was set aside."""

    rows: list[Row]
    unreadable: int = 0  # lines that are not a JSON object with an integer step
    superseded: int = 0  # lines a later attempt logged again (a resumed run)


def read_metrics(text: str) -> Metrics:
    """The rows of a metrics.jsonl text, on the run's timeline."""
    rows, unreadable = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row.get("step"), bool):
            unreadable += 1
            continue
        rows.append(row)
    kept = timeline(rows)
    return Metrics(kept, unreadable, len(rows) - len(kept))


def timeline(rows: list[Row]) -> list[Row]:
    """The rows as the run ended up: a row whose step is not past the previous one starts a later attempt,
    which supersedes every earlier row from its step on."""
    kept: list[Row] = []
    for row in rows:
        while kept and kept[-1]["step"] >= row["step"]:
            kept.pop()
        kept.append(row)
    return kept


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def series(label: str, rows: list[Row], pick: Callable[[Row], Any]) -> Series:
    """The curve of one figure: `pick` reads it from a row (None: not in that row)."""
    points, non_finite = [], 0
    for row in rows:
        value = _number(pick(row))
        if value is None:
            continue
        if math.isfinite(value):
            points.append((row["step"], value))
        else:
            non_finite += 1
    return Series(label, points, non_finite)


def _field(key: str) -> Callable[[Row], Any]:
    return lambda row: row.get(key)


def _source_field(name: str, key: str) -> Callable[[Row], Any]:
    return lambda row: ((row.get("sources") or {}).get(name) or {}).get(key)


def source_names(rows: list[Row]) -> list[str]:
    """The DataSources the rows name, in order of appearance."""
    names: dict[str, None] = {}
    for row in rows:
        sources = row.get("sources")
        if isinstance(sources, dict):
            names.update(dict.fromkeys(n for n, figures in sources.items() if isinstance(figures, dict)))
    return list(names)


#: (key, title, figure in each row, message without points): always drawn
REQUIRED = (
    ("loss", "Training loss", "loss", "no training loss recorded"),
    ("lr", "Learning rate", "lr", "no learning rate recorded"),
    ("tokensPerSecond", "Tokens per second", "tokensPerSecond", "no throughput recorded"),
    ("gradNorm", "Gradient norm", "gradNorm", "no gradient norm recorded"),
)
#: drawn only when the file has them: MFU (a known peak), fp16's loss scale and skipped steps
OPTIONAL = (
    ("mfu", "MFU", "mfu", False),
    ("lossScale", "Loss scale (fp16)", "lossScale", True),
    ("skippedSteps", "Skipped steps (fp16, overflowing gradients)", "skippedSteps", False),
)
NO_VALIDATION = (
    "no validation loss recorded: validation runs every spec.validation.everySteps steps and after the last step"
)


def charts(rows: list[Row]) -> list[Chart]:
    """The report's charts, in order: training loss, validation loss (overall and per DataSource), learning
    rate, tokens/s, gradient norm; then MFU, loss scale and skipped steps when recorded."""
    made = []
    for key, title, figure, empty in REQUIRED:
        made.append(_chart(key, title, [series(figure, rows, _field(figure))], empty))
        if key == "loss":
            made.append(validation_chart(rows))
    for key, title, figure, log_scale in OPTIONAL:
        found = series(figure, rows, _field(figure))
        if found.points or found.non_finite:
            made.append(_chart(key, title, [found], f"no {figure} recorded", log_scale))
    return made


def validation_chart(rows: list[Row]) -> Chart:
    """Validation loss: overall (`val/valLoss`; a mixture's is the weighted mean) and each DataSource's."""
    curves = [series("overall", rows, _field("val/valLoss"))]
    curves += [series(name, rows, _source_field(name, "valLoss")) for name in source_names(rows)]
    return _chart("valLoss", "Validation loss", curves, NO_VALIDATION)


def _chart(key: str, title: str, curves: list[Series], empty: str, log_scale: bool = False) -> Chart:
    """A chart of the curves that have points (a log scale only over positive values)."""
    drawn = [s for s in curves if s.points]
    if log_scale and any(v <= 0 for s in drawn for _, v in s.points):
        log_scale = False
    return Chart(key, title, drawn, empty, log_scale, sum(s.non_finite for s in curves))
