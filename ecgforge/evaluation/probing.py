"""A head trained on a task's frozen window embeddings: what the linear probe and robustness share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.heads import LinearHead, fit_linear_head
from ecgforge.evaluation.protocol import ProbeConfig
from ecgforge.evaluation.scoring import primary_score
from ecgforge.evaluation.tasks import TaskData


def train_probe(ctx: EvalContext, data: TaskData, cfg: ProbeConfig, init: str, seed: int,
                frac: float, transform: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                ) -> tuple[LinearHead, np.ndarray]:
    """The head of one (init, seed, label fraction) on frozen window embeddings, picked on the validation split.

    ``transform`` (named, as `FeatureCache.windows` takes it) is applied to the training and validation
    inputs, e.g. a lead subset that the probe is trained on. Returns the head and the positions in
    ``data.train`` of the records it was trained on.
    """
    f_tr, t_tr = ctx.features.windows(init, seed, data.cache, data.train.indices, transform)
    pos = data.positions(frac, seed)
    win = np.isin(t_tr.record_of, pos)
    val = None
    if len(data.val.indices):
        f_va, t_va = ctx.features.windows(init, seed, data.cache, data.val.indices, transform)
        val = (f_va, t_va.record_of, data.val.y, len(data.val.indices),
               lambda y, s: primary_score(data.task_type, y, s))
    head = fit_linear_head(
        f_tr[win], data.train.y[t_tr.record_of[win]], data.task_type, data.n_out, val=val, epochs=cfg.epochs,
        lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed,
    )
    return head, pos
