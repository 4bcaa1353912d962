"""ECG-JEPA's encoder (Kim 2024, "ECG-JEPA: Learning General Representation of 12-Lead Electrocardiogram With a
Joint-Embedding Predictive Architecture"; sehunfromdaegu/ECG_JEPA, MIT): a ViT-B over per-lead patches with
cross-lead / cross-time attention.

Architecture (``ecg_jepa.py`` ``MaskTransformer`` as ``models.py load_encoder`` builds it: 8 leads x 50 patches of
50 samples, width 768, depth 12, 16 heads, MLP ratio 4, no qkv bias, fixed 2D sin-cos positions):

    x (B, 8, 2500) -> (B, 8 * 50, 50) patches -> Linear ``W_P`` (50 -> 768)
      -> 12 pre-norm blocks, each fed ``x + pos_embed`` (the positions are added again before every block);
         a token attends only to tokens of its own lead or its own time patch
      -> LayerNorm -> mean over the 400 tokens = ``MaskTransformer.representation``, the 768-d features.

``forward_features`` gives the 400 normed tokens ``(B, 768, 8 * 50)`` (lead-major), ``forward`` their mean.
``pos_embed`` is a fixed sin-cos table (a frozen parameter in the reference, a buffer here; both are in the state
dict). The released checkpoints (random and multi-block masking) are ``{"encoder": state dict, "epoch": N}``.

Input contract, from ``ecg_data.py`` (``waves_ptbxl``, ``get_ecg_data``, ``Code15Dataset``) and ``linear_eval.py``:
10 s at 250 Hz (exactly 2,500 samples: ``representation`` asserts it; 500 Hz records are brought there with
``scipy.signal.resample``, FFT), the 8 independent leads I, II, V1-V6 in that order, mV as recorded: no filter and
no normalisation.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from ecgforge.encoders.foundation import (
    BENCHMARK_EARLY_BLOCKS,
    FoundationEncoder,
    InputContract,
    Normalisation,
    count_indexed,
    split_parameters,
)
from ecgforge.registry import BuildContext

REFERENCE = ("sehunfromdaegu/ECG_JEPA@d937ad2c2c8a1e22856ce7e4a23a30f84a71217c (ecg_jepa.py, pos_encoding.py, "
             "models.py, ecg_data.py)")
JEPA_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


class ECGJEPAConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["ecg_jepa"] = "ecg_jepa"
    embed_dim: int = Field(768, gt=0)
    depth: int = Field(12, gt=0)
    heads: int = Field(16, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    qkv_bias: bool = False
    patch_size: int = Field(50, gt=0, description="samples per patch (t)")
    n_patches: int = Field(50, gt=0, description="patches per lead (p); the input is n_patches * patch_size long")

    @model_validator(mode="after")
    def _check(self) -> ECGJEPAConfig:
        if self.embed_dim % self.heads or self.embed_dim % 4:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by heads and by 4 (sin-cos positions)")
        return self

    @property
    def contract(self) -> InputContract:
        return InputContract(
            model="ECG-JEPA ViT-B",
            fs_hz=250.0,
            window_s=self.n_patches * self.patch_size / 250.0,
            stride_s=self.n_patches * self.patch_size / 250.0,
            leads=JEPA_LEADS,
            resampling="scipy.signal.resample (FFT) of the 10 s, 500 Hz record to 2,500 samples",
            normalisation=Normalisation(kind="none"),
            reference=REFERENCE,
            notes="the encoder takes exactly n_patches * patch_size samples (2,500)",
        )


def sincos_positions(dim: int, n_leads: int, n_patches: int) -> Tensor:
    """``(n_leads * n_patches, dim)``: for token (lead i, patch j), ``[sincos(j), sincos(i)]`` with
    ``sincos(m) = [sin(m w_k), cos(m w_k)]``, ``w_k = 10000 ** (-k / (dim / 4))``, ``k < dim / 4`` (MAE's 2D
    table with the patch index as the first coordinate, as ``pos_encoding.get_2d_sincos_pos_embed``)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def sincos(pos: Tensor) -> Tensor:
        out = pos[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    lead = torch.arange(n_leads, dtype=torch.float64).repeat_interleave(n_patches)
    patch = torch.arange(n_patches, dtype=torch.float64).repeat(n_leads)
    return torch.cat([sincos(patch), sincos(lead)], dim=1).float()


def cross_attention_mask(n_leads: int, n_patches: int) -> Tensor:
    """``(L * P, L * P)`` bool, True where token (i, j) may attend to (i', j'): same lead or same patch."""
    lead = torch.arange(n_leads).repeat_interleave(n_patches)
    patch = torch.arange(n_patches).repeat(n_leads)
    return (lead[:, None] == lead[None]) | (patch[:, None] == patch[None])


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).flatten(2))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: ECGJEPAConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim)
        self.attn = _Attention(cfg.embed_dim, cfg.heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.embed_dim)
        self.mlp = _Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class _Blocks(nn.Module):
    def __init__(self, cfg: ECGJEPAConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))


class ECGJEPA(FoundationEncoder):
    """ECG-JEPA's encoder; ``forward(x (B, 12, 2500))`` -> ``(B, embed_dim)``. See the module docstring."""

    Config = ECGJEPAConfig
    licence: ClassVar[str] = "MIT"
    weights_url: ClassVar[str] = ("https://drive.google.com/file/d/1mh-XL0XOvvhFbhvuZ9c2KnTHa9B4F3Wx (random masking), "
                                  "https://drive.google.com/file/d/1gMOT4xjQQg0GZkY1iE6NuDzua4ALw00l (multi-block)")
    STATE_ENTRIES: ClassVar[tuple[str, ...]] = ("encoder", "state_dict", "model")  # {"encoder": ..., "epoch": N}

    def __init__(self, cfg: ECGJEPAConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg)
        n_leads = len(JEPA_LEADS)
        self.W_P = nn.Linear(cfg.patch_size, cfg.embed_dim)
        self.register_buffer("pos_embed", sincos_positions(cfg.embed_dim, n_leads, cfg.n_patches))
        self.register_buffer("attn_mask", cross_attention_mask(n_leads, cfg.n_patches), persistent=False)
        self.encoder_blocks = _Blocks(cfg)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.embed_dim = cfg.embed_dim
        self.downsample = cfg.patch_size  # input samples (of one lead) per token
        self.receptive_field = cfg.patch_size

    def network_features(self, x: Tensor) -> Tensor:
        """The network on its own input: ``x (B, 8, n_patches * patch_size)`` in mV -> normed tokens
        ``(B, embed_dim, 8 * n_patches)``, lead-major."""
        want = self.cfg.n_patches * self.cfg.patch_size
        if x.shape[-2:] != (len(JEPA_LEADS), want):
            raise ValueError(f"ECG-JEPA takes (B, 8, {want}) (10 s at 250 Hz); got {tuple(x.shape)}")
        h = self.W_P(x.reshape(x.shape[0], -1, self.cfg.patch_size))
        for block in self.encoder_blocks.blocks:
            h = block(h + self.pos_embed, self.attn_mask)
        return self.norm(h).transpose(1, 2)

    def pool(self, features: Tensor) -> Tensor:
        return features.mean(-1)

    def layerwise_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(early, late) parameters for layer-wise fine-tuning rates, as the ECG foundation-model benchmark
        splits ECG-JEPA (AI4HealthUOL/ecg-fm-benchmarking@6367295 ``code/clinical_ts/models/fm_ecg.py``
        ``ECGJEPAWrapper.get_params``): early = ``W_P`` (and ``pos_embed``, a frozen parameter there, a buffer
        here) and ``encoder_blocks.blocks`` 0-2; late = blocks 3-11 and ``norm``. Blocks past the benchmark's 12
        are late; a model of three blocks or fewer has them all early.
        """
        def early(name: str) -> bool:
            block = re.match(r"encoder_blocks\.blocks\.(\d+)\.", name)
            if block is not None:
                return int(block[1]) < BENCHMARK_EARLY_BLOCKS
            return name.startswith("W_P.")

        return split_parameters(self, early)

    @staticmethod
    def infer_config(sd: dict[str, Tensor]) -> ECGJEPAConfig:
        """Sizes from the tensors; heads stay 16 (the head count is not in the weights; the released models use
        16). KeyError / ValueError where the tensors it reads are absent or odd."""
        dim, patch = (int(n) for n in sd["W_P.weight"].shape)
        return ECGJEPAConfig(
            embed_dim=dim, patch_size=patch, n_patches=int(sd["pos_embed"].shape[0]) // len(JEPA_LEADS),
            depth=count_indexed(sd, r"encoder_blocks\.blocks\.(\d+)\."),
            mlp_ratio=int(sd["encoder_blocks.blocks.0.mlp.fc1.weight"].shape[0]) / dim,
            qkv_bias="encoder_blocks.blocks.0.attn.qkv.bias" in sd,
        )



__all__ = ["ECGJEPA", "ECGJEPAConfig"]
