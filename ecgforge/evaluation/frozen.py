"""The base of every protocol on frozen embeddings: a subclass writes only how it scores them.

`FrozenFeatureProtocol.run` loads the task (`tasks.load_task`), and for every init x seed x label fraction asks
the subclass's ``score(view, fraction)`` for `Scored` results: per-record scores of the test records. The
`FeatureView` it gets is one encoder's embeddings of the task's records, computed on first request and
shared by every fraction, protocol and task of the run (``EvalContext.features``: each encoder embeds each
record set once). Each `Scored` becomes a `ResultRow`: the task's metrics, a bootstrap 95% interval of the
primary metric, and the evidence (test records and their patients) that paired comparisons
(``evaluation.paired``, the rows' ``versus``) resample.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from ecgforge.data.splits import Targets
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.features import NamedTransform
from ecgforge.evaluation.paired import record_identity
from ecgforge.evaluation.protocol import EvalProtocol, FrozenFeatureConfig
from ecgforge.evaluation.rows import PRIMARY, ResultRow
from ecgforge.evaluation.scoring import score_rows
from ecgforge.evaluation.tasks import TaskData, load_task

Part = Literal["train", "val", "test"]


@dataclass(frozen=True)
class FeatureView:
    """The embeddings that the encoder of (``init``, ``seed``) gives the records of ``data``.

    ``part`` names one of the task's splits: ``data.train``, ``data.val`` or ``data.test``. Nothing is embedded
    until asked for, and nothing twice in a run.
    """

    ctx: EvalContext
    data: TaskData
    init: str
    seed: int

    def targets(self, part: Part) -> Targets:
        """Record indices, targets ``y`` and label names of ``part``."""
        return getattr(self.data, part)

    def records(self, part: Part) -> np.ndarray:
        """``(n_part, D)`` per-record embeddings: the mean of each record's tiled window embeddings."""
        return self.ctx.features.records(self.init, self.seed, self.data.cache, self.targets(part).indices)

    def windows(self, part: Part, transform: NamedTransform | None = None, sequence: bool = False,
                ) -> tuple[np.ndarray, np.ndarray]:
        """``(W, D)`` window embeddings of ``part`` (inputs through ``transform`` first, e.g. a lead subset) and
        ``(W,)`` the position in ``part`` of each window's record. With ``sequence``: the encoder's token
        sequences ``(W, T', C)`` instead of its pooled embeddings (for an attention head)."""
        z, tiles = self.ctx.features.windows(self.init, self.seed, self.data.cache, self.targets(part).indices,
                                             transform, sequence)
        return z, tiles.record_of


@dataclass
class Scored:
    """What a frozen-feature protocol computed for one row.

    Attributes:
        scores: the test records' scores in the order of ``data.test``: ``(n_test, C)`` label probabilities
            (multilabel: 0.5 is the decision threshold), ``(n_test, C)`` class scores (multiclass: the argmax
            is the prediction) or ``(n_test,)`` predicted values (regression).
        n_train, n_val: training records used; validation records selected on (0: none).
        conditions, reference: the test condition (``ResultRow.conditions``) and whether it is the
            unperturbed one (clean input, all leads).
        facts: what the row reports beside its metrics; metrics: metrics beyond the task type's own.
    """

    scores: np.ndarray
    n_train: int
    n_val: int = 0
    conditions: dict[str, Any] = field(default_factory=dict)
    reference: bool = True
    facts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)


class FrozenFeatureProtocol(EvalProtocol):
    """A protocol on frozen embeddings, built as ``cls(cfg, ctx)``; subclasses set ``Config`` and ``score``."""

    Config: ClassVar[type[FrozenFeatureConfig]]
    cfg: FrozenFeatureConfig

    @abstractmethod
    def score(self, view: FeatureView, fraction: float) -> Iterator[Scored]:
        """The rows of one encoder (``view.init``, ``view.seed``) at one label fraction: train on (or look up)
        the training records of the fraction, ``view.data.positions(fraction, view.seed)``, and score the test
        records. Yield one `Scored` per test condition (usually one)."""

    @property
    def row_kind(self) -> str:
        """The ``kind`` the rows report: the config's (a variant, such as an MLP head, may say otherwise)."""
        return self.cfg.kind  # type: ignore[attr-defined]

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        data = load_task(ctx, c.task_spec)
        data.refuse_unlearnable(self.row_kind, c.task, c.train_split, c.label_fractions, c.seeds)
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                view = FeatureView(ctx, data, init, seed)
                for fraction in c.label_fractions:
                    rows += [self.row(view, fraction, s) for s in self.score(view, fraction)]
        return rows

    def row(self, view: FeatureView, fraction: float, s: Scored) -> ResultRow:
        """The results row of ``s``: metrics of the test scores, their bootstrap interval and paired evidence;
        classes the fraction's training subset never or always showed are left out of the macro AUROC."""
        c, data = self.cfg, view.data
        row = ResultRow(
            kind=self.row_kind, task=c.task, task_type=data.task_type, init=view.init, label_fraction=fraction,
            seed=view.seed, split=c.test_split, primary=PRIMARY[data.task_type], reference=s.reference,
            n_train_records=int(s.n_train), n_val_records=int(s.n_val), n_test_records=int(len(data.test.indices)),
            conditions=s.conditions, facts=s.facts,
            **score_rows(data.task_type, data.test.y, s.scores, data.train.names, c.bootstrap, view.seed,
                         *record_identity(data.cache, data.test.indices),
                         excluded=data.excluded_classes(fraction, view.seed)),
        )
        row.metrics.update(s.metrics)
        return row
