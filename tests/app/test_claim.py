"""The run's closing sentences (app/claim.py): what pretraining bought over random, in words, with the interval."""

from __future__ import annotations

from ecgforge.app.claim import versus_random_lines


def _row(init: str, frac: float, seed: int, value: float, versus: tuple[float, float, float] | None = None,
         metric: str = "macro_auroc", kind: str = "linear_probe", task: str = "rhythm") -> dict:
    row = {"kind": kind, "task": task, "task_type": "regression" if metric == "mae" else "multiclass",
           "init": init, "label_fraction": frac, "seed": seed, "split": "test", "primary": metric,
           "metrics": {metric: value}, "n_test_records": 240}
    if versus is not None:
        d, lo, hi = versus
        row["versus"] = {"random": {"delta": {metric: d}, "ci95": {metric: [lo, hi]}, "p_value": {metric: 0.01}}}
    return row


def test_ahead_at_every_fraction_is_what_pretraining_bought() -> None:
    rows = [_row("pretrained", 0.05, 0, 0.9, (0.085, 0.032, 0.150)), _row("pretrained", 1.0, 0, 0.97, (0.032, 0.012, 0.049)),
            _row("random", 0.05, 0, 0.8), _row("random", 1.0, 0, 0.94)]
    claim, how = versus_random_lines({"eval": rows})
    assert claim == ("Pretraining bought +0.085 macro AUROC over a random encoder at 5 % of the labels (95 % CI "
                     "+0.032 to +0.150) and +0.032 at 100 % (+0.012 to +0.049).")
    assert how.startswith("linear_probe on rhythm, 240 test records, 1 seed;")


def test_level_and_worse_fractions_are_named() -> None:
    rows = [_row("pretrained", 0.01, 0, 0.7, (0.01, -0.02, 0.04)), _row("pretrained", 0.1, 0, 0.8, (0.05, 0.01, 0.09)),
            _row("pretrained", 1.0, 0, 0.8, (-0.05, -0.08, -0.01))]
    claim, _ = versus_random_lines({"eval": rows})
    assert claim.startswith("Pretrained minus random encoder: +0.010 macro AUROC at 1 % of the labels (95 % CI -0.020")
    assert claim.endswith("Ahead at 10 %. No difference shown at 1 % (the interval contains 0). Worse than a random "
                          "encoder at 100 %.")


def test_seeds_are_averaged_and_lower_is_better_for_mae() -> None:
    rows = [_row("pretrained", 1.0, s, 8.0, (d, d - 0.5, d - 0.1), metric="mae", task="age")
            for s, d in ((0, -1.0), (1, -2.0))]
    claim, how = versus_random_lines({"eval": rows})
    assert claim == "Pretraining bought -1.500 MAE over a random encoder at 100 % of the labels (95 % CI -2.000 to -1.600)."
    assert "2 seeds, means over seeds" in how


def test_only_the_first_table_with_a_random_reference_speaks() -> None:
    rows = [_row("pretrained", 1.0, 0, 0.9), _row("pretrained", 1.0, 0, 0.9, (0.1, 0.05, 0.15), kind="knn"),
            _row("pretrained", 1.0, 0, 0.9, (-0.1, -0.15, -0.05), task="form")]
    claim, how = versus_random_lines({"eval": rows})
    assert claim.startswith("Pretraining bought +0.100") and how.startswith("knn on rhythm")
    assert versus_random_lines({"eval": [_row("pretrained", 1.0, 0, 0.9)]}) == []
    assert versus_random_lines({}) == []


def test_undefined_metrics_make_no_claim() -> None:
    """An evaluation with one class in its test split: AUROC and its interval are undefined (NaN or absent)."""
    nan = float("nan")
    rows = [_row("pretrained", 1.0, 0, nan, (nan, nan, nan)), _row("random", 1.0, 0, nan)]
    assert versus_random_lines({"eval": rows}) == []
    rows[0]["versus"]["random"]["ci95"]["macro_auroc"] = None
    assert versus_random_lines({"eval": rows}) == []
