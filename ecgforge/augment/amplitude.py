"""Amplitude augmentations: a random gain per sample or per lead (ESS ``ChannelResize``, Mehari & Strodthoff
2022). Gains are log-uniform over [min_scale, max_scale], so a range like (0.5, 2) is symmetric around 1.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment.noise import apply_with_probability, ordered
from ecgforge.registry import BuildContext


def _log_uniform(shape: tuple[int, ...], lo: float, hi: float, device: torch.device) -> Tensor:
    """Gains exp(U(log lo, log hi)), float32."""
    u = torch.rand(shape, device=device)
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


class GainRange(BaseModel, extra="forbid", frozen=True):
    """Fields of both gain augmentations (subclasses add ``kind``)."""

    min_scale: float = Field(0.5, gt=0, description="smallest gain")
    max_scale: float = Field(2.0, gt=0, description="largest gain")
    p: float = Field(1.0, ge=0, le=1)

    _ordered = ordered("min_scale", "max_scale")


class RandomGain(nn.Module):
    """Base of both: multiply x by log-uniform gains in [min_scale, max_scale], one per sample, or one per lead
    of each sample where ``per_lead``."""

    per_lead: ClassVar[bool]

    def __init__(self, cfg: GainRange, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> (B, L, T)."""
        shape = (x.shape[0], x.shape[1] if self.per_lead else 1, 1)
        gain = _log_uniform(shape, self.cfg.min_scale, self.cfg.max_scale, x.device).to(x.dtype)
        return apply_with_probability(x, x * gain, self.cfg.p)


class AmplitudeScaleConfig(GainRange):
    kind: Literal["amplitude_scale"] = "amplitude_scale"


class AmplitudeScale(RandomGain):
    """Multiply each sample (all leads alike) by one log-uniform gain in [min_scale, max_scale]."""

    Config = AmplitudeScaleConfig
    per_lead: ClassVar[bool] = False


class ChannelResizeConfig(GainRange):
    kind: Literal["channel_resize"] = "channel_resize"


class ChannelResize(RandomGain):
    """Multiply each lead of each sample by its own log-uniform gain in [min_scale, max_scale].

    Breaks the linear relations between limb leads (III = II − I): intended, as in ESS.
    """

    Config = ChannelResizeConfig
    per_lead: ClassVar[bool] = True
