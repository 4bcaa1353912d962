"""Linear evaluation: a linear head on frozen embeddings, at several label fractions and seeds.

The standard SSL protocol (Chen et al. 2020; Mehari & Strodthoff 2021; Bo et al. 2022). Embeddings are
computed once per encoder on tiled windows; the head is trained on the windows of the selected training
records, picked on the validation split, and tested on per-record means of window scores.
"""

from __future__ import annotations

from typing import Literal

from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.features import per_record
from ecgforge.evaluation.probing import train_probe
from ecgforge.evaluation.protocol import ProbeConfig
from ecgforge.evaluation.rows import ResultRow
from ecgforge.evaluation.scoring import PRIMARY, score_rows
from ecgforge.evaluation.tasks import load_task


class LinearProbeConfig(ProbeConfig, extra="forbid", frozen=True):
    kind: Literal["linear_probe"] = "linear_probe"


class LinearProbe:
    def __init__(self, cfg: LinearProbeConfig) -> None:
        self.cfg = cfg

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        data = load_task(ctx, "linear_probe", c.task, c.task_type, c.cache, c.train_split, c.val_split, c.test_split)
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                f_te, t_te = ctx.features.windows(init, seed, data.cache, data.test.indices)
                for frac in c.label_fractions:
                    head, pos = train_probe(ctx, data, c, init, seed, frac)
                    scores = per_record(head.scores(f_te), t_te.record_of, len(data.test.indices))
                    rows.append(ResultRow(
                        kind="linear_probe", task=c.task, task_type=data.task_type, init=init, label_fraction=frac,
                        seed=seed, split=c.test_split, primary=PRIMARY[data.task_type],
                        n_train_records=int(len(pos)), n_val_records=int(len(data.val.indices)),
                        n_test_records=int(len(data.test.indices)),
                        **score_rows(data.task_type, data.test.y, scores, data.train.names, c.bootstrap, seed),
                    ))
        return rows
