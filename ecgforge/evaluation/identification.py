"""Patient identification protocol (Oh et al., "Lead-agnostic Self-supervised Learning for Local and Global
Representations of Electrocardiogram", CHIL 2022): are a patient's records closest to each other?

Per-record embeddings (mean of the record's tiled window embeddings) over one split; over the patients with
at least two records, one record per patient (drawn with the seed) is the gallery and the others are probes
(``retrieval.identification_top1``). Rows report top-1 / top-5 accuracy and a 95% Wilson interval for
top-1 over the probes. No label is used, so ``label_fraction`` is always 1.0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ecgforge.data.splits import patient_codes
from ecgforge.errors import UserError
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.retrieval import identification_top1
from ecgforge.evaluation.rows import ResultRow


class IdentificationConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["identification"] = "identification"
    split: str = Field("test", description="records whose patients are identified")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="gallery draws")
    inits: list[Literal["pretrained", "random"]] = Field(default_factory=lambda: ["pretrained", "random"], min_length=1)
    distractors: bool = Field(False, description="put single-record patients in the gallery as wrong answers")
    cache: str | None = Field(None, description="evaluate on another cache than [data].cache")


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound near 0 and 1, unlike the normal approximation)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Identification:
    def __init__(self, cfg: IdentificationConfig) -> None:
        self.cfg = cfg

    def run(self, ctx: EvalContext) -> list[ResultRow]:
        c = self.cfg
        cache = ctx.open_cache(c.cache)
        idx = ctx.split(cache, c.split)
        patients = patient_codes(cache)[idx]
        if len(idx) == 0 or np.bincount(patients).max(initial=0) < 2:
            raise UserError(f"identification: split {c.split!r} has no patient with two or more records")
        rows: list[ResultRow] = []
        for init in c.inits:
            for seed in c.seeds:
                z = ctx.features.records(init, seed, cache, idx)
                res = identification_top1(z, patients, seed=seed, distractors=c.distractors)
                low, high = wilson_interval(res["top1"] * res["n_probes"], res["n_probes"])
                rows.append(ResultRow(
                    kind="identification", task="patient_identification", task_type="identification", init=init,
                    label_fraction=1.0, seed=seed, split=c.split, primary="top1",
                    metrics={"top1": res["top1"], "top5": res["top5"]}, ci95={"top1": [low, high]},
                    facts={"n_patients": int(res["n_patients"]), "n_probes": int(res["n_probes"]),
                           "n_gallery": int(res["n_gallery"])},
                ))
        return rows
