"""`llmtrain report`: metrics rows -> series -> SVG charts in one HTML page, checked by reading the page back
(every chart, point counts and coordinates against the data, escaping, missing series); the command end to end
from a work directory, a cluster (kubectl) and a file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llmtrain.local.filestore import FileStore
from llmtrain.report import page, series, svg
from llmtrain.report.series import read_metrics
from support.resources import stored
from support.tiny_run import tiny_run

SVG = "{http://www.w3.org/2000/svg}"
LLMTRAIN = [sys.executable, "-m", "llmtrain.cli"]


def rows(steps: int = 40, every_validation: int = 10, fp16: bool = False) -> list[dict]:
    out = []
    for step in range(1, steps + 1):
        row = {"step": step, "time": 1.7e9 + step, "loss": 5 * math.exp(-step / 20) + 1, "lr": 3e-3 * min(1, step / 4)}
        row.update(gradNorm=2.0 / step, tokensPerSecond=1000.0 + 10 * step, memoryMiB=512.0)
        if fp16:
            row.update(lossScale=2.0 ** (16 - step // 10), skippedSteps=step // 10)
        if step % every_validation == 0:
            row["val/valLoss"] = 4 - step / 20
            row["sources"] = {"web": {"valLoss": 4.2 - step / 20, "tokensSeen": 64 * step}, "code": {"valLoss": 3.8}}
        out.append(row)
    return out


def jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def parse(html: str) -> ET.Element:
    assert html.startswith("<!DOCTYPE html>\n") and "<script" not in html.lower()
    return ET.fromstring(html.split("\n", 1)[1])


def sections(root: ET.Element) -> dict[str, ET.Element]:
    return {s.get("id").removeprefix("chart-"): s for s in root.iter("section")}


def polylines(section: ET.Element) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for line in section.iter(f"{SVG}polyline"):
        out[line.get("data-series")] = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    return out


def test_every_chart_is_drawn_from_the_data():
    data = rows(fp16=True)
    html = page.render("tiny", "s3://b/ckpt/metrics/metrics.jsonl", read_metrics(jsonl(data)))
    found = sections(parse(html))
    assert list(found) == [
        "loss", "valLoss", "lr", "tokensPerSecond", "gradNorm", "lossScale", "skippedSteps",
    ]  # fmt: skip
    loss = polylines(found["loss"])["loss"]
    assert len(loss) == 40
    xs, ys = [x for x, _ in loss], [y for _, y in loss]
    assert xs[0] == svg.LEFT and xs[-1] == svg.WIDTH - svg.RIGHT and xs == sorted(xs)  # steps 1..40 span the plot
    values = [r["loss"] for r in data]
    low, high = svg.bounds(values)
    y = svg.Scale(low, high, svg.HEIGHT - svg.BOTTOM, svg.TOP)
    assert ys == pytest.approx([y.pixel(v) for v in values], abs=0.006)  # coordinates printed to 2 decimals
    assert ys.index(max(ys)) == values.index(min(values))  # the lowest loss is drawn lowest
    validation = polylines(found["valLoss"])
    assert list(validation) == ["overall", "web", "code"] and all(len(p) == 4 for p in validation.values())
    assert "(log scale)" in ET.tostring(found["lossScale"], encoding="unicode")
    assert len(polylines(found["lr"])["lr"]) == 40 and "mfu" not in found  # MFU only when recorded


def test_run_names_and_sources_are_escaped():
    html = page.render('<script>alert("x")</script>&', "/tmp/a<b>/metrics.jsonl", read_metrics(jsonl(rows())))
    root = parse(html)
    assert root.find("body/h1").text == '<script>alert("x")</script>&' and "<script>" not in html
    assert "a&lt;b&gt;" in html


def test_missing_series_say_so():
    only_loss = [{"step": s, "loss": 3.0 - s / 10} for s in range(1, 6)]
    found = sections(parse(page.render("tiny", "m.jsonl", read_metrics(jsonl(only_loss)))))
    assert len(polylines(found["loss"])["loss"]) == 5
    for key in ("valLoss", "lr", "tokensPerSecond", "gradNorm"):
        assert found[key].find(f"{SVG}svg") is None and found[key].find("p").get("class") == "empty"
    assert "validation runs every" in found["valLoss"].find("p").text
    empty = parse(page.render("tiny", "m.jsonl", read_metrics("")))
    assert "holds no logged step" in ET.tostring(empty, encoding="unicode")
    assert len(sections(empty)) == 5  # every required chart, each with its message


def test_a_resumed_runs_lines_supersede_and_bad_values_are_left_out():
    attempt_one = [{"step": s, "loss": 9.0} for s in range(1, 13)]
    attempt_two = [{"step": s, "loss": 1.0} for s in range(9, 17)]
    text = jsonl(attempt_one + attempt_two) + "not json\n" + '{"step": "x"}\n' + '{"step": 17, "loss": NaN}\n'
    metrics = read_metrics(text)
    assert [r["step"] for r in metrics.rows] == list(range(1, 18)) and metrics.superseded == 4
    assert metrics.unreadable == 2
    (loss,) = [c for c in series.charts(metrics.rows) if c.key == "loss"]
    assert [p for p in loss.series[0].points if p[0] >= 8] == [(8, 9.0), *((s, 1.0) for s in range(9, 17))]
    assert loss.non_finite == 1
    html = page.render("tiny", "m.jsonl", metrics)
    assert "1 non-finite values" in html and "4 lines logged before a resume" in html and "2 unreadable" in html


def test_long_series_are_thinned_keeping_their_extremes():
    points = [(s, math.sin(s / 50)) for s in range(1, 20_001)]
    points[12_345] = (12_346, 7.0)  # a spike
    thinned = svg.thin(points)
    assert len(thinned) <= svg.MAX_POINTS and (12_346, 7.0) in thinned
    assert thinned[0] == points[0] and thinned[-1] == points[-1] and thinned == sorted(thinned)
    assert svg.thin(points[:10]) == points[:10]


def test_ticks_are_round_and_inside_the_range():
    assert svg.ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert svg.ticks(3.3, 4.9) == pytest.approx([3.5, 4.0, 4.5])
    assert svg.ticks(1.0, 65536.0, log=True) == [1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert svg.ticks(40000.0, 70000.0, log=True) == pytest.approx([40000.0, 50000.0, 60000.0, 70000.0])
    assert svg.ticks(8000.0, 70000.0, log=True) == [10000.0, 20000.0, 50000.0]  # a loss scale's usual range


# -- the command ------------------------------------------------------------------------------------------


def workdir_with_a_run(root: Path, metrics_text: str | None) -> Path:
    """A work directory of `llmtrain run` holding TrainingRun tiny, checkpointed at step 40 under storage/."""
    checkpoints = root / "storage" / "default" / "trainingruns" / "tiny" / "checkpoints"
    body = stored(tiny_run("tiny", "corpus", 40), 1, namespace="default")
    body["status"] = {"phase": "Succeeded", "latestCheckpoint": {"step": 40, "uri": str(checkpoints / "step-00000040")}}
    FileStore(root).create(body)
    if metrics_text is not None:
        (checkpoints / "metrics").mkdir(parents=True)
        (checkpoints / "metrics" / "metrics.jsonl").write_text(metrics_text)
    return root


def report(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LLMTRAIN, "report", *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
        timeout=120,
    )  # fmt: skip


def test_report_from_a_work_directory(tmp_path):
    workdir = workdir_with_a_run(tmp_path / "work", jsonl(rows()))
    done = report("tiny", "--workdir", str(workdir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "40 logged steps" in done.stdout and "metrics/metrics.jsonl" in done.stdout
    found = sections(parse((tmp_path / "tiny-report.html").read_text()))
    assert len(polylines(found["loss"])["loss"]) == 40 and len(polylines(found["valLoss"])) == 3
    assert not list(tmp_path.glob(".tiny-report.html*"))  # written atomically: no temp file left
    missing = report("nope", "--workdir", str(workdir), cwd=tmp_path)
    assert missing.returncode == 2 and "TrainingRun nope is not in" in missing.stderr
    unsynced = workdir_with_a_run(tmp_path / "fresh", None)
    absent = report("tiny", "--workdir", str(unsynced), "-o", str(tmp_path / "x.html"), cwd=tmp_path)
    assert absent.returncode == 2 and "no metrics file" in absent.stderr and not (tmp_path / "x.html").exists()


def test_report_from_the_cluster_through_kubectl(tmp_path):
    checkpoints = tmp_path / "pvc" / "ckpt-claim" / "tiny"
    (checkpoints / "metrics").mkdir(parents=True)
    (checkpoints / "metrics" / "metrics.jsonl").write_text(jsonl(rows(12)))
    job = {"spec": {"template": {"spec": {"containers": [{"args": ["--checkpoints", "pvc://ckpt-claim/tiny"]}]}}}}
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$0.calls"\n'
        'case "$2" in\n'
        '  trainingrun) echo \'{"metadata": {"name": "tiny"}, "status": {}}\' ;;\n'
        f"  job) echo '{json.dumps(job)}' ;;\n"
        "esac\n"
    )
    kubectl.chmod(0o755)
    env = {"KUBECTL": str(kubectl), "LLMTRAIN_PVC_ROOT": str(tmp_path / "pvc")}
    done = report("tiny", "-n", "team-a", "-o", "out.html", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "kubectl.calls").read_text().splitlines() == [
        "get trainingrun tiny -o json -n team-a",
        "get job tiny-train -o json -n team-a",
    ]
    assert len(polylines(sections(parse((tmp_path / "out.html").read_text()))["loss"])["loss"]) == 12


def test_report_from_a_file_and_bad_arguments(tmp_path):
    (tmp_path / "m.jsonl").write_text(jsonl(rows(3)))
    done = report("--metrics", "m.jsonl", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "training-report.html").exists()
    assert report(cwd=tmp_path).returncode == 2  # neither a run nor a file
    both = report("tiny", "--workdir", "w", "--metrics", "m.jsonl", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_the_report_imports_no_torch():
    code = "import sys, llmtrain.report.locate, llmtrain.report; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout == "False\n"
