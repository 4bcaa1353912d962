"""3KG (Gopal et al. 2021, arXiv 2106.04452) as in fairseq-signals (``3kg_criterion.py``).

Two views of each window, each through the 3KG augmentation (random VCG rotation and scaling plus a 50 %
temporal mask per lead, ``augment.three_kg_views``) and then any further augmentations; NT-Xent with τ 0.1 on their
projections. With ``patient_positives`` (fairseq-signals' setting) every view of the same patient in the
batch — across processes too — is a positive (``multi_positive_nt_xent`` grouped by patient id); without it,
only the two views of one window are (plain NT-Xent).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment import AUGMENTS, AugmentConfig
from ecgforge.augment.three_kg_views import ThreeKGConfig
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import Objective
from ecgforge.objectives.losses import multi_positive_nt_xent, nt_xent


class ThreeKGObjectiveConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["three_kg"] = "three_kg"
    temperature: float = Field(0.1, gt=0, description="Gopal et al. / fairseq-signals: 0.1")
    patient_positives: bool = Field(True, description="views of the same patient are positives (fairseq-signals)")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    threekg: Annotated[ThreeKGConfig, AUGMENTS] = Field(default_factory=ThreeKGConfig, description="angle 45°, scale 1.5, mask 0.5")
    augment: list[AugmentConfig] = Field(default_factory=list, description="applied after 3KG to each view")


class ThreeKGObjective(Objective):
    def __init__(
        self,
        encoder: nn.Module,
        threekg: nn.Module,
        augment: nn.Module,
        temperature: float = 0.1,
        patient_positives: bool = True,
        projector_hidden: int = 2048,
        projector_dim: int = 128,
    ) -> None:
        super().__init__(encoder)
        self.view = nn.Sequential(threekg, augment)
        self.temperature = temperature
        self.patient_positives = patient_positives
        self.projector = projector(encoder.embed_dim, projector_hidden, projector_dim)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, 12, T) -> contrastive loss over the 2B views."""
        x = batch["x"]
        z1 = self.projector(self.encoder(self.view(x)))
        z2 = self.projector(self.encoder(self.view(x)))
        if self.patient_positives:
            patient = batch["patient"]
            loss = multi_positive_nt_xent(torch.cat([z1, z2]), torch.cat([patient, patient]), self.temperature)
        else:
            loss = nt_xent(z1, z2, self.temperature)
        return loss, {"loss": loss.detach()}
