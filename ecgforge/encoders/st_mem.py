"""ST-MEM's encoder (Na et al. 2024, ICLR, "Guiding Masked Representation Learning to Capture Spatio-Temporal
Relationship of Electrocardiogram"; bakqui/ST-MEM, CC BY-NC 4.0): ViT-B/75 over per-lead patches.

Architecture (``models/encoder/st_mem_vit.py`` ``ST_MEM_ViT`` as ``st_mem_vit_base`` builds it: 2,250 samples,
patch 75, 12 leads, width 768, depth 12, 12 heads of 64, MLP 3072, qkv bias):

    x (B, 12, 2250) -> per lead, 30 patches of 75 samples -> LayerNorm(75), Linear(75 -> 768), LayerNorm(768)
      + positional embedding 1..30; a SEP token (shared embedding + positions 0 and 31) on both sides of each lead;
      + a learned embedding per lead -> 12 x 32 tokens -> 12 pre-norm transformer blocks
      -> drop the SEP tokens -> mean over the 12 x 30 tokens -> LayerNorm = the 768-d representation.

``forward_features`` gives the 360 lead-patch tokens ``(B, 768, 12 * 30)`` (lead-major); ``forward`` their
mean then ``norm``, which is what the reference's ``head`` reads. The released ``encoder.pth`` is
``{"epoch", "model", "optimizer", "scaler", "config"}`` with the encoder's state dict under ``model``; a
fine-tuned checkpoint's ``head`` is dropped by a named rule. Dropout and drop-path (0 in the released
fine-tuning config) are not built.

Input contract, from ``configs/downstream/st_mem.yaml`` ``eval_transforms`` and ``util/dataset.py``: the 12 leads in
canonical order at 250 Hz (``util.transforms.Resample``: ``scipy.signal.resample``, FFT), windows of 9 s (2,250
samples; ``NCrop``: three equally spaced crops of a 10 s record, i.e. a 0.5 s stride, logits averaged), and on
each window: 5th-order Butterworth high-pass 0.67 Hz then low-pass 40 Hz (``sosfiltfilt``), then one z-score
over the whole (leads, T) window, 0 where its std is 0 (``Standardize(axis=(-1, -2))``).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.encoders.foundation import (
    BENCHMARK_EARLY_BLOCKS,
    Butterworth,
    FoundationEncoder,
    InputContract,
    KeyRule,
    Normalisation,
    count_indexed,
    split_parameters,
)
from ecgforge.registry import BuildContext

REFERENCE = ("bakqui/ST-MEM@69ec70246c01fe32b14dea810af812556c06eab0 (models/encoder/st_mem_vit.py, "
             "models/encoder/vit.py, util/transforms.py, configs/downstream/st_mem.yaml)")


class STMEMConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["st_mem"] = "st_mem"
    seq_len: int = Field(2250, gt=0, description="longest input (samples); positions exist for seq_len / patch_size patches")
    patch_size: int = Field(75, gt=0)
    num_leads: int = Field(12, gt=0, description="lead embeddings (the released model: the 12 canonical leads)")
    width: int = Field(768, gt=0)
    depth: int = Field(12, gt=0)
    mlp_dim: int = Field(3072, gt=0)
    heads: int = Field(12, gt=0)
    dim_head: int = Field(64, gt=0)
    qkv_bias: bool = True

    @model_validator(mode="after")
    def _check(self) -> STMEMConfig:
        if self.seq_len % self.patch_size:
            raise ValueError(f"seq_len ({self.seq_len}) must be a multiple of patch_size ({self.patch_size})")
        if self.num_leads != 12:
            raise ValueError("num_leads: the ecgforge ST-MEM encoder reads the 12 canonical leads")
        return self

    @property
    def contract(self) -> InputContract:
        return InputContract(
            model="ST-MEM ViT-B/75",
            fs_hz=250.0,
            window_s=self.seq_len / 250.0,
            stride_s=0.5,
            leads=CANONICAL_LEADS,
            resampling="scipy.signal.resample (FFT) to 250 Hz (util/transforms.py Resample)",
            filters=(Butterworth(order=5, low_hz=0.67, form="sos"), Butterworth(order=5, high_hz=40.0, form="sos")),
            filter_scope="window",
            normalisation=Normalisation(kind="zscore", over="window", zero_if_flat=True),
            reference=REFERENCE,
            notes="evaluation: NCrop(2250, 3) of each record (three equally spaced 9 s crops; 0.5 s apart for "
                  "10 s), filters and z-score per crop, predictions averaged over the crops",
        )


class _Patchify(nn.Module):
    """``(B, C, n * p) -> (B, C, n, p)`` (einops ``'b c (n p) -> b c n p'``)."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (x.shape[-1] // self.patch, self.patch))


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        # The reference skips the output projection (and its keys) for one head as wide as the model.
        self.to_out = nn.Sequential(nn.Linear(inner, dim)) if not (heads == 1 and dim_head == dim) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # scale dim_head ** -0.5, as the reference
        return self.to_out(out.transpose(1, 2).flatten(2))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        # Indices 0 and 3 as the reference's Sequential(Linear, GELU, Dropout, Linear, Dropout).
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Block(nn.Module):
    def __init__(self, cfg: STMEMConfig) -> None:
        super().__init__()
        self.attn = _PreNorm(cfg.width, _Attention(cfg.width, cfg.heads, cfg.dim_head, cfg.qkv_bias))
        self.ff = _PreNorm(cfg.width, _FeedForward(cfg.width, cfg.mlp_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.ff(x)


class STMEM(FoundationEncoder):
    """ST-MEM's ViT encoder; ``forward(x (B, 12, T))`` -> ``(B, width)``. See the module docstring."""

    Config = STMEMConfig
    licence: ClassVar[str] = "CC BY-NC 4.0"
    weights_url: ClassVar[str] = ("https://drive.google.com/file/d/1E7J-A1HqWa2f08T6Sfk5uWk-_CFJhOYQ "
                                  "(encoder.pth, linked from the bakqui/ST-MEM README)")
    DROP: ClassVar[tuple[KeyRule, ...]] = (KeyRule(r"^head\.", "a fine-tuned classification head"),)
    STATE_ENTRIES: ClassVar[tuple[str, ...]] = ("model", "state_dict")  # encoder.pth: {"model": ..., ...}

    def __init__(self, cfg: STMEMConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg)
        n = cfg.seq_len // cfg.patch_size
        self.to_patch_embedding = nn.Sequential(
            _Patchify(cfg.patch_size), nn.LayerNorm(cfg.patch_size), nn.Linear(cfg.patch_size, cfg.width),
            nn.LayerNorm(cfg.width),
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 2, cfg.width))
        self.sep_embedding = nn.Parameter(torch.randn(cfg.width))
        self.lead_embeddings = nn.ParameterList(nn.Parameter(torch.randn(cfg.width)) for _ in range(cfg.num_leads))
        for i in range(cfg.depth):
            self.add_module(f"block{i}", _Block(cfg))
        self.norm = nn.LayerNorm(cfg.width)
        self.embed_dim = cfg.width
        self.downsample = cfg.patch_size  # input samples (of one lead) per token
        self.receptive_field = cfg.patch_size  # of the patch embedding; attention then sees the whole window

    def network_features(self, x: Tensor) -> Tensor:
        """The network on its own input: ``x (B, 12, T)`` filtered and z-scored, ``T`` a multiple of the patch ->
        lead-patch tokens ``(B, width, 12 * T / patch)``, lead-major, SEP tokens removed."""
        b, c, t = x.shape
        if t % self.cfg.patch_size or t > self.cfg.seq_len:
            raise ValueError(f"ST-MEM takes a multiple of {self.cfg.patch_size} samples up to {self.cfg.seq_len} "
                             f"(9 s at 250 Hz); got {t}")
        tokens = self.to_patch_embedding(x)  # (B, C, n, D)
        n = tokens.shape[2]
        tokens = tokens + self.pos_embedding[:, 1 : n + 1].unsqueeze(1)
        sep = self.sep_embedding.expand(b, c, 1, -1)
        left, right = sep + self.pos_embedding[:, :1].unsqueeze(1), sep + self.pos_embedding[:, -1:].unsqueeze(1)
        tokens = torch.cat([left, tokens, right], dim=2)
        tokens = tokens + torch.stack(list(self.lead_embeddings))[None, :, None, :]
        h = tokens.flatten(1, 2)
        for i in range(self.cfg.depth):
            h = getattr(self, f"block{i}")(h)
        h = h.unflatten(1, (c, n + 2))[:, :, 1:-1]  # drop the SEP tokens
        return h.flatten(1, 2).transpose(1, 2)

    def pool(self, features: Tensor) -> Tensor:
        return self.norm(features.mean(-1))

    def layerwise_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(early, late) parameters for layer-wise fine-tuning rates, as the ECG foundation-model benchmark
        splits ST-MEM (AI4HealthUOL/ecg-fm-benchmarking@6367295 ``code/clinical_ts/models/fm_ecg.py``
        ``StMemWrapper.get_params``): early = ``pos_embedding``, ``sep_embedding``, ``lead_embeddings``,
        ``to_patch_embedding`` and blocks 0-2; late = blocks 3-11 and ``norm``. Blocks past the benchmark's 12
        are late; a model of three blocks or fewer has them all early.

        The benchmark writes these names with an ``encoder.`` prefix, which the module it iterates
        (``self.model.encoder``, the ViT itself) does not give: as committed, none of its rules matches and
        only the head reaches its optimiser. This is the split its rules state.
        """
        def early(name: str) -> bool:
            block = re.match(r"block(\d+)\.", name)
            if block is not None:
                return int(block[1]) < BENCHMARK_EARLY_BLOCKS
            return name in ("pos_embedding", "sep_embedding") or name.startswith(("lead_embeddings.",
                                                                                  "to_patch_embedding."))

        return split_parameters(self, early)

    @staticmethod
    def infer_config(sd: dict[str, Tensor]) -> STMEMConfig:
        """The sizes a state dict holds, heads taken 64 wide (the head count is not in the weights; every
        released ST-MEM config uses 64). KeyError / ValueError where the tensors it reads are absent or odd."""
        patch = int(sd["to_patch_embedding.2.weight"].shape[1])
        inner = int(sd["block0.attn.fn.to_qkv.weight"].shape[0]) // 3
        return STMEMConfig(
            seq_len=(int(sd["pos_embedding"].shape[1]) - 2) * patch, patch_size=patch,
            num_leads=count_indexed(sd, r"lead_embeddings\.(\d+)$"), width=int(sd["to_patch_embedding.2.weight"].shape[0]),
            depth=count_indexed(sd, r"block(\d+)\."), mlp_dim=int(sd["block0.ff.fn.net.0.weight"].shape[0]),
            heads=max(inner // 64, 1), dim_head=min(inner, 64), qkv_bias="block0.attn.fn.to_qkv.bias" in sd,
        )



__all__ = ["STMEM", "STMEMConfig"]
