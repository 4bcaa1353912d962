"""Damaged caches: bytes flipped in the samples, in a metadata dataset, in an attribute.

``ecgforge cache verify`` names each damaged record or part (and nothing else); ``ecgforge run`` refuses the
cache with one line naming the file and the record (or part) as soon as it reads a damaged record (training
or evaluation) or opens damaged metadata. A record's checksum is computed once per process, not per window.
A layout-1 cache (no metadata checksums) verifies with a note, not a failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.data.cache import Cache, CacheDamaged
from ecgforge.data.cache_inspect import verify
from ecgforge.data.dataset import RandomWindows
from tests.reliability.ledger import TRACEBACK, record
from tests.train.conftest import recipe_dict, run_cli, write_recipe


def flip(path: Path, offset: int) -> None:
    """Invert every bit of the byte at ``offset`` of ``path``."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def sample_offset(path: Path, record_id: str, row: int = 7) -> int:
    """File offset of a byte inside ``record_id``'s samples (row ``row``, lead 0)."""
    c = Cache(path, verify=False)
    i = list(c.record_id).index(record_id)
    return c._offset + (int(c.offsets[i]) + row) * c.n_leads * 2


def dataset_offset(path: Path, name: str, item: int = 3) -> int:
    with h5py.File(path, "r") as h5:
        ds = h5[name]
        return ds.id.get_offset() + item * ds.dtype.itemsize


def damaged_copy(tiny_cache: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of the tiny cache with one kind of damage; (its path, the part or record ``verify`` must name)."""
    path = tmp_path / "damaged.h5"
    shutil.copyfile(tiny_cache, path)
    if how == "train record":
        flip(path, sample_offset(path, "r03"))
        return path, "record r03 (#3)"
    if how == "test record":
        flip(path, sample_offset(path, "r21", row=390))
        return path, "record r21 (#21)"
    if how == "fold column":
        flip(path, dataset_offset(path, "fold") + 1)
        return path, "metadata dataset 'fold'"
    if how == "labels":
        flip(path, dataset_offset(path, "labels/label", item=5))
        return path, "metadata dataset 'labels/label'"
    if how == "offsets":
        flip(path, dataset_offset(path, "offsets", item=6) + 2)
        return path, "metadata dataset 'offsets'"
    if how == "spec attribute":
        data = path.read_bytes()
        at = data.find(b'"name":"tiny"')
        assert at > 0 and data.find(b'"name":"tiny"', at + 1) == -1
        flip(path, at + len('"name":"ti'))
        return path, "attribute 'spec'"
    raise ValueError(how)


KINDS = ["train record", "test record", "fold column", "labels", "offsets", "spec attribute"]


@pytest.mark.parametrize("how", KINDS)
def test_verify_names_the_damaged_part(tiny_cache: Path, tmp_path: Path, how: str) -> None:
    assert verify(tiny_cache) == []
    path, part = damaged_copy(tiny_cache, tmp_path, how)
    res = CliRunner().invoke(app, ["cache", "verify", str(path)])
    escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
    problems = [x for x in res.stderr.splitlines() if x.startswith("problem:")]
    named = res.exit_code == 1 and len(problems) >= 1 and part in problems[0] and not escaped
    if how.endswith("record"):  # only that record, nothing else
        named = named and len(problems) == 1
    record("corruption", f"cache verify, {how} damaged: names it, exit 1" if named else f"cache verify, {how}: "
           f"exit {res.exit_code}", output=res.output, traceback=escaped, lost=int(not named))
    assert named, (res.exit_code, res.output)


def test_verify_of_a_layout_1_cache_notes_the_missing_metadata_checksums(tiny_cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "v1.h5"
    shutil.copyfile(tiny_cache, path)
    with h5py.File(path, "r+") as h5:  # what caches built before the metadata checksums look like
        h5.attrs["layout_version"] = 1
        del h5.attrs["metadata_crc32"]
    res = CliRunner().invoke(app, ["cache", "verify", str(path)])
    ok = res.exit_code == 0 and "layout_version 1" in res.stderr and "not checked" in res.stderr
    record("corruption", "cache verify, layout-1 cache: ok with a note" if ok else f"layout-1: exit {res.exit_code}",
           output=res.output, lost=int(not ok))
    assert ok, res.output
    assert len(Cache(path)) == 24  # still read
    flip(path, sample_offset(path, "r05"))
    assert [p for p in verify(path) if "r05" in p] == [verify(path)[0]] and len(verify(path)) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("how", "workers"), [("train record", 0), ("train record", 2), ("test record", 0),
                                              ("fold column", 0), ("spec attribute", 0)])
def test_run_refuses_a_damaged_cache(tiny_cache: Path, tmp_path: Path, how: str, workers: int) -> None:
    """Training (with and without DataLoader workers) reads r03; only the evaluation reads r21 (test split)."""
    path, part = damaged_copy(tiny_cache, tmp_path, how)
    r = recipe_dict(path, eval_=True, max_steps=4)
    r["data"]["num_workers"] = workers
    recipe = write_recipe(tmp_path / "r.toml", r)
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    one = (proc.returncode == 2 and len(lines) == 1 and str(path) in lines[0] and part in lines[0]
           and TRACEBACK not in proc.stderr and not (tmp_path / "run" / "results.json").exists())
    record("corruption", f"run on a cache with a damaged {how}: refused, one line" if one else
           f"run, damaged {how}: exit {proc.returncode}", output=proc.stderr, lost=int(not one))
    assert one, proc.stderr[-3000:]


def test_a_record_is_checked_once_per_process(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many epochs of many windows: each record's CRC is computed once; a damaged one is refused at first read."""
    calls: list[int] = []
    real = Cache.record_crc_ok

    def counted(self: Cache, i: int) -> bool:
        calls.append(i)
        return real(self, i)

    monkeypatch.setattr(Cache, "record_crc_ok", counted)
    for in_memory in (False, True):
        calls.clear()
        c = Cache(tiny_cache, in_memory=in_memory)
        ds = RandomWindows(c, np.arange(len(c)), 50, n_segments=2, seed=0)
        for epoch in range(5):
            ds.set_epoch(epoch)
            ds.__getitems__(list(range(len(ds))))
            for k in range(len(ds)):
                ds[k]
        assert sorted(calls) == list(range(len(c)))
        unchecked = Cache(tiny_cache, verify=False)
        unchecked.read_windows(np.array([0, 1]), np.array([0, 0]), 10)
        assert sorted(calls) == list(range(len(c)))  # verify=False: never


def test_damaged_record_read_in_process_is_one_line(tiny_cache: Path, tmp_path: Path) -> None:
    path, _ = damaged_copy(tiny_cache, tmp_path, "train record")
    for in_memory in (False, True):
        c = Cache(path, in_memory=in_memory)
        c.read(2, 0, 10)  # an intact record
        with pytest.raises(CacheDamaged) as exc:
            c.read_windows(np.array([2, 3]), np.array([0, 100]), 10)
        msg = str(exc.value)
        assert "\n" not in msg and str(path) in msg and "record r03 (#3)" in msg and "cache verify" in msg
