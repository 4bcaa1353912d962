"""Nearest-centroid evaluation on frozen embeddings: each class is the mean of its training records' unit-length
embeddings (the nearest class mean classifier, Mensink et al., TPAMI 2013; Snell et al.'s prototypes, 2017).

Multiclass: a test record scores each class by its cosine similarity to the class centroid (the prediction
is the nearest). Multilabel: each label by how much nearer the record is to the centroid of the label's
positives than to that of its negatives, mapped to [0, 1] (above 0.5: nearer the positives). A class without
training records has no centroid and scores 0. Nothing is trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np

from ecgforge.evaluation.frozen import FeatureView, FrozenFeatureProtocol, Scored
from ecgforge.evaluation.protocol import FrozenFeatureConfig
from ecgforge.evaluation.retrieval import unit_rows


class NearestCentroidConfig(FrozenFeatureConfig, extra="forbid", frozen=True):
    task_types: ClassVar[frozenset[str]] = frozenset({"multiclass", "multilabel"})  # no centroid of an age

    kind: Literal["centroid"] = "centroid"


def centroid_cosines(z: np.ndarray, members: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``(M, K)`` cosine similarity of each ``query (M, D)`` row to the mean of the unit rows of ``z (N, D)``
    that column k of ``members (N, K)`` (0 / 1) selects."""
    m = members.astype(np.float64)
    centroids = m.T @ unit_rows(z.astype(np.float64)) / np.maximum(m.sum(0), 1)[:, None]  # (K, D)
    return unit_rows(query.astype(np.float64)) @ unit_rows(centroids).T


class NearestCentroid(FrozenFeatureProtocol):
    Config = NearestCentroidConfig

    def score(self, view: FeatureView, fraction: float) -> Iterator[Scored]:
        data = view.data
        pos = data.positions(fraction, view.seed)  # the labelled training records of this fraction
        z, y, test = view.records("train")[pos], data.train.y[pos], view.records("test")
        if data.task_type == "multiclass":  # y (N,): class indices
            yield Scored(centroid_cosines(z, np.eye(len(data.train.names))[y], test), n_train=len(pos))
        else:  # multilabel, y (N, K): 0 / 1
            nearer = centroid_cosines(z, y, test) - centroid_cosines(z, 1 - y, test)  # in [-2, 2]
            yield Scored((nearer + 2) / 4, n_train=len(pos))
