"""CMSC, contrastive multi-segment coding (Kiyasseh et al. 2021, CLOCS, ICML).

Two non-overlapping-in-general windows of the same record (``n_segments = 2``; the dataset then gives
``x (B, 2, leads, T)``) are positives for each other; every other segment in the batch (all processes) is a
negative, except, with ``per_patient``, segments of another record of the same patient, which are positives
too (CLOCS's "per patient" variant). Loss: ``multi_positive_nt_xent`` with τ 0.1 on the projections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment import AugmentConfig
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import Objective
from ecgforge.objectives.losses import multi_positive_nt_xent


class CMSCConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["cmsc"] = "cmsc"
    temperature: float = Field(0.1, gt=0, description="Kiyasseh et al. / Oh et al.: 0.1")
    per_patient: bool = Field(False, description="segments of every record of a patient are positives")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, gt=0)
    augment: list[AugmentConfig] = Field(default_factory=list, description="applied to each segment (CLOCS: none)")


def segment_groups(batch: dict[str, Tensor], per_patient: bool, n_segments: int) -> Tensor:
    """Group id of each of the B·S segments (segment-major within a sample): the record or patient index."""
    ids = batch["patient"] if per_patient else batch["record"]
    return ids.repeat_interleave(n_segments)


class CMSC(Objective):
    n_segments = 2

    def __init__(
        self,
        encoder: nn.Module,
        augment: nn.Module,
        temperature: float = 0.1,
        per_patient: bool = False,
        projector_hidden: int = 2048,
        projector_dim: int = 128,
    ) -> None:
        super().__init__(encoder)
        self.augment = augment
        self.temperature = temperature
        self.per_patient = per_patient
        self.projector = projector(encoder.embed_dim, projector_hidden, projector_dim)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, S, leads, T) -> multi-positive NT-Xent over the B·S segments."""
        x = batch["x"]
        if x.dim() != 4:
            raise ValueError(f"cmsc needs x (B, segments, leads, T), got {tuple(x.shape)}")
        b, s = x.shape[:2]
        z = self.projector(self.encoder(self.augment(x.flatten(0, 1))))  # (B·S, D)
        loss = multi_positive_nt_xent(z, segment_groups(batch, self.per_patient, s), self.temperature)
        return loss, {"loss": loss.detach()}
