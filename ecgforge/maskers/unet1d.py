"""1D U-Net masker for adversarial masking (Bo et al. 2022, after ADIOS, Shi et al. 2022).

``forward(x (B, leads, T)) -> masks (B, n_masks, T)`` in [0, 1]: with ``activation = "auto"`` a sigmoid when
``n_masks == 1``, a softmax across masks otherwise (so the masks partition each time step); ``"sigmoid"``
makes every mask independent (the authors' ``unet1D`` uses a sigmoid for ``nmasks`` 1 and 12, the per-lead
mode), ``"softmax"`` forces the partition. The objective picks one mask per sample,
binarises it and applies ``x * (1 - m)`` to all leads.

Architecture as in the authors' ``unet1D``: stage i (i = 0..n-1) is a strided conv-BN-ReLU to ``width*(i+1)``
channels followed by ``depth`` residual squeeze-excitation blocks; from the third stage on, the stage input
is concatenated with the raw input average-pooled to the same resolution; the decoder upsamples (nearest,
by the stage's stride), concatenates the encoder output of the level below and applies conv-BN-ReLU; a
final kernel-5 conv gives the mask logits.

The paper's setting is ``width=512`` (stages 512/1024/1536/2048), ``strides=[1, 5, 5, 5]``, kernel 5,
``depth=1`` on 12 x 5000 inputs: 247M parameters by the authors' count, which includes an unused fifth stage
(~94M); the stages their forward uses come to ~152M, as here with ``width=512``. The defaults here are 32 wide,
about 0.6M parameters, so the masker trains on a CPU. Two deliberate
departures: the SE gate multiplies the features (Hu et al. 2018; the authors' code adds the sigmoid gate,
which only shifts each channel), and the pooled input uses a window equal to the stride (their code
uses a 12-sample window, the lead count, at every scale).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator
from torch import Tensor, nn

from ecgforge.registry import BuildContext


class UNet1dConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["unet1d"] = "unet1d"
    n_masks: int = Field(1, gt=0, description="masks per sample; sweep of Bo et al.: 1, 2, 3")
    width: int = Field(32, gt=0, description="channels of the first stage; stage i has width*(i+1)")
    depth: int = Field(1, ge=0, description="residual SE blocks per stage (the authors' unet_depth)")
    strides: list[int] = Field(default_factory=lambda: [1, 5, 5, 5], min_length=1)
    kernel_size: int = Field(5, gt=0)
    in_leads: int = Field(12, gt=0)
    activation: Literal["auto", "sigmoid", "softmax"] = Field(
        "auto", description="auto: sigmoid for one mask, softmax across masks otherwise")

    @field_validator("strides")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError("strides must be positive")
        return v

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError("kernel_size must be odd so that padded convs keep T/stride steps")
        return k


def _cbr(c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size, stride, kernel_size // 2),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


class SqueezeExcite1d(nn.Module):
    """Channel gate from the time-averaged features: x * sigmoid(W2 relu(W1 mean_t x))."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.Conv1d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x.mean(dim=-1, keepdim=True))


class ResSEBlock(nn.Module):
    """x + SE(cbr(cbr(x))) at constant width and resolution."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _cbr(channels, channels, kernel_size),
            _cbr(channels, channels, kernel_size),
            SqueezeExcite1d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class UNet1d(nn.Module):
    """Adversarial masker: x (B, leads, T) -> masks (B, n_masks, T) in [0, 1]."""

    Config = UNet1dConfig

    def __init__(self, cfg: UNet1dConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        n_masks, in_leads, kernel_size, strides = cfg.n_masks, cfg.in_leads, cfg.kernel_size, cfg.strides
        auto = "sigmoid" if n_masks == 1 else "softmax"
        self.activation = auto if cfg.activation == "auto" else cfg.activation  # resolved: sigmoid or softmax
        # Read by the adversarial-masking objective (its per-lead mode needs n_masks == in_leads).
        self.n_masks, self.in_leads = n_masks, in_leads
        widths = [cfg.width * (i + 1) for i in range(len(strides))]
        # Cumulative stride in front of each stage: where it exceeds 1, the pooled input joins the stage input.
        self._pre_stride = [math.prod(strides[:i]) for i in range(len(strides))]
        self.down = nn.ModuleList()
        c_prev = in_leads
        for i, (c, s) in enumerate(zip(widths, strides, strict=True)):
            c_in = c_prev + (in_leads if i > 0 and self._pre_stride[i] > 1 else 0)
            self.down.append(
                nn.Sequential(
                    _cbr(c_in, c, kernel_size, s), *(ResSEBlock(c, kernel_size) for _ in range(cfg.depth))
                )
            )
            c_prev = c
        # up[i] merges level i+1 (upsampled) with level i's skip and returns to level i's width.
        self.up = nn.ModuleList(
            _cbr(widths[i + 1] + widths[i], widths[i], kernel_size) for i in range(len(widths) - 1)
        )
        self.out = nn.Conv1d(widths[0], n_masks, kernel_size, 1, kernel_size // 2)
        self.multiple = math.prod(strides)  # T is padded to a multiple of this

    def forward(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> masks (B, n_masks, T); any T (replicate-padded internally, then cropped)."""
        t, strides = x.shape[-1], self.cfg.strides
        pad = -t % self.multiple
        if pad:
            # Replicate rather than zeros: a zero tail looks like a flat (missing) signal to the masker.
            x = F.pad(x, (0, pad), mode="replicate")
        skips: list[Tensor] = []
        h = x
        for i, stage in enumerate(self.down):
            if i > 0 and self._pre_stride[i] > 1:
                r = self._pre_stride[i]
                h = torch.cat([h, F.avg_pool1d(x, r, r)], dim=1)
            h = stage(h)
            skips.append(h)
        for i in range(len(self.up) - 1, -1, -1):
            h = (
                F.interpolate(h, scale_factor=strides[i + 1], mode="nearest")
                if strides[i + 1] > 1
                else h
            )
            h = self.up[i](torch.cat([h, skips[i]], dim=1))
        logits = self.out(h)
        if strides[0] > 1:
            logits = F.interpolate(logits, scale_factor=strides[0], mode="nearest")
        logits = logits[..., :t]
        return torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
