"""Linear evaluation: a linear head on frozen embeddings, at several label fractions and seeds.

The standard SSL protocol (Chen et al. 2020; Mehari & Strodthoff 2021; Bo et al. 2022). Embeddings are
computed once per encoder on tiled windows; the head is trained on the windows of the selected training
records, picked on the validation split, and tested on per-record means of window scores.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ecgforge.data.dataset import TiledWindows, patient_codes, task_targets
from ecgforge.errors import UserError
from ecgforge.evaluation.common import EvalContext, ProtocolConfig, embed, fit_linear_head, per_record
from ecgforge.evaluation.sampling import label_fraction
from ecgforge.evaluation.scoring import primary_score, score_rows


class LinearProbeConfig(ProtocolConfig, extra="forbid", frozen=True):
    kind: Literal["linear_probe"] = "linear_probe"
    inits: list[Literal["pretrained", "random"]] = Field(default_factory=lambda: ["pretrained", "random"], min_length=1)
    epochs: int = Field(100, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, gt=0)
    val_split: str = "val"


class LinearProbe:
    def __init__(self, **cfg: object) -> None:
        self.cfg = LinearProbeConfig(**cfg)

    def run(self, ctx: EvalContext) -> list[dict]:
        c = self.cfg
        cache = ctx.open_cache(c.cache)
        tr = task_targets(cache, c.task, ctx.split(cache, c.train_split), c.task_type)
        va = task_targets(cache, c.task, ctx.split(cache, c.val_split), tr.task_type)
        te = task_targets(cache, c.task, ctx.split(cache, c.test_split), tr.task_type)
        for name, t in ((c.train_split, tr), (c.test_split, te)):
            if len(t.indices) == 0:
                raise UserError(f"linear_probe task {c.task!r}: split {name!r} has no labelled records")
        n_out = 1 if tr.task_type == "regression" else len(tr.names)
        tiles = {s: TiledWindows(cache, t.indices, ctx.window, ctx.stride) for s, t in (("tr", tr), ("va", va), ("te", te))}
        patients = patient_codes(cache)[tr.indices]
        rows: list[dict] = []
        feats: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        for init in c.inits:
            for seed in c.seeds:
                key = (init, seed if init == "random" else 0)
                if key not in feats:
                    enc = ctx.make_encoder(init, seed)
                    feats[key] = {s: embed(enc, ds, ctx.device, ctx.batch_size, ctx.num_workers) for s, ds in tiles.items()}
                f = feats[key]
                for frac in c.label_fractions:
                    chosen = label_fraction(tr.y, patients, frac, seed)
                    win = np.isin(tiles["tr"].record_of, chosen)
                    train_y = tr.y[tiles["tr"].record_of[win]]
                    val = None
                    if len(va.indices):
                        val = (f["va"], tiles["va"].record_of, va.y, len(va.indices),
                               lambda y, s: primary_score(tr.task_type, y, s))
                    head = fit_linear_head(
                        f["tr"][win], train_y, tr.task_type, n_out, val=val, epochs=c.epochs, lr=c.lr,
                        weight_decay=c.weight_decay, batch_size=c.batch_size, seed=seed,
                    )
                    scores = per_record(head.scores(f["te"]), tiles["te"].record_of, len(te.indices))
                    row = {
                        "kind": "linear_probe", "task": c.task, "task_type": tr.task_type, "init": init,
                        "label_fraction": frac, "seed": seed, "split": c.test_split,
                        "n_train_records": int(len(chosen)), "n_test_records": int(len(te.indices)),
                    }
                    row.update(score_rows(tr.task_type, te.y, scores, tr.names, c.bootstrap, seed))
                    rows.append(row)
        return rows
