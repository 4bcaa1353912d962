"""Which records a run uses: split selection, task targets, and patient-grouped, label-stratified subsets
(label fractions for data-scarce training, splits for datasets without folds).

`label_fraction` and `split_by_patient` assign whole patients (all records of a patient go to the same subset, so no patient leaks
between a training subset and anything else) with iterative stratification (Sechidis, Tsoumakas & Vlahavas,
"On the Stratification of Multi-Label Data", ECML PKDD 2011), as used for the PTB-XL folds (Wagner et al.,
Scientific Data 2020): the rarest label is placed first, each of its patients going to the subset that
still needs that label most. Counts are in records, so a patient with three AF records counts three times
towards AF and towards its subset's size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ecgforge.data.cache import Cache
from ecgforge.errors import UserError


class DatasetError(UserError):
    """A split/task request the cache cannot serve (unknown column or label set); one line."""


def select(cache: Cache, selector: Mapping[str, object], exclude_ptbxl_overlap: bool = False) -> np.ndarray:
    """Indices of records whose metadata match every ``column: value(s)`` pair of ``selector``.

    Folds that have no records simply select nothing (a full-PTB-XL recipe runs unchanged on a subset).
    ``exclude_ptbxl_overlap`` drops PhysioNet/CinC 'HR*' records, which are PTB-XL ECGs at 500 Hz.
    """
    keep = np.ones(len(cache), dtype=bool)
    for column, wanted in selector.items():
        try:
            values = cache.column(column)
        except KeyError:
            raise DatasetError(
                f"{cache.path}: split selects on unknown column {column!r}; columns: {cache.columns()}"
            ) from None
        wanted_list = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if values.dtype == object:
            keep &= np.isin(values.astype(str), [str(w) for w in wanted_list])
        else:
            keep &= np.isin(values, wanted_list)
    if exclude_ptbxl_overlap and "ptbxl_ecg_id" in cache.meta:
        keep &= np.asarray(cache.meta["ptbxl_ecg_id"]) < 0
    return np.flatnonzero(keep)


def patient_codes(cache: Cache) -> np.ndarray:
    """``(N,)`` int64 patient index per record (stable: sorted patient ids)."""
    return np.unique(cache.patient_id.astype(str), return_inverse=True)[1].astype(np.int64)


TaskType = Literal["multilabel", "multiclass", "regression"]


@dataclass
class Targets:
    """What an evaluation task asks of each record.

    Attributes:
        indices: records that have a target (others are left out and counted).
        y: ``(n, C)`` float32 multi-hot (multilabel), ``(n,)`` int64 (multiclass) or ``(n,)`` float32.
        names: class names (empty for regression).
        task_type: how the metric and the head treat ``y``.
        dropped: records of the input without a usable target.
    """

    indices: np.ndarray
    y: np.ndarray
    names: list[str]
    task_type: TaskType
    dropped: int


def task_targets(cache: Cache, task: str, indices: np.ndarray, task_type: TaskType | None = None) -> Targets:
    """Targets of ``task`` for the records ``indices``.

    ``task`` is a label set of the cache (``superdiagnostic``, ``rhythm``, ``scored``, ...), ``sex`` or
    ``age``. A label set in which every record has exactly one label is multiclass unless told otherwise;
    records with no label in the set are dropped (as in the PTB-XL benchmark).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if task == "age":
        age = cache.age[indices]
        ok = np.isfinite(age)
        return Targets(indices[ok], age[ok].astype(np.float32), [], "regression", int((~ok).sum()))
    if task == "sex" and "sex" not in cache.labels:
        sex = cache.sex[indices].astype(str)
        ok = np.isin(sex, ["M", "F"])
        return Targets(indices[ok], (sex[ok] == "F").astype(np.int64), ["M", "F"], "multiclass", int((~ok).sum()))
    if task not in cache.labels:
        raise DatasetError(f"{cache.path}: no label set {task!r}; label sets: {sorted(cache.labels)} (or 'sex', 'age')")
    mat = cache.labels[task][indices].astype(np.float32)
    names = list(cache.label_names[task])
    counts = mat.sum(axis=1)
    if task_type is None:
        task_type = "multiclass" if len(indices) and (counts[counts > 0] == 1).all() else "multilabel"
    if task_type == "multiclass":
        ok = counts == 1
        return Targets(indices[ok], mat[ok].argmax(axis=1).astype(np.int64), names, "multiclass", int((~ok).sum()))
    if task_type == "regression":
        raise DatasetError(f"task {task!r}: a label set cannot be a regression target")
    ok = counts > 0
    return Targets(indices[ok], mat[ok], names, "multilabel", int((~ok).sum()))


N_TARGET_BINS = 5  # strata for a continuous target (regression): its quintiles


def _quantile_bins(y: np.ndarray) -> np.ndarray:
    """(N,) float target -> (N,) int stratum: its quintile (NaN targets form a stratum of their own)."""
    finite = np.isfinite(y)
    bins = np.full(y.shape, N_TARGET_BINS, dtype=np.int64)
    if finite.any():
        edges = np.quantile(y[finite], np.linspace(0, 1, N_TARGET_BINS + 1)[1:-1])
        bins[finite] = np.searchsorted(edges, y[finite], side="right")
    return bins


def _patient_table(
    labels: np.ndarray | None, patients: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inverse (N,), counts (P, C), sizes (P,))``: each record's patient, per-patient label counts, records.

    ``labels`` (N,) classes or float targets, (N, C) multi-hot, or None (no stratification: C = 0).
    """
    patients = np.asarray(patients)
    if patients.ndim != 1:
        raise ValueError(f"patients must be (N,), got shape {patients.shape}")
    n = patients.shape[0]
    _, inverse = np.unique(patients, return_inverse=True)
    n_patients = int(inverse.max()) + 1 if n else 0
    sizes = np.bincount(inverse, minlength=n_patients).astype(np.float64)
    if labels is None:
        return inverse, np.zeros((n_patients, 0)), sizes
    labels = np.asarray(labels)
    if labels.shape[0] != n:
        raise ValueError(f"labels have {labels.shape[0]} rows for {n} patient ids")
    if labels.ndim == 1:
        if labels.dtype.kind == "f":
            labels = _quantile_bins(labels)
        elif not (np.issubdtype(labels.dtype, np.integer) or labels.dtype.kind in "USb"):
            raise ValueError(f"1-D labels must be classes or float targets, got dtype {labels.dtype}")
        _, cls = np.unique(labels, return_inverse=True)
        onehot = np.zeros((n, int(cls.max()) + 1 if n else 0))
        onehot[np.arange(n), cls] = 1.0
        labels = onehot
    elif labels.ndim == 2:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("2-D labels must be multi-hot (0 and 1 only)")
        labels = labels.astype(np.float64)
    else:
        raise ValueError(f"labels must be (N,) or (N, C), got shape {labels.shape}")
    counts = np.zeros((n_patients, labels.shape[1]))
    np.add.at(counts, inverse, labels)
    return inverse, counts, sizes


def _pick(need: np.ndarray, tie: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest ``need``; ties go to the largest ``tie``, then at random (Sechidis et al.)."""
    best = np.flatnonzero(need == need.max())
    if len(best) > 1:
        best = best[tie[best] == tie[best].max()]
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))


def _iterative_stratification(
    counts: np.ndarray, sizes: np.ndarray, ratios: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Subset of each patient, ``(P,)`` in ``[0, S)``, for ``ratios (S,)`` summing to 1.

    Args:
        counts: (P, C) records of each patient carrying each label.
        sizes: (P,) records of each patient.
    """
    n_patients = counts.shape[0]
    has = counts > 0
    need_size = ratios * sizes.sum()  # records each subset still wants
    need_label = ratios[:, None] * counts.sum(axis=0)[None, :]  # (S, C) label records still wanted
    remaining = has.sum(axis=0)  # unassigned patients per label
    assign = np.full(n_patients, -1, dtype=np.int64)
    # A seeded visiting order replaces the algorithm's "any order" so that the seed picks the subset.
    order = rng.permutation(n_patients)
    while (remaining > 0).any():
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))
        for p in order[(assign[order] < 0) & has[order, label]]:
            s = _pick(need_label[:, label], need_size, rng)
            assign[p] = s
            need_size[s] -= sizes[p]
            need_label[s] -= counts[p]
            remaining -= has[p]
    for p in order[assign[order] < 0]:  # patients with no label: fill the subsets by size
        s = _pick(need_size, need_size, rng)
        assign[p] = s
        need_size[s] -= sizes[p]
    return assign


def label_fraction(labels: np.ndarray | None, patients: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a patient-grouped, label-stratified subset holding about ``fraction`` of the records.

    Args:
        labels: (N,) integer classes, (N,) float regression targets (stratified on their quintiles),
            (N, C) multi-hot, or None (grouped by patient, not stratified).
        patients: (N,) patient id of each record.
        fraction: in (0, 1]; 1.0 returns every index.
        seed: the subset is a deterministic function of (labels, patients, fraction, seed).

    Returns:
        Sorted record indices ``(M,)``, never empty for N > 0.

    Every class present in the pool is kept: where ``fraction`` is too small to hold a class, one patient
    with that class (the one with the fewest records) is added, so a 1% regime still sees every class and
    may then hold somewhat more than ``fraction`` of the records. Subsets of different fractions are NOT
    nested (the 10% subset need not contain the 1% subset for the same seed).
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:  # also rejects NaN
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    inverse, counts, sizes = _patient_table(labels, patients)
    n = inverse.shape[0]
    if fraction == 1.0 or n == 0:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    assign = _iterative_stratification(counts, sizes, np.array([fraction, 1.0 - fraction]), rng)
    chosen = assign == 0
    # Add the smallest patient of each class the stratification left out (rarest class first, since its
    # patient may bring other missing classes along).
    has = counts > 0
    for c in np.argsort(has.sum(axis=0), kind="stable"):
        if has[:, c].any() and not has[chosen, c].any():
            candidates = np.flatnonzero(has[:, c])
            smallest = candidates[sizes[candidates] == sizes[candidates].min()]
            chosen[rng.choice(smallest)] = True
    if not chosen.any():
        chosen[rng.integers(len(chosen))] = True
    return np.flatnonzero(chosen[inverse]).astype(np.int64)


def split_by_patient(
    patients: np.ndarray,
    fractions: Mapping[str, float],
    seed: int,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Split records into named subsets by patient, for datasets without official folds.

    Args:
        patients: (N,) patient id of each record.
        fractions: subset name -> share of the records, each > 0, summing to 1 (e.g. train 0.8, val 0.1,
            test 0.1).
        seed: the split is a deterministic function of its inputs and the seed.
        labels: optional (N,) classes, (N,) float targets (quintiles) or (N, C) multi-hot to stratify on.

    Returns:
        Subset name -> sorted record indices; the subsets partition ``range(N)``, no patient is in two, and
        none is empty (a ValueError if there are fewer patients than subsets).
    """
    names = list(fractions)
    ratios = np.array([float(fractions[k]) for k in names])
    if not names or (ratios <= 0).any() or not math.isclose(ratios.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")
    inverse, counts, sizes = _patient_table(labels, patients)
    n_patients = sizes.shape[0]
    if n_patients < len(names):
        raise ValueError(f"{n_patients} patients cannot fill {len(names)} splits {names}")
    rng = np.random.default_rng(seed)
    assign = _iterative_stratification(counts, sizes, ratios / ratios.sum(), rng)
    # A tiny share can end up empty when large patients fill it; give it one patient of the fullest split.
    for s in range(len(names)):
        if not (assign == s).any():
            donor = int(np.argmax(np.bincount(assign, minlength=len(names))))
            assign[rng.choice(np.flatnonzero(assign == donor))] = s
    record_subset = assign[inverse]
    return {name: np.flatnonzero(record_subset == s).astype(np.int64) for s, name in enumerate(names)}
