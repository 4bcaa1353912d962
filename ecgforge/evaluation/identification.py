"""Patient identification protocol (Oh et al., "Lead-agnostic Self-supervised Learning for Local and Global
Representations of Electrocardiogram", CHIL 2022): are a patient's records closest to each other?

Two modes (``mode``):

- ``zero_shot``: per-record embeddings (mean of the record's tiled window embeddings) over one split; over
  the patients with at least two records, one record per patient (drawn with the seed) is the gallery and
  the others are probes, ranked by cosine similarity (``retrieval.identification_ranks``).
- ``arcface`` (the paper's protocol, after fairseq-signals): an ArcFace head (scale 192, margin 1.0 as in
  the paper's ``identification.yaml``; ``evaluation.arcface``) is trained on the frozen window embeddings
  of ``train_split``'s patients; the held-out patients of ``split`` are then identified by gallery / probe
  retrieval on the dot product of their cosine vectors to the training patients' prototypes, as
  fairseq-signals' ``ECGIdentificationTask.valid_step`` does. The two splits must share no patient.

Rows report top-1 / top-5 accuracy with 95% bootstrap intervals that resample *patients* (a patient's
probes together), and carry the condition ``mode``. No label is used, so ``label_fraction`` is 1.0.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from ecgforge.data.cache import Cache
from ecgforge.data.splits import patient_codes
from ecgforge.errors import UserError
from ecgforge.evaluation.arcface import fit_arcface
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.paired import rank_evidence
from ecgforge.evaluation.protocol import EvalProtocol
from ecgforge.evaluation.retrieval import identification_ranks, patient_bootstrap_ci
from ecgforge.evaluation.rows import ResultRow


class IdentificationConfig(BaseModel, extra="forbid", frozen=True):
    #: Not a label set of the cache: the patients themselves (rows report task_type "identification").
    task_types: ClassVar[frozenset[str]] = frozenset({"identification"})

    kind: Literal["identification"] = "identification"
    mode: Literal["zero_shot", "arcface"] = Field(
        "zero_shot", description="zero_shot: cosine retrieval on embeddings; arcface: Oh et al.'s trained head")
    split: str = Field("test", description="records whose patients are identified (held out in arcface mode)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="gallery draws")
    inits: list[Literal["pretrained", "random"]] = Field(default_factory=lambda: ["pretrained", "random"], min_length=1)
    distractors: bool = Field(False, description="put single-record patients in the gallery as wrong answers")
    cache: str | None = Field(None, description="evaluate on another cache than [data].cache")
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of the patients for 95% CIs (0 = off)")
    train_split: str = Field("train", description="arcface: the patients the head is trained on")
    train_cache: str | None = Field(None, description="arcface: train on another cache (the paper: CinC 2021 "
                                                      "-> PTB-XL); default the evaluated cache")
    scale: float = Field(192.0, gt=0, description="arcface logit scale (fairseq-signals identification.yaml)")
    margin: float = Field(1.0, gt=0, lt=math.pi, description="arcface additive angular margin, radians")
    epochs: int = Field(50, gt=0, description="arcface head epochs")
    lr: float = Field(1e-2, gt=0, description="arcface head Adam learning rate (frozen encoder)")
    batch_size: int = Field(128, gt=0)
    standardize: bool = Field(True, description="arcface: standardise frozen features with train mean/std")

    def split_fields(self) -> dict[str, str]:
        """TOML field -> split name, for every split this table uses (``train_split`` only in arcface mode)."""
        return {"split": self.split, **({"train_split": self.train_split} if self.mode == "arcface" else {})}


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound near 0 and 1, unlike the normal approximation)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Identification(EvalProtocol):
    Config = IdentificationConfig
    cfg: IdentificationConfig

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        cache = ctx.open_cache(c.cache)
        idx = ctx.split(cache, c.split)
        patients = patient_codes(cache)[idx]
        names = np.unique(cache.patient_id.astype(str))  # patient code -> patient id (as `patient_codes` codes)
        if len(idx) == 0 or np.bincount(patients).max(initial=0) < 2:
            raise UserError(f"identification: split {c.split!r} has no patient with two or more records")
        train = self._train_records(ctx, cache, patients) if c.mode == "arcface" else None
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                z = ctx.features.records(init, seed, cache, idx)
                facts: dict[str, object] = {}
                if train is not None:
                    z, n_train = self._arcface_space(ctx, init, seed, z, *train)
                    facts = {"n_train_patients": n_train, "scale": c.scale, "margin": c.margin}
                res, ranks, probe_patients = identification_ranks(
                    z, patients, seed=seed, distractors=c.distractors, normalize=train is None)
                ci = {k: list(patient_bootstrap_ci(ranks < top, probe_patients, c.bootstrap, seed=seed))
                      for k, top in (("top1", 1), ("top5", 5))} if c.bootstrap else {}
                rows.append(ResultRow(
                    kind="identification", task="patient_identification", task_type="identification", init=init,
                    label_fraction=1.0, seed=seed, split=c.split, primary="top1",
                    metrics={"top1": res["top1"], "top5": res["top5"]}, ci95=ci, conditions={"mode": c.mode},
                    facts={"n_patients": int(res["n_patients"]), "n_probes": int(res["n_probes"]),
                           "n_gallery": int(res["n_gallery"]), **facts},
                    # Each probe is identified by its patient; the seed's gallery draw fixes which probes.
                    evidence=rank_evidence(ranks, names[probe_patients], names[probe_patients]),
                ))
        return rows

    def _train_records(self, ctx: EvalContext, cache: Cache,
                       test_patients: np.ndarray) -> tuple[Cache, np.ndarray, np.ndarray]:
        """(train cache, train record indices, their patient codes); refuses patients shared with ``split``."""
        c = self.cfg
        tcache = ctx.open_cache(c.train_cache) if c.train_cache is not None else cache
        tidx = ctx.split(tcache, c.train_split)
        if len(tidx) == 0:
            raise UserError(f"identification: arcface train_split {c.train_split!r} has no records")
        tpat = patient_codes(tcache)[tidx]
        if tcache is cache:
            shared = np.intersect1d(tpat, test_patients)
            if len(shared):
                raise UserError(f"identification: train_split {c.train_split!r} and split {c.split!r} share "
                                f"{len(shared)} patients; arcface identifies held-out patients")
        return tcache, tidx, tpat

    def _arcface_space(self, ctx: EvalContext, init: str, seed: int, z: np.ndarray, tcache: Cache,
                       tidx: np.ndarray, tpat: np.ndarray) -> tuple[np.ndarray, int]:
        """The test records' ``(N, K)`` cosines to the K training patients' prototypes, and K."""
        c = self.cfg
        f_tr, t_tr = ctx.features.windows(init, seed, tcache, tidx)
        head, mean, std = fit_arcface(f_tr, tpat[t_tr.record_of], scale=c.scale, margin=c.margin, epochs=c.epochs,
                                      lr=c.lr, batch_size=c.batch_size, standardize=c.standardize, seed=seed)
        with torch.no_grad():
            cos = head.cosines((torch.from_numpy(np.asarray(z, dtype=np.float32)) - mean) / std)
        return cos.numpy().astype(np.float64), int(head.kernel.shape[0])
