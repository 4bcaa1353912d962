"""Atomic writes: the file or folder renamed into place has the mode a plain open()/mkdir() gives it, not the
private 0600/0700 of the scratch name it was written under (caches and results are shared with a team)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecgforge.fsio import atomic_dir, atomic_file, atomic_write_json


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_and_folder_follow_the_umask(tmp_path: Path, umask_027: None) -> None:
    atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert mode(tmp_path / "results.json") == 0o640
    with atomic_dir(tmp_path / "export") as d:
        (d / "x").write_text("x")
    assert mode(tmp_path / "export") == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "results.json"]  # no scratch left


def test_atomic_file_failure_keeps_the_old_file_and_leaves_no_scratch(tmp_path: Path) -> None:
    target = tmp_path / "embeddings.h5"
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not target.exists()
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
        tmp.write_bytes(b"half of the second")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["embeddings.h5"]
