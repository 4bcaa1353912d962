"""ArcFace head for patient identification on frozen embeddings (Oh et al., CHIL 2022, after fairseq-signals).

fairseq-signals trains identification with ``criterions/arcface_criterion.py::ArcFaceCriterion`` on the
cosines of ``models/identification/arcface.py::ArcFaceModel``: the L2-normalised embedding against one
L2-normalised prototype per training patient (``get_cosine_similarity``, clamped to [-1, 1]); the target
patient's cosine gets the additive angular margin ``cos(theta + m)`` (with the reference's fallback
``cos(theta) - m sin(m)`` where ``cos(theta) <= cos(pi - m)``), every logit is multiplied by ``scale``, and
the loss is cross-entropy. The paper's configs (``examples/*/config/finetuning/*/identification.yaml``) use
scale 192 and margin 1.0. At test time the reference ranks gallery records by the dot product of these
cosine vectors (``tasks/ecg_identification.py::valid_step``), so the retrieval space is "similarity to the
training patients", which is what `ArcFaceHead.cosines` returns.

Difference from the reference: the encoder stays frozen (the reference fine-tunes it with lr 3e-5 and a
tri-stage schedule); only the prototypes train, with Adam at lr 1e-2 (at 1e-3 the margin of 1 rad keeps
separable synthetic patients apart for hundreds of steps).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def arcface_logits(cos: torch.Tensor, target: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """``(B, K)`` cosines and ``(B,)`` target indices -> ``(B, K)`` ArcFace logits (``ArcFaceCriterion``).

    The target column becomes ``cos(theta + m)`` where ``cos(theta) > cos(pi - m)``, else ``cos(theta) - m sin(m)``
    (the reference's ``mm = sin_m * margin``); all columns are multiplied by ``scale``.
    """
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    threshold = math.cos(math.pi - margin)
    # clamp: sqrt'(0) is infinite, so a cosine of exactly +-1 would give a NaN gradient; the value is unchanged.
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
    with_margin = torch.where(cos - threshold <= 0, cos - sin_m * margin, cos * cos_m - sin * sin_m)
    is_target = F.one_hot(target, cos.shape[1]).bool()
    return scale * torch.where(is_target, with_margin, cos)


class ArcFaceHead(nn.Module):
    """One prototype per training patient; ``cosines(x)`` = normalised x against normalised prototypes."""

    def __init__(self, dim: int, n_patients: int) -> None:
        super().__init__()
        # fairseq-signals' initialisation: uniform(-1, 1), renorm(2, dim 1, 1e-5), times 1e5.
        self.kernel = nn.Parameter(torch.empty(n_patients, dim).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, D)`` -> ``(B, K)`` cosine to each training patient's prototype, clamped to [-1, 1]."""
        return (F.normalize(x, dim=1) @ F.normalize(self.kernel, dim=1).T).clamp(-1, 1)


def fit_arcface(
    feats: np.ndarray, patients: np.ndarray, *, scale: float = 192.0, margin: float = 1.0, epochs: int = 50,
    lr: float = 1e-2, batch_size: int = 128, standardize: bool = True, seed: int = 0,
) -> tuple[ArcFaceHead, torch.Tensor, torch.Tensor]:
    """Train an ArcFace head on frozen ``feats (N, D)`` labelled with ``patients (N,)`` (any ids).

    Adam with the reference's betas (0.9, 0.98) and eps 1e-8; the last epoch is kept (the reference's
    configs select no checkpoint). ``standardize`` centres and scales features with the training mean/std
    first: a frozen embedding's shared mean direction would otherwise dominate every cosine.
    Returns the head and the (mean, std) to apply to any feature before ``head.cosines``.
    """
    x = torch.from_numpy(np.asarray(feats, dtype=np.float32))
    _, y = np.unique(np.asarray(patients), return_inverse=True)
    y_t = torch.from_numpy(y.astype(np.int64))
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp_min(1e-6) if standardize else torch.ones(x.shape[1])
    x = (x - mean) / std
    torch.manual_seed(seed)
    head = ArcFaceHead(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            F.cross_entropy(arcface_logits(head.cosines(x[idx]), y_t[idx], scale, margin), y_t[idx]).backward()
            opt.step()
    return head, mean, std
