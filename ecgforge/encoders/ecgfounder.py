"""ECGFounder (Li et al. 2025, NEJM AI; PKUDigitalHealth/ECGFounder, MIT): Net1D, a 1D RegNet-style CNN.

Architecture (``net1d.py`` ``Net1D`` as ``finetune_model.py`` builds it: ``base_filters = 64``, ``ratio = 1``,
``filter_list = [64, 160, 160, 400, 400, 1024, 1024]``, ``m_blocks_list = [2, 2, 2, 3, 3, 4, 4]``,
``kernel_size = 16``, ``stride = 2``, ``groups_width = 16``, ``use_bn = False``, ``use_do = False``):

    x (B, leads, T) -> conv k16 s2 ('same' padding) -> Swish
      -> 7 stages; each block: [Swish] -> conv1x1 -> Swish -> grouped conv k16 (stride 2 in a stage's first
         block) -> Swish -> conv1x1 -> squeeze-excitation (mean, fc C->C/2, Swish, fc, sigmoid)
         + shortcut (max-pool k=s 'same' when strided; zero channels padded on both sides when widening)
      -> (B, 1024, ceil(T/256)) -> mean over time = the 1024-d features the released code's ``dense`` head reads.

The released models are built with ``use_bn = False``: the BatchNorm modules exist (so the checkpoint holds
their tensors) but are never applied; we build none and drop those tensors by a named rule. ``dense`` (the 150
label head) is dropped too. Checkpoints: ``12_lead_ECGFounder.pth`` / ``1_lead_ECGFounder.pth`` on the Hugging
Face Hub (``PKUDigitalHealth/ECGFounder``), a dict whose ``state_dict`` entry is ``Net1D``'s state dict.

Input contract: the README says to follow ``dataset.py`` strictly, and we do: 500 Hz, 10 s (5,000 samples),
the 12 leads in canonical order (``dataset.py`` reorders MIMIC-IV-ECG's aVF-before-aVL into I, II, III, aVR,
aVL, aVF, V1-V6; the 1-lead model reads lead I), ``util.filter_bandpass`` on the record (50 Hz notch Q 30,
4th-order Butterworth 0.67-40 Hz, both ``filtfilt``; minus a 0.4 s median-filter baseline), then one z-score
over the whole (leads, T) array, ``(x - mean) / (std + 1e-8)``. Code and paper disagree: the paper describes a
0.5 Hz high-pass and a 2nd-order 50 Hz low-pass; ``ptbxl_eval.py`` (the 150-label PTB-XL check) applies no
filter and z-scores before its interpolation to 5,000 samples (an identity at 500 Hz, 10 s), and
``dataset.py`` computes a resampled array and then z-scores the unresampled one. We follow ``dataset.py``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from ecgforge.encoders.foundation import (
    Butterworth,
    FoundationEncoder,
    InputContract,
    KeyRule,
    MedianBaseline,
    Normalisation,
    Notch,
    count_indexed,
)
from ecgforge.registry import BuildContext

REFERENCE = "PKUDigitalHealth/ECGFounder@04edac702b61c91face519774ddcc0cd712fef23 (net1d.py, finetune_model.py, dataset.py, util.py)"


class ECGFounderConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["ecgfounder"] = "ecgfounder"
    in_channels: Literal[1, 12] = Field(12, description="12: the 12-lead model; 1: the lead-I model")
    base_filters: int = Field(64, gt=0, description="channels of the first convolution")
    ratio: float = Field(1.0, gt=0, description="bottleneck width as a share of a block's output channels")
    filter_list: tuple[int, ...] = Field((64, 160, 160, 400, 400, 1024, 1024), min_length=1)
    m_blocks_list: tuple[int, ...] = Field((2, 2, 2, 3, 3, 4, 4), min_length=1)
    kernel_size: int = Field(16, gt=0)
    stride: int = Field(2, gt=0, description="stride of each stage's first block (and of the first conv: 2)")
    groups_width: int = Field(16, gt=0, description="channels per group of the grouped convolution")

    @model_validator(mode="after")
    def _check(self) -> ECGFounderConfig:
        if len(self.filter_list) != len(self.m_blocks_list):
            raise ValueError("filter_list and m_blocks_list need one entry per stage")
        for c in self.filter_list:
            mid = int(c * self.ratio)
            if c % self.groups_width or mid % (c // self.groups_width):
                raise ValueError(f"stage width {c}: groups {c // self.groups_width} must divide {mid} channels")
        return self

    @property
    def contract(self) -> InputContract:
        return InputContract(
            model=f"ECGFounder ({self.in_channels}-lead)",
            fs_hz=500.0,
            window_s=10.0,
            stride_s=10.0,
            leads=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
            if self.in_channels == 12 else ("I",),
            resampling="linear interpolation (ptbxl_eval.py resample_unequal); 500 Hz data is used as is",
            filters=(
                Notch(hz=50.0, q=30.0),
                Butterworth(order=4, low_hz=0.67, high_hz=40.0, form="ba"),
                MedianBaseline(window_s=0.4),
            ),
            filter_scope="record",
            normalisation=Normalisation(kind="zscore", over="window", eps=1e-8),
            reference=REFERENCE,
            notes="dataset.py followed; the paper's filters and ptbxl_eval.py's (none) differ; records shorter "
                  "than 10 s are zero-padded in the paper",
        )


def _same_pad(t: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow-style 'same' padding (net1d.py ``MyConv1dPadSame``): output ``ceil(t / stride)`` steps."""
    out = (t + stride - 1) // stride
    p = max(0, (out - 1) * stride + kernel - t)
    return p // 2, p - p // 2


class _ConvSame(nn.Module):
    """Conv1d with 'same' padding computed from the input length; parameters under ``conv.``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        return self.conv(F.pad(x, _same_pad(x.shape[-1], k, s)))


class _Block(nn.Module):
    """Pre-activation bottleneck with squeeze-excitation (net1d.py ``BasicBlock`` with use_bn = use_do = False)."""

    def __init__(self, c_in: int, c_out: int, ratio: float, kernel: int, stride: int, groups: int,
                 first: bool) -> None:
        super().__init__()
        mid = int(c_out * ratio)
        self.c_in, self.c_out, self.stride, self.first = c_in, c_out, stride, first
        self.conv1 = _ConvSame(c_in, mid, 1, 1)
        self.conv2 = _ConvSame(mid, mid, kernel, stride, groups)
        self.conv3 = _ConvSame(mid, c_out, 1, 1)
        self.se_fc1 = nn.Linear(c_out, c_out // 2)
        self.se_fc2 = nn.Linear(c_out // 2, c_out)

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.first else F.silu(x)  # Swish; the network's very first block skips it
        out = self.conv3(F.silu(self.conv2(F.silu(self.conv1(out)))))
        se = torch.sigmoid(self.se_fc2(F.silu(self.se_fc1(out.mean(-1)))))
        out = out * se[..., None]
        identity = x
        if self.stride > 1:  # max-pool k = s with 'same' padding: zeros added (pad p = s - 1, left p // 2)
            p = self.stride - 1
            identity = F.max_pool1d(F.pad(identity, (p // 2, p - p // 2)), self.stride)
        if self.c_out != self.c_in:  # new channels are zeros, split between both sides
            extra = self.c_out - self.c_in
            identity = F.pad(identity, (0, 0, extra // 2, extra - extra // 2))
        return out + identity


class _Stage(nn.Module):
    def __init__(self, blocks: list[_Block]) -> None:
        super().__init__()
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class ECGFounder(FoundationEncoder):
    """Net1D (ECGFounder); ``forward(x (B, 12, T))`` -> ``(B, filter_list[-1])``. See the module docstring."""

    Config = ECGFounderConfig
    licence: ClassVar[str] = "MIT"
    weights_url: ClassVar[str] = "https://huggingface.co/PKUDigitalHealth/ECGFounder (12_lead_ECGFounder.pth, 1_lead_ECGFounder.pth)"
    # Tensors of the released state dict that the encoder does not use, and why.
    DROP: ClassVar[tuple[KeyRule, ...]] = (
        KeyRule(r"^dense\.", "the 150-label classification head"),
        KeyRule(r"(^first_bn|\.bn[123])\.(weight|bias|running_mean|running_var|num_batches_tracked)$",
                "BatchNorm built but never applied (the released Net1D uses use_bn=False)"),
    )
    UNREADABLE: ClassVar[tuple[type[Exception], ...]] = (KeyError, ValueError, ZeroDivisionError)

    def __init__(self, cfg: ECGFounderConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg)
        self.first_conv = _ConvSame(cfg.in_channels, cfg.base_filters, cfg.kernel_size, 2)
        stages, c_in = [], cfg.base_filters
        for i, (c_out, n) in enumerate(zip(cfg.filter_list, cfg.m_blocks_list, strict=True)):
            blocks = [
                _Block(c_in if j == 0 else c_out, c_out, cfg.ratio, cfg.kernel_size, cfg.stride if j == 0 else 1,
                       c_out // cfg.groups_width, first=(i == 0 and j == 0))
                for j in range(n)
            ]
            stages.append(_Stage(blocks))
            c_in = c_out
        self.stage_list = nn.ModuleList(stages)
        self.embed_dim = c_in
        self.downsample = 2 * cfg.stride ** len(cfg.filter_list)
        # Receptive field: the first conv, then per block the k-conv at the block's input jump (and its stride).
        rf, jump = cfg.kernel_size, 2
        for n in cfg.m_blocks_list:
            for j in range(n):
                rf += (cfg.kernel_size - 1) * jump
                jump *= cfg.stride if j == 0 else 1
        self.receptive_field = rf

    def network_features(self, x: Tensor) -> Tensor:
        """The network on its own input: ``x (B, in_channels, T)`` z-scored -> ``(B, embed_dim, ceil(T/256))``."""
        out = F.silu(self.first_conv(x))
        for stage in self.stage_list:
            out = stage(out)
        return out

    def pool(self, features: Tensor) -> Tensor:
        return features.mean(-1)

    @staticmethod
    def infer_config(sd: dict[str, Tensor]) -> ECGFounderConfig:
        """The architecture a ``Net1D`` state dict holds: leads, widths, depths and kernel from tensor shapes.

        Raises KeyError / ValueError where the tensors it reads are absent or inconsistent."""
        w = sd["first_conv.conv.weight"]
        n_stages = count_indexed(sd, r"stage_list\.(\d+)\.")
        widths = [int(sd[f"stage_list.{i}.block_list.0.conv3.conv.weight"].shape[0]) for i in range(n_stages)]
        depths = [count_indexed(sd, rf"stage_list\.{i}\.block_list\.(\d+)\.") for i in range(n_stages)]
        conv2 = sd["stage_list.0.block_list.0.conv2.conv.weight"]
        groups = int(conv2.shape[0]) // int(conv2.shape[1])
        return ECGFounderConfig(
            in_channels=int(w.shape[1]), base_filters=int(w.shape[0]), ratio=int(conv2.shape[0]) / widths[0],
            filter_list=tuple(widths), m_blocks_list=tuple(depths), kernel_size=int(w.shape[2]),
            groups_width=widths[0] // groups,
        )



__all__ = ["ECGFounder", "ECGFounderConfig"]
