"""1D ResNet-18/34 for ECG (He et al. 2016 with BasicBlocks, in 1D).

Input ``x (B, leads, T)``; ``forward_features`` gives ``(B, width*8, T/32)`` and ``forward`` the pooled
embedding ``(B, width*8)``. Missing leads are expected zeroed, so one model serves any lead subset.

Two variants, chosen by config fields: ecgforge's default (stem kernel 15, block kernel 7, no final fc: wider
kernels for 100-500 Hz ECG) and the adversarial-masking authors' ResNet-18 (jessica-bo/advmask_ecg,
``model/backbones/resnet.py``, after seitalab's 1D torchvision port): ``stem_kernel = 7``, ``kernel_size = 3``,
``fc = true`` (a final ``Linear(512, 512)`` with bias after the average pool; their ``embedding_dim`` 512).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.registry import BuildContext


class ResNet1dConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["resnet1d"] = "resnet1d"
    depth: Literal[18, 34] = 18
    width: int = Field(64, gt=0, description="channels of the first stage; stages use 1x, 2x, 4x, 8x")
    kernel_size: int = Field(7, gt=0, description="kernel of the residual blocks' convolutions (odd; authors: 3)")
    stem_kernel: int = Field(15, gt=0, description="kernel of the stride-2 stem convolution (odd; authors: 7)")
    fc: bool = Field(False, description="final Linear(width*8, width*8) after the pool (authors: yes, 512 -> 512)")
    in_leads: int = Field(12, gt=0)


class BasicBlock1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet1d(nn.Module):
    """1D ResNet with BasicBlocks; stem conv (stride 2) + max-pool, four stages (strides 1,2,2,2), average
    pool, optionally a final fc."""

    Config = ResNet1dConfig

    def __init__(self, cfg: ResNet1dConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        width, kernel_size, stem_kernel = cfg.width, cfg.kernel_size, cfg.stem_kernel
        blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[cfg.depth]
        self.stem = nn.Sequential(
            nn.Conv1d(cfg.in_leads, width, stem_kernel, 2, stem_kernel // 2, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, 2, 1),
        )
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                stages.append(BasicBlock1d(c_in, c_out, 2 if (i > 0 and j == 0) else 1, kernel_size))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, c_in) if cfg.fc else nn.Identity()
        self.embed_dim = c_in
        self.downsample = 32  # samples per output step: stem 2, pool 2, three stride-2 stages
        # Receptive field in samples, accumulated through every conv/pool (kernel k at input stride s adds (k-1)*s).
        rf, s = stem_kernel, 2
        rf, s = rf + 2 * s, s * 2
        for i, n in enumerate(blocks):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                rf, s = rf + (kernel_size - 1) * s, s * stride
                rf += (kernel_size - 1) * s
        self.receptive_field = rf

    def forward_features(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> features (B, embed_dim, ceil(T/32))."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> z (B, embed_dim), global average over time (then the fc, if any)."""
        return self.fc(self.forward_features(x).mean(dim=-1))
