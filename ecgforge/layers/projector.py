"""The MLP projection head shared by the contrastive objectives (SimCLR, Chen et al. 2020)."""

from __future__ import annotations

from torch import nn


def projector(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True) -> nn.Sequential:
    """``(B, in_dim) -> (B, out_dim)``: Linear-BN-ReLU-Linear (Bo et al. 2022 use 512 -> 2048 -> 128); with
    ``batch_norm=False`` Linear-ReLU-Linear with biases (ecg-selfsupervised's SimCLR ``Projection``, whose
    BatchNorm line is commented out, and the adversarial-masking authors' ``BaseModel`` projector, jessica-bo/advmask_ecg
    ``model/base_model.py``). ``out_dim = 0``: no projector, an empty ``nn.Sequential`` that returns its input
    (fairseq-signals computes 3KG's and CMSC's losses on the mean-pooled encoder output)."""
    if out_dim == 0:
        return nn.Sequential()
    if not batch_norm:
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
