"""MIMIC-IV-ECG, CODE-15% and wfdb_folder's patient_from: fixtures written in tmp_path from the datasets'
documented layouts, listed, cached with `build_cache`, and the cache checked against what was written."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import wfdb
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.data.cache import SCALE_MV, Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import info
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.data.record import RecordError, Signal
from ecgforge.data.sources import SOURCES
from ecgforge.data.sources.base import Source, any_error_is_a_reason
from ecgforge.data.sources.code15 import LABELS, Code15Source, trim_padding
from ecgforge.data.sources.folder import WFDBFolderSource, patient_of
from ecgforge.data.sources.mimic_iv_ecg import MimicIVECGSource

ROOT = Path(__file__).resolve().parents[2]
QUANTUM = SCALE_MV / 2 + 1e-6  # the cache rounds to 1 uV steps; float32 adds far less than 1e-6 mV


def cache_of(source: dict, out: Path, fs_hz: float, workers: int = 1) -> tuple[dict, Cache]:
    spec = CacheRecipe.model_validate({"name": "t", "out": str(out), "source": source, "signal": {"fs_hz": fs_hz}})
    build_cache(spec, workers=workers)
    return info(out), Cache(out)


# ------------------------------------------------------------------------------------------ the interface


def test_every_source_follows_the_interface() -> None:
    """Each registered source is a `Source` built as ``cls(cfg, ctx)`` from its ``Config``, and has a reader of
    its own: nothing is left to a second registry or a path prefix."""
    for kind in SOURCES:
        cls = SOURCES[kind]
        assert issubclass(cls, Source) and SOURCES.config(kind) is cls.Config, kind
        assert cls.read is not Source.read and cls.iter_records is not Source.iter_records, kind
    with pytest.raises(TypeError, match="abstract"):
        Source(Code15Source.Config(path="."))  # type: ignore[abstract]


def test_a_wild_format_reader_turns_any_failure_into_a_one_line_reason() -> None:
    @any_error_is_a_reason
    def read(locator: str) -> Signal:  # a reader with a bug: the build must get a reason, not a traceback
        if locator == "oom":
            raise MemoryError
        if locator == "reason":
            raise RecordError("its own reason")
        raise ZeroDivisionError(f"bad {locator}\nsecond line")

    with pytest.raises(RecordError, match=r"^ZeroDivisionError: bad x:1$"):
        read("x:1")
    with pytest.raises(RecordError, match=r"^out of memory reading the record$"):
        read("oom")
    with pytest.raises(RecordError, match=r"^its own reason$"):
        read("reason")


# ----------------------------------------------------------------------------------------- MIMIC-IV-ECG

# MIMIC-IV-ECG headers list aVF before aVL (e.g. files/p1000/p10000032/s40689238/40689238.hea).
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
SUBJECTS = {"10000032": ["40689238", "44458630", "49036311"], "10000635": ["43522917"],
            "10001884": ["45227415", "47188405"], "10002428": ["41211234"]}


def write_mimic(root: Path, rng: np.random.Generator, missing: str | None = None, listing: bool = True) -> dict:
    """A MIMIC-IV-ECG tree (500 Hz, 2 s instead of 10 s, format 16, gain 200/mV as the dataset's headers)
    with record_list.csv and machine_measurements.csv. Returns study -> (12, T) mV in header order."""
    written, rows, meas = {}, [], []
    for subject, studies in SUBJECTS.items():
        for study in studies:
            rel = f"files/p{subject[:4]}/p{subject}/s{study}/{study}"
            rows.append({"subject_id": subject, "study_id": study, "file_name": study,
                         "ecg_time": "2180-07-23 08:44:00", "path": rel})
            meas.append({"subject_id": subject, "study_id": study, "report_0": "Sinus rhythm",
                         "report_1": "", "report_2": "Borderline ECG", "rr_interval": "659", "p_onset": "29999"})
            if study == missing:
                continue
            digital = rng.integers(-400, 400, size=(1000, 12)).astype(np.int32)
            (root / rel).parent.mkdir(parents=True)
            wfdb.wrsamp(study, fs=500, units=["mV"] * 12, sig_name=MIMIC_LEADS, d_signal=digital, fmt=["16"] * 12,
                        adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str((root / rel).parent))
            written[study] = digital.T / 200.0
    if listing:
        for name, table in (("record_list.csv", rows), ("machine_measurements.csv", meas)):
            with open(root / name, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(table[0]))
                w.writeheader()
                w.writerows(table)
    return written


def test_mimic_listing_reads_the_record_list_and_measurements(tmp_path: Path) -> None:
    write_mimic(tmp_path, np.random.default_rng(0))
    refs = MimicIVECGSource(MimicIVECGSource.Config(path=str(tmp_path))).records()
    assert [r.record_id for r in refs] == [s for studies in SUBJECTS.values() for s in studies]
    by_id = {r.record_id: r for r in refs}
    assert by_id["45227415"].patient_id == "10001884"
    assert by_id["45227415"].locator == str(tmp_path / "files/p1000/p10001884/s45227415/45227415")
    meta = by_id["40689238"].meta
    assert meta["report"] == "Sinus rhythm; Borderline ECG" and meta["study_id"] == 40689238
    assert meta["rr_interval"] == 659.0 and math.isnan(meta["p_onset"])  # 29999: not measured
    # Without the CSVs the tree is listed: the same studies, subjects from the folder names.
    for name in ("record_list.csv", "machine_measurements.csv"):
        (tmp_path / name).unlink()
    tree = MimicIVECGSource(MimicIVECGSource.Config(path=str(tmp_path))).records()
    assert sorted((r.record_id, r.patient_id, r.locator) for r in tree) == sorted(
        (r.record_id, r.patient_id, r.locator) for r in refs)
    assert "report" not in tree[0].meta


def test_mimic_patients_csv_adds_sex_and_age_at_the_ecg(tmp_path: Path) -> None:
    write_mimic(tmp_path, np.random.default_rng(0))
    (tmp_path / "patients.csv").write_text(
        "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n10000032,F,52,2180,2014 - 2016,\n"
        "10000635,M,70,2170,2008 - 2010,\n")
    cfg = MimicIVECGSource.Config(path=str(tmp_path), patients_csv=str(tmp_path / "patients.csv"))
    refs = MimicIVECGSource(cfg).records()
    by_id = {r.record_id: r for r in refs}
    assert (by_id["40689238"].meta["sex"], by_id["40689238"].meta["age"]) == ("F", 52.0)
    assert (by_id["43522917"].meta["sex"], by_id["43522917"].meta["age"]) == ("M", 80.0)  # ECG in 2180
    assert by_id["45227415"].meta["sex"] == "" and math.isnan(by_id["45227415"].meta["age"])


def test_mimic_cache_maps_leads_by_name_and_splits_by_subject(tmp_path: Path) -> None:
    written = write_mimic(tmp_path / "mimic", np.random.default_rng(1), missing="41211234")
    summary, cache = cache_of({"kind": "mimic_iv_ecg", "path": str(tmp_path / "mimic")}, tmp_path / "c.h5", 500,
                              workers=2)
    assert summary["n_records"] == 6 and summary["n_patients"] == 3
    assert [s["record"] for s in summary["skipped"]] == ["41211234"]
    assert "41211234.hea" in summary["skipped"][0]["reason"]
    # Header order I II III aVR aVF aVL V1..V6 -> canonical order: aVL and aVF swap places.
    order = [MIMIC_LEADS.index(lead) for lead in CANONICAL_LEADS]
    for i, rid in enumerate(cache.record_id):
        np.testing.assert_allclose(cache.read(i), written[rid][order], atol=QUANTUM, rtol=0)
    folds: dict[str, set[int]] = {}
    for patient, fold in zip(cache.patient_id, cache.fold, strict=True):
        folds.setdefault(patient, set()).add(int(fold))
    assert all(len(f) == 1 for f in folds.values()) and all(1 <= min(f) <= 10 for f in folds.values())
    assert list(cache.meta["report"]) == ["Sinus rhythm; Borderline ECG"] * 6


def test_mimic_recipe_builds_through_the_cli_and_no_subject_is_in_two_folds(tmp_path: Path) -> None:
    write_mimic(tmp_path / "mimic", np.random.default_rng(2))
    out = tmp_path / "m.h5"
    runner = CliRunner()
    res = runner.invoke(app, ["cache", "build", str(ROOT / "recipes/caches/mimic_iv_ecg.toml"), "--source",
                              str(tmp_path / "mimic"), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["cache", "info", str(out), "--json"])
    summary = json.loads(res.stdout)
    assert summary["n_records"] == 7 and summary["n_patients"] == 4 and summary["fs_hz"] == 500
    cache = Cache(out)
    pairs = {(p, int(f)) for p, f in zip(cache.patient_id, cache.fold, strict=True)}
    assert len(pairs) == len(SUBJECTS)


# ---------------------------------------------------------------------------------------------- CODE-15%

CODE15_COLUMNS = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
                  "patient_id", "death", "timey", "normal_ecg", "trace_file"]


def write_code15(root: Path, rng: np.random.Generator) -> tuple[dict[int, np.ndarray], list[dict]]:
    """Two part files as the Zenodo description documents them: ``tracings`` (N, 4096, 12) float32 in mV,
    zero-padded around shorter recordings (both ends), ``exam_id`` (N,); the last row of each part is the
    all-zero row the released files end with. Returns exam -> (12, T) mV without padding, and the CSV rows."""
    root.mkdir(parents=True, exist_ok=True)
    lengths = {0: [4096, 4000, 2800], 1: [3600, 4096]}
    exams, rows, exam_id = {}, [], 1000
    patient_of_exam = [501, 501, 502, 503, 501]
    k = 0
    for part, lens in lengths.items():
        tracings = np.zeros((len(lens) + 1, 4096, 12), np.float32)
        ids = np.zeros(len(lens) + 1, np.int64)
        for i, n in enumerate(lens):
            x = rng.integers(-1500, 1500, size=(n, 12)).astype(np.float32) / 1000  # mV, on the 1 uV grid
            x[[0, -1]] += 0.5  # no recorded row is all zero: the trim must keep every real sample
            start = (4096 - n) // 2
            tracings[i, start : start + n] = x
            exam_id += 7
            ids[i] = exam_id
            exams[exam_id] = x.T
            flags = {lab: "False" for lab in LABELS}
            flags[LABELS[k % 6]] = "True"
            if k == 4:
                flags["AF"] = flags["RBBB"] = "True"
            rows.append({"exam_id": exam_id, "age": 40 + k, "is_male": "True" if k % 2 else "False",
                         "nn_predicted_age": 41.5 + k, **flags, "patient_id": patient_of_exam[k],
                         "death": "False" if k == 0 else "", "timey": "5.2" if k == 0 else "",
                         "normal_ecg": "False", "trace_file": f"exams_part{part}.hdf5"})
            k += 1
        with h5py.File(root / f"exams_part{part}.hdf5", "w") as h5:
            h5["tracings"], h5["exam_id"] = tracings, ids
    base = {lab: "False" for lab in LABELS} | {"age": 60, "is_male": "True", "nn_predicted_age": 60.0,
                                              "death": "", "timey": "", "normal_ecg": "True"}
    rows.append({**base, "exam_id": 9001, "patient_id": 600, "trace_file": "exams_part0.hdf5"})  # not in part
    rows.append({**base, "exam_id": 9002, "patient_id": 601, "trace_file": "exams_part7.hdf5"})  # no such file
    with open(root / "exams.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CODE15_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return exams, rows


def test_trim_padding_keeps_the_recording_between_the_zero_rows() -> None:
    x = np.zeros((10, 3), np.float32)
    x[2, 1], x[6, 0] = 1.0, -1.0  # inner all-zero rows (3..5) are part of the recording
    assert trim_padding(x).shape == (5, 3) and trim_padding(x)[0, 1] == 1.0
    assert trim_padding(np.zeros((4, 3))).shape == (0, 3)


def test_code15_listing_labels_and_metadata(tmp_path: Path) -> None:
    _, rows = write_code15(tmp_path, np.random.default_rng(0))
    src = Code15Source(Code15Source.Config(path=str(tmp_path)))
    refs = src.records()
    assert src.label_names() == {"diagnosis": ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]}
    assert [r.record_id for r in refs] == [str(r["exam_id"]) for r in rows]
    first = refs[0]
    assert (first.patient_id, first.meta["sex"], first.meta["age"]) == ("501", "F", 40.0)
    assert (first.meta["death"], first.meta["timey"], first.meta["trace_file"]) == (0.0, 5.2, "exams_part0.hdf5")
    assert math.isnan(refs[1].meta["death"]) and refs[1].meta["sex"] == "M"
    assert refs[4].labels["diagnosis"] == ["RBBB", "AF"]


def test_code15_cache_trims_padding_and_reports_missing_exams(tmp_path: Path) -> None:
    exams, rows = write_code15(tmp_path / "code15", np.random.default_rng(3))
    summary, cache = cache_of({"kind": "code15", "path": str(tmp_path / "code15")}, tmp_path / "c.h5", 400,
                              workers=2)
    assert summary["n_records"] == 5 and summary["n_patients"] == 3
    assert summary["sex"] == {"F": 3, "M": 2}
    skipped = {s["record"]: s["reason"] for s in summary["skipped"]}
    assert skipped == {"9001": "exam 9001 is not in exams_part0.hdf5 (its exam_id column)",
                       "9002": "trace file exams_part7.hdf5 not found"}
    expected = Counter(lab for r in rows[:5] for lab in LABELS if r[lab] == "True")
    assert summary["label_sets"]["diagnosis"] == {lab: expected.get(lab, 0) for lab in LABELS}
    for i, rid in enumerate(cache.record_id):
        assert cache.lengths[i] == exams[int(rid)].shape[1]  # padding gone, nothing else
        np.testing.assert_allclose(cache.read(i), exams[int(rid)], atol=QUANTUM, rtol=0)


def test_code15_reader_reads_one_row_not_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader indexes ``tracings`` with a single row (an h5py hyperslab); reading the whole dataset
    (``[()]`` / ``[:]``) would load a 1.5 GB part file per exam."""
    write_code15(tmp_path, np.random.default_rng(0))
    keys: list[object] = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):  # noqa: ANN001, ANN202
        if self.name == "/tracings":
            keys.append(key)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    source = Code15Source(Code15Source.Config(path=str(tmp_path)))
    sig = source.read(source.records()[1].locator)
    assert keys == [1] and sig.data.shape == (12, 4000) and sig.fs_hz == 400.0


def test_code15_names_a_missing_column(tmp_path: Path) -> None:
    (tmp_path / "exams.csv").write_text("exam_id,age,is_male,patient_id\n1,2,True,3\n")
    with pytest.raises(ValueError, match=r"^source\.path: .*exams\.csv has no column trace_file, 1dAVb"):
        Code15Source(Code15Source.Config(path=str(tmp_path))).records()


# -------------------------------------------------------------------------------- wfdb_folder patient_from


def test_patient_of_path_parts_and_patterns() -> None:
    rid = "p1000/p10000032/s40689238/40689238"
    assert patient_of(rid, None) == rid
    assert patient_of(rid, 1) == "p10000032" and patient_of(rid, -2) == "s40689238"
    assert patient_of(rid, r"/p(?P<patient>\d+)/") == "10000032"
    with pytest.raises(ValueError, match=r"source\.patient_from: record .* has no path part 4"):
        patient_of(rid, 4)
    with pytest.raises(ValueError, match=r"source\.patient_from: .* does not match record"):
        patient_of(rid, r"^x(?P<patient>\d+)")


def test_patient_from_validation() -> None:
    for bad in ("p(\\d+)", "p(?P<patient>"):
        with pytest.raises(ValueError):
            CacheRecipe.model_validate({"name": "t", "out": "x.h5", "signal": {"fs_hz": 500},
                                        "source": {"kind": "wfdb_folder", "path": "/x", "patient_from": bad}})


def test_wfdb_folder_patient_from_splits_a_mimic_tree_by_subject(tmp_path: Path) -> None:
    write_mimic(tmp_path, np.random.default_rng(0), listing=False)
    cfg = WFDBFolderSource.Config(path=str(tmp_path / "files"), patient_from=r"p(?P<patient>\d{8})/")
    refs = WFDBFolderSource(cfg).records()
    assert Counter(r.patient_id for r in refs) == {s: len(v) for s, v in SUBJECTS.items()}
    folds = {(r.patient_id, r.meta["fold"]) for r in refs}
    assert len(folds) == len(SUBJECTS)
    plain = WFDBFolderSource(WFDBFolderSource.Config(path=str(tmp_path / "files")))
    assert {r.meta["fold"] for r in plain.records()} == {-1}
    summary, _ = cache_of({"kind": "wfdb_folder", "path": str(tmp_path / "files"), "patient_from": 1},
                          tmp_path / "c.h5", 500)
    assert summary["n_records"] == 7 and summary["n_patients"] == 4


def test_code15_wild_part_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    """Part files as they go wrong in the wild: an exam whose row is padding only, a part with 8 leads, a part
    cut short (not a readable HDF5 file). Each exam is listed as skipped with the reason; the rest is stored."""
    root = tmp_path / "code15"
    exams, rows = write_code15(root, np.random.default_rng(5))
    with h5py.File(root / "exams_part0.hdf5", "r+") as h5:  # exam of row 1: all zeros
        h5["tracings"][1] = np.zeros((4096, 12), np.float32)
    with h5py.File(root / "exams_part8.hdf5", "w") as h5:
        h5["tracings"], h5["exam_id"] = np.ones((1, 4096, 8), np.float32), np.array([7001])
    cut = (root / "exams_part1.hdf5").read_bytes()
    (root / "exams_part9.hdf5").write_bytes(cut[: len(cut) // 3])
    base = {k: v for k, v in rows[0].items() if k not in ("exam_id", "patient_id", "trace_file")}
    extra = [{**base, "exam_id": 7001, "patient_id": 701, "trace_file": "exams_part8.hdf5"},
             {**base, "exam_id": 7002, "patient_id": 702, "trace_file": "exams_part9.hdf5"}]
    with open(root / "exams.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=CODE15_COLUMNS).writerows(extra)
    summary, cache = cache_of({"kind": "code15", "path": str(root)}, tmp_path / "c.h5", 400, workers=2)
    skipped = {s["record"]: s["reason"] for s in summary["skipped"]}
    zero = str(rows[1]["exam_id"])
    assert skipped[zero] == f"exam {zero}: the tracing is all zeros (padding only)"
    assert skipped["7001"].startswith("exams_part8.hdf5: tracings of shape (1, 4096, 8)")
    assert skipped["7002"] == "exams_part9.hdf5 is not a readable part file (no HDF5 exam_id dataset could be read)"
    assert summary["n_records"] == 4 == len(cache)
    for i, rid in enumerate(cache.record_id):
        np.testing.assert_allclose(cache.read(i), exams[int(rid)], atol=QUANTUM, rtol=0)
