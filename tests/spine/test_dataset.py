"""Windows and splits from a cache: deterministic crops, full tiling, split selectors, task targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgforge.data.cache import Cache, build_cache
from ecgforge.data.dataset import DatasetError, RandomWindows, TiledWindows, select, task_targets
from tests.spine.test_cache import ecg_like, recipe, write_record


@pytest.fixture()
def cache(tmp_path: Path) -> Cache:
    d = tmp_path / "w"
    d.mkdir()
    for i, secs in enumerate([10, 7, 12.3]):
        write_record(d, f"r{i}", ecg_like(secs, 500, i))
    return Cache(build_cache(recipe(d, tmp_path / "c.h5"), workers=1).path)


def test_random_windows_are_deterministic_and_in_range(cache: Cache) -> None:
    ds = RandomWindows(cache, np.arange(len(cache)), 250, seed=3)
    a = [ds[k]["x"].numpy() for k in range(len(ds))]
    b = [RandomWindows(cache, np.arange(len(cache)), 250, seed=3)[k]["x"].numpy() for k in range(len(ds))]
    for x, y in zip(a, b, strict=True):
        assert x.shape == (12, 250)
        np.testing.assert_array_equal(x, y)
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[k]["x"].numpy(), a[k]) for k in range(len(ds)))


def test_segments(cache: Cache) -> None:
    item = RandomWindows(cache, np.arange(len(cache)), 200, n_segments=2)[0]
    assert item["x"].shape == (2, 12, 200)


def test_tiles_cover_every_sample(cache: Cache) -> None:
    ds = TiledWindows(cache, np.arange(len(cache)), 250)
    for pos in range(len(cache)):
        starts = ds.starts[ds.record_of == pos]
        covered = np.zeros(int(cache.lengths[pos]), dtype=bool)
        for s in starts:
            covered[s : s + 250] = True
        assert covered.all()
    assert len(ds) == 4 + 3 + 5  # 1000, 700 (last flush), 1230 samples


def test_select_and_unknown_column(cache: Cache) -> None:
    assert select(cache, {"record_id": ["r0", "r2"]}).tolist() == [0, 2]
    assert select(cache, {"fold": [1, 2]}).tolist() == []  # a folder source has no folds: selects nothing
    with pytest.raises(DatasetError, match="unknown column 'hospital'"):
        select(cache, {"hospital": 1})


def test_task_errors(cache: Cache) -> None:
    with pytest.raises(DatasetError, match="no label set 'rhythm'"):
        task_targets(cache, "rhythm", np.arange(len(cache)))
