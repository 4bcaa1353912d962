"""One task loader for every protocol: the labelled train / val / test records of a task on a cache."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ecgforge.data.cache import Cache
from ecgforge.data.splits import Targets, TaskType, label_fraction, patient_codes, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.protocol import TaskSpec
from ecgforge.evaluation.training_classes import TrainingClasses, first_unlearnable, unlearnable_line


@dataclass
class TaskData:
    """The labelled train/val/test records of one task on one cache."""

    cache: Cache
    train: Targets
    val: Targets
    test: Targets
    patients: np.ndarray  # (n_train,) patient code of each training record
    val_patients: np.ndarray  # (n_val,)
    test_patients: np.ndarray  # (n_test,)
    _drawn: dict[tuple[float, int], np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def task_type(self) -> TaskType:
        return self.train.task_type

    @property
    def n_out(self) -> int:
        return 1 if self.task_type == "regression" else len(self.train.names)

    def positions(self, fraction: float, seed: int) -> np.ndarray:
        """Positions in ``train`` of a stratified, patient-grouped label fraction (``splits.label_fraction``),
        drawn once per (fraction, seed): every row of a fraction asks for them (its classes, `excluded_classes`)."""
        key = (float(fraction), int(seed))
        if key not in self._drawn:
            drawn = label_fraction(self.train.y, self.patients, fraction, seed)
            drawn.flags.writeable = False  # shared by every caller
            self._drawn[key] = drawn
        return self._drawn[key]

    def val_positions(self, fraction: float, seed: int, subsample: bool = True) -> np.ndarray:
        """Positions in ``val`` that a head trained on ``fraction`` of the labels may select on.

        A team with 1 % of the training labels has about 1 % of the validation labels too, so by default
        the validation split is drawn like the training subset (patient-grouped, stratified, same seed);
        ``subsample=False`` keeps all of it.
        """
        if not subsample or len(self.val.indices) == 0:
            return np.arange(len(self.val.indices))
        return label_fraction(self.val.y, self.val_patients, fraction, seed)

    def with_val(self, positions: np.ndarray) -> TaskData:
        """This task with its validation split reduced to ``positions`` (from `val_positions`)."""
        v = self.val
        return replace(self, val=Targets(v.indices[positions], v.y[positions], v.names, v.task_type, 0),
                       val_patients=self.val_patients[positions])

    def excluded_classes(self, fraction: float, seed: int) -> dict[str, list[str]]:
        """Reason -> the classes the training subset `positions` draws never or always shows (left out of the macro
        AUROC: `TrainingClasses.excluded`); empty for regression."""
        t = self.train
        trained = TrainingClasses.of(t.task_type, t.y[self.positions(fraction, seed)], t.names)
        return trained.excluded if trained is not None else {}

    def refuse_unlearnable(self, kind: str, task: str, split: str, fractions: list[float], seeds: list[int]) -> None:
        """UserError (one line, `training_classes.unlearnable_line`) where a draw of ``fractions`` x ``seeds``
        teaches a head nothing; the pre-flight refuses it first, naming the recipe's table."""
        bad = first_unlearnable(self.train, self.patients, fractions, seeds)
        if bad is not None:
            raise UserError(unlearnable_line(kind, task, split, bad))

    def subset(self, fraction: float, seed: int) -> Targets:
        """The training targets of that label fraction."""
        chosen = self.positions(fraction, seed)
        t = self.train
        return Targets(t.indices[chosen], t.y[chosen], t.names, t.task_type, 0)


def load_task(ctx: EvalContext, spec: TaskSpec) -> TaskData:
    """Targets of ``spec.task`` on its three splits (no validation records where ``spec.val_split`` is None).

    A UserError naming the protocol if train or test has no labelled record, or if the task's type is not
    one the protocol supports.
    """
    cache = ctx.open_cache(spec.cache)
    tr = task_targets(cache, spec.task, ctx.split(cache, spec.train_split), spec.task_type)
    va_idx = ctx.split(cache, spec.val_split) if spec.val_split is not None else np.zeros(0, dtype=np.int64)
    va = task_targets(cache, spec.task, va_idx, tr.task_type)
    te = task_targets(cache, spec.task, ctx.split(cache, spec.test_split), tr.task_type)
    for name, t in ((spec.train_split, tr), (spec.test_split, te)):
        if len(t.indices) == 0:
            raise UserError(f"{spec.protocol} task {spec.task!r}: split {name!r} has no labelled records")
    if tr.task_type not in spec.task_types:
        raise UserError(f"{spec.protocol} task {spec.task!r} is {tr.task_type}; {spec.protocol} scores "
                        f"{' / '.join(sorted(spec.task_types))} tasks")
    codes = patient_codes(cache)
    return TaskData(cache, tr, va, te, codes[tr.indices], codes[va.indices], codes[te.indices])
