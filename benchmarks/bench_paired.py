"""Paired bootstrap (`evaluation.paired.compare`) time: ecgforge's numpy F1 against scikit-learn's ``f1_score``.

Both in the same process on the same synthetic rows (PTB-XL-sized test folds: 2,150 records of 1,864 patients,
5 or 71 multi-label classes), with the same resamples; the deltas, intervals and p-values must be equal.

    OMP_NUM_THREADS=1 python benchmarks/bench_paired.py [--boot 200]
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np
from sklearn.metrics import f1_score

from ecgforge.evaluation import metrics
from ecgforge.evaluation.paired import compare, score_evidence


def sklearn_f1_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The baseline: what metrics.py called before (multi-label, ``average=None, zero_division=np.nan``)."""
    return f1_score(y, pred, average=None, zero_division=np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = 2150
    units = np.sort(rng.integers(0, 1864, size=n)).astype(str)
    records = np.arange(n).astype(str)
    print(f"{'classes':>7}  {'scikit-learn F1 (s)':>19}  {'numpy F1 (s)':>12}  speed-up  same result")
    for k in (5, 71):
        y = (rng.random((n, k)) < 0.15).astype(np.int8)
        sa, sb = rng.random((n, k)), rng.random((n, k))
        names = [f"c{i}" for i in range(k)]
        a = score_evidence("multilabel", y, sa, names, records, units)
        b = score_evidence("multilabel", y, sb, names, records, units)
        with mock.patch.object(metrics, "f1_columns", sklearn_f1_columns):
            t0 = time.perf_counter()
            base = compare(a, b, args.boot, seed=0)
            t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = compare(a, b, args.boot, seed=0)
        t_ours = time.perf_counter() - t0
        print(f"{k:>7}  {t_base:>19.2f}  {t_ours:>12.2f}  {t_base / t_ours:>7.1f}x  {ours == base}")


if __name__ == "__main__":
    main()
