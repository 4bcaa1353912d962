"""VICReg (Bardes, Ponce & LeCun 2022, ICLR): variance-invariance-covariance regularisation of two views.

Two augmented views of a window go through the encoder and an expander to z1, z2 (B, D): ``layers.projector``,
Linear-BN-ReLU-Linear (the reference's: three Linear layers of 8192, BN-ReLU between). The loss is
facebookresearch/vicreg's (``main_vicreg.py``, ``VICReg.forward``):

    L = sim_coeff · MSE(z1, z2) + std_coeff · (v(z1) + v(z2)) / 2 + cov_coeff · (c(z1) + c(z2))

v(z) = mean_d relu(1 − sqrt(Var(z_d) + 1e-4)) holds every dimension's std at 1 or above; c(z) = Σ_{i≠j} C_ij² / D,
C the covariance matrix, decorrelates the dimensions (Var and C unbiased). As there, v and c see the batch of
every process (gathered with gradients as its ``FullGatherLayer``; one process: its own), the MSE only this
process's.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ecgforge.layers.distributed import gather_with_grad
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.registry import BuildContext


class VICRegConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["vicreg"] = "vicreg"
    sim_coeff: float = Field(25.0, ge=0, description="weight of the invariance (MSE) term; Bardes et al.: 25")
    std_coeff: float = Field(25.0, ge=0, description="weight of the variance hinge; Bardes et al.: 25")
    cov_coeff: float = Field(1.0, ge=0, description="weight of the covariance term; Bardes et al.: 1")
    projector_hidden: int = Field(2048, gt=0, description="expander hidden width (Bardes et al.: 8192)")
    projector_dim: int = Field(2048, gt=0, description="expander output width D (Bardes et al.: 8192)")


def off_diagonal(m: Tensor) -> Tensor:
    """The n·(n − 1) off-diagonal entries of a square ``(n, n)`` matrix, flattened."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_loss(z1: Tensor, z2: Tensor, cfg: VICRegConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """z1, z2 ``(B, D)`` -> (weighted loss, its three unweighted terms, detached)."""
    invariance = F.mse_loss(z1, z2)
    z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # (N·B, D): every process's batch
    z1, z2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)
    variance = sum(F.relu(1 - (z.var(dim=0) + 1e-4).sqrt()).mean() / 2 for z in (z1, z2))
    n, d = z1.shape
    covariance = sum(off_diagonal(z.T @ z / (n - 1)).pow(2).sum() / d for z in (z1, z2))
    loss = cfg.sim_coeff * invariance + cfg.std_coeff * variance + cfg.cov_coeff * covariance
    terms = {"invariance": invariance, "variance": variance, "covariance": covariance}
    return loss, {k: v.detach() for k, v in terms.items()}


class VICReg(Objective):
    Config = VICRegConfig
    cfg: VICRegConfig

    def __init__(self, cfg: VICRegConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> VICReg loss between the expanded embeddings of two augmented views."""
        x = batch["x"]
        z1 = self.projector(self.encoder(self.augment(x)))
        z2 = self.projector(self.encoder(self.augment(x)))
        loss, terms = vicreg_loss(z1, z2, self.cfg)
        return loss, {"loss": loss.detach(), **terms}
