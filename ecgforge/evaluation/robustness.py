"""Robustness: a linear probe trained on clean data, tested on noisy inputs and on lead subsets.

Noise follows Mehari & Strodthoff's robustness test ("Self-supervised representation learning from 12-lead
ECG data", Comput. Biol. Med. 2022): baseline wander, electrode motion, powerline and baseline shift at
graded levels 1..6 (``augment.noise.physio_noise``). The noise is drawn from a ``torch.Generator`` reseeded
with ``noise_seed`` for every condition and every encoder (so levels differ only in amplitude), and the test tiles are visited in the same order
in batches of the same size, so every model sees exactly the same noisy ECGs.

Lead subsets (reduced-lead settings of the PhysioNet/CinC Challenge 2021, Reyna et al.; ``evaluation.leads``):
``12``; ``6`` limb leads I, II, III, aVR, aVL, aVF; ``4`` I, II, III, V2; ``3`` I, II, V2; ``2`` I, II; ``1`` I.
The other leads are zeroed, which is how every ecgforge encoder receives a missing lead. Here the probe is
trained on 12 leads and tested on the subset; the linear probe's ``lead_subsets`` trains and tests on it.

Rows are linear-probe rows plus ``noise_level`` (0 = clean) and ``leads`` (the subset's name). The clean,
12-lead row appears once and is the reference of both curves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import Field, field_validator

from ecgforge.augment.noise import PHYSIO_NOISE_LEVELS_MV, physio_noise
from ecgforge.data.cache import Cache
from ecgforge.evaluation.features import NamedTransform, per_record
from ecgforge.evaluation.frozen import FeatureView, FrozenFeatureProtocol, Scored
from ecgforge.evaluation.leads import LEAD_SUBSETS, LeadSubset, lead_subset_transform  # noqa: F401 (re-exported)
from ecgforge.evaluation.probing import train_probe
from ecgforge.evaluation.protocol import ProbeConfig


class RobustnessConfig(ProbeConfig, extra="forbid", frozen=True):
    kind: Literal["robustness"] = "robustness"
    noise_levels: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6],
                                    description="physio_noise levels (Mehari & Strodthoff 2022), 1..6")
    lead_subsets: list[LeadSubset] = Field(default_factory=lambda: ["6", "3", "2", "1"])
    noise_seed: int = Field(0, ge=0, description="seed of the test noise: the same noise for every model")

    @field_validator("noise_levels")
    @classmethod
    def _levels(cls, levels: list[int]) -> list[int]:
        bad = [v for v in levels if v not in PHYSIO_NOISE_LEVELS_MV]
        if bad:
            raise ValueError(f"noise levels must be in 1..6, got {bad}")
        return levels


def noise_transform(fs_hz: float, level: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Adds ``physio_noise`` at ``level`` from a fresh CPU generator seeded with ``seed``: every model gets the
    same noise, and every level the same random draws scaled to its amplitudes, so only the amplitude grows."""
    gen = torch.Generator().manual_seed(seed)

    def transform(x: torch.Tensor) -> torch.Tensor:
        return physio_noise(x, fs_hz, level, generator=gen)

    return transform


def conditions(cfg: RobustnessConfig) -> list[tuple[int, str]]:
    """``(noise_level, leads)`` pairs: clean 12 leads first, then each noise level, then each lead subset."""
    out = [(0, "12")]
    out += [(lv, "12") for lv in cfg.noise_levels]
    out += [(0, s) for s in cfg.lead_subsets if s != "12"]
    return out


def _transform(cache: Cache, level: int, leads: str, seed: int) -> NamedTransform | None:
    """The named test-time transform of a condition (the name keys the feature cache), None when clean."""
    if level == 0 and leads == "12":
        return None
    if level:
        return f"physio_noise/level{level}/seed{seed}", noise_transform(cache.fs_hz, level, seed)
    return f"leads/{leads}", lead_subset_transform(list(cache.leads), leads)


class Robustness(FrozenFeatureProtocol):
    Config = RobustnessConfig
    cfg: RobustnessConfig

    def score(self, view: FeatureView, fraction: float) -> Iterator[Scored]:
        c, data = self.cfg, view.data
        head, pos, vpos = train_probe(view, c, fraction)  # on clean, 12-lead inputs
        for level, leads in conditions(c):
            f_te, rec_te = view.windows("test", _transform(data.cache, level, leads, c.noise_seed), head.sequence)
            yield Scored(per_record(head.scores(f_te), rec_te, len(data.test.indices)), n_train=len(pos),
                         n_val=len(vpos), reference=(level, leads) == (0, "12"),
                         conditions={"noise_level": level, "leads": leads})
