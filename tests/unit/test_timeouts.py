"""Every blocking call in the tests has a timeout, so a hang fails a test instead of blocking CI: the
tests' source is scanned for subprocess calls, `.wait()` and `.communicate()` without one."""

from __future__ import annotations

import ast

from support.paths import ROOT

SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output"}
WAITS = {"wait", "communicate"}


def _bounded_elsewhere(tree: ast.AST) -> set[int]:
    """ids of calls that cannot block the thread: awaited (asyncio) or bounded by asyncio.wait_for."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Await):
            ids.add(id(node.value))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "wait_for":
            ids.update(id(arg) for arg in node.args)
    return ids


def calls_without_timeout(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: call` for each subprocess call, `.wait()` or `.communicate()` lacking a timeout."""
    tree = ast.parse(source, filename)
    exempt = _bounded_elsewhere(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or id(node) in exempt:
            continue
        keywords = {k.arg for k in node.keywords}
        if "timeout" in keywords or None in keywords:  # None: **kwargs passed through
            continue
        func = node.func
        subprocess_call = isinstance(func.value, ast.Name) and func.value.id == "subprocess"
        if (subprocess_call and func.attr in SUBPROCESS_CALLS) or (func.attr in WAITS and not node.args):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_every_blocking_call_in_the_tests_has_a_timeout():
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        found += calls_without_timeout(path.read_text(), str(path.relative_to(ROOT)))
    assert found == [], "add timeout=... to:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for():
    source = """
import asyncio, subprocess
subprocess.run(["true"])
subprocess.check_output(["true"], text=True)
process.wait()
process.communicate(input="x")
subprocess.run(["true"], timeout=5)
process.wait(timeout=5)
process.communicate(timeout=5)
event.wait(5)
subprocess.run(["true"], **options)
async def main():
    await stop.wait()
    await asyncio.wait_for(changed.wait(), timeout=1)
"""
    assert [line.split(":")[1] for line in calls_without_timeout(source)] == ["3", "4", "5", "6"]


def test_every_test_has_a_default_timeout(pytestconfig):
    """pytest-timeout is installed and configured: a test without its own mark fails after this long."""
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
