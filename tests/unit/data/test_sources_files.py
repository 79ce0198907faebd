"""Local and PVC sources: no symlink swapped in after listing is followed, no special or system file is read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from llmtrain.api.datasource import DataSourceSpec
from llmtrain.data.sources import SourceError, list_inputs, read_input

SECRET = "the launch codes are 0000"
TEXT = "An ordinary document of the corpus, long enough to be kept. " * 3


def spec(source: dict) -> DataSourceSpec:
    return DataSourceSpec.model_validate({"sources": [source]})


def read_all(refs, data_spec) -> str:
    items = [item for ref in refs for item in read_input(ref, data_spec, 1 << 20)]
    return "".join(item.content.decode() if isinstance(item.content, bytes) else item.content for item in items)


@pytest.fixture
def tree(tmp_path):
    """data/ with two documents, and a secret outside it."""
    (tmp_path / "data").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "data" / name).write_text(TEXT)
    (tmp_path / "secret.txt").write_text(SECRET)
    return tmp_path


def swap_for_symlink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize("kind", ["local", "local-absolute", "pvc"])
def test_a_symlink_swapped_in_after_listing_is_refused(tree, monkeypatch, kind):
    if kind == "pvc":
        monkeypatch.setenv("LLMTRAIN_PVC_ROOT", str(tree))
        data_spec = spec({"pvc": {"claimName": "data", "path": "*.txt"}})
    else:
        path = str(tree / "data/*.txt") if kind == "local-absolute" else "data/*.txt"
        data_spec = spec({"local": {"path": path}})
    refs = list_inputs(data_spec, tree)
    assert len(refs) == 2
    swap_for_symlink(Path(refs[0].uri), tree / "secret.txt")
    with pytest.raises(SourceError, match="symlink appeared") as caught:
        read_all(refs, data_spec)
    assert caught.value.exit_code == 2 and SECRET not in str(caught.value)


def test_a_folder_swapped_for_a_symlink_after_listing_is_refused(tree):
    (tree / "data/sub").mkdir()
    (tree / "data/sub/c.txt").write_text(TEXT)
    (tree / "elsewhere").mkdir()
    (tree / "elsewhere/c.txt").write_text(SECRET)
    data_spec = spec({"local": {"path": "data/sub/*.txt"}})
    refs = list_inputs(data_spec, tree)
    shutil.rmtree(tree / "data/sub")
    (tree / "data/sub").symlink_to(tree / "elsewhere")
    with pytest.raises(SourceError, match="symlink appeared"):
        read_all(refs, data_spec)


def test_symlinks_inside_the_root_still_work(tree):
    (tree / "data/link.txt").symlink_to(tree / "data/a.txt")
    data_spec = spec({"local": {"path": "data/link.txt"}})
    assert read_all(list_inputs(data_spec, tree), data_spec).strip() == TEXT.strip()


def test_absolute_paths_get_the_symlink_check(tree):
    (tree / "data/escape.txt").symlink_to(tree / "secret.txt")
    with pytest.raises(SourceError, match=r"leaves .* through a symlink"):
        list_inputs(spec({"local": {"path": str(tree / "data/*.txt")}}), tree)


def test_a_fifo_is_never_opened_for_reading(tree):
    os.mkfifo(tree / "data/pipe.txt")
    data_spec = spec({"local": {"path": "data/*.txt"}})
    assert [Path(r.uri).name for r in list_inputs(data_spec, tree)] == ["a.txt", "b.txt"]  # not listed
    with pytest.raises(SourceError, match="not a regular file"):
        list_inputs(spec({"local": {"path": "data/pipe.txt"}}), tree)
    refs = list_inputs(data_spec, tree)
    (tree / "data/a.txt").unlink()
    os.mkfifo(tree / "data/a.txt")  # swapped in after listing: refused at once, not a blocked open
    with pytest.raises(SourceError, match="not a regular file"):
        read_all(refs, data_spec)


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/**/*", "/dev/zero", "/sys/kernel/*", "/*", "/**/*.txt"])
def test_system_folders_and_the_filesystem_root_are_refused(tmp_path, path):
    with pytest.raises(SourceError, match=r"spec.sources\[0\].local.path: .*point it at a folder of data files"):
        list_inputs(spec({"local": {"path": path}}), tmp_path)
