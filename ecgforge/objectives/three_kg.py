"""3KG (Gopal et al. 2021, arXiv 2106.04452) as in fairseq-signals (``3kg_criterion.py``).

Two views of each window, each through the 3KG augmentation (random VCG rotation and scaling plus a 50 %
temporal mask per lead, ``augment.three_kg_views``) and then any further augmentations; fairseq-signals'
3KG loss with τ 0.1 on their projections (``losses.three_kg_loss``: norms detached, each positive against the
anchor's negatives only). With ``patient_positives`` (fairseq-signals' setting) every view of the same patient
in the batch — across processes too — is a positive; without it, only the two views of one window are.

``views = "same_window"`` (fairseq-signals): both views are made from one crop of the record, so they are
aligned in time. On PTB-XL at 100 Hz and 2.5 s that lets the encoder pair views by beat timing, a shortcut
that leaves it worse than a random one (docs/findings/kgbyol.md); ``"own_window"`` cuts each view from its own
random crop of the record (the dataset's ``independent`` pairing), which removes it.

Projector: by default an MLP (``layers.projector``, with ``projector_bn`` its batch norm). fairseq-signals has
none: ``models/3kg/_3kg.py`` ``_3KGModel.get_logits(aggregate=True)`` gives the loss the mean over time of the
encoder output; ``projector_dim = 0`` does the same here (the encoder's pooled output, ``embed_dim`` wide).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ecgforge.augment import AUGMENTS, AugmentConfig
from ecgforge.augment.three_kg_views import ThreeKGConfig
from ecgforge.layers.distributed import world
from ecgforge.layers.projector import projector
from ecgforge.objectives.base import Objective, ObjectiveConfig, WindowViews
from ecgforge.objectives.losses import three_kg_loss
from ecgforge.registry import BuildContext, build, build_all


class ThreeKGObjectiveConfig(WindowViews, ObjectiveConfig):
    kind: Literal["three_kg"] = "three_kg"
    temperature: float = Field(0.1, gt=0, description="Gopal et al. / fairseq-signals: 0.1")
    patient_positives: bool = Field(True, description="views of the same patient are positives (fairseq-signals)")
    projector_hidden: int = Field(2048, gt=0)
    projector_dim: int = Field(128, ge=0, description="0: no projector, the loss on the encoder output (fairseq-signals)")
    projector_bn: bool = Field(True, description="BatchNorm after the projector's hidden layer (false: Linear-ReLU-Linear)")
    threekg: Annotated[ThreeKGConfig, AUGMENTS] = Field(default_factory=ThreeKGConfig, description="angle 45°, scale 1.5, mask 0.5")
    augment: list[AugmentConfig] = Field(default_factory=list, description="applied after 3KG to each view")
    views: Literal["same_window", "own_window"] = Field(
        "same_window", description="same_window: both views of one crop (fairseq-signals); own_window: a crop each"
    )


class ThreeKGObjective(Objective):
    Config = ThreeKGObjectiveConfig
    cfg: ThreeKGObjectiveConfig

    def __init__(self, cfg: ThreeKGObjectiveConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.view = nn.Sequential(build(AUGMENTS, cfg.threekg, ctx), build_all(AUGMENTS, cfg.augment, ctx))
        self.projector = projector(self.encoder.embed_dim, cfg.projector_hidden, cfg.projector_dim,
                                   batch_norm=cfg.projector_bn)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, 12, T), or (B, 2, 12, T) with ``own_window`` -> 3KG loss over the 2B views."""
        x = batch["x"]
        x1, x2 = (x[:, 0], x[:, 1]) if self.cfg.views == "own_window" else (x, x)
        z1 = self.projector(self.encoder(self.view(x1)))
        z2 = self.projector(self.encoder(self.view(x2)))
        if self.cfg.patient_positives:
            group = batch["patient"]
        else:  # the two views of one window; offset by rank so ids differ across processes
            b = x.shape[0]
            group = world()[0] * b + torch.arange(b, device=x.device)
        loss = three_kg_loss(torch.cat([z1, z2]), torch.cat([group, group]), self.cfg.temperature)
        return loss, {"loss": loss.detach()}
