"""CPC encoder of Mehari & Strodthoff 2021 ("4FC+2LSTM", ecg-selfsupervised ``clinical_ts/cpc.py``).

A front end maps ``x (B, leads, T)`` to latents ``z (B, T', C)`` (what CPC predicts), then an LSTM summarises
the past into the context ``c (B, T', H)`` (what CPC predicts *from*). Two front ends, as in their code:

* ``linear`` (their ``--fc-encoder``, the best model of the paper: CPC linear evaluation 0.927 macro AUC on
  PTB-XL "all" at 100 Hz): per-timestep linear layers, each applied to non-overlapping patches of
  ``stride`` steps (written as a Conv1d with kernel == stride and no padding, which is exactly that). Their
  setting is 4 x 512 with stride 1, i.e. one latent per input sample.
* ``conv``: strided convolutions; their default is kernels 10/4/4/4, strides 2/2/2/2 (downsampling 16),
  padding (k-1)//2.

Each front-end layer is conv -> BatchNorm -> ReLU (BatchNorm on, as their ``bn_encoder`` default).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from ecgforge.layers.receptive_field import chain_receptive_field
from ecgforge.registry import BuildContext


def _resolve(
    frontend: str, n: int, strides: list[int] | None, kernel_sizes: list[int] | None
) -> tuple[list[int], list[int]]:
    """Per-layer strides and kernels, filling ESS's defaults for ``n`` layers where None.

    linear: stride 1, kernel = stride (one latent per sample); conv: stride 2, kernels 10 then 4 (ESS: 10/4/4/4).
    """
    s = list(strides) if strides is not None else [1 if frontend == "linear" else 2] * n
    if kernel_sizes is not None:
        k = list(kernel_sizes)
    else:
        k = list(s) if frontend == "linear" else [10] + [4] * (n - 1)
    return s, k


class CPCConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["cpc"] = "cpc"
    frontend: Literal["linear", "conv"] = "linear"
    features: list[int] = Field(
        default_factory=lambda: [512] * 4, min_length=1, description="channels per layer"
    )
    strides: list[int] | None = Field(None, description="per layer; None: linear all 1, conv all 2")
    kernel_sizes: list[int] | None = Field(
        None, description="per layer; None: linear = strides, conv 10 then 4s"
    )
    hidden: int = Field(512, gt=0, description="LSTM hidden size H")
    lstm_layers: int = Field(2, gt=0)
    batch_norm: bool = True
    pooling: Literal["concat", "mean", "last"] = Field(
        "concat", description="forward(): concat = [mean, max, last] of c over time (ESS head), 3H wide"
    )
    in_leads: int = Field(12, gt=0)

    @model_validator(mode="after")
    def _check_layers(self) -> CPCConfig:
        n = len(self.features)
        strides, kernels = _resolve(self.frontend, n, self.strides, self.kernel_sizes)
        if len(strides) != n or len(kernels) != n:
            raise ValueError(f"features, strides and kernel_sizes need one entry per layer ({n})")
        if any(v <= 0 for v in [*self.features, *strides, *kernels]):
            raise ValueError("features, strides and kernel_sizes must be positive")
        if self.frontend == "linear" and list(kernels) != list(strides):
            raise ValueError(
                "the linear front end works on non-overlapping patches: kernel_sizes must equal strides"
            )
        return self


class CPC(nn.Module):
    """Front end + LSTM; ``encode`` -> latents z, ``context`` -> c, ``forward`` -> pooled c."""

    Config = CPCConfig

    def __init__(self, cfg: CPCConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        frontend, features, batch_norm = cfg.frontend, cfg.features, cfg.batch_norm
        strides, kernel_sizes = _resolve(frontend, len(features), cfg.strides, cfg.kernel_sizes)
        layers: list[nn.Module] = []
        c_in = cfg.in_leads
        for f, k, s in zip(features, kernel_sizes, strides, strict=True):
            pad = 0 if frontend == "linear" else (k - 1) // 2
            layers.append(nn.Conv1d(c_in, f, k, s, pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(f))
            layers.append(nn.ReLU(inplace=True))
            c_in = f
        self.frontend = nn.Sequential(*layers)
        self._geometry = [
            (k, s, 0 if frontend == "linear" else (k - 1) // 2)
            for k, s in zip(kernel_sizes, strides, strict=True)
        ]
        self.lstm = nn.LSTM(c_in, cfg.hidden, num_layers=cfg.lstm_layers, batch_first=True)
        self.latent_dim = c_in  # C of z: the dimension a CPC predictor must map c_t onto
        self.hidden = cfg.hidden  # H of c, also the channel count of forward_features (read by the CPC objective)
        self.embed_dim = 3 * cfg.hidden if cfg.pooling == "concat" else cfg.hidden
        self.downsample = math.prod(strides)
        # Of one latent z_t. The LSTM makes c_t depend on every earlier sample (causal, unbounded).
        self.receptive_field = chain_receptive_field(list(zip(kernel_sizes, strides, strict=True)))

    def output_length(self, t: int) -> int:
        """Number of latent steps T' for T input samples (T // downsample for the default layers)."""
        for k, s, pad in self._geometry:
            t = (t + 2 * pad - k) // s + 1
        return t

    def encode(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> latents z (B, T', latent_dim), T' = output_length(T)."""
        return self.frontend(x).transpose(1, 2)

    def context(self, z: Tensor) -> Tensor:
        """z (B, T', latent_dim) -> context c (B, T', hidden); c_t sees z_1..z_t only (unidirectional LSTM)."""
        return self.lstm(z)[0]

    def forward_features(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> c transposed, (B, hidden, T')."""
        return self.context(self.encode(x)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, leads, T) -> (B, embed_dim).

        ``concat`` (default) is ESS's ``AdaptiveConcatPoolRNN``: [mean, max, last] over time, the head under
        which their CPC numbers were obtained; the last state alone only summarises the past of one window
        end and max/mean add evidence from the whole window. ``mean`` / ``last`` give H-wide embeddings.
        """
        c = self.forward_features(x)
        if self.cfg.pooling == "mean":
            return c.mean(dim=-1)
        if self.cfg.pooling == "last":
            return c[:, :, -1]
        return torch.cat([c.mean(dim=-1), c.amax(dim=-1), c[:, :, -1]], dim=1)
