"""wav2vec 2.0 encoder for ECG (Oh et al. 2022, CHIL; fairseq-signals ``Wav2Vec2Model`` / ECG-FM).

Pipeline, with the objective's hooks in between:

    x (B, leads, T) --feature_extractor--> (B, C_conv, T') --LayerNorm--> feats (B, T', C_conv)   extract_features
    feats --post_extract_proj, dropout_input--> tokens (B, T', D)                                  project
    [objective replaces masked tokens with ``mask_emb``; quantises feats for targets]
    tokens --+ pos_conv, LayerNorm, transformer layers--> (B, T', D)                               contextualise

Defaults are Oh et al.'s (``examples/w2v_cmsc`` configs): 4 x (256 ch, k=2, s=2) convs (5 s at 500 Hz ->
156 tokens), 12 layers x 768 d x 12 heads, FFN 3072, post-norm (``layer_norm_first = False``), dropout 0.1,
``dropout_input`` / ``dropout_features`` 0.1, ``feature_grad_mult`` 0.1 (their pretraining value: the conv
front end learns 10x slower, which stabilises wav2vec2 pretraining; fairseq sets 0 when fine-tuning).
Submodule names follow fairseq-signals so that its state dicts map key for key (``fairseq_import.py``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ecgforge.layers.grad import GradMultiply
from ecgforge.layers.receptive_field import chain_receptive_field
from ecgforge.registry import BuildContext


class Wav2Vec2Config(BaseModel, extra="forbid", frozen=True):
    kind: Literal["wav2vec2"] = "wav2vec2"
    conv_layers: list[tuple[int, int, int]] = Field(
        default_factory=lambda: [(256, 2, 2)] * 4,
        min_length=1,
        description="(channels, kernel, stride) per conv",
    )
    extractor_mode: Literal["default", "layer_norm"] = Field(
        "default",
        description="default: GroupNorm after the first conv only; layer_norm: LayerNorm after each",
    )
    conv_bias: bool = False
    layers: int = Field(12, gt=0)
    dim: int = Field(768, gt=0, description="transformer model dimension D")
    heads: int = Field(12, gt=0)
    ffn_dim: int = Field(3072, gt=0)
    layer_norm_first: bool = False
    dropout: float = Field(0.1, ge=0, lt=1)
    attention_dropout: float = Field(0.1, ge=0, lt=1)
    activation_dropout: float = Field(0.0, ge=0, lt=1)
    dropout_input: float = Field(0.1, ge=0, lt=1, description="on the projected tokens")
    dropout_features: float = Field(
        0.1, ge=0, lt=1, description="module for the objective to apply to targets"
    )
    layerdrop: float = Field(
        0.0, ge=0, lt=1, description="probability of skipping a transformer layer in training"
    )
    feature_grad_mult: float = Field(
        0.1, ge=0, description="gradient scale on the conv front end; 0 freezes it"
    )
    conv_pos: int = Field(128, gt=0, description="kernel of the relative positional convolution")
    conv_pos_groups: int = Field(16, gt=0)
    in_leads: int = Field(12, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Wav2Vec2Config:
        if any(min(layer) <= 0 for layer in self.conv_layers):
            raise ValueError("conv_layers entries (channels, kernel, stride) must be positive")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.dim % self.conv_pos_groups:
            raise ValueError(
                f"dim ({self.dim}) must be divisible by conv_pos_groups ({self.conv_pos_groups})"
            )
        return self


class _Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32: per-channel statistics over long sequences overflow in fp16."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type_as(x)


class _Fp32LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class _TransposeLast(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


class _SamePad(nn.Module):
    """Drop the last step an even positional-conv kernel adds, keeping T' steps."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class ConvFeatureExtractor(nn.Module):
    """x (B, leads, T) -> (B, C_conv, T'); unpadded convs, T' = floor((T - k) / s) + 1 per layer."""

    def __init__(
        self, conv_layers: list[tuple[int, int, int]], in_leads: int, mode: str, conv_bias: bool
    ) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        c_in = in_leads
        for i, (c, k, s) in enumerate(conv_layers):
            conv = nn.Conv1d(c_in, c, k, s, bias=conv_bias)
            nn.init.kaiming_normal_(conv.weight)
            # Index layout (conv, dropout, norm, act) is fairseq's, so keys like conv_layers.0.2.weight match.
            if mode == "layer_norm":
                norm: nn.Module = nn.Sequential(_TransposeLast(), _Fp32LayerNorm(c), _TransposeLast())
                block = nn.Sequential(conv, nn.Dropout(0.0), norm, nn.GELU())
            elif i == 0:
                block = nn.Sequential(conv, nn.Dropout(0.0), _Fp32GroupNorm(c, c), nn.GELU())
            else:
                block = nn.Sequential(conv, nn.Dropout(0.0), nn.GELU())
            self.conv_layers.append(block)
            c_in = c

    def forward(self, x: Tensor) -> Tensor:
        for block in self.conv_layers:
            x = block(x)
        return x


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """x (B, T, D), padding_mask (B, T) True at padded steps -> (B, T, D)."""
        b, t, d = x.shape

        def split(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        keep = None if padding_mask is None else ~padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            split(self.q_proj(x)),
            split(self.k_proj(x)),
            split(self.v_proj(x)),
            attn_mask=keep,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _EncoderLayer(nn.Module):
    """fairseq's TransformerSentenceEncoderLayer: post-norm (BERT) or pre-norm when ``layer_norm_first``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        layer_norm_first: bool,
    ) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(dim, heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(activation_dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.layer_norm_first = layer_norm_first

    def _ffn(self, x: Tensor) -> Tensor:
        return self.dropout3(self.fc2(self.dropout2(F.gelu(self.fc1(x)))))

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), padding_mask))
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + self.dropout1(self.self_attn(x, padding_mask)))
        return self.final_layer_norm(x + self._ffn(x))


class TransformerEncoder(nn.Module):
    """Relative positional conv + transformer layers (Baevski et al. 2020, as in fairseq-signals)."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        conv = nn.Conv1d(
            cfg.dim, cfg.dim, cfg.conv_pos, padding=cfg.conv_pos // 2, groups=cfg.conv_pos_groups
        )
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (cfg.conv_pos * cfg.dim)))
        nn.init.zeros_(conv.bias)
        # Weight norm over the kernel axis (dim=2), as fairseq: g has shape (1, 1, conv_pos).
        self.pos_conv = nn.Sequential(
            weight_norm(conv, name="weight", dim=2), _SamePad(cfg.conv_pos), nn.GELU()
        )
        self.layers = nn.ModuleList(
            _EncoderLayer(
                cfg.dim,
                cfg.heads,
                cfg.ffn_dim,
                cfg.dropout,
                cfg.attention_dropout,
                cfg.activation_dropout,
                cfg.layer_norm_first,
            )
            for _ in range(cfg.layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.dropout = nn.Dropout(cfg.dropout)
        self.layerdrop = cfg.layerdrop
        for m in self.layers.modules():  # BERT init of the transformer's linear layers, as fairseq
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x (B, T', D), padding_mask (B, T') True at padded steps -> (B, T', D)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x = layer(x, padding_mask)
        return self.layer_norm(x) if self.layer_norm_first else x


class Wav2Vec2(nn.Module):
    """wav2vec 2.0 context network for 12-lead ECG; see the module docstring for the hooks."""

    Config = Wav2Vec2Config

    def __init__(self, cfg: Wav2Vec2Config, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        c_conv = cfg.conv_layers[-1][0]
        self.feature_extractor = ConvFeatureExtractor(
            cfg.conv_layers, cfg.in_leads, cfg.extractor_mode, cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(c_conv)
        # fairseq omits the projection (and its keys) when the conv width already equals D.
        self.post_extract_proj = nn.Linear(c_conv, cfg.dim) if c_conv != cfg.dim else None
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.dropout_features = nn.Dropout(cfg.dropout_features)
        self.mask_emb = nn.Parameter(torch.empty(cfg.dim).uniform_())
        self.encoder = TransformerEncoder(cfg)
        # An attribute, not read from the frozen cfg: fine-tuning changes it (fairseq-signals fine-tunes with 0).
        self.feature_grad_mult = cfg.feature_grad_mult
        self.feature_dim = c_conv
        self.embed_dim = cfg.dim
        self.downsample = math.prod(s for _, _, s in cfg.conv_layers)
        # Of one token of the conv front end; the transformer then makes every output depend on the whole input.
        self.receptive_field = chain_receptive_field([(k, s) for _, k, s in cfg.conv_layers])

    def output_length(self, t: int) -> int:
        """Number of tokens T' for T input samples (unpadded convs: floor((t - k) / s) + 1 per layer)."""
        for _, k, s in self.cfg.conv_layers:
            t = (t - k) // s + 1
        return t

    def extract_features(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> layer-normed conv features (B, T', C_conv): the targets wav2vec2 quantises."""
        if self.feature_grad_mult <= 0:
            with torch.no_grad():
                feats = self.feature_extractor(x)
        else:
            feats = self.feature_extractor(x)
            if self.feature_grad_mult != 1.0 and feats.requires_grad:
                feats = GradMultiply.apply(feats, self.feature_grad_mult)
        return self.layer_norm(feats.transpose(1, 2))

    def project(self, feats: Tensor) -> Tensor:
        """feats (B, T', C_conv) -> tokens (B, T', D): projection then ``dropout_input``."""
        if self.post_extract_proj is not None:
            feats = self.post_extract_proj(feats)
        return self.dropout_input(feats)

    def contextualise(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """tokens (B, T', D) (masked ones already replaced by ``mask_emb``) -> context (B, T', D)."""
        return self.encoder(tokens, padding_mask)

    def forward_features(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> (B, D, T'), the unmasked full path."""
        return self.contextualise(self.project(self.extract_features(x))).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> (B, D), mean over tokens (fairseq-signals' ``aggregate`` of the encoder output)."""
        return self.forward_features(x).mean(dim=-1)
