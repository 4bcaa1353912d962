"""k-nearest-neighbour evaluation on frozen embeddings (Wu et al. 2018; Caron et al. 2021, DINO's k-NN).

Per-record embeddings are the mean of the record's tiled window embeddings. Each test record's score is the
mean target of its ``k`` most cosine-similar training records (the labelled records of a label fraction):
the fraction of neighbours carrying each label (multi-label), each class (multi-class), or their mean value
(regression). No parameter is trained, so it measures what the embedding geometry already separates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from ecgforge.data.splits import TaskType
from ecgforge.evaluation.frozen import FeatureView, FrozenFeatureProtocol, Scored
from ecgforge.evaluation.protocol import FrozenFeatureConfig
from ecgforge.evaluation.retrieval import unit_rows


class KNNConfig(FrozenFeatureConfig, extra="forbid", frozen=True):
    kind: Literal["knn"] = "knn"
    k: int = Field(20, gt=0, description="neighbours (fewer if the training subset is smaller)")


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


class KNN(FrozenFeatureProtocol):
    """No model to select, so no validation split is used."""

    Config = KNNConfig
    cfg: KNNConfig

    def score(self, view: FeatureView, fraction: float) -> Iterator[Scored]:
        data = view.data
        pos = data.positions(fraction, view.seed)
        z_tr, z_te = view.records("train"), view.records("test")
        scores = knn_scores(z_tr[pos], data.train.y[pos], z_te, self.cfg.k, data.task_type, len(data.train.names))
        yield Scored(scores, n_train=len(pos), facts={"k": min(self.cfg.k, len(pos))})
