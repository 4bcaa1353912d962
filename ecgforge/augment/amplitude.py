"""Amplitude augmentations: a random gain per sample or per lead (ESS ``ChannelResize``, Mehari & Strodthoff
2022). Gains are log-uniform over [min_scale, max_scale], so a range like (0.5, 2) is symmetric around 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from ecgforge.augment.noise import apply_with_probability
from ecgforge.registry import BuildContext


def _log_uniform(shape: tuple[int, ...], lo: float, hi: float, device: torch.device) -> Tensor:
    """Gains exp(U(log lo, log hi)), float32."""
    u = torch.rand(shape, device=device)
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


class AmplitudeScaleConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["amplitude_scale"] = "amplitude_scale"
    min_scale: float = Field(0.5, gt=0, description="smallest gain")
    max_scale: float = Field(2.0, gt=0, description="largest gain")
    p: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> AmplitudeScaleConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale ({self.min_scale}) exceeds max_scale ({self.max_scale})")
        return self


class AmplitudeScale(nn.Module):
    """Multiply each sample (all leads alike) by one log-uniform gain in [min_scale, max_scale]."""

    Config = AmplitudeScaleConfig

    def __init__(self, cfg: AmplitudeScaleConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> (B, L, T)."""
        gain = _log_uniform((x.shape[0], 1, 1), self.cfg.min_scale, self.cfg.max_scale, x.device).to(x.dtype)
        return apply_with_probability(x, x * gain, self.cfg.p)


class ChannelResizeConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["channel_resize"] = "channel_resize"
    min_scale: float = Field(0.5, gt=0, description="smallest gain")
    max_scale: float = Field(2.0, gt=0, description="largest gain")
    p: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> ChannelResizeConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale ({self.min_scale}) exceeds max_scale ({self.max_scale})")
        return self


class ChannelResize(nn.Module):
    """Multiply each lead of each sample by its own log-uniform gain in [min_scale, max_scale].

    Breaks the linear relations between limb leads (III = II − I): intended, as in ESS.
    """

    Config = ChannelResizeConfig

    def __init__(self, cfg: ChannelResizeConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> (B, L, T)."""
        shape = (x.shape[0], x.shape[1], 1)
        gain = _log_uniform(shape, self.cfg.min_scale, self.cfg.max_scale, x.device).to(x.dtype)
        return apply_with_probability(x, x * gain, self.cfg.p)
