"""The synthetic source: lead algebra, WFDB round trip, determinism, atomicity, and labels that the signal
itself carries (rate, RR irregularity, QRS width, P waves, patient morphology, sex) measured with simple
hand-made features, the way a cardiologist's ruler would."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import wfdb
from pydantic import ValidationError
from scipy.signal import butter, find_peaks, sosfiltfilt

from ecgforge.data.sources import synthetic as syn
from ecgforge.data.sources.synthetic import (
    LEADS,
    SyntheticDataError,
    SyntheticSource,
    SyntheticSourceConfig,
    generate,
    make_record,
)

FS = 500.0
SET = dict(n_patients=30, records_per_patient=3, duration_s=10.0, fs_hz=FS, seed=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]], list[np.ndarray]]:
    """90 records of 30 patients, generated once and read back through wfdb: (folder, label rows, signals)."""
    root = generate(tmp_path_factory.mktemp("synthetic") / "set", **SET)
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    signals = [wfdb.rdrecord(str(root / r["record"])).p_signal.T for r in rows]
    return root, rows, signals


# ---------------------------------------------------------------------------------------- features


def _bandpass(x: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    return sosfiltfilt(butter(2, [lo_hz, hi_hz], btype="band", fs=FS, output="sos"), x, axis=-1)


def _r_peaks(lead_ii: np.ndarray) -> np.ndarray:
    """QRS sample indices from lead II: 8-30 Hz band energy, 80 ms moving average, peaks >= 250 ms apart."""
    energy = _bandpass(lead_ii, 8.0, 30.0) ** 2
    w = int(0.08 * FS)
    energy = np.convolve(energy, np.ones(w) / w, mode="same")
    peaks, _ = find_peaks(energy, distance=int(0.25 * FS), height=0.2 * np.percentile(energy, 99))
    return peaks


def _features(x: np.ndarray) -> dict[str, object]:
    """``x (12, T)`` mV -> heart rate (bpm), RR irregularity, QRS width (s), P-wave size (mV), mean beat."""
    peaks = _r_peaks(x[1])
    rr_s = np.diff(peaks) / FS
    y = _bandpass(x, 0.5, 40.0)
    h = int(0.25 * FS)
    inner = peaks[(peaks > h) & (peaks < x.shape[1] - h)]
    beat = np.mean([y[:, p - h : p + h + 1] for p in inner], axis=0)  # (12, 251): -250..+250 ms
    beat -= np.median(beat, axis=1, keepdims=True)
    # QRS: where the spatial velocity of the mean beat exceeds 20 % of its peak (P and T are much slower).
    qrs = beat[:, h - int(0.15 * FS) : h + int(0.15 * FS)]
    velocity = np.sqrt((np.diff(qrs, axis=1) ** 2).sum(axis=0)) * FS
    fast = np.nonzero(velocity > 0.2 * velocity.max())[0]
    return {
        "hr_bpm": 60.0 / rr_s.mean(),
        "irregularity": np.median(np.abs(np.diff(rr_s))) / np.median(rr_s),
        "qrs_s": (fast[-1] - fast[0]) / FS,
        "p_mv": np.ptp(beat[1, h - int(0.20 * FS) : h - int(0.07 * FS)]),  # lead II, 200-70 ms before R
        "beat": beat,
    }


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


# ----------------------------------------------------------------------------------------- config


def test_config_defaults_and_validation() -> None:
    cfg = SyntheticSourceConfig(path="data/synthetic")
    assert (cfg.kind, cfg.n_patients, cfg.records_per_patient, cfg.duration_s, cfg.fs_hz, cfg.seed) == (
        "synthetic",
        100,
        4,
        10.0,
        500.0,
        0,
    )
    assert cfg.label_sets == ["rhythm", "conduction", "sex"]
    for bad in (
        {"n_patients": 0},
        {"records_per_patient": 0},
        {"duration_s": 0},
        {"fs_hz": -1},
        {"label_sets": ["diagnostic"]},
        {"typo": 1},
    ):
        with pytest.raises(ValidationError):
            SyntheticSourceConfig(path="x", **bad)
    with pytest.raises(ValidationError):
        cfg.seed = 3  # frozen


# -------------------------------------------------------------------------------------- the signal


@pytest.mark.parametrize("fs_hz", [500.0, 100.0])
def test_einthoven_goldberger_identities(fs_hz: float) -> None:
    for p in range(6):
        for rhythm in syn.RHYTHMS:
            for conduction in syn.CONDUCTIONS:
                rng = np.random.default_rng(p)
                x = syn.simulate(syn.make_patient(0, p), rhythm, conduction, 4.0, fs_hz, rng)
                assert x.shape == (12, int(4.0 * fs_hz)) and x.dtype == np.float32
                assert np.isfinite(x).all() and np.abs(x).max() < 10.0
                i, ii, iii, avr, avl, avf = x[:6]
                assert np.array_equal(iii, ii - i)
                assert np.abs(avr + avl + avf).max() < 1e-5
                np.testing.assert_allclose(avr, -(i + ii) / 2, atol=1e-6)
                np.testing.assert_allclose(avl, (i - iii) / 2, atol=1e-6)
                np.testing.assert_allclose(avf, (ii + iii) / 2, atol=1e-6)


def test_wfdb_files_round_trip(dataset: tuple[Path, list[dict[str, str]], list[np.ndarray]]) -> None:
    root, rows, _ = dataset
    for k in (0, 7, 59, 89):
        rec = make_record(SET["seed"], k // 3, k % 3, SET["duration_s"], FS)
        assert rows[k]["record"] == rec.record_id
        assert (rows[k]["rhythm"], rows[k]["conduction"], rows[k]["sex"]) == (
            rec.rhythm,
            rec.conduction,
            rec.sex,
        )
        back = wfdb.rdrecord(str(root / rec.record_id))
        assert back.sig_name == list(LEADS) and back.units == ["mV"] * 12 and back.fs == FS
        assert back.fmt == ["16"] * 12 and back.sig_len == int(SET["duration_s"] * FS)
        # format 16 at 1000 units/mV: rounding to the nearest microvolt, nothing else
        assert np.abs(back.p_signal.T - rec.data).max() <= 0.5e-3 + 1e-6
        s = back.p_signal.T
        assert np.abs(s[2] - (s[1] - s[0])).max() <= 1.5e-3 + 1e-9
        assert np.abs(s[3] + s[4] + s[5]).max() <= 1.5e-3 + 1e-9
        assert f"rhythm: {rec.rhythm}" in back.comments


def test_rhythm_and_conduction_are_recoverable_from_the_signal(
    dataset: tuple[Path, list[dict[str, str]], list[np.ndarray]],
) -> None:
    _, rows, signals = dataset
    feats = [_features(x) for x in signals]
    rhythm = np.array([r["rhythm"] for r in rows])
    conduction = np.array([r["conduction"] for r in rows])
    for c in syn.RHYTHMS:
        assert (rhythm == c).sum() >= 12, f"too few {c} records for a meaningful check"
    assert (conduction == "wide_qrs").sum() >= 12 and (conduction == "normal").sum() >= 12

    hr = np.array([f["hr_bpm"] for f in feats])
    regular = rhythm != "afib"
    rate_class = np.where(hr < 60, "brady", np.where(hr > 100, "tachy", "sinus"))
    assert np.mean(rate_class[regular] == rhythm[regular]) >= 0.9  # chance: 1/3

    irregular = np.array([f["irregularity"] for f in feats]) > 0.08
    assert (
        _balanced_accuracy(np.where(irregular, "afib", "x"), np.where(rhythm == "afib", "afib", "x")) >= 0.9
    )

    wide = np.array([f["qrs_s"] for f in feats]) > 0.11
    assert _balanced_accuracy(np.where(wide, "wide_qrs", "normal"), conduction) >= 0.9

    # No P waves in atrial fibrillation: the averaged PR segment of lead II is much flatter.
    p_mv = np.array([f["p_mv"] for f in feats])
    assert np.median(p_mv[regular]) > 1.8 * np.median(p_mv[~regular])


def test_records_of_a_patient_look_alike(
    dataset: tuple[Path, list[dict[str, str]], list[np.ndarray]],
) -> None:
    _, rows, signals = dataset
    h, q = int(0.25 * FS), int(0.08 * FS)
    beats = np.array([_features(x)["beat"][:, h - q : h + q + 1].ravel() for x in signals])  # 12-lead QRS
    corr = np.corrcoef(beats)
    patient = np.array([r["patient_id"] for r in rows])
    conduction = np.array([r["conduction"] for r in rows])
    same_patient = patient[:, None] == patient[None, :]
    comparable = (conduction[:, None] == conduction[None, :]) & ~np.eye(len(rows), dtype=bool)
    within, between = corr[comparable & same_patient], corr[comparable & ~same_patient]
    assert within.size >= 30
    assert np.median(within) > 0.95 and np.median(within) - np.median(between) > 0.1
    # Identification: a record's most similar other record belongs to the same patient (chance ~2 %).
    np.fill_diagonal(corr, -np.inf)
    assert np.mean(same_patient[np.arange(len(rows)), corr.argmax(axis=1)]) >= 0.6


def test_patients_keep_sex_and_age_and_women_have_smaller_qrs() -> None:
    by_patient: dict[str, set[tuple[str, int]]] = {}
    for p in range(10):
        for r in range(4):
            rec = make_record(5, p, r, 1.0, 100.0)
            by_patient.setdefault(rec.patient_id, set()).add((rec.sex, rec.age))
    assert all(len(v) == 1 for v in by_patient.values())

    amplitude = {"F": [], "M": []}
    for p in range(300):
        patient = syn.make_patient(11, p)
        x = syn.simulate(patient, "sinus", "normal", 3.0, FS, np.random.default_rng(p))
        amplitude[patient.sex].append(np.ptp(_bandpass(x, 0.5, 40.0), axis=1).sum())  # 12-lead QRS voltage
    assert min(len(v) for v in amplitude.values()) > 100
    assert np.median(amplitude["F"]) < 0.93 * np.median(amplitude["M"])


# ----------------------------------------------------------------------------------------- dataset


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_generation_is_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    small = dict(n_patients=4, records_per_patient=2, duration_s=2.0, fs_hz=FS)
    a = _files(generate(tmp_path / "a", seed=3, **small))
    b = _files(generate(tmp_path / "b", seed=3, **small, workers=2))
    c = _files(generate(tmp_path / "c", seed=4, **small))
    assert len(a) == 4 * 2 * 2 + 2 and a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".dat"))


@pytest.mark.parametrize(("fs_hz", "duration_s"), [(500.0, 10.0), (257.0, 3.3), (100.0, 6.0)])
def test_records_are_written_as_wfdb_wrsamp_writes_them(tmp_path: Path, fs_hz: float, duration_s: float) -> None:
    """`write_wfdb` replaces wfdb.wrsamp (17 ms a record of bookkeeping): the same bytes, header and signal."""
    ours, theirs = tmp_path / "ours", tmp_path / "wfdb"
    ours.mkdir()
    theirs.mkdir()
    for p, r in ((0, 0), (1, 1), (7, 0)):
        rec = syn.make_record(5, p, r, duration_s, fs_hz)
        syn.write_wfdb(rec, fs_hz, ours)
        wfdb.wrsamp(rec.record_id, fs=fs_hz, units=["mV"] * 12, sig_name=list(syn.LEADS),
                    p_signal=np.clip(rec.data.T.astype(np.float64), -32.0, 32.0), fmt=["16"] * 12,
                    adc_gain=[syn.ADC_GAIN] * 12, baseline=[0] * 12, write_dir=str(theirs),
                    comments=[f"patient_id: {rec.patient_id}", f"age: {rec.age}", f"sex: {rec.sex}",
                              f"rhythm: {rec.rhythm}", f"conduction: {rec.conduction}"])
    assert _files(ours) == _files(theirs)


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "set"
    real = syn.write_wfdb
    calls = []

    def crash_on_fourth(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the worst case: not even an Exception
        real(*args, **kwargs)

    monkeypatch.setattr(syn, "write_wfdb", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        generate(target, n_patients=3, records_per_patient=2, duration_s=1.0, fs_hz=FS, seed=0)
    assert len(calls) == 4 and list(tmp_path.iterdir()) == []

    monkeypatch.setattr(syn, "write_wfdb", real)
    generate(target, n_patients=3, records_per_patient=2, duration_s=1.0, fs_hz=FS, seed=0)
    before = _files(target)

    def must_not_write(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete folder was regenerated")

    monkeypatch.setattr(syn, "write_wfdb", must_not_write)
    generate(target, n_patients=3, records_per_patient=2, duration_s=1.0, fs_hz=FS, seed=0)
    assert _files(target) == before

    # Other parameters: the stale synthetic folder is replaced as a whole.
    monkeypatch.setattr(syn, "write_wfdb", real)
    generate(target, n_patients=2, records_per_patient=1, duration_s=1.0, fs_hz=FS, seed=0)
    assert len(_files(target)) == 2 * 2 + 2
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_refuses_a_folder_that_is_not_synthetic(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SyntheticDataError, match="not a synthetic dataset"):
        generate(tmp_path / "mine", n_patients=1, records_per_patient=1, duration_s=1.0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_source_lists_records_with_folds_and_labels(tmp_path: Path) -> None:
    source = SyntheticSource(SyntheticSource.Config(
        path=str(tmp_path / "syn"),
        n_patients=23,
        records_per_patient=2,
        duration_s=1.0,
        label_sets=["rhythm", "sex"],
    ))
    refs = source.records()
    assert len(refs) == 46 and len({r.record_id for r in refs}) == 46
    assert source.label_names() == {"rhythm": ["sinus", "brady", "tachy", "afib"], "sex": ["F", "M"]}
    folds: dict[str, set[int]] = {}
    for ref in refs:
        assert Path(ref.locator + ".hea").is_file() and ref.source == "synthetic"
        assert set(ref.labels) == {"rhythm", "sex"} and len(ref.labels["rhythm"]) == 1
        assert ref.labels["rhythm"][0] in syn.RHYTHMS and ref.labels["sex"] == [ref.meta["sex"]]
        assert ref.meta["sex"] in ("F", "M") and 18 <= ref.meta["age"] <= 95
        folds.setdefault(ref.patient_id, set()).add(int(ref.meta["fold"]))
    assert all(len(f) == 1 for f in folds.values())  # a patient never straddles folds
    assert sorted({f for fs in folds.values() for f in fs}) == list(range(1, 11))
    assert source.records() == refs  # second call: listing only, same answer
    full = SyntheticSource(SyntheticSource.Config(path=str(tmp_path / "syn"), n_patients=23, records_per_patient=2,
                                                  duration_s=1.0))
    assert list(full.label_names()) == ["rhythm", "conduction", "sex"]
    assert all(set(r.labels) == {"rhythm", "conduction", "sex"} for r in full.records())
