"""Windows and splits from a cache: deterministic crops, full tiling, split selectors, task targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.dataset import RandomWindows, TiledWindows, collate_windows
from ecgforge.data.splits import DatasetError, select, task_targets
from tests.data.test_cache import ecg_like, recipe, write_record


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


def test_segments_are_adjacent_and_non_overlapping_by_default(cache: Cache) -> None:
    """CLOCS / fairseq-signals (``preprocess_physionet2021.py`` cuts consecutive ``--sec`` crops and
    ``convert_to_cmsc_manifest.py`` pairs crops 2j and 2j+1): the second segment starts where the first ends."""
    w = 200
    ds = RandomWindows(cache, np.arange(len(cache)), w, n_segments=2, seed=4)
    for epoch in range(3):
        ds.set_epoch(epoch)
        starts = ds.starts()
        for k, i in enumerate(ds.indices):
            n = int(cache.lengths[i])
            assert n >= 2 * w  # every record of the fixture holds two segments
            assert starts[k, 1] - starts[k, 0] == w and 0 <= starts[k, 0] <= n - 2 * w
            x = ds[k]["x"].numpy()
            np.testing.assert_array_equal(np.concatenate([x[0], x[1]], axis=-1), cache.read(int(i), int(starts[k, 0]), 2 * w))


def test_a_record_of_two_segments_is_cut_into_its_halves(cache: Cache) -> None:
    n = int(cache.lengths[0])  # the 10 s record: 5 s segments are exactly its two halves, on every epoch
    ds = RandomWindows(cache, np.array([0]), n // 2, n_segments=2, seed=0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert ds.starts().tolist() == [[0, n // 2]]


def test_segments_of_a_short_record_spread_evenly(cache: Cache) -> None:
    n = int(cache.lengths[1])  # the 7 s record, asked for two segments of 4 s
    w = int(n * 4 / 7)
    ds = RandomWindows(cache, np.array([1]), w, n_segments=2, seed=0)
    assert ds.starts().tolist() == [[0, n - w]]


def test_independent_segment_pairing_draws_each_start_alone(cache: Cache) -> None:
    ds = RandomWindows(cache, np.arange(len(cache)), 100, n_segments=2, seed=0, segment_pairing="independent")
    gaps = []
    for epoch in range(10):
        ds.set_epoch(epoch)
        gaps += (ds.starts()[:, 1] - ds.starts()[:, 0]).tolist()
    assert len(set(gaps)) > 5 and 100 not in set(gaps[:3])
    with pytest.raises(DatasetError, match="segment_pairing"):
        RandomWindows(cache, np.arange(len(cache)), 100, n_segments=2, segment_pairing="overlap")  # type: ignore[arg-type]


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


@pytest.mark.parametrize("in_memory", [False, True])
def test_read_windows_equals_read(cache: Cache, in_memory: bool) -> None:
    c = Cache(cache.path, in_memory=in_memory)
    recs, starts = np.array([2, 0, 2, 1]), np.array([0, 750, 980, 450])
    x = c.read_windows(recs, starts, 250)
    assert x.shape == (4, 12, 250) and x.dtype == np.float32
    for b in range(4):
        np.testing.assert_array_equal(x[b], c.read(int(recs[b]), int(starts[b]), 250))
    with pytest.raises(IndexError, match="outside record r1"):
        c.read_windows(np.array([0, 1]), np.array([0, 451]), 250)  # r1 has 700 samples


@pytest.mark.parametrize("n_segments", [1, 2])
def test_batches_equal_stacked_items(cache: Cache, n_segments: int) -> None:
    ds = RandomWindows(cache, np.arange(len(cache)), 800, n_segments=n_segments, seed=5)  # r1 (700) is padded
    ds.set_epoch(2)
    ks = [2, 0, 1, 2]
    batch = ds.__getitems__(ks)
    items = collate_windows([ds[k] for k in ks])
    assert batch.keys() == items.keys() == {"x", "lead_mask", "patient", "record"}
    for key in batch:
        assert batch[key].dtype == items[key].dtype, key
        np.testing.assert_array_equal(batch[key].numpy(), items[key].numpy(), err_msg=key)
    assert batch["x"].shape == ((4, 12, 800) if n_segments == 1 else (4, 2, 12, 800))
    assert np.all(batch["x"].numpy()[2, ..., 700:] == 0)  # the 7 s record, zero-padded at the end


def test_loader_without_collate_windows_says_so(cache: Cache) -> None:
    from torch.utils.data import DataLoader

    loader = DataLoader(RandomWindows(cache, np.arange(3), 250, seed=1), batch_size=2)  # default collate
    with pytest.raises(TypeError, match=r"whole batches: .*collate_fn=ecgforge\.data\.dataset\.collate_windows"):
        next(iter(loader))


def test_loader_batches_do_not_depend_on_workers(cache: Cache) -> None:
    from torch.utils.data import DataLoader

    from ecgforge.data.splits import Targets

    y = np.eye(3, dtype=np.float32)
    ds = RandomWindows(cache, np.arange(3), 250, seed=1, targets=Targets(np.arange(3), y, ["a", "b", "c"], "multilabel", 0))
    ds.set_epoch(4)

    def batches(workers: int) -> list[dict]:
        loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate_windows)
        return [{k: v.numpy() for k, v in b.items()} for b in loader]

    a, b = batches(0), batches(2)
    assert [len(x["x"]) for x in a] == [2, 1]
    for x, z in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], z[key], err_msg=key)
    np.testing.assert_array_equal(np.concatenate([x["y"] for x in a]), y)
