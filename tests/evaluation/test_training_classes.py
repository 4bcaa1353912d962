"""Classes a training subset cannot teach (evaluation/training_classes.py) and classes a test split cannot score:
refused where nothing can be learned, otherwise left out of the macro AUROC (its interval and paired evidence
too) and named in the row with their reason, which the run's guard and the report repeat."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecgforge.app.guard import excluded_classes_line, guard_tables
from ecgforge.app.report import summarise, table_markdown
from ecgforge.data.splits import Targets, label_fraction
from ecgforge.evaluation.metrics import compute_metrics
from ecgforge.evaluation.paired import restore_evidence
from ecgforge.evaluation.rows import EXCLUDED_LEGEND, EXCLUDED_MARK, ResultRow
from ecgforge.evaluation.scoring import _primary_only, primary_score, score_rows
from ecgforge.evaluation.training_classes import (
    TrainingClasses,
    drawn_classes,
    first_unlearnable,
    unlearnable_line,
)

NAMES = ["a", "b", "c"]


def test_the_classes_a_subset_never_or_always_shows_are_named() -> None:
    ml = TrainingClasses.of("multilabel", np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1]]), NAMES)
    assert ml is not None and ml.positives.tolist() == [3, 0, 2] and ml.learnable
    assert ml.excluded == {"without_training_positives": ["b"], "without_training_negatives": ["a"]}
    mc = TrainingClasses.of("multiclass", np.array([0, 2, 2]), NAMES)
    assert mc is not None and mc.learnable and mc.excluded == {"without_training_positives": ["b"]}
    assert TrainingClasses.of("regression", np.arange(3.0), []) is None


@pytest.mark.parametrize(("task_type", "y"), [
    ("multiclass", np.array([1, 1, 1])),  # one class
    ("multilabel", np.array([[1, 0, 1], [1, 0, 1]])),  # every class on every record or on none
])
def test_one_class_or_every_class_constant_teaches_nothing(task_type: str, y: np.ndarray) -> None:
    tc = TrainingClasses.of(task_type, y, NAMES)  # type: ignore[arg-type]
    assert tc is not None and not tc.learnable


def _pool() -> tuple[Targets, np.ndarray]:
    """Class a on every record; b only on patient 0's two records (20 records, 10 patients)."""
    patients = np.repeat(np.arange(10), 2)
    y = np.zeros((20, 2), dtype=np.float32)
    y[:, 0] = 1
    y[:2, 1] = 1
    return Targets(np.arange(20), y, ["a", "b"], "multilabel", 0), patients


def test_a_label_fraction_can_teach_nothing_where_the_whole_split_can() -> None:
    """At 1 % the draw is patient 0 alone (the one patient with b, which label_fraction keeps): a and b are then
    on every record. The whole split teaches b and is scored with a excluded."""
    train, patients = _pool()
    whole = drawn_classes(train, patients, 1.0, 0)
    assert whole is not None and whole.learnable and whole.excluded == {"without_training_negatives": ["a"]}
    bad = first_unlearnable(train, patients, [1.0, 0.01], [0, 1])
    assert bad is not None and (bad.fraction, bad.seed, bad.n_bad, bad.n_draws, bad.whole_split) == (0.01, 0, 2, 4, False)
    assert label_fraction(train.y, patients, 0.01, 0).tolist() == [0, 1]  # the draw the protocols train on
    assert unlearnable_line("knn", "dx", "train", bad) == (
        "knn task 'dx': the training subset of split 'train' at label fraction 0.01, seed 0 has no class with "
        "both positive and negative records (positives: a 2, b 2 of 2 records; 2 of 4 label fraction x seed draws "
        "alike); a head can learn nothing from it: raise the label fraction")
    assert first_unlearnable(train, patients, [1.0, 0.5], [0]) is None


def test_a_single_class_split_is_refused_at_the_split() -> None:
    train = Targets(np.arange(4), np.array([1, 1, 1, 1]), ["M", "F"], "multiclass", 0)
    bad = first_unlearnable(train, np.array([0, 0, 1, 1]), [0.5], [3])
    assert bad is not None and bad.whole_split
    assert unlearnable_line("finetune", "sex", "men", bad) == (
        "finetune task 'sex': the training subset of split 'men' at label fraction 0.5, seed 3 holds one class "
        "(M 0, F 2 of 2 records); a head can learn nothing from it: choose a train_split or task with two classes")


# ------------------------------------------------------------------------------------ the macro AUROC


RNG = np.random.default_rng(0)
Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]] * 3)
S = RNG.random(Y.shape)


def test_excluded_classes_leave_the_macro_auroc_only() -> None:
    every, dropped = compute_metrics("multilabel", Y, S, NAMES)
    assert dropped == [] and every["macro_auroc"] == pytest.approx(roc_auc_score(Y, S, average="macro"))
    kept, dropped = compute_metrics("multilabel", Y, S, NAMES, exclude=["b"])
    assert dropped == []  # excluded is not undefined: the caller names it with its reason
    assert kept["macro_auroc"] == pytest.approx(roc_auc_score(Y[:, [0, 2]], S[:, [0, 2]], average="macro"))
    assert kept["macro_auroc"] != pytest.approx(every["macro_auroc"])
    assert (kept["macro_f1"], kept["fmax"]) == (every["macro_f1"], every["fmax"])
    y_mc = Y.argmax(1)
    mc, _ = compute_metrics("multiclass", y_mc, S, NAMES, exclude=["c"])
    ovr = [roc_auc_score(y_mc == k, S[:, k]) for k in (0, 1)]
    assert mc["macro_auroc"] == pytest.approx(np.mean(ovr))
    assert primary_score("multilabel", Y, S, NAMES, ["b"]) == kept["macro_auroc"]


def test_a_row_names_what_it_left_out_and_why_and_its_interval_and_evidence_agree() -> None:
    y = Y.copy()
    y[:, 2] = 1  # c on every test record: undefined in test
    row = score_rows("multilabel", y, S, NAMES, 200, 0, np.arange(len(y)).astype(str), np.arange(len(y)).astype(str),
                     excluded={"without_training_positives": ["a"], "without_training_negatives": []})
    assert row["excluded_classes"] == {"without_training_positives": ["a"], "undefined_in_test": ["c"]}
    assert row["dropped_classes"] == ["a", "c"]
    assert row["metrics"]["macro_auroc"] == pytest.approx(roc_auc_score(y[:, 1], S[:, 1]))
    # The interval is of the metric the row reports: b alone, not a (untrained) and b.
    b_only = np.array([False, True, False])
    assert row["ci95"]["macro_auroc"] == list(score_rows("multilabel", y[:, b_only], S[:, b_only], ["b"], 200, 0)
                                               ["ci95"]["macro_auroc"])
    assert _primary_only("multilabel", y, S, b_only) != _primary_only("multilabel", y, S)
    ev = row["evidence"]
    every = np.arange(len(y))
    assert ev.metrics(every)["macro_auroc"] == row["metrics"]["macro_auroc"]
    stored = {k: v for k, v in ev.data.items()}  # as RunDir.write_scores keeps it: facts and arrays
    assert stored["exclude"] == ["a"]
    again = restore_evidence(ev.form, ev.records, ev.units, stored)
    assert again.metrics(every) == ev.metrics(every)


def test_a_row_without_exclusions_is_as_before() -> None:
    row = score_rows("multilabel", Y, S, NAMES, 50, 0, np.arange(len(Y)).astype(str), np.arange(len(Y)).astype(str))
    assert row["excluded_classes"] == {} and row["dropped_classes"] == []
    assert "exclude" not in row["evidence"].data  # the stored scores of such a row are as they were
    r = ResultRow(kind="knn", task="t", task_type="multilabel", init="random", label_fraction=1.0, seed=0,
                  split="test", primary="macro_auroc", **{k: v for k, v in row.items() if k != "evidence"})
    assert "excluded_classes" not in r.to_json() and r.mark("macro_auroc") == ""
    assert excluded_classes_line([r], "eval [0] knn t") is None


def _rows(excluded: dict[str, list[str]]) -> list[ResultRow]:
    return [ResultRow(kind="knn", task="rhythm", task_type="multilabel", init=init, label_fraction=1.0, seed=0,
                      split="test", primary="macro_auroc", metrics={"macro_auroc": 0.7, "macro_f1": 0.5},
                      excluded_classes=excluded if init == "pretrained" else {}) for init in ("pretrained", "random")]


def test_the_guard_and_the_report_mark_the_rows() -> None:
    rows = _rows({"without_training_positives": ["afib"], "undefined_in_test": ["sinus"]})
    assert ResultRow.from_json(rows[0].to_json()).excluded_classes == rows[0].excluded_classes
    assert rows[0].mark("macro_auroc") == EXCLUDED_MARK and rows[0].mark("macro_f1") == ""
    assert guard_tables([("eval [0] knn rhythm", rows)]) == [
        "eval [0] knn rhythm: macro_auroc leaves classes out in 1 of 2 rows (without training positives: afib; "
        f"undefined in test: sinus); those rows are marked {EXCLUDED_MARK} and their excluded_classes in "
        "results.json say which"]
    text = table_markdown(summarise({"run": rows}))
    assert f"| run | pretrained | 1 | 1 | 0.7000{EXCLUDED_MARK} ± 0.0000 | 0.5000 ± 0.0000 |" in text
    assert "| run | random | 1 | 1 | 0.7000 ± 0.0000 | 0.5000 ± 0.0000 |" in text
    assert EXCLUDED_LEGEND in text
    assert EXCLUDED_LEGEND not in table_markdown(summarise({"run": _rows({})}))
