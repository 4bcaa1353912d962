"""SimCLR (Chen et al. 2020) for ECG: two augmented views of a window, NT-Xent between their projections.

The random-augmentation baseline of Bo et al. 2022 and one of the methods of Mehari & Strodthoff 2021. For the
latter, ``projector_bn = false`` and ``loss = "ess"`` give hhi-aml/ecg-selfsupervised's head (Linear-ReLU-Linear,
no BatchNorm) and its NT-Xent variant (`losses.ess_nt_xent`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from ecgforge.layers.projector import projector
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.objectives.losses import ess_nt_xent, nt_xent
from ecgforge.registry import BuildContext


class SimCLRConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["simclr"] = "simclr"
    temperature: float = Field(0.1, gt=0)
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    projector_bn: bool = Field(True, description="BatchNorm after the projector's hidden layer (false: ESS)")
    loss: Literal["nt_xent", "ess"] = Field(
        "nt_xent", description="nt_xent, or ess: ecg-selfsupervised's variant (its self term is only "
        "partly removed from the denominator; losses.ess_nt_xent)")


class SimCLR(Objective):
    Config = SimCLRConfig
    cfg: SimCLRConfig

    def __init__(self, cfg: SimCLRConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim,
                                   batch_norm=cfg.projector_bn)
        self.loss_fn = ess_nt_xent if cfg.loss == "ess" else nt_xent

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> NT-Xent over 2B views (negatives gathered across processes)."""
        x = batch["x"]
        z1 = self.projector(self.encoder(self.augment(x)))
        z2 = self.projector(self.encoder(self.augment(x)))
        loss = self.loss_fn(z1, z2, self.cfg.temperature)
        return loss, {"loss": loss.detach()}
