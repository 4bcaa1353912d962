"""MERL's ECG encoder (Liu et al. 2024, ICML, "Zero-Shot ECG Classification with Multimodal Learning and Test-time
Clinical Knowledge Enhancement"; cheliu-computation/MERL-ICML2024, MIT): a 1D ResNet-18.

Architecture (``utils/resnet1d.py`` ``ResNet(BasicBlock, [2, 2, 2, 2])``): conv k7 s2 p3 (12 -> 64, no bias),
BatchNorm, ReLU, no max-pool; four stages of two BasicBlocks (k3 convs, BatchNorm; a 1x1 conv + BatchNorm
shortcut where the stride or width changes) at 64, 128, 256, 512 channels, strides 1, 2, 2, 2:
``x (B, 12, T) -> (B, 512, ceil(T/16))``. Linear probing (``finetune/models/resnet1d.py``) averages that over
time and reads the 512-d vector, which is our ``forward``. The released ``*_encoder.pth`` is the encoder's
state dict as saved by ``utils_trainer.py`` (``ecg_encoder.state_dict()``), which holds an untrained
``linear`` (512 -> 10) the class always builds; it is dropped by a named rule. The whole-model ``*_ckpt.pth``
(encoder under ``ecg_encoder.``, with the text encoder and projections of the zero-shot path) loads too: its
non-encoder tensors are dropped by a named rule.

Input contract, from ``finetune/finetune_dataset.py`` (the downstream code; the pretraining notebook stores the
same min-max scaling times 1000 as int16): 500 Hz, the first 10 s (5,000 samples), no filter, min-max over the
whole (leads, T) array to [0, 1] with ``+ 1e-8`` in the denominator, and the leads in MIMIC-IV-ECG's order
I, II, III, aVR, aVF, aVL, V1-V6 (the dataset swaps aVL and aVF of the downstream data to match pretraining).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.encoders.foundation import (
    FoundationEncoder,
    InputContract,
    KeyRule,
    Normalisation,
    count_indexed,
    expected_shapes,
    strict_state,
)
from ecgforge.registry import BuildContext

REFERENCE = "cheliu-computation/MERL-ICML2024@38799b7deb1c9958f41badcfacc6a95192787cc4 (utils/resnet1d.py, finetune/finetune_dataset.py, finetune/main_single.py)"
MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")


class MERLResNetConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["merl_resnet"] = "merl_resnet"
    blocks: tuple[int, int, int, int] = Field((2, 2, 2, 2), description="BasicBlocks per stage (ResNet-18)")
    width: int = Field(64, gt=0, description="channels of the stem and first stage; stages use 1x, 2x, 4x, 8x")

    @property
    def contract(self) -> InputContract:
        return InputContract(
            model="MERL ResNet-18",
            fs_hz=500.0,
            window_s=10.0,
            stride_s=10.0,
            leads=MIMIC_LEADS,
            resampling="none in the released code (every dataset used is 500 Hz)",
            normalisation=Normalisation(kind="minmax", over="window", eps=1e-8),
            reference=REFERENCE,
            notes="lead order is MIMIC-IV-ECG's (aVF before aVL), as finetune_dataset.py swaps them",
        )


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = (
            nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))
            if stride != 1 or c_in != c_out else nn.Sequential()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class MERLResNet(FoundationEncoder):
    """MERL's ResNet-18 ECG encoder; ``forward(x (B, 12, T))`` -> ``(B, 8 * width)``. See the module docstring."""

    Config = MERLResNetConfig
    licence: ClassVar[str] = "MIT"
    weights_url: ClassVar[str] = ("https://drive.google.com/drive/folders/13wb4DppUciMn-Y_qC2JRWTbZdz3xX0w2 "
                                  "(resnet18 *_encoder.pth)")
    DROP: ClassVar[tuple[KeyRule, ...]] = (
        KeyRule(r"^linear\.", "the untrained 10-class head ResNet always builds"),
    )
    WHOLE_MODEL_PREFIX: ClassVar[str] = "ecg_encoder."
    # *_encoder.pth: the encoder's state dict; *_ckpt.pth: the whole MERL model's (`convert` takes its encoder)
    STATE_ENTRIES: ClassVar[tuple[str, ...]] = ("state_dict", "model", "model_state_dict")

    def __init__(self, cfg: MERLResNetConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg)
        w = cfg.width
        self.conv1 = nn.Conv1d(len(MIMIC_LEADS), w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm1d(w)
        c_in = w
        for i, n in enumerate(cfg.blocks):
            c_out = w * 2**i
            stage = [_BasicBlock(c_in if j == 0 else c_out, c_out, (1 if i == 0 else 2) if j == 0 else 1)
                     for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c_in = c_out
        self.embed_dim = c_in
        self.downsample = 16
        # Stem k7 at jump 1, then per block two k3 convs (the first at the block's input jump).
        rf, jump = 7, 2
        for i, n in enumerate(cfg.blocks):
            for j in range(n):
                rf += 2 * jump
                jump *= 2 if (i > 0 and j == 0) else 1
                rf += 2 * jump
        self.receptive_field = rf

    def network_features(self, x: Tensor) -> Tensor:
        """The network on its own input: ``x (B, 12, T)`` (MIMIC lead order, min-max scaled) ->
        ``(B, 8 * width, ceil(T/16))``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def pool(self, features: Tensor) -> Tensor:
        return features.mean(-1)

    @classmethod
    def convert(cls, state: dict[str, Tensor], source: str = "checkpoint",
                cfg: MERLResNetConfig | None = None) -> tuple[dict[str, Tensor], MERLResNetConfig]:
        """A released state dict (the encoder's, or the whole MERL model's) -> (our state dict, its config)."""
        sd = {k.removeprefix("module."): v for k, v in state.items()}
        drop = cls.DROP
        if any(k.startswith(cls.WHOLE_MODEL_PREFIX) for k in sd):
            prefix = cls.WHOLE_MODEL_PREFIX
            sd = {(k[len(prefix):] if k.startswith(prefix) else "<zero-shot>." + k): v for k, v in sd.items()}
            drop = (*drop, KeyRule(r"^<zero-shot>\.", "MERL's text encoder, projections and attention pool"))
        depth = tuple(count_indexed(sd, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
        if cfg is not None:
            pass
        elif "conv1.weight" not in sd or min(depth) == 0:
            cfg = MERLResNetConfig()  # too damaged to read: the strict check names what differs from ResNet-18
        else:
            cfg = MERLResNetConfig(blocks=depth, width=int(sd["conv1.weight"].shape[0]))  # type: ignore[arg-type]
        return strict_state(sd, expected_shapes(lambda: cls(cfg)), source=source, drop=drop), cfg



__all__ = ["MERLResNet", "MERLResNetConfig"]
