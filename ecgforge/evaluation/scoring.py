"""From test scores to a results.json row: metrics, dropped classes and bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecgforge.data.splits import TaskType
from ecgforge.evaluation.metrics import auroc_columns, bootstrap_ci, compute_metrics
from ecgforge.evaluation.paired import score_evidence
from ecgforge.evaluation.rows import PRIMARY  # noqa: F401 (re-exported: protocols import it from here)


def primary_score(task_type: TaskType, y: np.ndarray, scores: np.ndarray, names: Sequence[str] | None = None) -> float:
    """Higher-is-better model-selection score: macro AUROC for classification, -MAE for regression."""
    names = names or [str(i) for i in range(scores.shape[1] if scores.ndim == 2 else 1)]
    try:
        metrics, _ = compute_metrics(task_type, y, scores, names)
    except ValueError:
        return float("nan")
    value = metrics[PRIMARY[task_type]]
    return -value if task_type == "regression" else value


def _primary_only(task_type: TaskType, y: np.ndarray, scores: np.ndarray) -> float:
    """The primary metric alone, cheaply (bootstrap resamples recompute it hundreds of times)."""
    if task_type == "regression":
        return float(np.mean(np.abs(np.asarray(scores).reshape(-1) - np.asarray(y).reshape(-1))))
    if task_type == "multiclass":
        y = np.eye(scores.shape[1], dtype=np.int64)[np.asarray(y)]
    per_class = auroc_columns(np.asarray(y), np.asarray(scores))
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def score_rows(
    task_type: TaskType, y: np.ndarray, scores: np.ndarray, names: Sequence[str], n_boot: int, seed: int,
    records: np.ndarray | None = None, units: np.ndarray | None = None,
) -> dict[str, Any]:
    """``{"metrics": {...}, "dropped_classes": [...], "ci95": {primary: [low, high]}}`` for one test split.

    With ``records`` and ``units`` (`paired.record_identity` of the test records: their ids and patient ids)
    the row also keeps its ``evidence``, so that `paired.add_versus` can compare it with its reference rows
    and the run directory can keep it for comparisons between runs.
    """
    metrics, dropped = compute_metrics(task_type, y, scores, names)
    row: dict[str, Any] = {
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in metrics.items()},
        "dropped_classes": list(dropped),
    }
    if n_boot:
        key = PRIMARY[task_type]
        low, high = bootstrap_ci(lambda yy, ss: _primary_only(task_type, yy, ss), y, scores, n_boot=n_boot, seed=seed)
        row["ci95"] = {key: [low, high]}
    if records is not None:
        row["evidence"] = score_evidence(task_type, y, scores, names, records,
                                         records if units is None else units)
    return row
