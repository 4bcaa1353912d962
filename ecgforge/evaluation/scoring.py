"""From test scores to a results.json row: metrics, dropped classes and bootstrap confidence intervals.

Classes the macro AUROC leaves out are named in the row with why (``excluded_classes``, reason -> classes):
the training subset's (`training_classes.TrainingClasses.excluded`: no positive, no negative) and the test
split's (``undefined_in_test``: no positive or no negative test record). ``dropped_classes`` lists all of them.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from ecgforge.data.splits import TaskType
from ecgforge.evaluation.metrics import auroc_columns, bootstrap_ci, compute_metrics
from ecgforge.evaluation.paired import score_evidence
from ecgforge.evaluation.rows import PRIMARY  # noqa: F401 (re-exported: protocols import it from here)
from ecgforge.evaluation.training_classes import UNDEFINED_IN_TEST, excluded_names


def primary_score(task_type: TaskType, y: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None,
                  exclude: Collection[str] = ()) -> float:
    """Higher-is-better model-selection score: macro AUROC for classification (without the classes named in
    ``exclude``), -MAE for regression."""
    names = names or [str(i) for i in range(scores.shape[1] if scores.ndim == 2 else 1)]
    try:
        metrics, _ = compute_metrics(task_type, y, scores, names, exclude)
    except ValueError:
        return float("nan")
    value = metrics[PRIMARY[task_type]]
    return -value if task_type == "regression" else value


def _primary_only(task_type: TaskType, y: np.ndarray, scores: np.ndarray, kept: np.ndarray | None = None) -> float:
    """The primary metric alone, cheaply (bootstrap resamples recompute it hundreds of times); ``kept (C,)``
    masks the classes the macro AUROC averages."""
    if task_type == "regression":
        return float(np.mean(np.abs(np.asarray(scores).reshape(-1) - np.asarray(y).reshape(-1))))
    if task_type == "multiclass":
        y = np.eye(scores.shape[1], dtype=np.int64)[np.asarray(y)]
    y, scores = np.asarray(y), np.asarray(scores)
    if kept is not None:
        y, scores = y[:, kept], scores[:, kept]
    per_class = auroc_columns(y, scores)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def score_rows(
    task_type: TaskType, y: np.ndarray, scores: np.ndarray, names: Sequence[str], n_boot: int, seed: int,
    records: np.ndarray | None = None, units: np.ndarray | None = None,
    excluded: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """``{"metrics": {...}, "dropped_classes": [...], "excluded_classes": {...}, "ci95": {primary: [low, high]}}``
    for one test split.

    ``excluded``: reason -> classes the training subset could not teach (`TrainingClasses.excluded`); they are
    left out of the macro AUROC, its interval and the evidence. ``excluded_classes`` adds ``undefined_in_test``;
    ``dropped_classes`` is every class left out, in ``names`` order. With ``records`` and ``units``
    (`paired.record_identity` of the test records: their ids and patient ids) the row also keeps its
    ``evidence``, so that `paired.add_versus` can compare it with its reference rows and the run directory can
    keep it for comparisons between runs.
    """
    reasons = {reason: list(classes) for reason, classes in (excluded or {}).items() if classes}
    untrained = set(excluded_names(reasons))
    metrics, undefined = compute_metrics(task_type, y, scores, names, untrained)
    if undefined:
        reasons[UNDEFINED_IN_TEST] = list(undefined)
    left_out = untrained | set(undefined)
    row: dict[str, Any] = {
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in metrics.items()},
        "dropped_classes": [str(n) for n in names if str(n) in left_out],
        "excluded_classes": reasons,
    }
    if n_boot:
        key = PRIMARY[task_type]
        kept = np.array([str(n) not in untrained for n in names], dtype=bool) if untrained else None
        low, high = bootstrap_ci(lambda yy, ss: _primary_only(task_type, yy, ss, kept), y, scores, n_boot=n_boot,
                                 seed=seed)
        row["ci95"] = {key: [low, high]}
    if records is not None:
        row["evidence"] = score_evidence(task_type, y, scores, names, records,
                                         records if units is None else units, sorted(untrained))
    return row
