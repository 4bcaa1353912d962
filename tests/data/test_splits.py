"""Label fractions and patient splits: whole patients, class shares kept, seeded, every class present."""

from __future__ import annotations

import numpy as np
import pytest

from ecgforge.data.splits import label_fraction, split_by_patient


def _cohort(n_patients: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label records: 1-4 records per patient, a patient's records share most of their labels.

    Returns ``labels (N, 6)`` with prevalences from ~45% down to one rare class of 3 patients, and
    ``patients (N,)``.
    """
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.45, 0.25, 0.12, 0.06, 0.03, 0.0])
    per_patient = rng.integers(1, 5, size=n_patients)
    patient_labels = rng.random((n_patients, 6)) < prevalence
    patient_labels[rng.choice(n_patients, 3, replace=False), 5] = True  # the rare class
    patients = np.repeat(np.arange(n_patients) * 7 + 11, per_patient)  # non-contiguous ids
    labels = np.repeat(patient_labels, per_patient, axis=0).astype(int)
    flip = rng.random(labels[:, :5].shape) < 0.05  # records of one patient differ a little
    labels[:, :5] ^= flip
    return labels, patients


def _whole_patients(idx: np.ndarray, patients: np.ndarray) -> bool:
    chosen = np.isin(patients, patients[idx])
    return set(np.flatnonzero(chosen)) == set(idx.tolist())


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval(bad: float) -> None:
    labels, patients = _cohort(50)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]") as err:
        label_fraction(labels, patients, bad, seed=0)
    assert "\n" not in str(err.value)


def test_full_fraction_returns_everything() -> None:
    labels, patients = _cohort(100)
    np.testing.assert_array_equal(label_fraction(labels, patients, 1.0, seed=3), np.arange(len(patients)))


def test_multilabel_fraction_keeps_shares_and_patients() -> None:
    labels, patients = _cohort()
    idx = label_fraction(labels, patients, 0.1, seed=0)
    assert _whole_patients(idx, patients)
    assert np.all(np.diff(idx) > 0)
    assert abs(len(idx) / len(patients) - 0.1) < 0.02
    share_pool = labels.mean(0)[:5]
    share_sel = labels[idx].mean(0)[:5]
    np.testing.assert_allclose(share_sel, share_pool, atol=0.02)

    # Stratification does better than drawing the same number of whole patients at random.
    rng = np.random.default_rng(0)
    uniq = np.unique(patients)
    random_err = []
    for _ in range(20):
        pick = rng.choice(uniq, size=len(np.unique(patients[idx])), replace=False)
        random_err.append(np.abs(labels[np.isin(patients, pick)].mean(0)[:5] - share_pool).sum())
    assert np.abs(share_sel - share_pool).sum() < np.mean(random_err)


def test_seeded_and_seed_dependent() -> None:
    labels, patients = _cohort(300)
    a = label_fraction(labels, patients, 0.2, seed=5)
    np.testing.assert_array_equal(a, label_fraction(labels, patients, 0.2, seed=5))
    assert not np.array_equal(a, label_fraction(labels, patients, 0.2, seed=6))


def test_tiny_fraction_keeps_every_class() -> None:
    labels, patients = _cohort()
    idx = label_fraction(labels, patients, 0.001, seed=0)
    assert len(idx) > 0 and _whole_patients(idx, patients)
    assert (labels[idx].sum(0) > 0).all()  # the 3-patient class included
    assert len(idx) < 0.05 * len(patients)  # and not much more than needed for that


def test_multiclass_labels_and_no_labels() -> None:
    rng = np.random.default_rng(2)
    patients = np.repeat(np.arange(400), 2)
    classes = np.repeat(rng.choice(4, size=400, p=[0.6, 0.25, 0.13, 0.02]), 2)
    idx = label_fraction(classes, patients, 0.05, seed=0)
    assert _whole_patients(idx, patients)
    assert set(classes[idx]) == {0, 1, 2, 3}
    counts = np.bincount(classes[idx], minlength=4)
    assert counts[0] > counts[1] > counts[2]  # shares kept in order

    plain = label_fraction(None, patients, 0.25, seed=0)
    assert _whole_patients(plain, patients) and len(plain) == 200


def test_float_targets_stratified_on_quintiles() -> None:
    rng = np.random.default_rng(4)
    patients = np.repeat(np.arange(500), 2)
    age = np.repeat(rng.normal(60, 15, size=500), 2).astype(np.float32)  # regression target
    idx = label_fraction(age, patients, 0.2, seed=0)
    assert _whole_patients(idx, patients) and abs(len(idx) - 200) <= 4
    edges = np.quantile(age, [0.2, 0.4, 0.6, 0.8])
    per_quintile = np.bincount(np.searchsorted(edges, age[idx], side="right"), minlength=5)
    assert per_quintile.min() >= 36 and per_quintile.max() <= 44  # 40 each if exact
    with pytest.raises(ValueError, match="dtype"):
        label_fraction(age.astype(complex), patients, 0.5, seed=0)


def test_never_empty_on_a_tiny_pool() -> None:
    patients = np.array(["p1", "p1", "p2"])
    idx = label_fraction(None, patients, 0.01, seed=0)
    assert len(idx) > 0 and _whole_patients(idx, patients)


def test_split_by_patient_partitions() -> None:
    labels, patients = _cohort(600)
    splits = split_by_patient(patients, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, labels=labels)
    all_idx = np.concatenate(list(splits.values()))
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(len(patients)))
    seen: set = set()
    for name, idx in splits.items():
        ids = set(patients[idx].tolist())
        assert not ids & seen, f"patient in two splits ({name})"
        seen |= ids
    assert abs(len(splits["val"]) / len(patients) - 0.1) < 0.02
    np.testing.assert_allclose(labels[splits["test"]].mean(0)[:4], labels.mean(0)[:4], atol=0.04)
    again = split_by_patient(patients, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, labels=labels)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)

    unstratified = split_by_patient(patients, {"a": 0.5, "b": 0.5}, seed=1)
    assert abs(len(unstratified["a"]) - len(unstratified["b"])) <= 4  # at most one patient's records


def test_split_by_patient_errors_and_small_pools() -> None:
    patients = np.array([1, 1, 2, 3])
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_patient(patients, {"a": 0.5, "b": 0.4}, seed=0)
    with pytest.raises(ValueError, match="cannot fill"):
        split_by_patient(patients, {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}, seed=0)
    splits = split_by_patient(patients, {"a": 0.9, "b": 0.05, "c": 0.05}, seed=0)
    assert all(len(v) > 0 for v in splits.values())
