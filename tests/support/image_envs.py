"""Per-image Python environments for the node agent, built from `.venv` without downloading or copying.

Each container image gets a virtualenv holding exactly the distributions its Dockerfile's `pip install`
lines would install: the closure of those requirements over what `.venv` has installed (extras and markers
honoured), linked into the new env's site-packages file by file where a namespace is shared, directory by
directory elsewhere. Console scripts are written as pip writes them, with a shebang that may name the path
the env is mounted at inside the pod (`/opt/llmtrain/bin/python`). What an image lacks, its env lacks.

    python tests/support/image_envs.py build --out .tools/images
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import Distribution, distributions
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent.parent
STAMP = ".image-env.json"
BUILDER_VERSION = 1  # bump when the layout of a built env changes, so that stamps no longer match
_KEYWORDS = "FROM RUN CMD LABEL MAINTAINER EXPOSE ENV ADD COPY ENTRYPOINT VOLUME USER WORKDIR ARG ONBUILD STOPSIGNAL"
INSTRUCTIONS = frozenset(f"{_KEYWORDS} HEALTHCHECK SHELL".split())
# pip install options that take a value as the next token (the `--opt=value` spelling is one token)
PIP_OPTIONS_WITH_VALUE = frozenset(
    " ".join(
        (
            "-c --constraint -i --index-url --extra-index-url -f --find-links -t --target --prefix --root --platform",
            "--python-version --implementation --abi --progress-bar --trusted-host --cache-dir --src",
            "--upgrade-strategy -C --config-settings --global-option --no-binary --only-binary --report --log",
            "--proxy --retries --timeout --exists-action --cert --client-cert --python --root-user-action",
            "--use-feature --use-deprecated --keyring-provider --group",
        )
    ).split()
)
SHELL_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")"})
CONSOLE_SCRIPT = """\
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {import_name}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({call}())
"""


@dataclass(frozen=True)
class ImageSpec:
    """What a Dockerfile's final stage runs, and what its `pip install` lines install."""

    name: str
    requirements: list[str]
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]  # raw values: `$PATH` is left for the caller to expand
    workdir: str | None = None
    user: str | None = None


@dataclass
class _Stage:
    """The state of one build stage while the Dockerfile is read."""

    name: str | None
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    cmd_set: bool = False
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    workdir: str | None = None
    user: str | None = None


# ---------------------------------------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comment lines dropped, as the builder reads them."""
    out: list[tuple[str, str]] = []
    current: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        continued = stripped.endswith("\\")
        current.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            out.append(_instruction(" ".join(part for part in current if part)))
            current = []
    if current:
        raise ValueError("the Dockerfile ends inside a line continuation")
    return out


def _instruction(line: str) -> tuple[str, str]:
    keyword, _, rest = line.partition(" ")
    if keyword.upper() not in INSTRUCTIONS:
        raise ValueError(f"not a Dockerfile instruction (heredocs are not supported): {line[:80]!r}")
    return keyword.upper(), rest.strip()


def expand(text: str, variables: dict[str, str]) -> str:
    """Shell parameter expansion of $V, ${V}, ${V:-w}, ${V-w}, ${V:+w}, ${V+w}; unset variables are empty."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        operator, word = match.group(3), match.group(4) or ""
        value = variables.get(name)
        present = value is not None and (value != "" or not operator or not operator.startswith(":"))
        if operator in (":-", "-"):
            return value if present else expand(word, variables)  # type: ignore[return-value]
        if operator in (":+", "+"):
            return expand(word, variables) if present else ""
        return value or ""

    return re.sub(r"\$(?:(\w+)|\{(\w+)(?:(:?[-+])((?:[^{}]|\{[^{}]*\})*))?\})", one, text)


def parse_dockerfile(path: Path, context: Path = ROOT) -> ImageSpec:
    """The image's spec: requirements from every stage's `pip install`, the rest from the final stage."""
    name = Path(path).name.removesuffix(".Dockerfile").removesuffix(".dockerfile")
    global_args: dict[str, str] = {}
    stages: list[_Stage] = []
    requirements: list[str] = []
    for keyword, rest in dockerfile_instructions(Path(path).read_text()):
        if keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            global_args[key.strip()] = default.strip()
        elif keyword == "FROM":
            stages.append(_from(rest, global_args, stages))
        elif not stages:
            raise ValueError(f"{path}: {keyword} before the first FROM")
        elif keyword == "RUN":
            requirements += _run_requirements(rest, {**stages[-1].args, **stages[-1].env}, context)
        else:
            _apply(stages[-1], keyword, rest, global_args)
    if not stages:
        raise ValueError(f"{path}: no FROM")
    final = stages[-1]
    return ImageSpec(name, requirements, final.entrypoint, final.cmd, final.env, final.workdir, final.user)


def _from(rest: str, global_args: dict[str, str], stages: list[_Stage]) -> _Stage:
    """A new stage; one built FROM an earlier stage inherits its configuration."""
    words = [word for word in rest.split() if not word.startswith("--")]
    stage_name = words[2].lower() if len(words) == 3 and words[1].upper() == "AS" else None
    base = expand(words[0], global_args).lower()
    parent = next((stage for stage in reversed(stages) if stage.name == base), None)
    if parent is None:
        return _Stage(stage_name)
    return _Stage(
        stage_name,
        env=dict(parent.env),
        entrypoint=list(parent.entrypoint),
        cmd=list(parent.cmd),
        shell=list(parent.shell),
        workdir=parent.workdir,
        user=parent.user,
    )


def _apply(stage: _Stage, keyword: str, rest: str, global_args: dict[str, str]) -> None:
    """One configuration instruction of a stage; the rest (COPY, EXPOSE, LABEL, ...) change nothing here."""
    if keyword == "ARG":
        key, has_default, default = rest.partition("=")
        stage.args[key.strip()] = default.strip() if has_default else global_args.get(key.strip(), "")
    elif keyword == "ENV":
        stage.env.update(_env_pairs(rest))
    elif keyword == "ENTRYPOINT":
        stage.entrypoint = _exec_form(rest, stage.shell)
        if not stage.cmd_set:
            stage.cmd = []  # the builder resets a CMD inherited from the base when ENTRYPOINT is set
    elif keyword == "CMD":
        stage.cmd, stage.cmd_set = _exec_form(rest, stage.shell), True
    elif keyword == "SHELL":
        stage.shell = json.loads(rest)
    elif keyword == "WORKDIR":
        stage.workdir = posixpath.join(stage.workdir or "/", rest)
    elif keyword == "USER":
        stage.user = rest


def _env_pairs(rest: str) -> dict[str, str]:
    """`ENV K=V K2="V 2"` or the legacy `ENV K value with spaces`; values stay unexpanded."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        key, _, value = rest.partition(" ")
        return {key: value.strip()}
    pairs = [word.partition("=") for word in words]
    if any(not sep for _, sep, _ in pairs):
        raise ValueError(f"ENV mixes KEY=VALUE and KEY VALUE forms: {rest!r}")
    return {key: value for key, _, value in pairs}


def _json_argv(rest: str) -> list[str] | None:
    """The exec (JSON array of strings) form of an instruction's arguments, or None for the shell form."""
    try:
        argv = json.loads(rest)
    except json.JSONDecodeError:
        return None
    return argv if isinstance(argv, list) and all(isinstance(arg, str) for arg in argv) else None


def _exec_form(rest: str, shell: list[str]) -> list[str]:
    """The argv of ENTRYPOINT/CMD: the JSON form as written, the shell form wrapped in SHELL (/bin/sh -c)."""
    argv = _json_argv(rest)
    return argv if argv is not None else [*shell, rest]


def _run_requirements(rest: str, variables: dict[str, str], context: Path) -> list[str]:
    """The requirements a RUN installs: its exec form (`["pip", ...]`) or its shell form, `--mount=...` aside."""
    argv = _json_argv(rest)
    if argv is not None:
        args = _pip_install_args(argv) if argv else None
        return _requirements_of(args, context) if args is not None else []
    return pip_requirements(expand(re.sub(r"^(--\S+\s+)*", "", rest), variables), context)


def pip_requirements(command: str, context: Path = ROOT) -> list[str]:
    """The requirements of every `pip install` in a shell command line (variables already expanded)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    requirements: list[str] = []
    for words in _simple_commands(list(lexer)):
        args = _pip_install_args(words)
        if args is not None:
            requirements += _requirements_of(args, context)
    return requirements


def _simple_commands(tokens: list[str]) -> Iterator[list[str]]:
    """The words of each command between `&&`, `||`, `;`, `|`, leading VAR=value assignments dropped."""
    words: list[str] = []
    for token in [*tokens, ";"]:
        if token in SHELL_SEPARATORS:
            while words and re.fullmatch(r"\w+=.*", words[0]):
                words.pop(0)
            if words:
                yield words
            words = []
        else:
            words.append(token)


def _pip_install_args(words: list[str]) -> list[str] | None:
    """The arguments after `pip install` (`pip3`, `/x/bin/pip`, `python -m pip`), or None if it is not one."""
    program = posixpath.basename(words[0])
    if re.fullmatch(r"pip[\d.]*", program) and words[1:2] == ["install"]:
        return words[2:]
    if re.fullmatch(r"python[\d.]*", program) and words[1:4] == ["-m", "pip", "install"]:
        return words[4:]
    return None


def _requirements_of(args: list[str], context: Path) -> list[str]:
    """Requirement specifiers among pip install arguments; the project directory becomes its name."""
    out: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg in ("-r", "--requirement") or arg.startswith("--requirement="):
            raise ValueError("pip install -r is not supported: list the requirements on the pip line")
        elif arg == "--no-deps":
            raise ValueError("pip install --no-deps is not supported: the env would get the dependencies too")
        elif arg in ("-e", "--editable"):
            continue  # the next argument is a requirement (a path), installed like any other
        elif arg.startswith("-"):
            skip_value = arg in PIP_OPTIONS_WITH_VALUE
        else:
            out.append(_requirement(arg, context))
    return out


def _requirement(arg: str, context: Path) -> str:
    """A checked requirement string; `.` / `./` (with extras) names the project at the build context."""
    local = re.fullmatch(r"\./?(\[[^\]]*\])?", arg)
    if local:
        project = tomllib.loads((context / "pyproject.toml").read_text())["project"]["name"]
        arg = project + (local.group(1) or "")
    try:
        Requirement(arg)
    except InvalidRequirement as error:
        raise ValueError(f"pip install argument {arg!r} is not a requirement this builder can map: {error}") from None
    return arg


# ---------------------------------------------------------------------------------------------- closure


def _installed(site_packages: Path) -> dict[str, Distribution]:
    """The distributions in a site-packages directory, by normalized name (the first of duplicates wins)."""
    found: dict[str, Distribution] = {}
    for dist in distributions(path=[str(site_packages)]):
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


def closure(requirements: Iterable[str], venv_site_packages: Path) -> list[Distribution]:
    """The installed distributions that `pip install <requirements>` would install, sorted by name.

    Requires-Dist is walked recursively with extras and markers evaluated for this interpreter. A required
    distribution that is not installed, or whose installed version does not satisfy a specifier, is an error.
    """
    installed = _installed(venv_site_packages)
    chosen: dict[str, Distribution] = {}
    seen: set[tuple[str, str]] = set()
    pending = [(Requirement(text), "", "the image") for text in requirements]
    while pending:
        requirement, extra, needed_by = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        key = canonicalize_name(requirement.name)
        dist = installed.get(key)
        if dist is None:
            raise LookupError(f"{requirement} (needed by {needed_by}) is not installed in {venv_site_packages}")
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise LookupError(f"{requirement} (needed by {needed_by}): {venv_site_packages} has {dist.version}")
        chosen[key] = dist
        for wanted in ["", *sorted(canonicalize_name(e) for e in requirement.extras)]:
            if (key, wanted) not in seen:
                seen.add((key, wanted))
                parent = f"{key} {dist.version}"
                pending += [(Requirement(text), wanted, parent) for text in _requires(dist, wanted)]
    return [chosen[key] for key in sorted(chosen)]


def _requires(dist: Distribution, extra: str) -> list[str]:
    """Requires-Dist of `dist`, to be evaluated with `extra` ("" for the base); an unknown extra gives none."""
    provided = {canonicalize_name(e) for e in dist.metadata.get_all("Provides-Extra") or []}
    if extra and extra not in provided:
        warnings.warn(f"{dist.metadata['Name']} {dist.version} does not provide the extra {extra!r}", stacklevel=3)
        return []
    return dist.requires or []


# ---------------------------------------------------------------------------------------------- the env


def site_packages(venv: Path) -> Path:
    """The site-packages directory of a virtualenv (lib/pythonX.Y/site-packages)."""
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one lib/python3*/site-packages in {venv}, found {len(found)}")
    return found[0]


def base_python(venv: Path) -> Path:
    """The interpreter a virtualenv was created from (pyvenv.cfg's executable, else home/pythonX.Y)."""
    config = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in (venv / "pyvenv.cfg").read_text().splitlines())
    )
    if "executable" in config:
        return Path(config["executable"])
    version = ".".join(config["version"].split(".")[:2]) if "version" in config else None
    for candidate in (f"python{version}", "python3"):
        if (Path(config["home"]) / candidate).exists():
            return Path(config["home"]) / candidate
    raise FileNotFoundError(f"no base interpreter for {venv} in {config.get('home')}")


def venv_seed(source_venv: Path) -> list[str]:
    """What `python -m venv` itself puts in an env: pip, and setuptools before Python 3.12."""
    version = tuple(int(part) for part in site_packages(source_venv).parent.name.removeprefix("python").split("."))
    seeds = ["pip", "setuptools"] if version < (3, 12) else ["pip"]
    installed = _installed(site_packages(source_venv))
    return [seed for seed in seeds if seed in installed]


def image_closure(spec: ImageSpec, source_venv: Path = ROOT / ".venv") -> list[Distribution]:
    """The distributions of an image's env: its Dockerfile's requirements plus what venv seeds."""
    return closure([*venv_seed(source_venv), *spec.requirements], site_packages(source_venv))


def build_image_env(
    spec: ImageSpec, dest: Path, source_venv: Path = ROOT / ".venv", shebang_python: str | None = None
) -> Path:
    """The image's env at `dest`, built atomically; skipped when dest's stamp records the same inputs.

    `shebang_python` is the interpreter console scripts name: `dest/bin/python` by default, or where the env
    is mounted in the pod (`/opt/llmtrain/bin/python`).
    """
    dest, source_venv = Path(dest).absolute(), Path(source_venv).absolute()
    shebang = shebang_python or str(dest / "bin" / "python")
    dists = image_closure(spec, source_venv)
    inputs = {
        "builder": BUILDER_VERSION,
        "image": spec.name,
        "requirements": spec.requirements,
        "distributions": [f"{canonicalize_name(d.metadata['Name'])}=={d.version}" for d in dists],
        "shebang": shebang,
        "source": str(source_venv),
        "python": str(base_python(source_venv)),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest.parent / f".{dest.name}.lock"):
        if _stamp_digest(dest) == digest:
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the env from a pod's non-root user
            _populate(tmp, dists, source_venv, shebang, location=Path(shebang).parent.parent)
            (tmp / STAMP).write_text(json.dumps({"digest": digest, **inputs}, indent=1) + "\n")
            _replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _stamp_digest(dest: Path) -> str | None:
    try:
        return json.loads((dest / STAMP).read_text())["digest"] if (dest / "bin" / "python").exists() else None
    except (OSError, ValueError, KeyError):
        return None


def _replace(tmp: Path, dest: Path) -> None:
    """Move the finished env into place; an old one is swapped out first and removed afterwards."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
    os.rename(dest, old / "env")
    os.rename(tmp, dest)
    shutil.rmtree(old)


def _populate(env: Path, dists: list[Distribution], source_venv: Path, shebang: str, location: Path) -> None:
    """Create the venv in `env`, link the distributions' files in, write their scripts."""
    subprocess.run(
        [str(base_python(source_venv)), "-m", "venv", "--without-pip", str(env)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    for name in ("pyvenv.cfg", "bin/activate", "bin/activate.csh", "bin/activate.fish", "bin/Activate.ps1"):
        if (env / name).is_file():  # the env's own location, not the temporary one it was built in
            (env / name).write_text((env / name).read_text().replace(str(env), str(location)))
    source_site = site_packages(source_venv)
    _link_files(dists, _installed(source_site), source_site, site_packages(env))
    _write_scripts(dists, source_site, source_venv / "bin", env / "bin", shebang)


def _record(dist: Distribution) -> list[str]:
    """The paths a distribution's RECORD lists, relative to site-packages."""
    text = dist.read_text("RECORD")
    if text is None:
        raise LookupError(f"{dist.metadata['Name']} {dist.version} has no RECORD: its files are unknown")
    return [row[0] for row in csv.reader(io.StringIO(text)) if row]


def _inside(paths: Iterable[str]) -> list[tuple[str, ...]]:
    """RECORD paths inside site-packages, as tuples of parts (`../../../bin/x` and absolute paths dropped)."""
    out = []
    for path in paths:
        normal = posixpath.normpath(path)
        if not normal.startswith(("../", "/")) and normal not in (".", ".."):
            out.append(tuple(normal.split("/")))
    return out


def _link_files(dists: list[Distribution], installed: dict[str, Distribution], source: Path, target: Path) -> None:
    """Symlink the closure's files into `target`: whole directories where no other distribution shares them."""
    ours = [path for dist in dists for path in _inside(_record(dist))]
    chosen = {canonicalize_name(dist.metadata["Name"]) for dist in dists}
    tops = {path[0] for path in ours}
    theirs = [
        path
        for key, dist in installed.items()
        if key not in chosen
        for path in _inside(_record(dist))
        if path[0] in tops
    ]
    for parts in _link_plan(ours, theirs):
        origin, link = source.joinpath(*parts), target.joinpath(*parts)
        if os.path.lexists(origin):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(origin)


def _link_plan(ours: list[tuple[str, ...]], theirs: list[tuple[str, ...]], depth: int = 0) -> list[tuple]:
    """The shallowest paths that expose every path of ours and none of theirs (a path is a tuple of parts)."""
    plan: list[tuple] = []
    children: dict[str, list[tuple[str, ...]]] = {}
    for path in ours:
        children.setdefault(path[depth], []).append(path)
    for name, under in sorted(children.items()):
        foreign = [path for path in theirs if path[depth] == name and len(path) > depth + 1]
        is_file = any(len(path) == depth + 1 for path in under)
        if is_file or not foreign:
            plan.append((*under[0][:depth], name))
        else:
            plan += _link_plan([path for path in under if len(path) > depth + 1], foreign, depth + 1)
    return plan


def _write_scripts(dists: list[Distribution], source_site: Path, source_bin: Path, bin_dir: Path, shebang: str):
    """Console and GUI scripts as pip writes them; other scripts the RECORDs install, with the shebang set."""
    written: set[str] = set()
    for dist in dists:
        for entry in dist.entry_points:
            if entry.group in ("console_scripts", "gui_scripts"):
                module, _, attr = entry.value.partition(":")
                import_name = attr.strip().split(".")[0].split("[")[0].strip()
                call = attr.split("[")[0].strip()
                body = CONSOLE_SCRIPT.format(module=module.strip(), import_name=import_name, call=call)
                _write_executable(bin_dir / entry.name, _shebang_line(shebang) + body)
                written.add(entry.name)
    for dist in dists:
        for path in _record(dist):
            origin = Path(os.path.normpath(source_site / path))
            if origin.parent == source_bin and origin.name not in written and origin.is_file():
                _write_executable(bin_dir / origin.name, _with_shebang(origin.read_bytes(), shebang))


def _shebang_line(python: str) -> str:
    """`#!python` when the kernel can run it; else the /bin/sh trampoline pip uses for long or spaced paths."""
    if len(python) + 2 <= 127 and " " not in python:
        return f"#!{python}\n"
    return f"#!/bin/sh\n'''exec' {shlex.quote(python)} \"$0\" \"$@\"\n' '''\n"


def _with_shebang(script: bytes, python: str) -> bytes:
    """A copied script whose python shebang names `python` (pip rewrites `#!python` the same way)."""
    first, newline, rest = script.partition(b"\n")
    if first.startswith(b"#!") and b"python" in first:
        return _shebang_line(python).encode() + rest
    return first + newline + rest


def _write_executable(path: Path, content: str | bytes) -> None:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(0o755)


# ---------------------------------------------------------------------------------------------- checks, CLI


def clean_environ(env_dir: Path) -> dict[str, str]:
    """The calling environment without PYTHON* and VIRTUAL_ENV, with the env's bin/ first on PATH."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    environ["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{environ.get('PATH', '')}"
    return environ


def importable(env_dir: Path, modules: Iterable[str], timeout: float = 300) -> dict[str, bool]:
    """Whether each module imports in the env's interpreter (a fresh process, clean environment)."""
    script = (
        "import importlib, json, sys\n"
        "ok = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        ok[name] = True\n"
        "    except Exception:\n"
        "        ok[name] = False\n"
        "print(json.dumps(ok))\n"
    )
    done = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", script, *modules],
        env=clean_environ(env_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def dockerfiles() -> list[Path]:
    """The project's image Dockerfiles."""
    return sorted((ROOT / "images").glob("*.Dockerfile"))


def main(argv: list[str] | None = None) -> int:
    """`build --out DIR`: build every image's env, print its closure size and what imports there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build each image's env under --out")
    build.add_argument("--out", type=Path, default=ROOT / ".tools" / "images")
    build.add_argument("--source-venv", type=Path, default=ROOT / ".venv")
    build.add_argument("--shebang-python", help="the interpreter scripts name (default: OUT/IMAGE/bin/python)")
    args = parser.parse_args(argv)
    for dockerfile in dockerfiles():
        spec = parse_dockerfile(dockerfile)
        started = time.monotonic()
        dest = build_image_env(spec, args.out / spec.name, args.source_venv, args.shebang_python)
        elapsed = time.monotonic() - started
        size = len(json.loads((dest / STAMP).read_text())["distributions"])
        checks = importable(dest, ["llama_cpp", "torch", "kopf"])
        print(f"{spec.name}: {dest} ({size} distributions, {elapsed:.2f} s)")
        print("  " + ", ".join(f"{module} {'yes' if ok else 'no'}" for module, ok in checks.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
