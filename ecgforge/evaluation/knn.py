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

from ecgforge.data.dataset import TaskType, TiledWindows
from ecgforge.evaluation.common import EvalContext, ProtocolConfig, embed, per_record
from ecgforge.evaluation.finetune import load_task
from ecgforge.evaluation.scoring import score_rows


class KNNConfig(ProtocolConfig, extra="forbid", frozen=True):
    kind: Literal["knn"] = "knn"
    k: int = Field(20, gt=0, description="neighbours (fewer if the training subset is smaller)")
    inits: list[Literal["pretrained", "random"]] = Field(default_factory=lambda: ["pretrained", "random"], min_length=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, k: int, task_type: TaskType,
               n_classes: int) -> np.ndarray:
    """Scores of ``test_z (M, D)`` from the ``k`` cosine-nearest rows of ``train_z (N, D)``.

    ``train_y``: ``(N, C)`` multi-hot, ``(N,)`` class indices or ``(N,)`` values. Returns ``(M, C)`` neighbour
    label fractions (classification) or ``(M,)`` neighbour means (regression).
    """
    k = min(k, len(train_z))
    sim = _unit(test_z.astype(np.float64)) @ _unit(train_z.astype(np.float64)).T  # (M, N)
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (M, k), unordered: only the set matters
    if task_type == "multiclass":
        onehot = np.eye(n_classes, dtype=np.float64)[train_y.astype(np.int64)]
        return onehot[nearest].mean(axis=1)
    return train_y.astype(np.float64)[nearest].mean(axis=1)


class KNN:
    def __init__(self, **cfg: object) -> None:
        self.cfg = KNNConfig(**cfg)

    def run(self, ctx: EvalContext) -> list[dict]:
        c = self.cfg
        # k-NN has no model to select: the validation split is not used (test_split doubles as val here).
        data = load_task(ctx, "knn", c.task, c.task_type, c.cache, c.train_split, c.test_split, c.test_split)
        tiles = {"tr": TiledWindows(data.cache, data.train.indices, ctx.window, ctx.stride),
                 "te": TiledWindows(data.cache, data.test.indices, ctx.window, ctx.stride)}
        rows: list[dict] = []
        feats: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        for init in c.inits:
            for seed in c.seeds:
                key = (init, seed if init == "random" else 0)
                if key not in feats:
                    enc = ctx.make_encoder(init, seed)
                    feats[key] = {
                        s: per_record(embed(enc, ds, ctx.device, ctx.batch_size, ctx.num_workers), ds.record_of,
                                      len(ds.indices))
                        for s, ds in tiles.items()
                    }
                f = feats[key]
                for frac in c.label_fractions:
                    pos = data.positions(frac, seed)
                    scores = knn_scores(f["tr"][pos], data.train.y[pos], f["te"], c.k, data.task_type,
                                        len(data.train.names))
                    row = {
                        "kind": "knn", "task": c.task, "task_type": data.task_type, "init": init,
                        "label_fraction": frac, "seed": seed, "split": c.test_split, "k": min(c.k, len(pos)),
                        "n_train_records": int(len(pos)), "n_test_records": int(len(data.test.indices)),
                    }
                    row.update(score_rows(data.task_type, data.test.y, scores, data.train.names, c.bootstrap, seed))
                    rows.append(row)
        return rows
