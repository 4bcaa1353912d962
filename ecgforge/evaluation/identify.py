"""Patient identification protocol (Oh et al., "Lead-agnostic Self-supervised Learning for Local and Global
Representations of Electrocardiogram", CHIL 2022): are a patient's records closest to each other?

Per-record embeddings (mean of the record's tiled window embeddings) over one split; over the patients with
at least two records, one record per patient (drawn with the seed) is the gallery and the others are probes
(``identification.identification_top1``). Rows report top-1 / top-5 accuracy and a 95% Wilson interval for
top-1 over the probes. No label is used, so ``label_fraction`` is always 1.0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ecgforge.data.dataset import TiledWindows, patient_codes
from ecgforge.errors import UserError
from ecgforge.evaluation.common import EvalContext, embed, per_record
from ecgforge.evaluation.identification import identification_top1


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
    def __init__(self, **cfg: object) -> None:
        self.cfg = IdentificationConfig(**cfg)

    def run(self, ctx: EvalContext) -> list[dict]:
        c = self.cfg
        cache = ctx.open_cache(c.cache)
        idx = ctx.split(cache, c.split)
        patients = patient_codes(cache)[idx]
        if len(idx) == 0 or np.bincount(patients).max(initial=0) < 2:
            raise UserError(f"identification: split {c.split!r} has no patient with two or more records")
        tiles = TiledWindows(cache, idx, ctx.window, ctx.stride)
        rows: list[dict] = []
        z_by_key: dict[tuple[str, int], np.ndarray] = {}
        for init in c.inits:
            for seed in c.seeds:
                key = (init, seed if init == "random" else 0)
                if key not in z_by_key:
                    enc = ctx.make_encoder(init, seed)
                    w = embed(enc, tiles, ctx.device, ctx.batch_size, ctx.num_workers)
                    z_by_key[key] = per_record(w, tiles.record_of, len(idx))
                res = identification_top1(z_by_key[key], patients, seed=seed, distractors=c.distractors)
                low, high = wilson_interval(res["top1"] * res["n_probes"], res["n_probes"])
                rows.append({
                    "kind": "identification", "task": "patient_identification", "task_type": "identification",
                    "init": init, "label_fraction": 1.0, "seed": seed, "split": c.split,
                    "n_patients": int(res["n_patients"]), "n_probes": int(res["n_probes"]),
                    "n_gallery": int(res["n_gallery"]),
                    "metrics": {"top1": res["top1"], "top5": res["top5"]},
                    "dropped_classes": [], "ci95": {"top1": [low, high]},
                })
        return rows
