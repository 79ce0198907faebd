"""The Dockerfiles, checked without a Docker engine: they parse, are multi-stage with pinned bases, run as
a non-root user, copy only what exists, install the project's pins, and name entrypoints that exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from support.paths import ROOT

IMAGES = {"operator": ("operator", ["python", "-m", "llmtrain_operator"]), "trainer": ("train", ["llmtrain"])}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped, as the builder reads them."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            lines.append(current)
            current = ""
    assert not current, "a continuation runs off the end of the file"
    out = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        assert re.fullmatch(r"[A-Z]+", keyword), f"not an instruction: {line!r}"
        out.append((keyword, rest.strip()))
    return out


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile(name):
    extra, entrypoint = IMAGES[name]
    steps = instructions(ROOT / "images" / f"{name}.Dockerfile")
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for kw, rest in steps if kw == "ARG" and "=" in rest}
    froms = [rest for kw, rest in steps if kw == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith(" AS build"), "multi-stage: a build stage, then the runtime"
    for base in froms:
        image = base.split()[0]
        image = args.get(image.strip("${}"), image)
        assert re.search(r":\d+(\.\d+)+", image) and ":latest" not in image, f"unpinned base image {image}"
    assert [rest for kw, rest in steps if kw == "USER"][-1] == "1000:1000"  # numeric: runAsNonRoot can check it
    for kw, rest in steps:
        if kw == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY of a missing path {source}"
    installs = " ".join(rest for kw, rest in steps if kw == "RUN")
    assert f'-c constraints.txt ".[{extra}]"' in installs  # the project's exact pins
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in extras
    entry = [rest for kw, rest in steps if kw == "ENTRYPOINT"][-1]
    assert entry == str(entrypoint).replace("'", '"')
    if extra == "operator":
        assert not any("torch" in d or d.startswith("kubernetes") for d in extras["operator"])
        assert (ROOT / "operator" / "llmtrain_operator" / "__main__.py").is_file()
    else:
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts["llmtrain"] == "llmtrain.cli:main"


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".tools", "work", "tests", ".git"} <= ignored
    assert not {"trainer", "operator", "pyproject.toml", "constraints.txt"} & ignored


def test_trainer_image_builds_llama_cpp_as_the_makefile_does():
    """The GGUF export validates in llama.cpp: the trainer image installs llama-cpp-python at the Makefile's
    version, for the Makefile's portable CPU baseline (found by the real-cluster tier: without it the
    example's GGUF export failed in a cluster)."""
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^LLAMA_CPP_VERSION := (\S+)", makefile, re.M).group(1)
    flags = re.search(r"^LLAMA_CPP_CMAKE_ARGS := (.+)$", makefile, re.M).group(1).strip()
    installs = " ".join(rest for kw, rest in instructions(ROOT / "images" / "trainer.Dockerfile") if kw == "RUN")
    assert f"-c constraints.txt llama-cpp-python=={version}" in installs
    assert f'CMAKE_ARGS="{flags}"' in installs
