"""One task loader for every protocol: the labelled train / val / test records of a task on a cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgforge.data.cache import Cache
from ecgforge.data.splits import Targets, TaskType, label_fraction, patient_codes, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.context import EvalContext


@dataclass
class TaskData:
    """The labelled train/val/test records of one task on one cache."""

    cache: Cache
    train: Targets
    val: Targets
    test: Targets
    patients: np.ndarray  # (n_train,) patient code of each training record

    @property
    def task_type(self) -> TaskType:
        return self.train.task_type

    @property
    def n_out(self) -> int:
        return 1 if self.task_type == "regression" else len(self.train.names)

    def positions(self, fraction: float, seed: int) -> np.ndarray:
        """Positions in ``train`` of a stratified, patient-grouped label fraction (``splits.label_fraction``)."""
        return label_fraction(self.train.y, self.patients, fraction, seed)

    def subset(self, fraction: float, seed: int) -> Targets:
        """The training targets of that label fraction."""
        chosen = self.positions(fraction, seed)
        t = self.train
        return Targets(t.indices[chosen], t.y[chosen], t.names, t.task_type, 0)


def load_task(ctx: EvalContext, protocol: str, task: str, task_type: TaskType | None, cache_path: str | None,
              train_split: str, val_split: str | None, test_split: str) -> TaskData:
    """Targets of ``task`` on the three splits (``val_split`` None: no validation records); a UserError naming
    the protocol if train or test has no labelled record."""
    cache = ctx.open_cache(cache_path)
    tr = task_targets(cache, task, ctx.split(cache, train_split), task_type)
    va_idx = ctx.split(cache, val_split) if val_split is not None else np.zeros(0, dtype=np.int64)
    va = task_targets(cache, task, va_idx, tr.task_type)
    te = task_targets(cache, task, ctx.split(cache, test_split), tr.task_type)
    for name, t in ((train_split, tr), (test_split, te)):
        if len(t.indices) == 0:
            raise UserError(f"{protocol} task {task!r}: split {name!r} has no labelled records")
    return TaskData(cache, tr, va, te, patient_codes(cache)[tr.indices])
