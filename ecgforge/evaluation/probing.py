"""A head trained on a task's frozen window embeddings: what the linear probe and robustness share."""

from __future__ import annotations

import numpy as np

from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.heads import LinearHead, fit_linear_head
from ecgforge.evaluation.protocol import ProbeConfig
from ecgforge.evaluation.scoring import primary_score
from ecgforge.evaluation.tasks import TaskData


def train_probe(ctx: EvalContext, data: TaskData, cfg: ProbeConfig, init: str, seed: int,
                frac: float) -> tuple[LinearHead, np.ndarray]:
    """The head of one (init, seed, label fraction) on frozen window embeddings, picked on the validation split.

    Returns the head and the positions in ``data.train`` of the records it was trained on.
    """
    f_tr, t_tr = ctx.features.windows(init, seed, data.cache, data.train.indices)
    pos = data.positions(frac, seed)
    win = np.isin(t_tr.record_of, pos)
    val = None
    if len(data.val.indices):
        f_va, t_va = ctx.features.windows(init, seed, data.cache, data.val.indices)
        val = (f_va, t_va.record_of, data.val.y, len(data.val.indices),
               lambda y, s: primary_score(data.task_type, y, s))
    head = fit_linear_head(
        f_tr[win], data.train.y[t_tr.record_of[win]], data.task_type, data.n_out, val=val, epochs=cfg.epochs,
        lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed,
    )
    return head, pos
