"""CMSC, contrastive multi-segment coding (Kiyasseh et al. 2021, CLOCS, ICML).

Two adjacent, non-overlapping windows of the same record (``n_segments = 2``; the dataset then gives
``x (B, 2, leads, T)`` with the second window starting where the first ends, as CLOCS and fairseq-signals cut
them) are positives for each other. The loss is fairseq-signals' CMSC criterion (``losses.cmsc_loss``): the
segment-0 x segment-1 cosine logits / τ (0.1), cross-entropy in both directions, every (segment 0, segment 1)
pair of the same record a positive (fairseq-signals' ``patient_id`` is a per-file index in its PhysioNet 2021
preprocessing) or, with ``per_patient``, of the same patient (CLOCS's "per patient" variant). Segments of
the same side are never candidates for each other. ``augment`` applies to each segment (CLOCS: none).

Projector: by default an MLP (``layers.projector``). fairseq-signals has none: ``models/clocs/clocs.py``
``ClocsModel.get_logits(aggregate=True)`` gives the loss the mean over time of the encoder output;
``projector_dim = 0`` does the same here.

Items: one per record and epoch, its two segments back to back at a random offset (``data.dataset``
``adjacent_starts``); a record shorter than two windows is kept, its two segments spread over it as far
apart as it allows (overlapping; zero-padded if shorter than one window). fairseq-signals instead cuts each
record into consecutive, non-overlapping segments and makes one item per pair of consecutive segments, so a
record of k segments counts k − 1 times per epoch (long records weigh more), and drops records shorter than
two segments. For a 10 s record and 5 s segments both give the record's two halves, once per epoch.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor

from ecgforge.errors import UserError
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.objectives.losses import cmsc_loss
from ecgforge.registry import BuildContext


class CMSCConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["cmsc"] = "cmsc"
    temperature: float = Field(0.1, gt=0, description="Kiyasseh et al. / Oh et al.: 0.1")
    per_patient: bool = Field(False, description="segments of every record of a patient are positives")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, ge=0, description="0: no projector, the loss on the encoder output (fairseq-signals)")

    n_segments: ClassVar[int] = 2


def segment_groups(batch: dict[str, Tensor], per_patient: bool) -> Tensor:
    """``(B,)`` group id of each batch item (and so of both its segments): the record or patient index."""
    return batch["patient"] if per_patient else batch["record"]


def two_segments(x: Tensor, kind: str) -> Tensor:
    """Check ``x (B, 2, leads, T)``, the two adjacent segments of a record; UserError otherwise."""
    if x.dim() != 4 or x.shape[1] != 2:
        raise UserError(f"ssl.kind = {kind!r} needs x (B, 2 segments, leads, T), got {tuple(x.shape)}")
    return x


class CMSC(Objective):
    Config = CMSCConfig
    cfg: CMSCConfig

    def __init__(self, cfg: CMSCConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, 2, leads, T) -> fairseq-signals' CMSC loss between the first and second segments."""
        x = two_segments(batch["x"], "cmsc")
        b = x.shape[0]
        z = self.projector(self.encoder(self.augment(x.flatten(0, 1)))).view(b, 2, -1)  # (B, 2, D)
        groups = segment_groups(batch, self.cfg.per_patient)
        loss = cmsc_loss(z[:, 0], z[:, 1], groups, groups, self.cfg.temperature)
        return loss, {"loss": loss.detach()}
