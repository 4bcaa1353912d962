"""Supervised training of the encoder with labels: the baseline every pretraining method must beat.

A linear head on the pooled embedding of the augmented x (``augment``), trained end to end with the encoder.
The loss follows the targets the runner puts in ``batch["y"]`` (``data.dataset.task_targets`` of ``task``):
float ``(B, K)`` multi-hot -> binary cross-entropy per label (the PTB-XL benchmark's setting, Strodthoff et al.
2020); int64 ``(B,)`` class ids -> cross-entropy; float ``(B,)`` values -> mean squared error (e.g. age in years).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.registry import BuildContext


class SupervisedConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["supervised"] = "supervised"
    task: str = Field(min_length=1, description="label set of the cache, or 'sex' / 'age'")

    needs_labels: ClassVar[bool] = True


def supervised_loss(logits: Tensor, y: Tensor) -> Tensor:
    """logits (B, K) and targets y as described in the module docstring -> scalar loss."""
    if y.is_floating_point() and y.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    if not y.is_floating_point():
        return F.cross_entropy(logits, y.long())
    return F.mse_loss(logits.squeeze(-1), y.to(logits.dtype))


class Supervised(Objective):
    Config = SupervisedConfig
    cfg: SupervisedConfig

    def __init__(self, cfg: SupervisedConfig, ctx: BuildContext) -> None:
        """``ctx.n_classes``: outputs of the head (labels or classes; 1 for regression). Needed: a head of a
        guessed width would only fail at the first batch, far from its cause."""
        super().__init__(cfg, ctx)
        self.head = nn.Linear(self.encoder.embed_dim, ctx.need("n_classes"))

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T), y -> loss of the linear head on the encoder's embedding."""
        logits = self.head(self.encoder(self.augment(batch["x"])))
        y = batch["y"]
        loss = supervised_loss(logits, y)
        logs = {"loss": loss.detach()}
        if not y.is_floating_point():
            logs["acc"] = (logits.argmax(-1) == y).float().mean()
        return loss, logs
