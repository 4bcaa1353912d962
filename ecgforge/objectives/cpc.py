"""Contrastive predictive coding (van den Oord et al. 2018) as in Mehari & Strodthoff 2021
(hhi-aml/ecg-selfsupervised ``clinical_ts/cpc.py``, ``cpc_loss``).

The ``cpc`` encoder maps x to latents z_t and an LSTM to contexts c_t. For every k = 1..``n_steps`` a
separate linear layer W_k predicts z_{t+k} from c_t; the score of a candidate latent is the dot product
W_k·c_t · z (no temperature, as ESS). Each prediction must pick its true z_{t+k} among ``n_negatives``
distractors: with ``negatives_from_same_seq_only`` (ESS's ``--negatives-from-same-seq-only``, the paper's
best setting) drawn uniformly from the other steps of the same sequence, otherwise from every latent of
the batch. Loss: cross-entropy, averaged over predictions and then over k.

Scores against same-sequence candidates are taken from the (T'−k)×(T'−k) score matrix of each sequence
rather than by gathering K latent vectors per prediction: with 1000 latents, 128 negatives and 512
channels the gathered tensor alone would be 8 GB per batch of 32. Batch-wide negatives are one pool of K
latents drawn per step and shared by all predictions of that step, for the same reason.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from ecgforge.augment import AugmentConfig
from ecgforge.encoders.cpc import CPC
from ecgforge.errors import UserError
from ecgforge.objectives.base import Objective


class CPCObjectiveConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["cpc"] = "cpc"
    n_steps: int = Field(12, gt=0, description="future latents predicted (ESS steps_predicted: 12)")
    n_negatives: int = Field(128, gt=0, description="distractors per prediction (ESS n_false_negatives: 128)")
    negatives_from_same_seq_only: bool = Field(True, description="ESS flag of the paper's best CPC model")
    augment: list[AugmentConfig] = Field(default_factory=list, description="applied to x (ESS CPC: none)")


class CPCObjective(Objective):
    def __init__(
        self,
        encoder: nn.Module,
        augment: nn.Module,
        n_steps: int = 12,
        n_negatives: int = 128,
        negatives_from_same_seq_only: bool = True,
    ) -> None:
        if not isinstance(encoder, CPC):
            raise UserError(
                f"ssl.kind = 'cpc' needs model.encoder.kind = 'cpc' (latents + LSTM context), got {type(encoder).__name__}"
            )
        super().__init__(encoder)
        self.augment = augment
        self.n_steps = n_steps
        self.n_negatives = n_negatives
        self.same_seq = negatives_from_same_seq_only
        self.predictors = nn.ModuleList(nn.Linear(encoder.hidden, encoder.latent_dim) for _ in range(n_steps))

    def step_loss(self, c: Tensor, z: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """InfoNCE for step k: c, z (B, T', ·) -> (loss, accuracy) over the B·(T'−k) predictions."""
        b, t, _ = z.shape
        n = t - k
        pred = self.predictors[k - 1](c[:, :n])  # (B, n, C): predictions of z_{t+k}
        target = z[:, k:]  # (B, n, C)
        pos = (pred * target).sum(-1, keepdim=True)  # (B, n, 1)
        if self.same_seq:
            scores = pred @ target.transpose(1, 2)  # (B, n, n): every prediction vs every target of its sequence
            # K indices from the n − 1 other steps: draw from [0, n−1) and skip the positive's own index.
            idx = torch.randint(n - 1, (b, n, self.n_negatives), device=z.device)
            idx = idx + (idx >= torch.arange(n, device=z.device)[None, :, None]).long()
            neg = scores.gather(2, idx)
        else:
            flat = target.reshape(b * n, -1)
            pool = torch.randint(b * n, (self.n_negatives,), device=z.device)
            neg = pred @ flat[pool].T  # (B, n, K)
            own = (torch.arange(b * n, device=z.device).view(b, n, 1) == pool[None, None, :])
            neg = neg.masked_fill(own, float("-inf"))  # a pool entry that is the positive is no distractor
        logits = torch.cat([pos, neg], dim=-1).flatten(0, 1)  # (B·n, 1 + K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=z.device)
        return F.cross_entropy(logits, labels), (logits.argmax(-1) == 0).float().mean()

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> mean over k of InfoNCE(W_k c_t, z_{t+k})."""
        x = self.augment(batch["x"])
        z = self.encoder.encode(x)  # (B, T', C)
        c = self.encoder.context(z)  # (B, T', H)
        steps = [k for k in range(1, self.n_steps + 1) if z.shape[1] - k >= 2]
        if not steps:
            raise UserError(f"ssl.n_steps: a window of {z.shape[1]} latent steps is too short to predict ahead")
        losses, accs = zip(*(self.step_loss(c, z, k) for k in steps), strict=True)
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}
