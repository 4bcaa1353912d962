"""Which classes a training subset can teach a head, checked before anything is trained.

A head trained on records where a class never occurs (no positive) or, multilabel, always occurs (no negative)
cannot learn that class: what it scores for it is a constant, or a direction no label ever asked for (a k-NN
or centroid score is exactly constant). Its AUROC on the test records would measure nothing. So:

- a training subset that holds one class (multiclass), or where every class is constant (multilabel), is a
  user error, refused in one line before anything is trained (`unlearnable_line`; ``app.preflight`` checks
  every label fraction x seed draw of every ``[[eval]]`` table, the protocols check again as they start);
- a subset where only some classes are constant is scored, but those classes are left out of the macro AUROC
  and named in the row (``ResultRow.excluded_classes``, reasons `WITHOUT_POSITIVES` and `WITHOUT_NEGATIVES`).

The subsets are the ones the protocols train on: ``splits.label_fraction`` of the train split's labelled
records, patient-grouped and seeded (`TaskData.positions` draws the same).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecgforge.data.splits import Targets, TaskType, label_fraction

#: ``ResultRow.excluded_classes`` reasons: classes the training subset never shows / always shows, and (scoring.py)
#: classes the test split holds no positive or no negative record of.
WITHOUT_POSITIVES = "without_training_positives"
WITHOUT_NEGATIVES = "without_training_negatives"
UNDEFINED_IN_TEST = "undefined_in_test"


@dataclass(frozen=True)
class TrainingClasses:
    """The classes of one training subset: ``positives (C,)`` records carrying each class of ``n_records``."""

    task_type: TaskType
    names: tuple[str, ...]
    positives: np.ndarray
    n_records: int

    @classmethod
    def of(cls, task_type: TaskType, y: np.ndarray, names: Sequence[str]) -> TrainingClasses | None:
        """From training targets ``y``: ``(n,)`` class indices or ``(n, C)`` multi-hot; None for regression."""
        if task_type == "regression":
            return None
        y = np.asarray(y)
        if task_type == "multiclass":
            positives = np.bincount(y.astype(np.int64), minlength=len(names))
        else:
            positives = y.astype(bool).sum(axis=0)
        return cls(task_type, tuple(map(str, names)), positives.astype(np.int64), int(y.shape[0]))

    @property
    def without_positives(self) -> list[str]:
        return [n for n, p in zip(self.names, self.positives, strict=True) if p == 0]

    @property
    def without_negatives(self) -> list[str]:
        """Multilabel classes on every training record (a multiclass class on every record is `learnable` False)."""
        if self.task_type != "multilabel":
            return []
        return [n for n, p in zip(self.names, self.positives, strict=True) if p == self.n_records]

    @property
    def learnable(self) -> bool:
        """False where a head can learn nothing: one class (multiclass), every class constant (multilabel)."""
        if self.task_type == "multiclass":
            return int((self.positives > 0).sum()) >= 2
        return bool(((self.positives > 0) & (self.positives < self.n_records)).any())

    @property
    def excluded(self) -> dict[str, list[str]]:
        """Reason -> the classes the macro AUROC leaves out for it (reasons with no class omitted)."""
        found = {WITHOUT_POSITIVES: self.without_positives, WITHOUT_NEGATIVES: self.without_negatives}
        return {reason: names for reason, names in found.items() if names}

    def counts(self, limit: int = 8) -> str:
        """``sinus 3, brady 0 of 3 records`` (the first ``limit`` classes, then how many more)."""
        shown = [f"{n} {int(p)}" for n, p in zip(self.names[:limit], self.positives[:limit], strict=True)]
        more = f", {len(self.names) - limit} more" if len(self.names) > limit else ""
        return f"{', '.join(shown)}{more} of {self.n_records} records"


def excluded_names(excluded: Mapping[str, Sequence[str]]) -> list[str]:
    """The classes of an ``excluded_classes`` mapping (reason -> classes), whatever the reason, in order."""
    return list(dict.fromkeys(str(c) for classes in excluded.values() for c in classes))


def drawn_classes(train: Targets, patients: np.ndarray, fraction: float, seed: int) -> TrainingClasses | None:
    """The classes of the training subset a protocol draws at ``fraction`` and ``seed`` from ``train`` (the train
    split's labelled records, ``patients (n,)`` their patient codes), as `TaskData.positions` draws it."""
    chosen = label_fraction(train.y, patients, fraction, seed)
    return TrainingClasses.of(train.task_type, train.y[chosen], train.names)


@dataclass(frozen=True)
class Unlearnable:
    """The first label fraction x seed draw whose training subset teaches nothing, and how many draws do."""

    fraction: float
    seed: int
    classes: TrainingClasses
    n_bad: int
    n_draws: int
    whole_split: bool  # the train split itself (label fraction 1) teaches nothing


def first_unlearnable(train: Targets, patients: np.ndarray, fractions: Sequence[float], seeds: Sequence[int],
                      ) -> Unlearnable | None:
    """The draws of ``fractions`` x ``seeds`` that `TrainingClasses.learnable` refuses; None when there is none."""
    whole = drawn_classes(train, patients, 1.0, 0)
    if whole is None:
        return None
    bad = [(f, s, tc) for f in fractions for s in seeds
           if (tc := drawn_classes(train, patients, f, s)) is not None and not tc.learnable]
    if not bad:
        return None
    f, s, tc = bad[0]
    return Unlearnable(float(f), int(s), tc, len(bad), len(fractions) * len(seeds), not whole.learnable)


def unlearnable_line(kind: str, task: str, split: str, u: Unlearnable) -> str:
    """The one line that refuses ``u``: protocol, task, split, label fraction and seed, and the class counts."""
    if u.classes.task_type == "multiclass":
        what, of, fix = "holds one class", "", "choose a train_split or task with two classes"
    else:
        what, of = "has no class with both positive and negative records", "positives: "
        fix = "choose a train_split or task where a class has both"
    if not u.whole_split:
        fix = "raise the label fraction"
    also = f"; {u.n_bad} of {u.n_draws} label fraction x seed draws alike" if u.n_draws > 1 else ""
    return (f"{kind} task {task!r}: the training subset of split {split!r} at label fraction {u.fraction:g}, seed "
            f"{u.seed} {what} ({of}{u.classes.counts()}{also}); a head can learn nothing from it: {fix}")
