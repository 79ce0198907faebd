"""The report page: one self-contained HTML document (inline CSS and SVG; no JavaScript, nothing fetched).

The page is well-formed XML as well as HTML, so tests (and scripts) can read it with an XML parser.
"""

from __future__ import annotations

import time
from html import escape

from .series import Chart, Metrics, charts
from .svg import chart_svg

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 820px; }
h1 { font-size: 1.4em; margin-bottom: 4px; }
h2 { font-size: 1.05em; margin: 22px 0 4px; }
table.summary td { padding: 1px 14px 1px 0; }
p.meta, p.note { color: #555; font-size: 0.9em; margin: 2px 0; }
p.empty { color: #8a6d00; background: #fff8e1; padding: 10px; border: 1px solid #f0d98c; }
svg.chart rect.plot { fill: #fcfcfc; stroke: #bbb; }
svg.chart line.grid { stroke: #e6e6e6; }
svg.chart text { font-size: 11px; fill: #444; }
"""


def render(run: str, source: str, metrics: Metrics, generated: str | None = None) -> str:
    """The page for `run` from its metrics (read from `source`, named on the page)."""
    generated = generated or time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sections = [_section(chart) for chart in charts(metrics.rows)]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8"/>',
            f"<title>{escape(run)}: training report</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            f'<h1 class="run">{escape(run)}</h1>',
            f'<p class="meta">metrics from {escape(source)}; generated {escape(generated)}</p>',
            *_summary(metrics),
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    )


def _summary(metrics: Metrics) -> list[str]:
    rows = metrics.rows
    if not rows:
        return ['<p class="empty">the metrics file holds no logged step yet</p>', *_notes(metrics)]
    last = rows[-1]
    figures = [("steps logged", f"{len(rows)} (steps {rows[0]['step']} to {last['step']})")]
    if _finite(last.get("loss")):
        figures.append(("last training loss", f"{last['loss']:.4f} (step {last['step']})"))
    validated = [r for r in rows if _finite(r.get("val/valLoss"))]
    if validated:
        best = min(validated, key=lambda r: r["val/valLoss"])
        figures.append(("best validation loss", f"{best['val/valLoss']:.4f} (step {best['step']})"))
    cells = "".join(f"<tr><td>{escape(name)}</td><td>{escape(value)}</td></tr>" for name, value in figures)
    return [f'<table class="summary">{cells}</table>', *_notes(metrics)]


def _notes(metrics: Metrics) -> list[str]:
    notes = []
    if metrics.superseded:
        notes.append(f"{metrics.superseded} lines logged before a resume were superseded by the resumed run's")
    if metrics.unreadable:
        notes.append(f"{metrics.unreadable} unreadable lines skipped")
    return [f'<p class="note">{escape(note)}</p>' for note in notes]


def _section(chart: Chart) -> str:
    body = chart_svg(chart) if chart.series else f'<p class="empty">{escape(chart.empty)}</p>'
    note = ""
    if chart.non_finite:
        note = f'<p class="note">{chart.non_finite} non-finite values (NaN, infinity) not drawn</p>'
    scale = " (log scale)" if chart.log_scale and chart.series else ""
    return f'<section id="chart-{escape(chart.key)}">\n<h2>{escape(chart.title)}{scale}</h2>\n{body}\n{note}</section>'


def _finite(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )
