"""The ``arrays`` source: caches built from each form of array data written in tmp_path (a stacked .npy, a .npz
stored or compressed, one array per record in a .npz or an HDF5 group, a stacked HDF5 dataset, a folder of
files), compared with what was written; labels joined from a CSV; bad records skipped with their reason and bad
input refused in one line naming the file and the field."""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.data.cache import SCALE_MV, Cache, CacheError
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe, load_cache_recipe
from ecgforge.data.dsp import preprocess
from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.data.sources.arrays import ArraysSource

ROOT = Path(__file__).resolve().parents[2]
QUANTUM = SCALE_MV / 2 + 1e-6  # the cache rounds to 1 uV steps
TWELVE = list(CANONICAL_LEADS)


def recipe(out: Path, signal_hz: float = 500, **source: Any) -> CacheRecipe:
    return CacheRecipe.model_validate({"name": "t", "out": str(out), "signal": {"fs_hz": signal_hz},
                                       "source": {"kind": "arrays", "fs_hz": 500, "leads": TWELVE, **source}})


def build(out: Path, workers: int = 1, **source: Any) -> tuple[Cache, dict[str, str]]:
    summary = build_cache(recipe(out, **source), workers=workers)
    cache = Cache(summary.path)
    return cache, dict(cache.skipped)


def mv(rng: np.random.Generator, n: int, t: int = 1500, leads: int = 12) -> np.ndarray:
    """(n, leads, t) ECG-sized values in mV, on the cache's 1 uV grid."""
    return rng.normal(0, 0.4, (n, leads, t)).round(3)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def same(cache: Cache, expected: dict[str, np.ndarray]) -> None:
    """Every record of the cache equals its expected (12, T) mV array, to the cache's quantum."""
    assert sorted(cache.record_id) == sorted(expected)
    for i, rid in enumerate(cache.record_id):
        np.testing.assert_allclose(cache.read(i), expected[rid], atol=QUANTUM, rtol=0)


# ------------------------------------------------------------------------------------------- stacked arrays


@pytest.mark.parametrize("workers", [1, 2])
def test_stacked_npy_in_microvolts_is_joined_to_the_labels_csv(tmp_path: Path, workers: int) -> None:
    x = mv(np.random.default_rng(0), 5)
    np.save(tmp_path / "x.npy", np.rint(x.transpose(0, 2, 1) * 1000).astype(np.int16))  # (N, T, 12) uV
    write_csv(tmp_path / "labels.csv", [
        {"rec": 0, "pid": "p1", "age": 61, "sex": "M", "dx": "AF;PVC", "LBBB": 1, "RBBB": 0, "fold": 3},
        {"rec": 1, "pid": "p1", "age": "", "sex": "female", "dx": "", "LBBB": 0, "RBBB": 1, "fold": 3},
        {"rec": 2, "pid": "", "age": 45.5, "sex": "", "dx": "SR", "LBBB": "true", "RBBB": "yes", "fold": 7},
        {"rec": 4, "pid": "p4", "age": 30, "sex": "F", "dx": "AF", "LBBB": 0, "RBBB": 0, "fold": 1},
        {"rec": 9, "pid": "p9", "age": 30, "sex": "F", "dx": "LQT", "LBBB": 0, "RBBB": 0, "fold": 1},
    ])
    cache, skipped = build(tmp_path / "c.h5", workers, path=str(tmp_path / "x.npy"), layout="time_leads",
                           units="uV", labels_csv=str(tmp_path / "labels.csv"), id_column="rec",
                           patient_column="pid", age_column="age", sex_column="sex", fold_column="fold",
                           label_sets={"rhythm": "dx", "block": ["LBBB", "RBBB"]})
    assert skipped == {"3": "no row with rec '3' in labels.csv", "9": "no array for rec '9' in x.npy"}
    same(cache, {str(i): x[i] for i in (0, 1, 2, 4)})
    assert list(cache.patient_id) == ["p1", "p1", "2", "p4"]  # an empty patient cell: the record is its own
    assert cache.sex.tolist() == ["M", "F", "", "F"] and cache.fold.tolist() == [3, 3, 7, 1]
    np.testing.assert_array_equal(cache.age, [61, np.nan, 45.5, 30])
    # every label a label column holds, the rows without an array included; flag sets keep their column order
    assert cache.label_names == {"rhythm": ["AF", "LQT", "PVC", "SR"], "block": ["LBBB", "RBBB"]}
    assert cache.labels["rhythm"].tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert cache.labels["block"].tolist() == [[1, 0], [0, 1], [1, 1], [0, 0]]


@pytest.mark.parametrize("fortran", [False, True])
def test_a_stacked_npy_is_read_a_row_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fortran: bool) -> None:
    """One record is one ``os.pread`` of its bytes (C order) or a gather from a read-only map (Fortran order):
    never ``np.load`` of the file."""
    x = mv(np.random.default_rng(1), 4).astype(np.float32)
    np.save(tmp_path / "x.npy", np.asfortranarray(x) if fortran else x)
    preads: list[int] = []
    original = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        preads.append(n)
        return original(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    monkeypatch.setattr(np, "load", None)  # would fail if called
    source = ArraysSource(ArraysSource.Config(path=str(tmp_path / "x.npy"), fs_hz=500, leads=TWELVE))
    refs = source.records()
    assert [r.record_id for r in refs] == ["0", "1", "2", "3"]
    for i, ref in enumerate(refs):
        sig = source.read(ref.locator)
        assert sig.fs_hz == 500 and sig.lead_names == TWELVE
        np.testing.assert_array_equal(sig.data, x[i])
    assert preads == ([] if fortran else [x[0].nbytes] * 4)


def test_a_stacked_npy_cut_short_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", mv(np.random.default_rng(1), 4))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(CacheError, match=r"^source\.path: .*x\.npy is cut short: \d+ bytes, the array needs \d+$"):
        build(tmp_path / "c.h5", path=str(tmp_path / "x.npy"))


@pytest.mark.parametrize("compressed", [False, True])
def test_stacked_npz_with_ids_stored_or_compressed(tmp_path: Path, compressed: bool) -> None:
    """A .npz's stacked array with an id array beside it: mapped where stored, inflated forward where compressed;
    ids from a number array match the CSV's text."""
    x = mv(np.random.default_rng(2), 6)
    save = np.savez_compressed if compressed else np.savez
    ids = np.array([1001, 1002, 1003, 1004, 1005, 1006])
    save(tmp_path / "x.npz", signals=np.rint(x * 200).astype(np.int16), exam_id=ids, fs=np.float64(500))
    with zipfile.ZipFile(tmp_path / "x.npz") as zf:
        kinds = {zf.getinfo("signals.npy").compress_type}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}
    write_csv(tmp_path / "y.csv", [{"exam": i, "is_af": int(i % 2 == 0)} for i in ids.tolist()])
    cache, skipped = build(tmp_path / "c.h5", 2, path=str(tmp_path / "x.npz"), dataset="signals", ids="exam_id",
                           units=0.005, labels_csv=str(tmp_path / "y.csv"), id_column="exam",
                           label_sets={"af": ["is_af"]})
    assert skipped == {}
    same(cache, {str(e): np.rint(x[i] * 200) * 0.005 for i, e in enumerate(ids.tolist())})
    assert cache.labels["af"].ravel().tolist() == [0, 1, 0, 1, 0, 1]


def test_a_compressed_npz_is_inflated_once_front_to_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading every record of a compressed stacked array in order inflates it once, not once per record."""
    x = mv(np.random.default_rng(3), 20, t=1000).astype(np.float32)
    np.savez_compressed(tmp_path / "x.npz", x)  # one array of 3 dimensions: the stacked records, unnamed
    inflated = [0]
    original = zipfile.ZipExtFile.read

    def counting(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        data = original(self, n)
        inflated[0] += len(data)
        return data

    source = ArraysSource(ArraysSource.Config(path=str(tmp_path / "x.npz"), fs_hz=250, leads=TWELVE))
    refs = source.records()
    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    for i, ref in enumerate(refs):
        np.testing.assert_array_equal(source.read(ref.locator).data, x[i])
    assert x.nbytes <= inflated[0] < 1.1 * x.nbytes
    np.testing.assert_array_equal(source.read(refs[3].locator).data, x[3])  # backwards: right, only slower


def test_stacked_hdf5_dataset_is_read_by_row_with_attributes_checked(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    x = mv(np.random.default_rng(4), 5)
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        ds = h5.create_dataset("ecg/tracings", data=x.transpose(0, 2, 1).astype(np.float32), chunks=(2, 1500, 12))
        ds.attrs["sampling_rate"] = 500.0
        h5.attrs["leads"] = ["DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        h5["ecg/names"] = np.array([b"a", b"b", b"c", b"d", b"e"])
    cfg = dict(path=str(tmp_path / "x.h5"), dataset="ecg/tracings", ids="ecg/names", layout="time_leads")
    cache, skipped = build(tmp_path / "c.h5", 2, **cfg)
    assert skipped == {}
    same(cache, {rid: x[i] for i, rid in enumerate("abcde")})
    with h5py.File(tmp_path / "x.h5", "r+") as h5:
        h5["ecg/tracings"].attrs["sampling_rate"] = 250.0  # then the file disagrees
    with pytest.raises(CacheError, match=r"^source\.fs_hz: .*x\.h5 ecg/tracings states sampling_rate 250 Hz, "
                                         r"the recipe 500 Hz$"):
        build(tmp_path / "d.h5", **cfg)
    with h5py.File(tmp_path / "x.h5", "r+") as h5:
        h5["ecg/tracings"].attrs["sampling_rate"] = 500.0
    keys: list[Any] = []
    original = h5py.Dataset.__getitem__

    def spy(self: h5py.Dataset, key: Any) -> Any:
        if self.name == "/ecg/tracings":
            keys.append(key)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    source = ArraysSource(ArraysSource.Config(fs_hz=500, leads=TWELVE, **cfg))
    sig = source.read(source.records()[2].locator)
    assert keys == [2] and sig.data.shape == (12, 1500)  # one row: a multi-GB dataset is never read whole


# --------------------------------------------------------------------------------------- one array per record


def test_npz_of_one_array_per_record_with_eight_leads(tmp_path: Path) -> None:
    """Records of different lengths named by their key; 8 stored leads: the other 4 absent, or derived."""
    rng = np.random.default_rng(5)
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    arrays = {f"r{i}": rng.normal(0, 0.4, (8, 1000 + 250 * i)).round(3) for i in range(3)}
    np.savez(tmp_path / "x.npz", **arrays, leads=np.array(eight), fs_hz=500)
    absent, _ = build(tmp_path / "a.h5", path=str(tmp_path / "x.npz"), leads=eight)
    derived, _ = build(tmp_path / "d.h5", path=str(tmp_path / "x.npz"), leads=eight, derive_limb_leads=True)
    assert list(absent.record_id) == ["r0", "r1", "r2"] and absent.lengths.tolist() == [1000, 1250, 1500]
    assert absent.present.sum(axis=1).tolist() == [8, 8, 8] and derived.present.all()
    for i, rid in enumerate(absent.record_id):
        full = np.zeros((12, arrays[rid].shape[1]))
        for j, lead in enumerate(eight):
            full[TWELVE.index(lead)] = arrays[rid][j]
        np.testing.assert_allclose(absent.read(i), full, atol=QUANTUM, rtol=0)
        lead_i, lead_ii = arrays[rid][0], arrays[rid][1]
        np.testing.assert_allclose(derived.read(i)[TWELVE.index("aVF")], lead_ii - lead_i / 2, atol=2 * QUANTUM)
    with pytest.raises(CacheError, match=r"^source\.leads: .*x\.npz states leads \['I', 'II', 'V1'"):
        build(tmp_path / "e.h5", path=str(tmp_path / "x.npz"), leads=eight[::-1])


def test_hdf5_group_of_records_skips_each_bad_one_with_its_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    good = {"site1/a": mv(rng, 1)[0], "site1/b": mv(rng, 1, t=2000)[0], "site2/c": mv(rng, 1)[0]}
    with h5py.File(tmp_path / "x.hdf5", "w") as h5:
        for name, data in good.items():
            h5[f"records/{name}"] = data
        h5["records/site2/d_rate"] = good["site2/c"]
        h5["records/site2/d_rate"].attrs["fs"] = 250
        h5["records/site2/e_rank"] = good["site2/c"][None]
        h5["records/site2/f_layout"] = good["site2/c"].T
        nan = good["site2/c"].copy()
        nan[3, 10:13] = np.nan
        h5["records/site2/g_nan"] = nan
        h5["records/site2/h_text"] = np.array([b"not", b"numbers"])
    cache, skipped = build(tmp_path / "c.h5", 2, path=str(tmp_path / "x.hdf5"), dataset="records")
    same(cache, good)
    assert skipped == {
        "site2/d_rate": "source.fs_hz: site2/d_rate states fs 250 Hz, the recipe 500 Hz",
        "site2/e_rank": "site2/e_rank: shape (1, 12, 1500), expected 2 dimensions (leads, time)",
        "site2/f_layout": "site2/f_layout: record shape (1500, 12) contradicts source.layout 'leads_time' with 12 "
                          "source.leads (the leads look like the other axis: layout 'time_leads'?)",
        "site2/g_nan": "3 NaN/infinite samples",
        "site2/h_text": "site2/h_text: |S7 values, not numbers",
    }


def test_folder_of_npy_and_npz_files(tmp_path: Path) -> None:
    """One record per file, ids = paths under the folder; a dropped channel ('-'); a CSV keyed by those ids."""
    rng = np.random.default_rng(7)
    root = tmp_path / "ecgs"
    (root / "sub").mkdir(parents=True)
    x = mv(rng, 4)
    extra = rng.normal(0, 1, (4, 1, 1500))  # a respiration channel stored after the leads
    stored = np.concatenate([x, extra], axis=1) / 1000  # volts
    np.save(root / "a.npy", stored[0])
    np.savez(root / "sub" / "b.npz", sig=stored[1], fs_hz=500)
    np.savez_compressed(root / "c.npz", sig=stored[2])
    np.savez(root / "d_rate.npz", sig=stored[3], fs_hz=360)
    np.savez(root / "e_two.npz", one=stored[3], two=stored[3])
    np.savez(root / "sub" / "f_none.npz", fs_hz=500)
    (root / "g_damaged.npy").write_bytes(b"\x93NUMPY not really")
    (root / "notes.txt").write_text("not a record")
    write_csv(tmp_path / "labels.csv", [{"record_id": rid, "label": lab} for rid, lab in
                                        [("a", "AF"), ("sub/b", "NORM"), ("c", ""), ("d_rate", "AF"), ("e_two", ""),
                                         ("sub/f_none", ""), ("g_damaged", "")]])
    cache, skipped = build(tmp_path / "c.h5", 2, path=str(root), units="V", leads=[*TWELVE, "-"],
                           labels_csv=str(tmp_path / "labels.csv"), label_sets={"label": "label"})
    same(cache, {"a": x[0], "sub/b": x[1], "c": x[2]})
    assert list(cache.record_id) == ["a", "c", "sub/b"]  # sorted by path
    assert cache.labels["label"].tolist() == [[1, 0], [0, 0], [0, 1]]
    assert skipped["d_rate"] == "source.fs_hz: d_rate.npz states fs_hz 360 Hz, the recipe 500 Hz"
    assert skipped["e_two"] == "e_two.npz holds arrays ['one', 'two']: name the signal in source.dataset"
    assert skipped["sub/f_none"] == "f_none.npz holds no signal array (its arrays: ['fs_hz'])"
    assert skipped["g_damaged"].startswith("ValueError: ") and "\n" not in skipped["g_damaged"]
    # naming the array: e_two's 'one' is read; the files without it are skipped saying so
    cache, skipped = build(tmp_path / "n.h5", path=str(root), units="V", leads=[*TWELVE, "-"], dataset="one")
    assert list(cache.record_id) == ["a", "e_two"]  # a .npy holds one array, named or not
    assert skipped["sub/b"] == "b.npz has no array 'one' (source.dataset; has ['sig', 'fs_hz'])"


def test_without_a_labels_csv_each_record_is_its_own_patient(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", mv(np.random.default_rng(8), 3))
    cache, _ = build(tmp_path / "c.h5", path=str(tmp_path / "x.npy"))
    assert list(cache.patient_id) == ["0", "1", "2"] and cache.label_names == {}
    assert len(set(cache.fold.tolist()) - set(range(1, 11))) == 0


# ----------------------------------------------------------------------------------------------- bad input


def _files(tmp: Path) -> None:
    x = mv(np.random.default_rng(9), 3)
    np.save(tmp / "x.npy", x)
    np.save(tmp / "flat.npy", x[0])
    np.savez(tmp / "z.npz", x=x, ids=np.array([1, 2]), fs=np.array(250.0))
    with h5py.File(tmp / "x.h5", "w") as h5:
        h5["tracings"] = x
    (tmp / "x.txt").write_text("1,2,3\n")
    (tmp / "bad.npz").write_bytes(b"PK\x03\x04 cut short")
    (tmp / "cut.h5").write_bytes((tmp / "x.h5").read_bytes()[:3000])
    (tmp / "latin.csv").write_bytes("record_id,sex\n0,M\n1,m\xe4nnlich\n".encode("latin-1"))
    write_csv(tmp / "ok.csv", [{"record_id": i, "sex": "M", "af": 1} for i in range(3)])
    write_csv(tmp / "twice.csv", [{"record_id": i % 2} for i in range(3)])
    write_csv(tmp / "sex.csv", [{"record_id": 0, "sex": "1"}])
    write_csv(tmp / "flag.csv", [{"record_id": 0, "af": "maybe"}])
    write_csv(tmp / "noid.csv", [{"id": 0}])


BAD = [
    ({"path": "nowhere.npy"}, r"^source\.path: .*nowhere\.npy not found"),
    ({"path": "x.txt"}, r"^source\.path: .*x\.txt is neither a \.npy, \.npz or HDF5 file nor a folder$"),
    ({"path": "flat.npy"}, r"^source\.path: .*flat\.npy has shape \(12, 1500\): expected 3 dimensions "
                           r"\(records, leads, T\) for source\.layout 'leads_time'$"),
    ({"path": "x.npy", "layout": "time_leads"}, r"^source\.layout: .*x\.npy: record shape \(12, 1500\) contradicts "
                                                r"source\.layout 'time_leads' with 12 source\.leads \(the leads look"),
    ({"path": "x.npy", "leads": TWELVE[:8]}, r"^source\.layout: .*x\.npy: record shape \(12, 1500\) contradicts"),
    ({"path": "bad.npz"}, r"^source\.path: .*bad\.npz: BadZipFile: File is not a zip file$"),
    ({"path": "cut.h5", "dataset": "tracings"}, r"^source\.path: .*cut\.h5: OSError: Unable to (synchronously )?open"),
    ({"path": "x.npy", "labels_csv": "latin.csv"}, r"^source\.labels_csv: .*latin\.csv is not UTF-8 text \(invalid"),
    ({"path": "x.npy", "dataset": "x"}, r"^source\.dataset: .*x\.npy is a \.npy file, which holds one array"),
    ({"path": "z.npz", "dataset": "x"}, r"^source\.fs_hz: .*z\.npz x states fs 250 Hz, the recipe 500 Hz$"),
    ({"path": "z.npz", "fs_hz": 250, "ids": "ids"}, r"^source\.ids: .*z\.npz ids has shape \(2,\), expected \(3,\)"),
    ({"path": "z.npz", "fs_hz": 250, "dataset": "y"}, r"^source\.dataset: .*z\.npz has no array 'y' \(has \['x'"),
    ({"path": "x.h5"}, r"^source\.dataset: .*x\.h5 is HDF5: name the dataset of signals \(it has \['tracings'\]\)$"),
    ({"path": "x.h5", "dataset": "signals"}, r"^source\.dataset: .*x\.h5 has no dataset 'signals'"),
    ({"path": "x.npy", "labels_csv": "none.csv"}, r"^source\.labels_csv: .*none\.csv not found"),
    ({"path": "x.npy", "labels_csv": "noid.csv"}, r"^source\.id_column: .*noid\.csv has no column 'record_id' "
                                                  r"\(has \['id'\]\)$"),
    ({"path": "x.npy", "labels_csv": "ok.csv", "label_sets": {"dx": ["af", "rbbb"]}},
     r"^source\.label_sets\.dx: .*ok\.csv has no column 'rbbb'"),
    ({"path": "x.npy", "labels_csv": "twice.csv"}, r"^source\.id_column: .*twice\.csv line 4: record '0' is listed twice$"),
    ({"path": "x.npy", "labels_csv": "sex.csv", "sex_column": "sex"},
     r"^source\.sex_column: .*sex\.csv line 2: '1' is not a sex \(M, F, male, female; U, unknown or empty\)$"),
    ({"path": "x.npy", "labels_csv": "flag.csv", "label_sets": {"af": ["af"]}},
     r"^source\.label_sets\.af: .*flag\.csv line 2: 'maybe' is not a 0/1 flag \(column 'af'\)$"),
]


@pytest.mark.parametrize(("source", "message"), BAD, ids=[m.split(":")[0][1:] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_is_one_line_naming_the_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         source: dict[str, Any], message: str) -> None:
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CacheError, match=message) as err:
        build(tmp_path / "c.h5", **source)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("leads", ["I", "II", "V7"], r"leads\[2\] 'V7' is not a lead name"),
    ("leads", ["II", "MLII"], r"'II' and 'MLII' are both lead II"),
    ("leads", ["-", "-"], r"no ECG lead"),
    ("units", "furlongs", r"'furlongs' is neither a voltage unit"),
    ("units", -2, r"-2.0 mV per stored unit: must be a positive number"),
    ("layout", "leads_last", r"leads_time"),
    ("label_sets", {"a/b": "x"}, r"label set name 'a/b'"),
    ("label_sets", {"dx": []}, r"label set 'dx'"),
    ("fs_hz", 0, r"greater than 0"),
])
def test_the_recipe_refuses_what_no_data_could_fix(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        recipe(Path("c.h5"), path="x.npy", labels_csv="y.csv", **{field: value})
    with pytest.raises(ValidationError, match=r"sex_column, label_sets read the labels CSV: set labels_csv"):
        recipe(Path("c.h5"), path="x.npy", sex_column="sex", label_sets={"dx": "dx"})


def test_the_cli_prints_one_line_for_a_contradicting_layout(tmp_path: Path) -> None:
    _files(tmp_path)
    spec = tmp_path / "r.toml"
    spec.write_text(f'schema_version = 1\nname = "t"\nout = "{tmp_path / "c.h5"}"\n[signal]\nfs_hz = 500\n'
                    f'[source]\nkind = "arrays"\npath = "{tmp_path / "x.npy"}"\nfs_hz = 500\nlayout = "time_leads"\n'
                    f'leads = {TWELVE!r}\n'.replace("'", '"'))
    res = CliRunner().invoke(app, ["cache", "build", str(spec), "--workers", "1"])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]  # after the progress bar
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{spec}: source.layout: " in errors[0] and "layout 'leads_time'?)" in errors[0]  # the console elides


# ---------------------------------------------------------------------------------------- the shipped recipe


def write_example(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The data recipes/caches/arrays_example.toml describes, tiny: 6 records of 4 s at 500 Hz, int16 uV,
    (N, T, 12); the CSV lacks row 5. Returns record id -> (12, T) mV."""
    (root / "my_ecgs").mkdir()
    x = mv(rng, 6, t=2000)
    np.save(root / "my_ecgs" / "signals.npy", np.rint(x.transpose(0, 2, 1) * 1000).astype(np.int16))
    write_csv(root / "my_ecgs" / "labels.csv", [
        {"record_id": i, "patient": f"p{i // 2}", "age": 50 + i, "sex": "MF"[i % 2], "rhythm": ["SR", "AF;PVC"][i % 2],
         "LBBB": int(i == 1), "RBBB": int(i == 2), "LVH": 0} for i in range(5)])
    return {str(i): x[i] for i in range(6)}


def test_the_shipped_example_recipe_builds_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_example(tmp_path, np.random.default_rng(10))
    monkeypatch.chdir(tmp_path)  # the recipe's paths are relative to the working directory
    res = CliRunner().invoke(app, ["cache", "build", str(ROOT / "recipes/caches/arrays_example.toml"),
                                   "--out", "c.h5", "--workers", "2"])
    assert res.exit_code == 0, res.output
    cache = Cache(tmp_path / "c.h5")
    assert list(cache.record_id) == ["0", "1", "2", "3", "4"] and dict(cache.skipped) == {
        "5": "no row with record_id '5' in labels.csv"}
    assert cache.fs_hz == 250 and cache.label_names == {"rhythm": ["AF", "PVC", "SR"], "diagnosis": ["LBBB", "RBBB", "LVH"]}
    assert cache.labels["diagnosis"].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert list(cache.patient_id) == ["p0", "p0", "p1", "p1", "p2"] and cache.sex.tolist() == ["M", "F", "M", "F", "M"]
    assert cache.lengths.tolist() == [1000] * 5  # 4 s at 250 Hz
    recipe = load_cache_recipe(ROOT / "recipes/caches/arrays_example.toml")
    for i, rid in enumerate(cache.record_id):
        at_250 = preprocess(expected[rid].astype(np.float32), 500, 250, recipe.signal.filter)
        np.testing.assert_allclose(cache.read(i), at_250, atol=QUANTUM, rtol=0)
