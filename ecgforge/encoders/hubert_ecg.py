"""HuBERT-ECG (Coppola et al. 2024, "HuBERT-ECG as a Self-Supervised Foundation Model for Broad and Scalable
Cardiac Applications"; Edoar-do/HuBERT-ECG, weights CC BY-NC 4.0): a Hugging Face ``HubertModel`` over the 12 leads
concatenated into one 100 Hz sequence.

Architecture (``code/hubert_ecg.py`` ``HuBERTECG(HubertModel)`` with ``pretrain.py``'s configs for
``downsampling_factor = 5``): five convolutions (512 channels; kernels 10, 3, 3, 2, 2; strides 4, 2, 2, 2, 2; no
bias; GroupNorm with one group per channel after the first; GELU) over the 6,000-sample sequence -> 93 frames;
LayerNorm(512) and Linear(512 -> D) (``feature_projection``); a weight-normed grouped positional convolution
(kernel 128, 16 groups, GELU) added, LayerNorm, then post-norm transformer layers (``do_stable_layer_norm =
False``). Sizes: small D 512, 8 layers, 8 heads, FFN 2048; base 768, 12, 12, 3072; large 960, 16, 12, 3840.
``forward_features`` is ``last_hidden_state`` ``(B, D, 93)``; ``forward`` its mean over frames (the reference's
classification wrapper pools the same way). This is the wav2vec 2.0 layout of ``wav2vec2.py`` with Hugging Face's
names and a projection always present (the small model's 512 -> 512 too), so it is a module of its own.

Released files: ``hubert_ecg_{small,base,large}.pt`` (``{"model_config": HuBERTECGConfig, "model_state_dict": ...}``)
and the Hub's ``model.safetensors`` + ``config.json``. The pretraining heads (``final_proj``, ``label_embedding``)
and the mask token ``masked_spec_embed`` are dropped by named rules; the positional convolution's weight norm
loads from ``weight_g`` / ``weight_v`` or from ``parametrizations.weight.original0/1``.

Input contract, from ``code/utils.py`` ``ecg_preprocessing`` (run on each stored record at 500 Hz) and
``code/dataset.py``: 500 Hz; per record a zero-phase FIR band-pass 0.05-47 Hz (biosppy, 151 taps at 500 Hz), then
each lead min-max scaled to [-1, 1] (``2 (x - min) / (max - min + 1e-8) - 1``) over the whole record; the first
5 s (2,500 samples); then the 12 leads in canonical order are concatenated into one 30,000-sample sequence and
``scipy.signal.decimate(x, 5)`` (order-8 Chebyshev, zero phase, across the lead boundaries) gives the 6,000
samples the network reads. The last two steps happen inside ``forward`` (on the CPU with scipy; they need no
gradient), the first two per record (``contract.prepare_record``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.encoders.foundation import (
    FIR,
    CheckpointError,
    FoundationEncoder,
    InputContract,
    KeyRule,
    Normalisation,
    count_indexed,
    read_checkpoint,
    select_leads,
    unwrap,
)
from ecgforge.layers.receptive_field import chain_receptive_field
from ecgforge.registry import BuildContext

REFERENCE = ("Edoar-do/HuBERT-ECG@affe1f94d06d61a346fa7520be441af5642616b4 (code/hubert_ecg.py, code/pretrain.py, "
             "code/utils.py, code/dataset.py)")
# Released sizes -> attention heads (the head count is not in the weights; pretrain.py sets it per size).
HEADS_OF_WIDTH = {512: 8, 768: 12, 960: 12}


class HuBERTECGConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["hubert_ecg"] = "hubert_ecg"
    conv_dim: tuple[int, ...] = Field((512,) * 5, min_length=1)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (4, 2, 2, 2, 2)
    conv_bias: bool = False
    hidden_size: int = Field(768, gt=0, description="D: small 512, base 768, large 960")
    num_hidden_layers: int = Field(12, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(3072, gt=0)
    num_conv_pos_embeddings: int = Field(128, gt=0)
    num_conv_pos_embedding_groups: int = Field(16, gt=0)
    layer_norm_eps: float = Field(1e-5, gt=0)
    decimation: int = Field(5, gt=0, description="500 Hz -> 100 Hz after concatenating the leads")

    @model_validator(mode="after")
    def _check(self) -> HuBERTECGConfig:
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("conv_dim, conv_kernel and conv_stride need one entry per convolution")
        if self.hidden_size % self.num_attention_heads or self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError("hidden_size must be divisible by num_attention_heads and num_conv_pos_embedding_groups")
        return self

    @property
    def contract(self) -> InputContract:
        return InputContract(
            model="HuBERT-ECG",
            fs_hz=500.0,
            window_s=5.0,
            stride_s=5.0,
            leads=CANONICAL_LEADS,
            resampling="scipy.signal.resample (FFT) to 500 Hz after the band-pass (utils.py ecg_preprocessing)",
            filters=(FIR(taps_s=0.3, low_hz=0.05, high_hz=47.0),),
            filter_scope="record",
            normalisation=Normalisation(kind="minmax", over="lead", eps=1e-8, low=-1.0, high=1.0),
            normalisation_scope="record",
            reference=REFERENCE,
            notes="the reference takes the first 5 s of each record (random 5 s crops when fine-tuning); inside "
                  "the encoder the 12 leads are concatenated and decimated by 5 (scipy.signal.decimate) to 100 Hz",
        )


class _ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, bias=bias)
        self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.gelu(self.layer_norm(x) if self.layer_norm is not None else x)


class _FeatureExtractor(nn.Module):
    def __init__(self, cfg: HuBERTECGConfig) -> None:
        super().__init__()
        dims = (1, *cfg.conv_dim)
        self.conv_layers = nn.ModuleList(
            _ConvLayer(dims[i], dims[i + 1], k, s, cfg.conv_bias, norm=(i == 0))
            for i, (k, s) in enumerate(zip(cfg.conv_kernel, cfg.conv_stride, strict=True))
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.conv_layers:
            x = layer(x)
        return x


class _FeatureProjection(nn.Module):
    def __init__(self, cfg: HuBERTECGConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.layer_norm(x))


class _PositionalConv(nn.Module):
    def __init__(self, cfg: HuBERTECGConfig) -> None:
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, k, padding=k // 2, groups=cfg.num_conv_pos_embedding_groups)
        self.conv = weight_norm(conv, name="weight", dim=2)
        self.remove = 1 if k % 2 == 0 else 0  # an even kernel adds one step

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, D) -> (B, T, D)."""
        y = self.conv(x.transpose(1, 2))
        if self.remove:
            y = y[:, :, : -self.remove]
        return F.gelu(y).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (p(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class _Layer(nn.Module):
    """Post-norm transformer layer (Hugging Face ``HubertEncoderLayer``)."""

    def __init__(self, cfg: HuBERTECGConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = _FeedForward(cfg.hidden_size, cfg.intermediate_size)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: HuBERTECGConfig) -> None:
        super().__init__()
        self.pos_conv_embed = _PositionalConv(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer_norm(x + self.pos_conv_embed(x))
        for layer in self.layers:
            x = layer(x)
        return x


class HuBERTECG(FoundationEncoder):
    """HuBERT-ECG; ``forward(x (B, 12, 2500))`` (500 Hz, record-prepared) -> ``(B, hidden_size)``. See the module
    docstring."""

    Config = HuBERTECGConfig
    licence: ClassVar[str] = "CC BY-NC 4.0"
    weights_url: ClassVar[str] = "https://huggingface.co/Edoardo-BS (hubert-ecg-small / -base / -large)"
    input_differentiable: ClassVar[bool] = False  # the decimation is scipy's, on the CPU
    DROP: ClassVar[tuple[KeyRule, ...]] = (
        KeyRule(r"^(final_proj|label_embedding)\.", "HuBERT pretraining heads (projection and cluster embeddings)"),
        KeyRule(r"^masked_spec_embed$", "the pretraining mask token"),
        KeyRule(r"^classifier\.|^projector\.", "a fine-tuned classification head"),
    )
    UNREADABLE: ClassVar[tuple[type[Exception], ...]] = (KeyError, ValueError, IndexError)
    STATE_ENTRIES: ClassVar[tuple[str, ...]] = ("model_state_dict", "state_dict", "model")

    def __init__(self, cfg: HuBERTECGConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg)
        self.feature_extractor = _FeatureExtractor(cfg)
        self.feature_projection = _FeatureProjection(cfg)
        self.encoder = _Encoder(cfg)
        self.embed_dim = cfg.hidden_size
        # Of one frame, in samples of the decimated sequence; attention then sees the whole window.
        self.downsample = math.prod(cfg.conv_stride)
        self.receptive_field = chain_receptive_field(list(zip(cfg.conv_kernel, cfg.conv_stride, strict=True)))

    def prepare(self, x: Tensor) -> Tensor:
        """``x (B, 12, T)`` canonical at 500 Hz, record-prepared -> ``(B, 12 * T / decimation)``: leads
        concatenated, then ``scipy.signal.decimate`` (the reference's call; computed on the CPU, no gradient)."""
        from scipy import signal as sps

        flat = select_leads(x, self.input_contract.leads).detach().flatten(1).cpu().double().numpy()
        y = sps.decimate(flat, self.cfg.decimation, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(y)).to(device=x.device, dtype=x.dtype)

    def network_features(self, x: Tensor) -> Tensor:
        """The network on its own input: ``x (B, T)`` (the concatenated 100 Hz sequence) -> ``(B, D, frames)``."""
        feats = self.feature_extractor(x[:, None]).transpose(1, 2)
        return self.encoder(self.feature_projection(feats)).transpose(1, 2)

    def pool(self, features: Tensor) -> Tensor:
        return features.mean(-1)

    @staticmethod
    def infer_config(sd: dict[str, Tensor], hf_config: dict[str, Any] | None = None) -> HuBERTECGConfig:
        """Sizes from the tensors; heads, strides and eps from the checkpoint's own config ``hf_config`` where
        it has one, else heads by width as ``pretrain.py`` sets them and the released strides."""
        n_conv = count_indexed(sd, r"feature_extractor\.conv_layers\.(\d+)\.")
        convs = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(n_conv)]
        hidden = int(sd["feature_projection.projection.weight"].shape[0])
        fields: dict[str, Any] = {
            "conv_dim": tuple(int(w.shape[0]) for w in convs), "conv_kernel": tuple(int(w.shape[2]) for w in convs),
            "conv_bias": "feature_extractor.conv_layers.0.conv.bias" in sd, "hidden_size": hidden,
            "num_hidden_layers": count_indexed(sd, r"encoder\.layers\.(\d+)\."),
            "num_attention_heads": HEADS_OF_WIDTH.get(hidden, max(hidden // 64, 1)),
            "intermediate_size": int(sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        }
        v = sd.get("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
        if v is not None:
            fields["num_conv_pos_embeddings"] = int(v.shape[2])
            fields["num_conv_pos_embedding_groups"] = hidden // int(v.shape[1])
        for name in ("conv_stride", "num_attention_heads", "layer_norm_eps", "num_conv_pos_embeddings",
                     "num_conv_pos_embedding_groups"):
            if hf_config and hf_config.get(name) is not None:
                fields[name] = tuple(hf_config[name]) if name == "conv_stride" else hf_config[name]
        return HuBERTECGConfig(**fields)

    @staticmethod
    def rename(key: str) -> str:
        """Released keys (a ``.pt``'s ``model_state_dict`` or the Hub's ``model.safetensors``) -> ours."""
        key = key.removeprefix("hubert_ecg.")  # saved from the reference's classification wrapper
        return key.replace(".conv.weight_g", ".conv.parametrizations.weight.original0").replace(
            ".conv.weight_v", ".conv.parametrizations.weight.original1")

    @staticmethod
    def files_beside(filename: str) -> tuple[str, ...]:
        return ("config.json",) if filename.endswith(".safetensors") else ()

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: HuBERTECGConfig | None = None) -> HuBERTECG:
        """``hubert_ecg_*.pt`` (its pickled config read as plain data; no code runs) or ``model.safetensors``
        (with ``config.json`` beside it, if present), loaded strictly."""
        path = Path(path)
        hf_config: dict[str, Any] | None = None
        obj = read_checkpoint(path, stub_classes=True)
        if path.suffix == ".safetensors":
            config_json = path.with_name("config.json")
            if config_json.is_file():
                try:
                    hf_config = json.loads(config_json.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise CheckpointError(f"{config_json}: unreadable ({exc})") from None
        elif isinstance(obj, dict) and isinstance(obj.get("model_config"), dict):
            hf_config = obj["model_config"]
        state = unwrap(obj, cls.STATE_ENTRIES, str(path))
        return cls.from_state(*cls.convert(state, str(path), cfg, hf_config=hf_config))


__all__ = ["HuBERTECG", "HuBERTECGConfig"]
