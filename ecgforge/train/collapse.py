"""Collapse monitor: statistics of a batch of embeddings that show representation collapse as it happens.

Logged with the losses (``embed/std``, ``embed/erank`` in metrics/train.jsonl) once per log window, from the
first encoder call of the window's last step. A collapsing encoder maps every input to (nearly) one vector:
both numbers fall towards 0; a dimensional collapse (embeddings on a low-dimensional subspace) shows as a low
effective rank with a normal std.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Singular values of the centred, L2-normalised embeddings below this RMS (per row) count as zero: float
#: noise around a collapsed point must not read as a full-rank cloud.
_SIGMA_FLOOR = 1e-4


def embedding_stats(z: Tensor) -> dict[str, float]:
    """``z (B, D)`` -> ``embed/std`` and ``embed/erank``.

    ``embed/std``: the per-dimension standard deviation of the L2-normalised embeddings, averaged over the D
    dimensions and multiplied by √D (Chen & He 2021, SimSiam: about 1 for embeddings spread evenly over the
    sphere, 0 when every embedding is the same).
    ``embed/erank``: effective rank (Roy & Vetterli 2007) of the centred, L2-normalised embeddings,
    exp(entropy of the singular values normalised to sum 1): between 1 and min(B, D); 0 when every
    embedding is the same.
    """
    z = F.normalize(z.detach().float().flatten(1), dim=1)
    b, d = z.shape
    if b < 2:
        return {}
    std = z.std(dim=0).mean().item() * math.sqrt(d)
    sigma = torch.linalg.svdvals(z - z.mean(dim=0))
    sigma = sigma[sigma / math.sqrt(b) > _SIGMA_FLOOR]
    if sigma.numel() == 0:
        return {"embed/std": std, "embed/erank": 0.0}
    p = sigma / sigma.sum()
    erank = math.exp(-(p * p.log()).sum().item())
    return {"embed/std": std, "embed/erank": erank}


class EmbeddingProbe:
    """A forward hook on an encoder that, when armed, keeps the statistics of its next ``(B, D)`` output.

    ``arm()`` before a step; ``take()`` after it returns the statistics (empty if the objective never called
    the encoder's forward with a 2-d output, e.g. CPC, which calls its parts) and disarms.
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.armed = False
        self.stats: dict[str, float] = {}
        self.handle = encoder.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: object, output: object) -> None:
        if not self.armed:
            return
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(out, Tensor) and out.dim() == 2 and out.is_floating_point():
            self.armed = False
            self.stats = embedding_stats(out)

    def arm(self) -> None:
        self.armed, self.stats = True, {}

    def take(self) -> dict[str, float]:
        stats, self.stats, self.armed = self.stats, {}, False
        return stats

    def close(self) -> None:
        self.handle.remove()
