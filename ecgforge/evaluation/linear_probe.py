"""Linear evaluation: a linear head on frozen embeddings, at several label fractions and seeds.

The standard SSL protocol (Chen et al. 2020; Mehari & Strodthoff 2021; Bo et al. 2022). Embeddings are
computed once per encoder on tiled windows; the head is trained on the windows of the selected training
records, picked on the validation split, and tested on per-record means of window scores. ``head = "mlp"``
trains an MLP instead (rows ``mlp_probe``), ``head = "attention"`` a learnable-query attention pooling over
the encoder's token sequence (``forward_features``; rows ``attention_probe``), the frozen-encoder head of the
ECG foundation-model benchmark (Al-Masud et al., ICLR 2026). The encoder stays in eval mode: frozen means its
BatchNorm statistics do not move either.

``lead_subsets`` trains *and* tests the head on each reduced-lead set (Oh et al., CHIL 2022, after the
PhysioNet/CinC Challenge 2021; ``evaluation.leads``): rows then carry the condition ``leads``. With
``challenge_weights`` (a multilabel task such as CinC ``scored``) rows also report the Challenge 2021 score,
with per-class thresholds chosen on the validation split's scores (never the test split's).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ecgforge.errors import UserError, resolved_against
from ecgforge.evaluation.features import per_record
from ecgforge.evaluation.frozen import FeatureView, FrozenFeatureProtocol, Scored
from ecgforge.evaluation.leads import LeadSubset, lead_transform
from ecgforge.evaluation.metrics import NORMAL_CLASS, challenge_metric, challenge_thresholds
from ecgforge.evaluation.probing import train_probe
from ecgforge.evaluation.protocol import ProbeConfig
from ecgforge.evaluation.tasks import TaskData


class LinearProbeConfig(ProbeConfig, extra="forbid", frozen=True):
    kind: Literal["linear_probe"] = "linear_probe"
    lead_subsets: list[LeadSubset] = Field(
        default_factory=lambda: ["12"], min_length=1,
        description="train and test the head on each lead subset (others zeroed): 12, 6, 4, 3, 2, 1")
    challenge_weights: str | None = Field(
        None, description="the Challenge's weights.csv (weights_abbreviations.csv for the CinC 'scored' task): "
                          "report challenge_score with thresholds chosen on val_split")
    challenge_normal_class: str | None = Field(
        None, description="the inactive classifier's class; default 426783006 or NSR, whichever the table names")


def challenge_normal_class(weights_csv: str, given: str | None = None) -> str:
    """The Challenge's normal class as the table names it: ``given``, else SNOMED 426783006 or NSR."""
    path = Path(weights_csv).expanduser()
    if not path.is_file():
        raise UserError(f"linear_probe.challenge_weights: {path} not found{resolved_against(path)}")
    if given is not None:
        return given
    with path.open(newline="") as f:
        header = {code for cell in next(csv.reader(f), []) for code in cell.strip().split("|")}
    for name in (NORMAL_CLASS, "NSR"):
        if name in header:
            return name
    raise UserError(f"linear_probe.challenge_weights: {path} names neither {NORMAL_CLASS} nor NSR")


def challenge_row_metrics(data: TaskData, val_y: np.ndarray, val_scores: np.ndarray, test_scores: np.ndarray,
                          weights_csv: str, normal_class: str | None = None) -> tuple[float, list[float]]:
    """The test split's Challenge score and the per-class thresholds chosen on the validation records' scores
    ``val_scores (n_val, K)`` against ``val_y``."""
    if data.task_type != "multilabel":
        raise UserError(f"linear_probe.challenge_weights: task is {data.task_type}; "
                        "the Challenge score needs a multilabel task")
    if len(val_y) == 0:
        raise UserError("linear_probe.challenge_weights: val_split has no labelled records to choose thresholds on")
    normal = challenge_normal_class(weights_csv, normal_class)
    try:
        thr = challenge_thresholds(val_y, val_scores, data.train.names, weights_csv, normal)
        score = challenge_metric(data.test.y, (test_scores >= thr).astype(np.int64), data.train.names,
                                 weights_csv, normal)
    except ValueError as e:
        raise UserError(f"linear_probe.challenge_weights: {e}") from None
    return score, [float(t) for t in thr]


class LinearProbe(FrozenFeatureProtocol):
    Config = LinearProbeConfig
    cfg: LinearProbeConfig

    @property
    def row_kind(self) -> str:
        return {"linear": "linear_probe", "mlp": "mlp_probe", "attention": "attention_probe"}[self.cfg.head]

    def score(self, view: FeatureView, fraction: float) -> Iterator[Scored]:
        c, data = self.cfg, view.data
        for leads in c.lead_subsets:
            tf = lead_transform(list(data.cache.leads), leads, "linear_probe")
            head, pos, vpos = train_probe(view, c, fraction, tf)
            f_te, rec_te = view.windows("test", tf, head.sequence)
            scores = per_record(head.scores(f_te), rec_te, len(data.test.indices))
            facts: dict[str, Any] = {"selected_epoch": head.selected_epoch}
            metrics: dict[str, float | None] = {}
            if c.challenge_weights is not None:
                f_va, rec_va = view.windows("val", tf, head.sequence)
                val_scores = per_record(head.scores(f_va), rec_va, len(data.val.indices))[vpos]
                challenge, thr = challenge_row_metrics(data, data.val.y[vpos], val_scores, scores,
                                                   c.challenge_weights, c.challenge_normal_class)
                metrics["challenge_score"] = challenge
                facts["challenge_thresholds"] = dict(zip(data.train.names, thr, strict=True))
            yield Scored(scores, n_train=len(pos), n_val=len(vpos), reference=leads == "12",
                         # Only runs that ask for subsets get the condition, so 12-lead rows stay as before.
                         conditions={"leads": leads} if c.lead_subsets != ["12"] else {},
                         facts=facts, metrics=metrics)
