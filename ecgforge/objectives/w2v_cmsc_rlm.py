"""W2V+CMSC+RLM (Oh et al. 2022, "Lead-agnostic self-supervised learning for local and global representations
of electrocardiogram", CHIL; fairseq-signals ``examples/w2v_cmsc``).

Each batch item is two windows of one record (``n_segments = 2``). Random lead masking (RLM: every lead
zeroed independently with p 0.5, on every segment) makes the encoder lead-agnostic. Loss per batch:

    L = w2v_weight · L_wav2vec2 + cmsc_weight · L_CMSC

L_wav2vec2 is the full wav2vec 2.0 loss (InfoNCE + 0.1·diversity + 10·feature penalty) over the 2B
segments; L_CMSC is fairseq-signals' CMSC loss (``losses.cmsc_loss``: segment-0 x segment-1 cosine logits / τ
0.1, symmetric cross-entropy, the same formula as in its ``Wav2Vec2WithCMSCCriterion``) between the
mean-pooled transformer outputs of the two adjacent segments, positives being segments of the same record
(or, with ``per_patient``, patient). Both terms come
from one forward pass of the masked input, as in fairseq-signals' ``Wav2Vec2CMSCModel`` whose CMSC
representation is the averaged final-layer output of the same forward. Default weights 1 and 1: fairseq-
signals adds the two criteria unweighted.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import Tensor

from ecgforge.augment import AUGMENTS
from ecgforge.augment.leads import RandomLeadMaskConfig
from ecgforge.objectives.cmsc import segment_groups, two_segments
from ecgforge.objectives.losses import cmsc_loss
from ecgforge.objectives.wav2vec2 import Wav2Vec2Objective, Wav2Vec2ObjectiveConfig
from ecgforge.registry import BuildContext, build


class W2VCMSCRLMConfig(Wav2Vec2ObjectiveConfig):
    kind: Literal["w2v_cmsc_rlm"] = "w2v_cmsc_rlm"  # type: ignore[assignment]
    rlm: Annotated[RandomLeadMaskConfig, AUGMENTS] = Field(default_factory=RandomLeadMaskConfig, description="p_lead 0.5 (Oh et al.)")
    cmsc_temperature: float = Field(0.1, gt=0)
    per_patient: bool = Field(False, description="CMSC positives: segments of the same patient, not record")
    w2v_weight: float = Field(1.0, ge=0)
    cmsc_weight: float = Field(1.0, ge=0)

    n_segments: ClassVar[int] = 2


class W2VCMSCRLM(Wav2Vec2Objective):
    """The wav2vec 2.0 objective (its modules and ``w2v_loss``) plus RLM and the CMSC term."""

    Config = W2VCMSCRLMConfig
    cfg: W2VCMSCRLMConfig

    def __init__(self, cfg: W2VCMSCRLMConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.rlm = build(AUGMENTS, cfg.rlm, ctx)

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, 2, leads, T) -> weighted wav2vec2 + CMSC loss over the 2B lead-masked segments."""
        x = two_segments(batch["x"], "w2v_cmsc_rlm")
        b = x.shape[0]
        segments = self.rlm(self.augment(x.flatten(0, 1)))  # leads masked independently per segment
        w2v, logs, context = self.w2v_loss(segments)
        pooled = context.mean(dim=1).view(b, 2, -1)  # (B, 2, D): segment-major within a record
        groups = segment_groups(batch, self.cfg.per_patient)
        cmsc = cmsc_loss(pooled[:, 0], pooled[:, 1], groups, groups, self.cfg.cmsc_temperature)
        loss = self.cfg.w2v_weight * w2v + self.cfg.cmsc_weight * cmsc
        return loss, {"loss": loss.detach(), "w2v_loss": w2v.detach(), "cmsc_loss": cmsc.detach(), **logs}
