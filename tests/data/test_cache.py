"""Cache build and read on WFDB records written in a temporary folder (real format, made by wfdb.wrsamp)."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import wfdb

from ecgforge.data.cache import Cache, CacheError
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import info, verify
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS


def write_record(folder: Path, name: str, data: np.ndarray, fs: int = 500, leads: list[str] | None = None) -> None:
    """data (leads, T) in mV."""
    leads = leads or list(CANONICAL_LEADS)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=leads, p_signal=data.T.astype(np.float64),
                fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads), write_dir=str(folder))


def ecg_like(t_s: float, fs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(t_s * fs)) / fs
    base = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.2, 1.5, size=(12, 1))
    return (base + 0.05 * rng.standard_normal((12, len(t)))).astype(np.float32)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "wfdb"
    d.mkdir()
    for i in range(4):
        write_record(d, f"good{i}", ecg_like(10, 500, i))
    write_record(d, "six_leads", ecg_like(8, 250, 9)[:6], fs=250, leads=list(CANONICAL_LEADS[:6]))
    write_record(d, "flat", np.zeros((12, 5000), dtype=np.float32))
    write_record(d, "short", ecg_like(0.5, 500, 3))
    write_record(d, "truncated", ecg_like(10, 500, 4))
    dat = d / "truncated.dat"
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    (d / "garbled.hea").write_text("this is not a header\n")
    nan = ecg_like(10, 500, 5)
    nan[3, 100:110] = np.nan  # wfdb.wrsamp stores NaN as format 16's invalid-sample value, read back as NaN
    write_record(d, "nan", nan)
    return d


def recipe(folder: Path, out: Path, **signal: object) -> CacheRecipe:
    return CacheRecipe.model_validate(
        {"name": "t", "out": str(out), "source": {"kind": "wfdb_folder", "path": str(folder)},
         "signal": {"fs_hz": 100, **signal}}
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_build_lists_bad_records_and_keeps_good_ones(folder: Path, tmp_path: Path, workers: int) -> None:
    out = tmp_path / "c.h5"
    s = build_cache(recipe(folder, out), workers=workers)
    assert s.n_records == 5
    skipped = dict(s.skipped)
    assert set(skipped) == {"flat", "short", "truncated", "garbled", "nan"}
    assert "flat" in skipped["flat"] and "short" in skipped["short"] and "truncated" in skipped["truncated"]
    assert "10 NaN" in skipped["nan"]
    c = Cache(out)
    assert sorted(c.record_id) == ["good0", "good1", "good2", "good3", "six_leads"]
    assert c.fs_hz == 100 and c.leads == list(CANONICAL_LEADS)
    six = list(c.record_id).index("six_leads")
    assert c.present[six].tolist() == [True] * 6 + [False] * 6  # missing leads marked, not silently zero
    assert np.all(c.read(six)[6:] == 0) and c.lengths[six] == 800  # 8 s at 100 Hz
    assert not list(tmp_path.glob(".c.h5.*")), "scratch files left behind"


def test_spawned_readers_build_the_source_from_its_config(folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader processes get the recipe, not the source object: started by spawn (no memory shared with the
    parent), each builds the source from its config, and the cache is byte for byte the forked readers' one."""
    import multiprocessing

    import ecgforge.data.cache_readers as readers_mod

    forked = build_cache(recipe(folder, tmp_path / "c.h5"), workers=2).path.read_bytes()
    real = multiprocessing.get_context
    monkeypatch.setattr(readers_mod.mp, "get_context", lambda method=None: real("spawn"))
    assert build_cache(recipe(folder, tmp_path / "c.h5"), workers=2).path.read_bytes() == forked


def test_values_match_resampled_source(folder: Path, tmp_path: Path) -> None:
    from scipy.signal import resample_poly

    c = Cache(build_cache(recipe(folder, tmp_path / "c.h5"), workers=1).path)
    i = list(c.record_id).index("good1")
    src = wfdb.rdrecord(str(folder / "good1")).p_signal.T
    expected = resample_poly(src, 1, 5, axis=-1)
    np.testing.assert_allclose(c.read(i), expected, atol=6e-4)  # 1 uV storage step + float32
    np.testing.assert_array_equal(c.read(i, 100, 250), c.read(i)[:, 100:350])


def test_in_memory_reads_the_same(folder: Path, tmp_path: Path) -> None:
    path = build_cache(recipe(folder, tmp_path / "c.h5"), workers=1).path
    a, b = Cache(path), Cache(path, in_memory=True)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.read(i, 10, 200), b.read(i, 10, 200))


def test_filters_remove_baseline_and_powerline(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    t = np.arange(15000) / 500  # 30 s: a 0.5 Hz high-pass needs seconds to settle at the edges
    ecg = np.sin(2 * np.pi * 10 * t)
    noisy = ecg + 1.0 + 0.5 * np.sin(2 * np.pi * 0.1 * t) + 0.3 * np.sin(2 * np.pi * 50 * t)
    write_record(d, "r", np.tile(noisy, (12, 1)).astype(np.float32))
    r = CacheRecipe.model_validate({"name": "f", "out": str(tmp_path / "f.h5"),
                                    "source": {"kind": "wfdb_folder", "path": str(d)},
                                    "signal": {"fs_hz": 500, "filter": {"highpass_hz": 0.5, "notch_hz": 50}}})
    x = Cache(build_cache(r, workers=1).path).read(0)[0, 2500:-2500]
    np.testing.assert_allclose(x, ecg[2500:-2500], atol=0.05)


def test_info_counts_and_verify(folder: Path, tmp_path: Path) -> None:
    path = build_cache(recipe(folder, tmp_path / "c.h5"), workers=1).path
    d = info(path)
    assert d["n_records"] == 5 and d["n_patients"] == 5 and d["fs_hz"] == 100
    assert {s["record"] for s in d["skipped"]} == {"flat", "short", "truncated", "garbled", "nan"}
    json.dumps(d)
    assert verify(path) == []
    with h5py.File(path, "r+") as h5:
        h5["signals"][10, 0] += 7
    problems = verify(path)
    assert len(problems) == 1 and "samples fail their checksum" in problems[0]


def test_failed_build_leaves_no_file(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ecgforge.data.cache_readers as readers_mod

    out = tmp_path / "c.h5"
    calls = {"n": 0}
    real = readers_mod.process_record

    def crash_on_third(*a: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(readers_mod, "process_record", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_cache(recipe(folder, out), workers=1)
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_while_hdf5_is_written_stops_before_the_rename(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Ctrl-C in pass 2 is held until a safe point: HDF5's writing finishes, then the build stops unrenamed.
    (Raised at once, it lands inside h5py's weakref callbacks, which print "Exception ignored" and go on.)"""
    import signal

    import ecgforge.data.cache_writer as writer_mod

    out = tmp_path / "c.h5"
    real, finished = writer_mod.write_columns, []

    def interrupted(*a: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        real(*a)  # type: ignore[arg-type]
        finished.append(True)

    monkeypatch.setattr(writer_mod, "write_columns", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(recipe(folder, out), workers=workers)
    assert finished and not out.exists() and list(tmp_path.iterdir()) == [folder]


def test_cache_rebuilt_under_an_open_reader_is_never_mixed_in(folder: Path, tmp_path: Path) -> None:
    """A rebuild at the same path: the open `Cache` goes on reading the file its metadata came from; a copy in
    another process (pickled, as for a spawned DataLoader worker) refuses the new file instead of pairing the
    old offsets with its samples."""
    import pickle

    out = tmp_path / "c.h5"
    build_cache(recipe(folder, out), workers=1)
    c = Cache(out)
    first = c.read(0).copy()
    copy = pickle.loads(pickle.dumps(c))  # made before the rebuild; opens its descriptor at the first read
    build_cache(recipe(folder, out, fs_hz=50), workers=1)  # other samples at the same path
    np.testing.assert_array_equal(c.read(0), first)
    with pytest.raises(CacheError, match=r"c\.h5: the cache was replaced \(rebuilt\?\) after it was opened"):
        copy.read(0)
    c.close()  # a closed cache reopens by path on its next read, under the same check
    with pytest.raises(CacheError, match="replaced"):
        c.read(0)
    assert Cache(out).fs_hz == 50


def test_rebuild_replaces_previous_cache_atomically(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    build_cache(recipe(folder, out), workers=1)
    first = Cache(out).spec_hash
    build_cache(recipe(folder, out, min_duration_s=0.1), workers=1)
    c = Cache(out)
    assert c.spec_hash != first and "short" in c.record_id
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it, not mkstemp's 0600


def test_not_a_cache(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"nope")
    with pytest.raises(CacheError, match="not an HDF5 file"):
        Cache(tmp_path / "x.h5")
    with pytest.raises(CacheError, match="no such cache"):
        Cache(tmp_path / "missing.h5")


def test_build_without_copy_file_range(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel refuses copy_file_range (EXDEV across file systems, ENOSYS), samples are copied by hand."""
    import errno
    import os

    normal = Cache(build_cache(recipe(folder, tmp_path / "a.h5"), workers=2).path)

    def refuse(*a: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    path = build_cache(recipe(folder, tmp_path / "b.h5"), workers=2).path
    assert verify(path) == []
    by_hand = Cache(path)
    assert list(by_hand.record_id) == list(normal.record_id)
    for i in range(len(normal)):
        np.testing.assert_array_equal(by_hand.read(i), normal.read(i))


def test_scratch_file_offsets_and_large_flush(tmp_path: Path) -> None:
    """Samples stored by a reader land at the offsets it reports, also past the writev buffer limit."""
    from ecgforge.data.cache_readers import Scratch
    from ecgforge.data.cache_record import Processed

    path = tmp_path / "s.samples"
    path.touch()
    scratch = Scratch(3, str(path))
    rng = np.random.default_rng(0)
    sigs = [rng.integers(-999, 999, size=(int(n), 12)).astype(np.int16) for n in rng.integers(1, 9, size=1100)]
    stored = [scratch.store(Processed(i, signal=s.copy())).stored for i, s in enumerate(sigs)]
    scratch.flush()
    scratch.close()
    raw = path.read_bytes()
    assert len(raw) == sum(s.nbytes for s in sigs)
    for s, (number, offset, rows, crc) in zip(sigs, stored, strict=True):
        assert number == 3 and rows == len(s)
        assert raw[offset : offset + s.nbytes] == s.tobytes() and zlib.crc32(s.tobytes()) == crc


def _contents(path: Path) -> dict[str, object]:
    """Every dataset and attribute of an HDF5 file, as comparable values."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as h5:
        out.update({f"@{k}": str(v) for k, v in h5.attrs.items()})

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.shape, obj[()].tobytes() if obj.dtype.kind != "O" else list(obj[()]))
                out.update({f"{name}@{k}": str(v) for k, v in obj.attrs.items()})

        h5.visititems(visit)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_spool_in_small_pieces_writes_the_same_cache(folder: Path, tmp_path: Path, workers: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent keeps no record in memory: it spools them in pieces, and a cache written from many pieces has
    the contents of one written from a single piece (where it is also byte for byte the old whole-array write)."""
    import ecgforge.data.cache_writer as writer_mod

    whole = build_cache(recipe(folder, tmp_path / "whole.h5"), workers=workers).path
    monkeypatch.setattr(writer_mod.Spool, "PIECE", 2)
    pieces = build_cache(recipe(folder, tmp_path / "pieces.h5"), workers=workers).path
    a, b = _contents(whole), _contents(pieces)
    assert a.pop("@spec") != b.pop("@spec")  # it names the output file; everything else is equal
    crc_a, crc_b = (json.loads(x.pop("@metadata_crc32")) for x in (a, b))  # the spec's CRC differs with it
    assert crc_a.pop("@spec") != crc_b.pop("@spec") and crc_a == crc_b
    assert a.keys() == b.keys() and a == b
    assert verify(pieces) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pieces.h5", "wfdb", "whole.h5"]  # no spool left


@pytest.mark.parametrize("workers", [1, 2])
def test_the_building_process_keeps_no_record_until_the_end(folder: Path, tmp_path: Path, workers: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """When the HDF5 columns are written, no `RecordRef` is alive in the building process: its memory does not
    grow per record (each one listed was spooled to disk or dropped; the source did not list them again)."""
    import gc

    import ecgforge.data.cache_writer as writer_mod
    from ecgforge.data.record import RecordRef

    monkeypatch.setattr(writer_mod.Spool, "PIECE", 2)
    real, alive = writer_mod.write_columns, []

    def counting(*a: object) -> None:
        alive.append(sum(isinstance(o, RecordRef) for o in gc.get_objects()))
        real(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_mod, "write_columns", counting)
    build_cache(recipe(folder, tmp_path / "c.h5"), workers=workers)
    assert alive == [0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_record_listed_twice_stops_the_build(tmp_path: Path, workers: int) -> None:
    """A streaming listing holds no set of ids: the build checks them once the listing is done (hashes, then
    the ids whose hash repeats) and refuses a repeat with one line; the source's `records` refuses it too."""
    from ecgforge.data.sources.cinc import CinCSource

    for sub in ("a", "b"):
        (tmp_path / "cinc" / sub).mkdir(parents=True)
        write_record(tmp_path / "cinc" / sub, "rec1", ecg_like(2, 500, 0))
        write_record(tmp_path / "cinc" / sub, f"only_{sub}", ecg_like(2, 500, 1))
    spec = CacheRecipe.model_validate({"name": "t", "out": str(tmp_path / "c.h5"), "signal": {"fs_hz": 100},
                                       "source": {"kind": "cinc", "path": str(tmp_path / "cinc"), "label_sets": ["dx"]}})
    with pytest.raises(CacheError, match=r"^source\.path: record 'rec1' is listed twice$"):
        build_cache(spec, workers=workers)
    assert not (tmp_path / "c.h5").exists()
    with pytest.raises(ValueError, match="record 'rec1' is listed twice"):
        CinCSource(CinCSource.Config(path=str(tmp_path / "cinc"), label_sets=["dx"])).records()
    (tmp_path / "cinc" / "b" / "rec1.hea").unlink()
    assert build_cache(spec, workers=workers).n_records == 3
