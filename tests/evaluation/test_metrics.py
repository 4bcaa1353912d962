"""Metrics against values computed by hand, the Challenge metric against its published definition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ecgforge.evaluation.metrics import (
    auroc_columns,
    bootstrap_ci,
    challenge_metric,
    compute_metrics,
    fmax_score,
    load_challenge_weights,
    multiclass_metrics,
    multilabel_metrics,
    regression_metrics,
)

# --------------------------------------------------------------------------------------------- multi-label

# Class a: positives score {0.8, 0.4}, negatives {0.6, 0.2}: 3 of 4 pairs ordered -> AUROC 0.75.
#   At 0.5 it predicts records 0 and 2: TP 1, FP 1, FN 1 -> F1 = 2/4 = 0.5.
# Class b: positives {0.9, 0.7} above negatives {0.1, 0.3} -> AUROC 1.0; F1 1.0.
# Class c: no positive -> dropped from AUROC; one false positive at 0.5 -> F1 = 0 (counted).
Y_ML = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
S_ML = np.array([[0.8, 0.1, 0.1], [0.4, 0.9, 0.2], [0.6, 0.3, 0.6], [0.2, 0.7, 0.1]])


def test_multilabel_hand_computed() -> None:
    res = multilabel_metrics(Y_ML, S_ML, ["a", "b", "c"])
    assert res.per_class_auroc == pytest.approx({"a": 0.75, "b": 1.0})
    assert res.macro_auroc == pytest.approx(0.875)
    assert res.macro_f1 == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert res.dropped == ["c"]
    assert res.n_records == 4 and res.notes == []


def test_f1_leaves_out_classes_never_positive_nor_predicted() -> None:
    s = S_ML.copy()
    s[2, 2] = 0.1  # class c: no label, no prediction -> 0/0, left out of the mean
    assert multilabel_metrics(Y_ML, s, ["a", "b", "c"]).macro_f1 == pytest.approx(0.75)


def test_fmax_hand_computed() -> None:
    # Thresholds (scores >= t):
    #   0.9: rec0 predicts {0} (right): pr = 1,          rc = (1 + 0) / 2 = 0.5 -> F = 2/3
    #   0.6: rec1 predicts {0} (wrong): pr = (1 + 0)/2,  rc = 0.5               -> F = 0.5
    #   0.4: rec1 predicts {0, 1}:      pr = (1+0.5)/2,  rc = 1                 -> F = 6/7
    #   0.2: rec0 predicts {0, 1}:      pr = 0.5,        rc = 1                 -> F = 2/3
    y = np.array([[1, 0], [0, 1]])
    s = np.array([[0.9, 0.2], [0.6, 0.4]])
    assert fmax_score(y, s) == pytest.approx(6 / 7)
    # A record with no label has no recall and is left out, whatever it predicts.
    assert fmax_score(np.vstack([y, [0, 0]]), np.vstack([s, [0.95, 0.95]])) == pytest.approx(6 / 7)
    assert fmax_score(y, y.astype(float)) == pytest.approx(1.0)
    assert math.isnan(fmax_score(np.zeros((3, 2)), np.ones((3, 2)) / 2))


def _fmax_by_definition(y: np.ndarray, s: np.ndarray) -> float:
    """Fmax straight from the definition, one threshold at a time (slow, independent of the fast path)."""
    y, s = y[y.any(1)].astype(bool), s[y.any(1)]
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        covered = pred.any(1)
        pr = ((pred & y).sum(1)[covered] / pred.sum(1)[covered]).mean()
        rc = ((pred & y).sum(1) / y.sum(1)).mean()
        if pr + rc > 0:
            best = max(best, 2 * pr * rc / (pr + rc))
    return best


def test_fmax_matches_definition_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((60, 5)) < 0.3).astype(int)
    s = np.round(rng.random((60, 5)) * 0.5 + 0.4 * y, 1)  # rounding makes many ties
    assert fmax_score(y, s) == pytest.approx(_fmax_by_definition(y, s))


def test_auroc_columns_equals_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random((80, 4)) < [0.5, 0.2, 0.05, 0.0]).astype(int)
    s = np.round(rng.random((80, 4)) + 0.3 * y, 1)  # many tied scores
    fast = auroc_columns(y, s)
    for j in range(3):
        assert fast[j] == pytest.approx(roc_auc_score(y[:, j], s[:, j]))
    assert math.isnan(fast[3])  # no positive


def test_every_class_dropped_is_nan_and_said() -> None:
    res = multilabel_metrics(np.zeros((3, 2)), np.full((3, 2), 0.2), ["x", "y"])
    assert math.isnan(res.macro_auroc) and res.dropped == ["x", "y"]
    assert any("macro_auroc is NaN" in n for n in res.notes)
    all_pos = multilabel_metrics(np.ones((3, 1)), np.full((3, 1), 0.7), ["z"])
    assert all_pos.dropped == ["z"] and math.isnan(all_pos.macro_auroc)
    assert all_pos.macro_f1 == pytest.approx(1.0)


def test_multilabel_rejects_logits_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        multilabel_metrics(Y_ML, S_ML * 5 - 2, ["a", "b", "c"])
    with pytest.raises(ValueError, match="label names"):
        multilabel_metrics(Y_ML, S_ML, ["a", "b"])


# --------------------------------------------------------------------------------------------- multi-class


def test_multiclass_hand_computed() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    # argmax = [0, 1, 1, 2]: accuracy 2/4. F1: class 0 2/3, class 1 (TP 1, FP 1, FN 1) 1/2, class 2
    # (predicted once, never true) 0. AUROC: class 0 positives {.7, .3} vs {.2, .1} -> 1; class 1
    # positives {.7, .3} vs {.2, .6} -> 3/4; class 2 never occurs -> dropped.
    res = multiclass_metrics(y, s, ["a", "b", "c"])
    assert res.accuracy == pytest.approx(0.5)
    assert res.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert res.per_class_auroc == pytest.approx({"a": 1.0, "b": 0.75})
    assert res.macro_auroc == pytest.approx(0.875)
    assert res.dropped == ["c"]


def test_multiclass_single_class_split() -> None:
    res = multiclass_metrics(np.array([1, 1]), np.array([[0.1, 0.9], [0.8, 0.2]]), ["a", "b"])
    assert res.accuracy == pytest.approx(0.5)
    assert math.isnan(res.macro_auroc) and res.dropped == ["a", "b"] and res.notes
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        multiclass_metrics(np.array([0, 2]), np.zeros((2, 2)), ["a", "b"])


# --------------------------------------------------------------------------------------------- regression


def test_regression_hand_computed() -> None:
    # errors [0, 0, 0, 2]: MAE 0.5, RMSE sqrt(4/4) = 1; SS_tot around 2.5 = 5 -> R² = 1 - 4/5.
    res = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert (res.mae, res.rmse, res.r2) == pytest.approx((0.5, 1.0, 0.2))
    const = regression_metrics(np.array([3.0, 3.0]), np.array([2.0, 4.0]))
    assert const.mae == pytest.approx(1.0) and math.isnan(const.r2) and const.notes


def test_compute_metrics_dispatch() -> None:
    values, dropped = compute_metrics("multilabel", Y_ML, S_ML, ["a", "b", "c"])
    assert set(values) == {"macro_auroc", "macro_f1", "fmax"} and dropped == ["c"]
    assert values["macro_auroc"] == pytest.approx(0.875)
    values, dropped = compute_metrics("regression", np.arange(4.0), np.arange(4.0), [])
    assert values == pytest.approx({"mae": 0.0, "rmse": 0.0, "r2": 1.0}) and dropped == []
    with pytest.raises(ValueError, match="task_type"):
        compute_metrics("ranking", Y_ML, S_ML, ["a", "b", "c"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- bootstrap


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return multilabel_metrics(y, s, ["a", "b"]).macro_auroc


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.3).astype(int)
    s = 1 / (1 + np.exp(-(1.5 * y + rng.normal(size=(n, 2)) - 0.7)))
    return y, s


def test_bootstrap_ci_contains_estimate() -> None:
    y, s = _synthetic(120, 0)
    low, high = bootstrap_ci(_auroc, y, s, n_boot=100, seed=0)
    assert low < _auroc(y, s) < high
    assert (low, high) == bootstrap_ci(_auroc, y, s, n_boot=100, seed=0)  # seeded
    assert (low, high) != bootstrap_ci(_auroc, y, s, n_boot=100, seed=1)


def _accuracy(y: np.ndarray, s: np.ndarray) -> float:
    return float(((s >= 0.5) == y).mean())


def test_bootstrap_ci_narrows_with_n() -> None:
    widths = []
    for n in (100, 1600):
        y, s = _synthetic(n, 0)
        low, high = bootstrap_ci(_accuracy, y, s, n_boot=500, seed=0)
        assert low < _accuracy(y, s) < high
        widths.append(high - low)
    assert 0.15 < widths[1] / widths[0] < 0.4  # width ~ 1/sqrt(N): 1/4 expected


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_bootstrap_skips_undefined_resamples() -> None:
    def auroc_or_raise(y: np.ndarray, s: np.ndarray) -> float:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y, s))  # one class in a resample: NaN (sklearn >= 1.8) or ValueError

    def always_raises(y: np.ndarray, s: np.ndarray) -> float:
        raise ValueError("undefined")

    y = np.array([1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.95])
    low, high = bootstrap_ci(auroc_or_raise, y, s, n_boot=300, seed=1)
    assert 0.0 <= low <= high <= 1.0
    for undefined in (always_raises, lambda y, s: float("nan")):
        assert all(math.isnan(v) for v in bootstrap_ci(undefined, y, s, n_boot=10))


# --------------------------------------------------------------------------------------------- Challenge


@pytest.fixture()
def tiny_weights(tmp_path: Path) -> Path:
    """Three classes in the Challenge's format: N (normal), A, and B|B2 scored as equivalent codes."""
    path = tmp_path / "weights.csv"
    path.write_text(",N,A,B|B2\nN,1.0,0.2,0.4\nA,0.2,1.0,0.6\nB|B2,0.4,0.6,1.0\n")
    return path


def test_challenge_metric_hand_computed_tiny(tiny_weights: Path) -> None:
    classes = ["N", "A", "B2"]
    y = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 1]])
    pred = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    # A[j, k] += 1/|labels ∪ outputs| per record:
    #   rec0 {A} x {B}, union 2: A[A,B] += 1/2  -> 0.5 * 0.6 = 0.3
    #   rec1 {N} x {N}, union 1: A[N,N] += 1    -> 1.0
    #   rec2 {A,B} x {A}, union 2: A[A,A], A[B,A] += 1/2 -> 0.5 * (1.0 + 0.6) = 0.8
    observed = 0.3 + 1.0 + 0.8
    correct = 1.0 + 1.0 + 0.5 * (1 + 0.6 + 0.6 + 1)  # rec2 predicts {A, B}: four cells of 1/2
    inactive = 0.5 * 0.2 + 1.0 + (0.2 + 0.4) / 3  # rec0 {A,N}: 1/2; rec2 {A,B,N}: 1/3 each
    expected = (observed - inactive) / (correct - inactive)
    assert challenge_metric(y, pred, classes, tiny_weights, normal_class="N") == pytest.approx(expected)
    assert challenge_metric(y, y, classes, tiny_weights, normal_class="N") == pytest.approx(1.0)
    normal_only = np.zeros_like(y)
    normal_only[:, 0] = 1
    assert challenge_metric(y, normal_only, classes, tiny_weights, normal_class="N") == pytest.approx(0.0)


def test_challenge_metric_rejects_unscored_and_nonbinary(tiny_weights: Path) -> None:
    y = np.array([[1, 0]])
    with pytest.raises(ValueError, match="none of the 2 classes"):
        challenge_metric(y, y, ["X", "Y"], tiny_weights, normal_class="N")
    with pytest.raises(ValueError, match="binary"):
        challenge_metric(y, np.array([[0.7, 0.1]]), ["N", "A"], tiny_weights, normal_class="N")
    with pytest.raises(ValueError, match="normal class"):
        challenge_metric(y, y, ["N", "A"], tiny_weights)  # 426783006 is not in this table


@pytest.fixture()
def cinc_weights(shared_data: Path) -> Path:
    path = shared_data / "cinc2021-sample" / "evaluation-2021" / "weights.csv"
    if not path.is_file():
        pytest.skip(f"Challenge weights not found at {path}")
    return path


@pytest.mark.data
def test_challenge_weights_file_parsed(cinc_weights: Path) -> None:
    classes, weights = load_challenge_weights(cinc_weights)
    assert len(classes) == 26 and weights.shape == (26, 26)
    assert frozenset({"733534002", "164909002"}) in classes
    np.testing.assert_allclose(np.diag(weights), 1.0)
    np.testing.assert_allclose(weights, weights.T)


@pytest.mark.data
def test_challenge_metric_real_weights(cinc_weights: Path) -> None:
    af, afl, nsr = "164889003", "164890007", "426783006"
    classes, w = load_challenge_weights(cinc_weights)
    ix = {code: i for i, s in enumerate(classes) for code in s}
    # The entries the hand computation below relies on, as the file gives them.
    assert (w[ix[af], ix[afl]], w[ix[af], ix[nsr]], w[ix[nsr], ix[af]]) == (0.5, 0.25, 0.25)

    cols = [af, afl, nsr]
    y = np.array([[1, 0, 0], [0, 0, 1]])
    pred = np.array([[1, 1, 0], [1, 0, 0]])
    # rec0 {AF} x {AF, AFL}, union 2: 0.5 * (1 + 0.5); rec1 {NSR} x {AF}, union 2: 0.5 * 0.25
    observed = 0.75 + 0.125
    correct = 1.0 + 1.0
    inactive = 0.5 * 0.25 + 1.0  # rec0 {AF} x {NSR}, union 2; rec1 {NSR} x {NSR}
    expected = (observed - inactive) / (correct - inactive)  # = -2/7
    assert challenge_metric(y, pred, cols, cinc_weights) == pytest.approx(expected)
    assert expected == pytest.approx(-2 / 7)

    normal_only = np.zeros_like(y)
    normal_only[:, 2] = 1
    assert challenge_metric(y, normal_only, cols, cinc_weights) == pytest.approx(0.0)
    # Normal class absent from the caller's columns: the inactive classifier still predicts it.
    assert challenge_metric(y[:, :2], y[:, :2], cols[:2], cinc_weights) == pytest.approx(1.0)


@pytest.mark.data
def test_challenge_metric_equivalent_and_unscored_codes(cinc_weights: Path) -> None:
    rng = np.random.default_rng(0)
    classes, _ = load_challenge_weights(cinc_weights)
    codes = sorted("|".join(sorted(s)) for s in classes)  # every scored class, "a|b" where equivalent
    y = (rng.random((40, len(codes))) < 0.15).astype(int)
    assert challenge_metric(y, y, codes, cinc_weights) == pytest.approx(1.0)

    # RBBB labelled under one code and predicted under its equivalent is a correct prediction; an unscored
    # code (here 251120003, incomplete LBBB) is ignored whatever it says.
    cols = ["59118001", "713427006", "251120003", "426783006"]
    y = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    pred = np.array([[0, 1, 0, 0], [0, 0, 1, 1]])
    assert challenge_metric(y, pred, cols, cinc_weights) == pytest.approx(1.0)


def test_f1_columns_and_multiclass_f1_equal_scikit_learn() -> None:
    """``f1_columns`` replaces ``sklearn.metrics.f1_score(average=None, zero_division=np.nan)`` (and the multi-class
    macro F1 and accuracy, ``average="macro", zero_division=0``) inside the bootstrap: equal on random inputs,
    empty columns and never-predicted columns included."""
    from sklearn.metrics import accuracy_score, f1_score

    from ecgforge.evaluation.metrics import f1_columns, multiclass_metrics

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(2, 6))
        y = (rng.random((n, k)) < rng.random()).astype(int)
        pred = rng.random((n, k)) < rng.random()
        np.testing.assert_allclose(f1_columns(y, pred), f1_score(y, pred, average=None, zero_division=np.nan),
                                   rtol=0, atol=1e-15)
        c = int(rng.integers(2, 6))
        yc, scores = rng.integers(0, c, size=n), rng.random((n, c))
        got = multiclass_metrics(yc, scores, [str(i) for i in range(c)])
        assert got.macro_f1 == pytest.approx(f1_score(yc, scores.argmax(1), average="macro", zero_division=0.0),
                                             abs=1e-15)
        assert got.accuracy == accuracy_score(yc, scores.argmax(1))
    # One column is one class (scikit-learn would read a (N, 1) indicator as binary and average both labels).
    assert f1_columns(np.array([[1], [0], [0]]), np.array([[1], [1], [0]]))[0] == pytest.approx(2 / 3)
