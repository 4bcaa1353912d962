"""A head trained on a task's frozen window embeddings: what the linear probe and robustness share."""

from __future__ import annotations

import numpy as np

from ecgforge.errors import UserError
from ecgforge.evaluation.features import NamedTransform, require_sequence
from ecgforge.evaluation.frozen import FeatureView
from ecgforge.evaluation.heads import LinearHead, fit_linear_head
from ecgforge.evaluation.protocol import ProbeConfig
from ecgforge.evaluation.scoring import primary_score
from ecgforge.evaluation.training_classes import excluded_names


def train_probe(view: FeatureView, cfg: ProbeConfig, fraction: float, transform: NamedTransform | None = None,
                ) -> tuple[LinearHead, np.ndarray, np.ndarray]:
    """The head of one encoder (``view``) at one label fraction on frozen window embeddings, picked on the
    validation split.

    ``transform`` is applied to the training and validation inputs, e.g. a lead subset that the probe is
    trained on. The validation records are the label fraction's draw of the validation split (all of it with
    ``cfg.subsample_val`` False). Returns the head and the positions in ``data.train`` and ``data.val`` of the
    records it was trained and selected on. ``cfg.head = "attention"`` trains on the encoder's token
    sequences (``head.sequence``: score it on ``view.windows(part, transform, sequence=True)``).
    """
    data, seed = view.data, view.seed
    sequence = cfg.head == "attention"
    if sequence:  # before anything is embedded: an encoder without tokens is refused in one line
        require_sequence(view.ctx.features.encoder(view.init, seed), f"{cfg.kind} head = 'attention'")  # type: ignore[attr-defined]
    f_tr, rec_tr = view.windows("train", transform, sequence)
    if sequence and f_tr.shape[-1] % cfg.head_heads:
        raise UserError(f"{cfg.kind}.head_heads: {cfg.head_heads} heads do not divide the encoder's feature "  # type: ignore[attr-defined]
                        f"width {f_tr.shape[-1]}; choose a divisor of it")
    pos = data.positions(fraction, seed)
    vpos = data.val_positions(fraction, seed, cfg.subsample_val)
    # Selected on the macro AUROC of the classes the row is scored on: not those the subset cannot teach.
    exclude = excluded_names(data.excluded_classes(fraction, seed))
    win = np.isin(rec_tr, pos)
    val = None
    if len(vpos):
        # Embed the whole validation split once (shared by every fraction), then keep the drawn records.
        f_va, rec_va = view.windows("val", transform, sequence)
        keep = np.isin(rec_va, vpos)
        renumber = np.full(len(data.val.indices), -1, dtype=np.int64)
        renumber[vpos] = np.arange(len(vpos))
        val = (f_va[keep], renumber[rec_va[keep]], data.val.y[vpos], len(vpos),
               lambda y, s: primary_score(data.task_type, y, s, data.train.names, exclude))
    head = fit_linear_head(
        f_tr[win], data.train.y[rec_tr[win]], data.task_type, data.n_out, val=val, epochs=cfg.epochs,
        lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed,
        mlp=(cfg.head_hidden, cfg.head_dropout) if cfg.head == "mlp" else None,
        attention_heads=cfg.head_heads if sequence else None,
    )
    return head, pos, vpos
