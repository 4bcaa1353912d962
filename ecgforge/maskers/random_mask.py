"""Random masks: the control that separates "adversarial" from "masked" (issue 26).

``forward(x (B, leads, T)) -> masks (B, n_masks, T)`` in {0, 1}, drawn afresh on every call and independent
of ``x``: each mask hides ``coverage`` of the window (exactly, to the sample: round(coverage·T) samples) in
spans whose lengths are 1 + Geometric (mean ``span_s`` seconds) or all ``span_s`` (``span_dist = "fixed"``),
placed uniformly at random (spans may touch or overlap; the last one is trimmed to the asked coverage).

It has no parameters (``RandomMaskConfig.learned`` is False), so `objectives.adv_mask` runs only its encoder phase with it: the same objective, the
same augmentations and the same mask application as a trained masker, without the adversarial term.
To match a trained masker, measure its applied masks with `mask_statistics` (coverage per mask and mean span
length) and set ``coverage`` and ``span_s`` to them (`benchmarks/mask_stats.py RUN` prints the values).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.registry import BuildContext


class RandomMaskConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["random_mask"] = "random_mask"
    #: nothing to train: `objectives.adv_mask` then runs its encoder phase only (read from the config)
    learned: ClassVar[bool] = False
    n_masks: int = Field(1, gt=0, description="masks per sample (the objective draws one, or applies each)")
    coverage: float = Field(0.2, gt=0, lt=1, description="fraction of the window each mask hides")
    span_s: float = Field(0.1, gt=0, description="mean span length (s)")
    span_dist: Literal["geometric", "fixed"] = Field(
        "geometric", description="span lengths: 1 + Geometric with mean span_s, or all span_s")
    in_leads: int = Field(12, gt=0, description="leads of the input (read by the per_lead mode's check)")


class RandomMask(nn.Module):
    """Masks of a given coverage and span-length distribution, independent of the input: (B, M, T) in {0, 1}."""

    Config = RandomMaskConfig
    activation = "sigmoid"  # masks are independent of each other (no partition of time across masks)

    def __init__(self, cfg: RandomMaskConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.fs_hz = float(ctx.need("fs_hz"))

    @property
    def n_masks(self) -> int:
        return self.cfg.n_masks

    @property
    def in_leads(self) -> int:
        return self.cfg.in_leads

    def span_lengths(self, n: int, t: int) -> Tensor:
        """(n,) span lengths in samples, each in [1, t]."""
        mean = max(self.cfg.span_s * self.fs_hz, 1.0)
        if self.cfg.span_dist == "fixed" or mean <= 1.0:
            return torch.full((n,), min(round(mean), t), dtype=torch.long)
        # 1 + Geometric(p) on {0, 1, ...} has mean 1 + (1 - p) / p = 1 / p.
        g = torch.distributions.Geometric(probs=torch.tensor(1.0 / mean)).sample((n,)).long()
        return (1 + g).clamp(max=t)

    def draw(self, t: int) -> Tensor:
        """One mask (T,) bool hiding exactly round(coverage·T) samples."""
        target = max(1, round(self.cfg.coverage * t))
        mask = torch.zeros(t, dtype=torch.bool)
        covered = 0
        while covered < target:
            # Draw spans in small batches: most masks need only a few (coverage·T / mean span).
            for length in self.span_lengths(8, t).tolist():
                start = int(torch.randint(0, t - length + 1, ()).item())
                new = ~mask[start : start + length]
                k = int(new.sum())
                if covered + k > target:  # trim the last span to the asked coverage
                    keep = torch.cumsum(new.long(), 0) <= target - covered
                    new = new & keep
                    k = target - covered
                mask[start : start + length] |= new
                covered += k
                if covered >= target:
                    break
        return mask

    def forward(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> masks (B, n_masks, T) float in {0, 1}, on x's device and dtype."""
        b, _, t = x.shape
        masks = torch.stack([self.draw(t) for _ in range(b * self.cfg.n_masks)])
        return masks.view(b, self.cfg.n_masks, t).to(device=x.device, dtype=x.dtype)


def mask_statistics(applied: Tensor, fs_hz: float, threshold: float = 0.5) -> dict[str, list[float]]:
    """Applied masks (B, M, T) in [0, 1] -> per mask k: ``coverage`` (mean of the mask, the fraction hidden) and
    ``span_s`` (mean length in seconds of the runs where the mask exceeds ``threshold``)."""
    a = applied.detach().float()
    on = a > threshold
    # A span starts where a sample is on and its predecessor (or the window's start) is off.
    starts = on & ~torch.nn.functional.pad(on, (1, 0))[..., :-1]
    n_spans = starts.sum(dim=(0, 2)).float()
    n_on = on.sum(dim=(0, 2)).float()
    span = torch.where(n_spans > 0, n_on / n_spans.clamp_min(1), torch.zeros_like(n_on)) / fs_hz
    return {"coverage": a.mean(dim=(0, 2)).tolist(), "span_s": span.tolist()}
