"""Temporal augmentations of Mehari & Strodthoff (2022): random resized crop and time-out.

Both map ``x (B, L, T)`` to ``(B, L, T)`` with independent draws per sample (same span for every lead),
following ESS's ``RandomResizedCrop`` (crop ratio U(0.5, 1)) and ``TimeOut`` (ratio U(0, 0.5)).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment.noise import apply_with_probability, ordered
from ecgforge.registry import BuildContext


class RandomResizedCropConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["random_resized_crop"] = "random_resized_crop"
    min_scale: float = Field(0.5, gt=0, le=1, description="smallest crop, fraction of the window")
    max_scale: float = Field(1.0, gt=0, le=1, description="largest crop, fraction of the window")
    p: float = Field(1.0, ge=0, le=1)

    _ordered = ordered("min_scale", "max_scale")


class RandomResizedCrop(nn.Module):
    """Crop a random fraction U(min_scale, max_scale) of the window at a random position and stretch it back
    to T samples by linear interpolation (a per-sample time dilation by 1/scale).

    Output sample j reads the input at u_j = start + j·scale (in samples), start ~ U(0, (1 − scale)(T − 1)),
    so the crop spans scale·(T − 1) sample intervals and scale = 1 is exactly the identity.
    """

    Config = RandomResizedCropConfig

    def __init__(self, cfg: RandomResizedCropConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> (B, L, T)."""
        b, n_leads, t_len = x.shape
        lo, hi = self.cfg.min_scale, self.cfg.max_scale
        scale = lo + (hi - lo) * torch.rand(b, 1, device=x.device)
        start = torch.rand(b, 1, device=x.device) * (1 - scale) * (t_len - 1)
        # (B, T) source position of each output sample, in input samples.
        u = start + scale * torch.arange(t_len, device=x.device, dtype=torch.float32)
        i0 = u.floor().long().clamp(0, t_len - 1)
        i1 = (i0 + 1).clamp(max=t_len - 1)
        w = (u - i0).clamp(0, 1).to(x.dtype)[:, None, :]
        # gather on a (B, L, T) index: a batched linear interpolation with no loop over samples.
        x0 = x.gather(2, i0[:, None, :].expand(b, n_leads, t_len))
        x1 = x.gather(2, i1[:, None, :].expand(b, n_leads, t_len))
        return apply_with_probability(x, x0 + w * (x1 - x0), self.cfg.p)


class TimeOutConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["time_out"] = "time_out"
    min_frac: float = Field(0.0, ge=0, le=1, description="shortest zeroed span, fraction of the window")
    max_frac: float = Field(0.5, ge=0, le=1, description="longest zeroed span, fraction of the window")
    p: float = Field(1.0, ge=0, le=1)

    _ordered = ordered("min_frac", "max_frac")


class TimeOut(nn.Module):
    """Zero a contiguous span of round(frac·T) samples, frac ~ U(min_frac, max_frac), at a uniform position
    inside the window, in every lead."""

    Config = TimeOutConfig

    def __init__(self, cfg: TimeOutConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def span_mask(self, b: int, t_len: int, device: torch.device | str) -> Tensor:
        """(B, T) bool, True on the zeroed span of each sample."""
        # float64 so that frac·T rounds to the intended integer (0.3 in float32 is 0.30000001).
        lo, hi = self.cfg.min_frac, self.cfg.max_frac
        frac = lo + (hi - lo) * torch.rand(b, 1, device=device, dtype=torch.float64)
        length = (frac * t_len).round().long()
        start = (torch.rand(b, 1, device=device, dtype=torch.float64) * (t_len - length + 1)).floor().long()
        start = torch.minimum(start, t_len - length)  # rand < 1, but guard the float edge
        t = torch.arange(t_len, device=device)[None, :]
        return (t >= start) & (t < start + length)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> (B, L, T)."""
        mask = self.span_mask(x.shape[0], x.shape[-1], x.device)
        return apply_with_probability(x, x.masked_fill(mask[:, None, :], 0), self.cfg.p)
