"""Evaluation metrics: numpy arrays in, floats out.

Conventions (shared by every protocol):

- Multi-label: ``y (N, C)`` in {0, 1}, ``scores (N, C)`` probabilities (sigmoid outputs). A class with no
  positive or no negative record in ``y`` has no AUROC; it is *dropped* from the macro average and named in
  the result, so a small split never crashes. If every class is dropped the macro AUROC is NaN and the
  result's ``notes`` say why.
- Multi-class: ``y (N,)`` integer class indices in ``[0, C)``, ``scores (N, C)`` (probabilities or logits;
  AUROC only uses their ranking and the prediction is the argmax).
- Regression: ``y`` and ``pred`` ``(N,)`` or ``(N, K)``.
- ``exclude``: classes the caller leaves out of the macro AUROC although ``y`` defines theirs, because the head
  was trained on records that never (or always) showed them (``evaluation.training_classes``): their AUROC
  measures nothing. They are not in ``dropped`` (the caller names them with their reason); macro F1 and Fmax
  keep every class, since a head that cannot predict a class is scored for that as it is.

A class without an AUROC is treated differently elsewhere: scikit-learn 1.9's ``roc_auc_score(average="macro")``
gives it NaN with an ``UndefinedMetricWarning`` (older versions raised ``ValueError``), so the macro is NaN; the
PTB-XL benchmark (helme/ecg_ptbxl_benchmarking ``code/utils/utils.py``) calls that as is and redraws bootstrap
resamples (``get_appropriate_bootstrap_samples``) until every class has a positive; ecg-selfsupervised
(``clinical_ts/eval_utils_cafa.py``, ``multiclass_roc_curve``) counts it as 0.5, divides by every class and
reports how many as ``macro_nans``. Here the macro AUROC is the mean over the classes that have an AUROC and are
not excluded, and the others are named: a 0.5 would pull a row towards chance by as much as the split happens to
lack classes.

References: macro AUROC and sample-centric Fmax as in the PTB-XL benchmark (Strodthoff et al., "Deep
Learning for ECG Analysis: Benchmarks and Insights from PTB-XL", IEEE JBHI 2021), whose Fmax follows the
CAFA definition (Radivojac et al., Nature Methods 2013); the Challenge metric as in the PhysioNet/CinC
Challenge 2021 ``evaluate_model.py`` (Reyna et al., "Will Two Do? ...", CinC 2021).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

#: SNOMED-CT code of sinus rhythm, the Challenge's "normal" class (the inactive classifier predicts it only).
NORMAL_CLASS = "426783006"

NAN = float("nan")


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricResult:
    """Multi-label metrics on one split.

    ``dropped`` lists the classes excluded from the macro AUROC (no positive or no negative in ``y``);
    ``notes`` says in words why a metric is NaN, for the report.
    """

    macro_auroc: float
    macro_f1: float
    fmax: float
    n_records: int
    dropped: list[str] = field(default_factory=list)
    per_class_auroc: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        """The scalar metrics, by name."""
        return {"macro_auroc": self.macro_auroc, "macro_f1": self.macro_f1, "fmax": self.fmax}


@dataclass(frozen=True)
class MulticlassResult:
    """Multi-class metrics on one split; ``dropped`` as in :class:`MetricResult` (one-vs-rest AUROC)."""

    accuracy: float
    macro_f1: float
    macro_auroc: float
    n_records: int
    dropped: list[str] = field(default_factory=list)
    per_class_auroc: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        """The scalar metrics, by name."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "macro_auroc": self.macro_auroc}


@dataclass(frozen=True)
class RegressionResult:
    """Regression metrics on one split (averaged uniformly over targets when ``y`` is ``(N, K)``)."""

    mae: float
    rmse: float
    r2: float
    n_records: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        """The scalar metrics, by name."""
        d = asdict(self)
        return {k: d[k] for k in ("mae", "rmse", "r2")}


# --------------------------------------------------------------------------------------------- checks


def _as_2d_pair(
    y: np.ndarray, scores: np.ndarray, label_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or scores.shape != y.shape:
        raise ValueError(f"y and scores must both be (N, C); got {y.shape} and {scores.shape}")
    if len(label_names) != y.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {y.shape[1]} columns")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("multi-label y must hold only 0 and 1")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(bool), scores


# --------------------------------------------------------------------------------------------- multi-label


def auroc_columns(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-column AUROC ``(K,)`` of ``scores (N, K)`` against binary ``y (N, K)``; NaN where undefined.

    The Mann-Whitney form ``(rank sum of positives - n1 (n1 + 1) / 2) / (n1 n0)`` with tied scores given
    their mean rank: exactly scikit-learn's ``roc_auc_score`` per column, in one vectorised pass (about 10x
    faster on 71 PTB-XL classes, which matters inside the bootstrap).
    """
    y = np.asarray(y).astype(bool)
    ranks = rankdata(scores, axis=0)
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = y.shape[0] - n_pos
    u = (ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def f1_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column F1 ``(K,)`` of binary predictions ``pred (N, K)`` against ``y (N, K)``: ``2TP / (2TP + FP + FN)``,
    NaN where that is 0/0 (never positive, never predicted). Exactly scikit-learn's ``f1_score(average=None,
    zero_division=np.nan)``, without its input validation, which took 60 % of a paired bootstrap's time."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    tp = (y & pred).sum(axis=0).astype(np.float64)
    wrong = (y != pred).sum(axis=0)  # FP + FN
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), np.nan)


def fmax_score(y: np.ndarray, scores: np.ndarray) -> float:
    """Sample-centric Fmax (CAFA; PTB-XL benchmark), exact over every distinct threshold.

    For a threshold t, record i predicts the classes with ``scores[i] >= t``;
    ``pr(t)`` = mean precision over the records predicting at least one class, ``rc(t)`` = mean recall over
    all records; ``Fmax = max_t 2 pr rc / (pr + rc)``. Records with no positive label have no recall and are
    left out (the PTB-XL benchmark removes them from a task's data). NaN if no record has a label.

    Args:
        y: (N, C) in {0, 1}.
        scores: (N, C).
    """
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    keep = y.any(axis=1)
    y, scores = y[keep], scores[keep]
    n, c = y.shape
    if n == 0:
        return NAN
    # Walk each record's classes from its highest score down: after its k-th class (k = 1..C) the record
    # predicts k classes, tp_k of them right. Each step changes the record's precision, recall and coverage
    # by a known delta, so a global cumulative sum over all N*C steps in descending score order gives
    # pr(t) and rc(t) at every threshold in O(NC log NC), instead of O(NC) per threshold.
    order = np.argsort(-scores, axis=1, kind="stable")
    s_sorted = np.take_along_axis(scores, order, axis=1)
    y_sorted = np.take_along_axis(y, order, axis=1).astype(np.float64)
    tp = np.cumsum(y_sorted, axis=1)
    k = np.arange(1, c + 1, dtype=np.float64)
    precision = tp / k
    d_prec = np.diff(precision, axis=1, prepend=0.0)
    d_cov = np.zeros((n, c))
    d_cov[:, 0] = 1.0
    d_rec = y_sorted / y_sorted.sum(axis=1, keepdims=True)

    flat = np.argsort(-s_sorted.ravel(), kind="stable")
    s_flat = s_sorted.ravel()[flat]
    prec_sum = np.cumsum(d_prec.ravel()[flat])
    cov = np.cumsum(d_cov.ravel()[flat])
    rec_sum = np.cumsum(d_rec.ravel()[flat])
    # A threshold equal to a score includes every entry tied with it: read the sums at the end of each tie.
    ends = np.flatnonzero(np.append(s_flat[1:] != s_flat[:-1], True))
    pr = prec_sum[ends] / cov[ends]
    rc = rec_sum[ends] / n
    denom = pr + rc
    f = np.divide(2 * pr * rc, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f.max())


def multilabel_metrics(y: np.ndarray, scores: np.ndarray, label_names: Sequence[str],
                       exclude: Collection[str] = ()) -> MetricResult:
    """Macro AUROC, macro F1 at threshold 0.5 and sample-centric Fmax.

    Args:
        y: (N, C) in {0, 1}.
        scores: (N, C) probabilities in [0, 1] (apply a sigmoid to logits first).
        label_names: C class names, used in ``dropped`` and ``per_class_auroc``.
        exclude: class names left out of the macro AUROC (and ``per_class_auroc``) whatever ``y`` holds.

    Macro F1 is the mean over classes of ``2TP / (2TP + FP + FN)``, leaving out classes where that is 0/0
    (never positive, never predicted), as the Challenge's ``compute_f_measure`` does.
    """
    y, scores = _as_2d_pair(y, scores, label_names)
    if scores.min(initial=0.0) < 0.0 or scores.max(initial=0.0) > 1.0:
        raise ValueError("multi-label scores must be probabilities in [0, 1]; apply a sigmoid to logits")
    notes: list[str] = []
    n = y.shape[0]
    if n == 0:
        return MetricResult(NAN, NAN, NAN, 0, list(label_names), {}, ["no records"])

    n_pos = y.sum(axis=0)
    scorable = (n_pos > 0) & (n_pos < n)
    dropped = [str(name) for name, ok in zip(label_names, scorable, strict=True) if not ok]
    kept = np.flatnonzero(scorable & _kept(label_names, exclude))
    auroc = auroc_columns(y[:, kept], scores[:, kept])
    per_class = {str(label_names[j]): float(a) for j, a in zip(kept, auroc, strict=True)}
    if per_class:
        macro_auroc = float(np.mean(auroc))
    else:
        macro_auroc = NAN
        notes.append("macro_auroc is NaN: every class lacks a positive or a negative record in this split, "
                     "or is excluded")

    f1 = f1_columns(y, scores >= 0.5)
    if np.isfinite(f1).any():
        macro_f1 = float(np.nanmean(f1))
    else:
        macro_f1 = NAN
        notes.append("macro_f1 is NaN: no class has a positive label or a positive prediction")

    fmax = fmax_score(y, scores)
    if math.isnan(fmax):
        notes.append("fmax is NaN: no record has a positive label")
    return MetricResult(macro_auroc, macro_f1, fmax, n, dropped, per_class, notes)


# --------------------------------------------------------------------------------------------- multi-class


def multiclass_metrics(y: np.ndarray, scores: np.ndarray, label_names: Sequence[str],
                       exclude: Collection[str] = ()) -> MulticlassResult:
    """Accuracy, macro F1 (argmax prediction) and one-vs-rest macro AUROC over the classes present.

    Args:
        y: (N,) integer class indices in ``[0, C)``.
        scores: (N, C) probabilities or logits.
        label_names: C class names.
        exclude: class names left out of the macro AUROC (and ``per_class_auroc``) whatever ``y`` holds.

    Macro F1 averages over the classes that occur in ``y`` or in the predictions (scikit-learn's default).
    A class with no record, or with every record, in ``y`` has no one-vs-rest AUROC and is dropped.
    """
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or scores.ndim != 2 or scores.shape[0] != y.shape[0]:
        raise ValueError(f"y must be (N,) and scores (N, C); got {y.shape} and {scores.shape}")
    c = scores.shape[1]
    if len(label_names) != c:
        raise ValueError(f"{len(label_names)} label names for {c} score columns")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= c):
        raise ValueError(f"multi-class y must hold integer class indices in [0, {c})")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    n = y.shape[0]
    if n == 0:
        return MulticlassResult(NAN, NAN, NAN, 0, list(map(str, label_names)), {}, ["no records"])

    pred = scores.argmax(axis=1)
    accuracy = float(np.mean(y == pred))
    # scikit-learn's macro F1: over the classes in y or in the predictions (never 0/0 for those).
    present = np.union1d(y, pred)
    macro_f1 = float(np.mean(f1_columns(y[:, None] == present[None, :], pred[:, None] == present[None, :])))
    counts = np.bincount(y, minlength=c)
    scorable = (counts > 0) & (counts < n)
    dropped = [str(name) for name, ok in zip(label_names, scorable, strict=True) if not ok]
    kept = np.flatnonzero(scorable & _kept(label_names, exclude))
    auroc = auroc_columns(y[:, None] == kept[None, :], scores[:, kept])  # one-vs-rest
    per_class = {str(label_names[j]): float(a) for j, a in zip(kept, auroc, strict=True)}
    notes: list[str] = []
    if per_class:
        macro_auroc = float(np.mean(auroc))
    else:
        macro_auroc = NAN
        notes.append("macro_auroc is NaN: fewer than two classes occur in this split, or the rest are excluded")
    return MulticlassResult(accuracy, macro_f1, macro_auroc, n, dropped, per_class, notes)


def _kept(label_names: Sequence[str], exclude: Collection[str]) -> np.ndarray:
    """``(C,)`` True for the classes not named in ``exclude``."""
    out = set(map(str, exclude))
    return np.array([str(name) not in out for name in label_names], dtype=bool)


# --------------------------------------------------------------------------------------------- regression


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> RegressionResult:
    """MAE, RMSE and R² (in the units of ``y``, e.g. years of age).

    Args:
        y: (N,) or (N, K) targets.
        pred: same shape as ``y`` ((N, 1) is accepted for (N,) targets).

    R² is NaN (with a note) when ``y`` is constant or has fewer than two records, where it is undefined.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if y.ndim == 1 and pred.shape == (y.shape[0], 1):  # a one-output head's (N, 1) against (N,) targets
        pred = pred[:, 0]
    if y.shape != pred.shape or y.ndim not in (1, 2):
        raise ValueError(
            f"y and pred must have the same (N,) or (N, K) shape; got {y.shape} and {pred.shape}"
        )
    if not (np.isfinite(y).all() and np.isfinite(pred).all()):
        raise ValueError("y or pred contains NaN or infinity")
    n = y.shape[0]
    if n == 0:
        return RegressionResult(NAN, NAN, NAN, 0, ["no records"])
    mae = float(mean_absolute_error(y, pred))
    rmse = float(root_mean_squared_error(y, pred))
    notes: list[str] = []
    if n < 2 or np.any(np.ptp(y, axis=0) == 0):
        r2 = NAN
        notes.append("r2 is NaN: the targets are constant (or there is one record) in this split")
    else:
        r2 = float(r2_score(y, pred))
    return RegressionResult(mae, rmse, r2, n, notes)


# --------------------------------------------------------------------------------------------- dispatch


def compute_metrics(
    task_type: Literal["multilabel", "multiclass", "regression"],
    y: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str],
    exclude: Collection[str] = (),
) -> tuple[dict[str, float], list[str]]:
    """The protocols' single entry point: ``(metrics by name, dropped class names)``.

    ``scores`` are probabilities (multilabel), scores or logits (multiclass) or predictions (regression,
    where ``label_names`` and ``exclude`` are unused and nothing is ever dropped). ``dropped``: the classes
    this ``y`` gives no AUROC; ``exclude``: classes the macro AUROC leaves out besides (not in ``dropped``).
    """
    if task_type == "multilabel":
        res = multilabel_metrics(y, scores, label_names, exclude)
        return res.as_dict(), list(res.dropped)
    if task_type == "multiclass":
        mres = multiclass_metrics(y, scores, label_names, exclude)
        return mres.as_dict(), list(mres.dropped)
    if task_type == "regression":
        return regression_metrics(y, scores).as_dict(), []
    raise ValueError(f"task_type must be multilabel, multiclass or regression, got {task_type!r}")


# --------------------------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval of ``metric_fn(y, scores)`` over test records.

    Records (rows of ``y`` and ``scores``) are resampled with replacement ``n_boot`` times with a seeded
    generator. A resample where the metric is undefined (NaN, or a ``ValueError`` such as a single class)
    is skipped; ``(nan, nan)`` if every resample is.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y = np.asarray(y)
    scores = np.asarray(scores)
    n = y.shape[0]
    if scores.shape[0] != n:
        raise ValueError(f"y and scores have {n} and {scores.shape[0]} records")
    if n == 0:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        try:
            v = float(metric_fn(y[idx], scores[idx]))
        except ValueError:
            continue
        if math.isfinite(v):
            values.append(v)
    if not values:
        return NAN, NAN
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------- Challenge


def load_challenge_weights(weights_csv: str | Path) -> tuple[list[frozenset[str]], np.ndarray]:
    """Read the Challenge's ``weights.csv``: ``(classes, weights (K, K))``.

    Each class is a set of SNOMED-CT codes: a header written ``a|b`` is one class scored as equivalent codes.
    """
    path = Path(weights_csv)
    with path.open(newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: empty weights table")
    header = rows[0][1:]
    names = [r[0] for r in rows[1:]]
    if header != names or any(len(r) != len(header) + 1 for r in rows[1:]):
        raise ValueError(f"{path}: weights table must be square with identical row and column names")
    try:
        weights = np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: non-numeric weight ({e})") from None
    classes = [frozenset(name.split("|")) for name in header]
    return classes, weights


def _challenge_score(weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray) -> float:
    """``sum(W * A)`` with the Challenge's modified confusion matrix A (labels (N, K) x outputs (N, K)).

    Record i adds ``1 / max(|labels_i ∪ outputs_i|, 1)`` to ``A[j, k]`` for every label j and output k.
    """
    norm = np.maximum(np.logical_or(labels, outputs).sum(axis=1), 1).astype(np.float64)
    a = (labels / norm[:, None]).T @ outputs.astype(np.float64)
    return float(np.nansum(weights * a))


def challenge_metric(
    y: np.ndarray,
    predictions: np.ndarray,
    classes: Sequence[str],
    weights_csv: str | Path,
    normal_class: str = NORMAL_CLASS,
) -> float:
    """PhysioNet/CinC Challenge 2021 score, as its ``evaluate_model.py`` computes it.

    ``(observed - inactive) / (correct - inactive)`` where each term is ``sum(W * A)`` for the model's
    outputs, for the inactive classifier (only the normal class, sinus rhythm 426783006) and for the
    perfect classifier; 0.0 where correct equals inactive (as the reference code does). 1.0 for perfect
    predictions, 0.0 for predicting only the normal class.

    Args:
        y: (N, C) labels in {0, 1}.
        predictions: (N, C) binary outputs.
        classes: C SNOMED-CT codes naming the columns (``a|b`` allowed). A column maps to the weights.csv
            class that contains its code(s); columns mapping to the same class are OR-ed (equivalent codes,
            e.g. 713427006 and 59118001); columns of unscored codes are ignored, as in the Challenge.
        weights_csv: the Challenge's ``weights.csv``.
    """
    y = np.asarray(y)
    predictions = np.asarray(predictions)
    if y.ndim != 2 or predictions.shape != y.shape or y.shape[1] != len(classes):
        raise ValueError(
            f"y and predictions must be (N, {len(classes)}); got {y.shape} and {predictions.shape}"
        )
    if not (np.isin(y, (0, 1)).all() and np.isin(predictions, (0, 1)).all()):
        raise ValueError("challenge_metric needs binary y and predictions (threshold the scores first)")
    scored, weights = load_challenge_weights(weights_csv)
    normal = [k for k, s in enumerate(scored) if normal_class in s]
    if not normal:
        raise ValueError(f"{weights_csv}: the normal class {normal_class} is not a scored class")

    # Embed the caller's columns in the Challenge's K scored classes; a missing class is all-negative.
    n = y.shape[0]
    labels = np.zeros((n, len(scored)), dtype=bool)
    outputs = np.zeros((n, len(scored)), dtype=bool)
    n_mapped = 0
    for col, name in enumerate(classes):
        codes = set(str(name).split("|"))
        hits = [k for k, s in enumerate(scored) if s & codes]
        if len(hits) > 1:
            raise ValueError(f"class {name!r} matches several scored classes in {weights_csv}")
        if hits:
            labels[:, hits[0]] |= y[:, col].astype(bool)
            outputs[:, hits[0]] |= predictions[:, col].astype(bool)
            n_mapped += 1
    if n_mapped == 0:
        raise ValueError(f"none of the {len(classes)} classes is scored in {weights_csv}")

    inactive = np.zeros_like(outputs)
    inactive[:, normal[0]] = True
    observed = _challenge_score(weights, labels, outputs)
    correct = _challenge_score(weights, labels, labels)
    inactive_score = _challenge_score(weights, labels, inactive)
    if correct == inactive_score:
        return 0.0
    return float((observed - inactive_score) / (correct - inactive_score))


def challenge_thresholds(
    y_val: np.ndarray,
    scores_val: np.ndarray,
    classes: Sequence[str],
    weights_csv: str | Path,
    normal_class: str = NORMAL_CLASS,
    grid: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)),
    sweeps: int = 2,
) -> np.ndarray:
    """Per-class decision thresholds ``(C,)`` that maximise the Challenge score on a *validation* split.

    Coordinate ascent from 0.5 for every class: each sweep tries every ``grid`` value for one class at a
    time with the others fixed and keeps the best (ties keep the current value). The Challenge score does
    not separate over classes (the modified confusion matrix normalises by each record's label ∪ output
    set), so per-class F1 thresholds would not maximise it. Pass validation scores only: thresholds picked
    on the test split inflate its score.

    Args:
        y_val: (N, C) binary labels; scores_val: (N, C) probabilities; others as in `challenge_metric`.
    """
    y_val = np.asarray(y_val)
    scores_val = np.asarray(scores_val)
    if scores_val.shape != y_val.shape:
        raise ValueError(f"y_val and scores_val must have one shape; got {y_val.shape} and {scores_val.shape}")
    thr = np.full(y_val.shape[1], 0.5)

    def score(t: np.ndarray) -> float:
        return challenge_metric(y_val, (scores_val >= t).astype(np.int64), classes, weights_csv, normal_class)

    best = score(thr)
    for _ in range(sweeps):
        changed = False
        for c in range(len(thr)):
            for value in grid:
                if value == thr[c]:
                    continue
                trial = thr.copy()
                trial[c] = value
                s = score(trial)
                if s > best:
                    best, thr, changed = s, trial, True
        if not changed:
            break
    return thr
