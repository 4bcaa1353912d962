"""xresnet1d-50/101: fastai's "bag of tricks" ResNet (He et al. 2019) in 1D, as benchmarked on PTB-XL by
Strodthoff et al. 2020/2021 and used for SimCLR/BYOL/SwAV by Mehari & Strodthoff 2021.

Their 1D variant differs from the 2D xresnet in ways that matter for reproduction: a three-conv stem
(widths w/2, w/2, w, first one stride 2), kernel 5 everywhere instead of 3, and a constant bottleneck width
(64 in all four stages, so the output has 4*64 = 256 channels, not 2048). Downsampling shortcuts average-pool
before their 1x1 conv (ResNet-D), and the last BatchNorm of each residual branch starts at zero so every block
starts as the identity.

Input ``x (B, leads, T)``; ``forward_features`` gives ``(B, 4*width, ceil(T/32))``. ``forward`` pools it over
time: ``pooling = "concat"`` is the reference embedding, fastai's ``AdaptiveConcatPool1d`` ([max, mean],
``(B, 8*width)``, 512-d for xresnet1d50; ecg-selfsupervised ``models/resnet_simclr.py`` takes the model up to
``head[0]``, that pooling, as the representation its SimCLR/BYOL/SwAV/MoCo heads and evaluations use);
``"mean"`` (the default, kept for existing recipes) the time average ``(B, 4*width)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field, field_validator
from torch import Tensor, nn

from ecgforge.layers.receptive_field import chain_receptive_field
from ecgforge.registry import BuildContext

_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_EXPANSION = 4  # bottleneck blocks widen their output 4x


class XResNet1dConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["xresnet1d"] = "xresnet1d"
    depth: Literal[50, 101] = 50
    width: int = Field(64, gt=1, description="bottleneck width of every stage; output has 4*width channels")
    kernel_size: int = Field(
        5, gt=0, description="kernel of the stem convs and of each bottleneck's middle conv"
    )
    pooling: Literal["mean", "concat"] = Field(
        "mean", description="concat: [max, mean] over time, 8*width wide (ecg-selfsupervised); mean: 4*width"
    )
    in_leads: int = Field(12, gt=0)

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError("kernel_size must be odd so that 'same' padding keeps ceil(T/stride) steps")
        return k


def _conv_bn(
    c_in: int, c_out: int, kernel_size: int, stride: int = 1, act: bool = True, zero_bn: bool = False
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional ReLU; fastai's ConvLayer with bn_1st."""
    conv = nn.Conv1d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    bn = nn.BatchNorm1d(c_out)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn, nn.ReLU(inplace=True)) if act else nn.Sequential(conv, bn)


class Bottleneck1d(nn.Module):
    """1x1 -> k (strided) -> 1x1 bottleneck; shortcut = AvgPool(2, ceil) then 1x1 conv+BN where shapes change."""

    def __init__(self, c_in: int, width: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        c_out = width * _EXPANSION
        self.convs = nn.Sequential(
            _conv_bn(c_in, width, 1),
            _conv_bn(width, width, kernel_size, stride),
            _conv_bn(width, c_out, 1, act=False, zero_bn=True),  # zero-init: the block starts as identity
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            # ResNet-D: pool, then project, so the shortcut sees every input sample rather than every other one.
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(_conv_bn(c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet1d(nn.Module):
    """xresnet1d50/101 backbone without its classification head (Strodthoff et al. 2021)."""

    Config = XResNet1dConfig

    def __init__(self, cfg: XResNet1dConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        width, kernel_size = cfg.width, cfg.kernel_size
        stem_widths = (cfg.in_leads, width // 2, width // 2, width)
        self.stem = nn.Sequential(
            *(
                _conv_bn(stem_widths[i], stem_widths[i + 1], kernel_size, 2 if i == 0 else 1)
                for i in range(3)
            ),
            nn.MaxPool1d(3, 2, 1),
        )
        path: list[tuple[int, int]] = [(kernel_size, 2), (kernel_size, 1), (kernel_size, 1), (3, 2)]
        blocks, c_in = [], width
        for i, n in enumerate(_STAGES[cfg.depth]):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Bottleneck1d(c_in, width, stride, kernel_size))
                path += [(1, 1), (kernel_size, stride), (1, 1)]
                c_in = width * _EXPANSION
        self.stages = nn.Sequential(*blocks)
        self.embed_dim = 2 * c_in if cfg.pooling == "concat" else c_in
        self.downsample = 32  # stem conv 2, max-pool 2, stages 2-4 each 2
        self.receptive_field = chain_receptive_field(path)

    def forward_features(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> features (B, 4*width, ceil(T/32))."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> z (B, embed_dim): [max, mean] over time (``concat``, max first as in fastai's
        AdaptiveConcatPool1d) or the mean."""
        h = self.forward_features(x)
        if self.cfg.pooling == "concat":
            return torch.cat([h.amax(dim=-1), h.mean(dim=-1)], dim=1)
        return h.mean(dim=-1)
