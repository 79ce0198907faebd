"""The per-image envs of the node agent: each holds what its Dockerfile installs, nothing more from `.venv`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from support.image_envs import (
    STAMP,
    ImageSpec,
    build_image_env,
    clean_environ,
    closure,
    image_closure,
    importable,
    parse_dockerfile,
    site_packages,
)
from support.paths import ROOT

VENV = ROOT / ".venv"
OPERATOR = ROOT / "images" / "operator.Dockerfile"
TRAINER = ROOT / "images" / "trainer.Dockerfile"


def names(dists) -> set[str]:
    return {canonicalize_name(dist.metadata["Name"]) for dist in dists}


def run_python(env: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env / "bin" / "python"), "-c", code],
        env=clean_environ(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def envs(tmp_path_factory) -> dict[str, Path]:
    """Both images' envs, built once for the module."""
    out = tmp_path_factory.mktemp("image-envs")
    specs = [parse_dockerfile(path) for path in (OPERATOR, TRAINER)]
    return {spec.name: build_image_env(spec, out / spec.name) for spec in specs}


def fake_dist(site: Path, name: str, version: str = "1.0", requires=(), extras=(), files=()) -> None:
    """A minimal installed distribution: METADATA, and a RECORD listing `files` (created, empty)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    headers = [f"Name: {name}", f"Version: {version}"]
    headers += [f"Provides-Extra: {extra}" for extra in extras] + [f"Requires-Dist: {req}" for req in requires]
    (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "\n".join(headers) + "\n")
    for file in files:
        (site / file).parent.mkdir(parents=True, exist_ok=True)
        (site / file).write_text("")
    record = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in record))


# ------------------------------------------------------------------------------------------- parsing


def test_the_real_dockerfiles_parse():
    operator, trainer = parse_dockerfile(OPERATOR), parse_dockerfile(TRAINER)
    assert operator.name == "operator" and trainer.name == "trainer"
    assert operator.entrypoint == ["python", "-m", "llmtrain_operator"] and operator.cmd == []
    assert trainer.entrypoint == ["llmtrain"] and trainer.cmd == []
    assert "llmtrain[operator]" in operator.requirements and "llmtrain[train]" in trainer.requirements
    assert "pip" in operator.requirements  # `pip install --upgrade pip`
    for spec in (operator, trainer):
        assert spec.env["PATH"] == "/opt/llmtrain/bin:$PATH" and spec.env["PYTHONUNBUFFERED"] == "1"
        assert spec.user == "1000:1000" and spec.workdir is None  # WORKDIR /src is the build stage's
    assert trainer.env["HOME"] == "/scratch"
    assert not any("--" in req or "$" in req or "constraints" in req for req in trainer.requirements)


def test_parse_handles_stages_flags_and_plain_specifiers(tmp_path):
    dockerfile = tmp_path / "demo.Dockerfile"
    dockerfile.write_text(
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS build\n"
        "ARG INDEX=\n"
        "ARG EXTRA=on\n"
        "ENV BUILD_ONLY=1\n"
        "WORKDIR /src\n"
        "RUN python -m venv /opt/x \\\n"
        "# a comment inside the continuation\n"
        " && /opt/x/bin/pip install --no-cache-dir ${INDEX:+--extra-index-url ${INDEX}} \\\n"
        '    -c constraints.txt ".[train]" llama-cpp-python==0.3.36 ${EXTRA:+"gguf>=0.10"} \\\n'
        "    ${MISSING:+never-installed} 'numpy>=2; python_version >= \"3\"'\n"
        "RUN python3 -m pip install -q --upgrade pip && echo pip install not-a-requirement\n"
        "RUN --mount=type=cache,target=/root/.cache pip3 install kopf\n"
        'RUN ["/opt/x/bin/pip", "install", "--no-cache-dir", "zstandard"]\n'
        "FROM build AS runtime\n"
        "ENV PATH=/opt/x/bin:${PATH} A='two words'\n"
        "WORKDIR app\n"
        "USER 1000:1000\n"
        'ENTRYPOINT ["llmtrain"]\n'
        'CMD ["--help"]\n'
    )
    spec = parse_dockerfile(dockerfile)
    assert spec == ImageSpec(
        name="demo",
        requirements=[
            "llmtrain[train]",
            "llama-cpp-python==0.3.36",
            "gguf>=0.10",
            'numpy>=2; python_version >= "3"',
            "pip",
            "kopf",
            "zstandard",
        ],
        entrypoint=["llmtrain"],
        cmd=["--help"],
        env={"BUILD_ONLY": "1", "PATH": "/opt/x/bin:${PATH}", "A": "two words"},  # inherited FROM build
        workdir="/src/app",
        user="1000:1000",
    )


def test_final_stage_owns_the_configuration_and_shell_form_runs_under_sh(tmp_path):
    dockerfile = tmp_path / "two.Dockerfile"
    dockerfile.write_text(
        'FROM python:3.11 AS build\nENV LEAK=1\nENTRYPOINT ["nope"]\nRUN pip install kopf\n'
        'FROM python:3.11\nCMD ["serve"]\nENTRYPOINT exec llmtrain\n'
    )
    spec = parse_dockerfile(dockerfile)
    assert spec.env == {} and spec.requirements == ["kopf"]
    assert spec.entrypoint == ["/bin/sh", "-c", "exec llmtrain"] and spec.cmd == ["serve"]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("pip install -r requirements.txt", "-r"),
        ("pip install --no-deps kopf", "--no-deps"),
        ("pip install https://example.com/x.whl", "not a requirement"),
    ],
)
def test_unmappable_pip_arguments_are_refused(tmp_path, run, message):
    dockerfile = tmp_path / "bad.Dockerfile"
    dockerfile.write_text(f"FROM python:3.11\nRUN {run}\n")
    with pytest.raises(ValueError, match=message):
        parse_dockerfile(dockerfile)


# ------------------------------------------------------------------------------------------- closure


def test_closure_follows_extras_and_markers(tmp_path):
    site = tmp_path / "site-packages"
    requires = ("base", 'plugin[fast]; extra == "full"', 'windows-only; sys_platform == "win32"')
    fake_dist(site, "app", requires=requires, extras=("full",))
    fake_dist(site, "base")
    fake_dist(site, "plugin", requires=('speedup; extra == "fast"',), extras=("fast",))
    fake_dist(site, "speedup", version="2.0")
    fake_dist(site, "unrelated")
    assert names(closure(["app"], site)) == {"app", "base"}
    assert names(closure(["App[Full]"], site)) == {"app", "base", "plugin", "speedup"}


def test_a_missing_distribution_is_a_clear_error(tmp_path):
    site = tmp_path / "site-packages"
    fake_dist(site, "app", requires=("Not_Installed>=1",))
    with pytest.raises(LookupError, match=r"Not_Installed>=1 \(needed by app 1.0\) is not installed"):
        closure(["app"], site)
    with pytest.raises(LookupError, match=r"app>=2 \(needed by the image\): .* has 1.0"):
        closure(["app>=2"], site)
    with pytest.raises(LookupError, match="no-such-distribution"):
        closure(["no-such-distribution"], site_packages(VENV))


def test_the_operator_closure_has_no_torch():
    operator = names(image_closure(parse_dockerfile(OPERATOR)))
    assert {"llmtrain", "kopf", "pydantic"} <= operator
    assert not {"torch", "numpy", "kubernetes", "pytest"} & operator


# ------------------------------------------------------------------------------------------- built envs


def test_the_operator_env_has_kopf_and_not_torch(envs):
    assert importable(envs["operator"], ["kopf", "llmtrain_operator", "torch", "pytest", "numpy"]) == {
        "kopf": True,
        "llmtrain_operator": True,
        "torch": False,
        "pytest": False,  # in .venv, not in the image
        "numpy": False,
    }


def test_the_trainer_env_has_torch_and_the_llmtrain_script(envs):
    trainer = envs["trainer"]
    assert importable(trainer, ["torch", "llmtrain", "transformers", "kopf", "pytest"]) == {
        "torch": True,
        "llmtrain": True,
        "transformers": True,
        "kopf": False,
        "pytest": False,
    }
    help_text = subprocess.run(
        [str(trainer / "bin" / "llmtrain"), "--help"],
        env=clean_environ(trainer),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "usage" in help_text.stdout.lower()


def test_llama_cpp_is_there_exactly_when_the_trainer_dockerfile_installs_it(envs):
    installs_it = "llama-cpp-python" in names(image_closure(parse_dockerfile(TRAINER)))
    assert importable(envs["trainer"], ["llama_cpp"]) == {"llama_cpp": installs_it}


def test_the_env_follows_the_pip_line_the_other_way_too(tmp_path):
    """Whichever way the trainer Dockerfile goes on llama-cpp-python, a Dockerfile going the other way differs."""
    installed_by_trainer = "llama-cpp-python" in names(image_closure(parse_dockerfile(TRAINER)))
    pip_line = '".[train]"' if installed_by_trainer else '".[train]" llama-cpp-python'
    (tmp_path / "variant.Dockerfile").write_text(f"FROM python:3.11\nRUN pip install -c constraints.txt {pip_line}\n")
    env = build_image_env(parse_dockerfile(tmp_path / "variant.Dockerfile"), tmp_path / "variant")
    assert importable(env, ["llama_cpp", "torch"]) == {"llama_cpp": not installed_by_trainer, "torch": True}


@pytest.mark.parametrize("image", ["operator", "trainer"])
def test_sys_path_holds_nothing_of_dot_venv(envs, image):
    done = run_python(envs[image], "import json, sys; print(json.dumps(sys.path))")
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    assert str(envs[image] / "lib") in " ".join(paths)
    assert not [path for path in paths if ".venv" in path]


def test_a_namespace_shared_with_an_excluded_distribution_is_split(tmp_path):
    source = tmp_path / "source"
    site = source / "lib" / "python3.11" / "site-packages"
    (source / "pyvenv.cfg").parent.mkdir(parents=True)
    (source / "pyvenv.cfg").write_text((VENV / "pyvenv.cfg").read_text())
    fake_dist(site, "ns-a", files=("ns/a/__init__.py", "ns/shared/liba.so"))
    fake_dist(site, "ns-b", files=("ns/b/__init__.py", "ns/shared/libb.so"))
    env = build_image_env(ImageSpec("demo", ["ns-a"], [], [], {}), tmp_path / "env", source_venv=source)
    linked = site_packages(env)
    assert (linked / "ns" / "a").is_symlink() and (linked / "ns" / "shared" / "liba.so").is_symlink()
    assert not (linked / "ns").is_symlink() and not (linked / "ns" / "shared").is_symlink()
    assert not (linked / "ns" / "b").exists() and not (linked / "ns" / "shared" / "libb.so").exists()
    assert importable(env, ["ns.a", "ns.b"]) == {"ns.a": True, "ns.b": False}


def test_builds_are_skipped_when_nothing_changed_and_scripts_can_name_the_pod_path(envs, tmp_path):
    spec = parse_dockerfile(OPERATOR)
    stamp = envs["operator"] / STAMP
    before = stamp.stat().st_mtime_ns, envs["operator"].stat().st_ino
    build_image_env(spec, envs["operator"])
    assert (stamp.stat().st_mtime_ns, envs["operator"].stat().st_ino) == before
    mounted = build_image_env(spec, tmp_path / "operator", shebang_python="/opt/llmtrain/bin/python")
    assert (mounted / "bin" / "kopf").read_text().startswith("#!/opt/llmtrain/bin/python\n")
    assert 'VIRTUAL_ENV="/opt/llmtrain"' in (mounted / "bin" / "activate").read_text()
    assert json.loads((mounted / STAMP).read_text())["shebang"] == "/opt/llmtrain/bin/python"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".operator.") and p.is_dir()]  # no leftovers
