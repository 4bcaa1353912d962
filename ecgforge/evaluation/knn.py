"""k-nearest-neighbour evaluation on frozen embeddings (Wu et al. 2018; Caron et al. 2021, DINO's k-NN).

Per-record embeddings are the mean of the record's tiled window embeddings. Each test record's score is the
mean target of its ``k`` most cosine-similar training records (the labelled records of a label fraction):
the fraction of neighbours carrying each label (multi-label), each class (multi-class), or their mean value
(regression). No parameter is trained, so it measures what the embedding geometry already separates.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ecgforge.data.splits import TaskType
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.protocol import ProtocolConfig
from ecgforge.evaluation.retrieval import unit_rows
from ecgforge.evaluation.rows import ResultRow
from ecgforge.evaluation.scoring import PRIMARY, score_rows
from ecgforge.evaluation.tasks import load_task


class KNNConfig(ProtocolConfig, extra="forbid", frozen=True):
    kind: Literal["knn"] = "knn"
    k: int = Field(20, gt=0, description="neighbours (fewer if the training subset is smaller)")
    inits: list[Literal["pretrained", "random"]] = Field(default_factory=lambda: ["pretrained", "random"], min_length=1)


def knn_scores(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, k: int, task_type: TaskType,
               n_classes: int) -> np.ndarray:
    """Scores of ``test_z (M, D)`` from the ``k`` cosine-nearest rows of ``train_z (N, D)``.

    ``train_y``: ``(N, C)`` multi-hot, ``(N,)`` class indices or ``(N,)`` values. Returns ``(M, C)`` neighbour
    label fractions (classification) or ``(M,)`` neighbour means (regression).
    """
    k = min(k, len(train_z))
    sim = unit_rows(test_z.astype(np.float64)) @ unit_rows(train_z.astype(np.float64)).T  # (M, N)
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (M, k), unordered: only the set matters
    if task_type == "multiclass":
        onehot = np.eye(n_classes, dtype=np.float64)[train_y.astype(np.int64)]
        return onehot[nearest].mean(axis=1)
    return train_y.astype(np.float64)[nearest].mean(axis=1)


class KNN:
    def __init__(self, cfg: KNNConfig) -> None:
        self.cfg = cfg

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        # k-NN has no model to select: no validation split is used.
        data = load_task(ctx, "knn", c.task, c.task_type, c.cache, c.train_split, None, c.test_split)
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                z_tr = ctx.features.records(init, seed, data.cache, data.train.indices)
                z_te = ctx.features.records(init, seed, data.cache, data.test.indices)
                for frac in c.label_fractions:
                    pos = data.positions(frac, seed)
                    scores = knn_scores(z_tr[pos], data.train.y[pos], z_te, c.k, data.task_type, len(data.train.names))
                    rows.append(ResultRow(
                        kind="knn", task=c.task, task_type=data.task_type, init=init, label_fraction=frac,
                        seed=seed, split=c.test_split, primary=PRIMARY[data.task_type],
                        n_train_records=int(len(pos)), n_val_records=0, n_test_records=int(len(data.test.indices)),
                        facts={"k": min(c.k, len(pos))},
                        **score_rows(data.task_type, data.test.y, scores, data.train.names, c.bootstrap, seed,
                                   records=data.test.indices, units=data.test_patients),
                    ))
        return rows
