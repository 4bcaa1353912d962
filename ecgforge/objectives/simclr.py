"""SimCLR (Chen et al. 2020) for ECG: two augmented views of a window, NT-Xent between their projections.

The random-augmentation baseline of Bo et al. 2022 and one of the methods of Mehari & Strodthoff 2021.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment import AugmentConfig
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import Objective
from ecgforge.objectives.losses import nt_xent


class SimCLRConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["simclr"] = "simclr"
    temperature: float = Field(0.1, gt=0)
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    augment: list[AugmentConfig] = Field(default_factory=list, description="applied independently to each view")


class SimCLR(Objective):
    def __init__(
        self,
        encoder: nn.Module,
        augment: nn.Module,
        temperature: float = 0.1,
        projector_hidden: int = 2048,
        projector_dim: int = 128,
    ) -> None:
        super().__init__(encoder)
        self.augment = augment
        self.temperature = temperature
        self.projector = projector(encoder.embed_dim, projector_hidden, projector_dim)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> NT-Xent over 2B views (negatives gathered across processes)."""
        x = batch["x"]
        z1 = self.projector(self.encoder(self.augment(x)))
        z2 = self.projector(self.encoder(self.augment(x)))
        loss = nt_xent(z1, z2, self.temperature)
        return loss, {"loss": loss.detach()}
