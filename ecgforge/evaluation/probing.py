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
                ) -> tuple[LinearHead, np.ndarray, np.ndarray]:
    """The head of one (init, seed, label fraction) on frozen window embeddings, picked on the validation split.

    ``transform`` (named, as `FeatureCache.windows` takes it) is applied to the training and validation
    inputs, e.g. a lead subset that the probe is trained on. The validation records are the label fraction's
    draw of the validation split (all of it with ``cfg.subsample_val`` False). Returns the head and the
    positions in ``data.train`` and ``data.val`` of the records it was trained and selected on.
    """
    f_tr, t_tr = ctx.features.windows(init, seed, data.cache, data.train.indices, transform)
    pos = data.positions(frac, seed)
    vpos = data.val_positions(frac, seed, cfg.subsample_val)
    win = np.isin(t_tr.record_of, pos)
    val = None
    if len(vpos):
        # Embed the whole validation split once (shared by every fraction), then keep the drawn records.
        f_va, t_va = ctx.features.windows(init, seed, data.cache, data.val.indices, transform)
        keep = np.isin(t_va.record_of, vpos)
        renumber = np.full(len(data.val.indices), -1, dtype=np.int64)
        renumber[vpos] = np.arange(len(vpos))
        val = (f_va[keep], renumber[t_va.record_of[keep]], data.val.y[vpos], len(vpos),
               lambda y, s: primary_score(data.task_type, y, s))
    head = fit_linear_head(
        f_tr[win], data.train.y[t_tr.record_of[win]], data.task_type, data.n_out, val=val, epochs=cfg.epochs,
        lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed,
        mlp=(cfg.head_hidden, cfg.head_dropout) if cfg.head == "mlp" else None,
    )
    return head, pos, vpos
