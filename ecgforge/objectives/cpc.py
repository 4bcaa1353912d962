"""Contrastive predictive coding (van den Oord et al. 2018) as in Mehari & Strodthoff 2021
(hhi-aml/ecg-selfsupervised ``clinical_ts/cpc.py``, ``CPCModel.cpc_loss``).

The ``cpc`` encoder maps x to latents z_t and an LSTM to contexts c_t. Two forms of the loss:

``single_step`` (ESS ``cpc_loss``, the paper's setting and the default): one bias-free linear projection W
(ESS ``proj``, ``bias_proj=False``) maps every c_t to a prediction of the latent exactly ``n_steps`` ahead
(ESS ``steps_predicted``, 12). The score of a candidate latent is the dot product W·c_t · z (no
temperature). Each prediction must pick z_{t+n_steps} among ``n_negatives`` distractors drawn uniformly,
with replacement, from every *other* position (earlier ones included): of the same sequence with
``negatives_from_same_seq_only`` (ESS ``--negatives-from-same-seq-only``, the paper's best setting),
otherwise of any sequence of the batch (where, as in ESS, position t+n_steps is skipped in every sequence).
Loss: cross-entropy averaged over the batch and *summed* over the T' − n_steps positions.

``multi_step`` (van den Oord's form, what ecgforge did before): a separate linear layer W_k (with bias)
for every k = 1..``n_steps``, same-sequence distractors drawn among the targets z_{k:}, batch distractors
from one pool of K latents per step; cross-entropy averaged over predictions and then over k.

Same-sequence scores are read off the (T'−s)×T' score matrix of each sequence instead of gathering K
latent vectors per prediction (with 1000 latents, 128 negatives and 512 channels the gathered tensor would be
8 GB per batch of 32); the scores are the same numbers. Batch-wide negatives in ``single_step`` are gathered
as ESS does, which costs B·(T'−s)·K·C floats. ``augment`` applies to x (ESS CPC: none).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ecgforge.encoders.cpc import CPC
from ecgforge.errors import UserError
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.registry import BuildContext


class CPCObjectiveConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["cpc"] = "cpc"
    form: Literal["single_step", "multi_step"] = Field(
        "single_step",
        description="single_step: ESS cpc_loss (predict z exactly n_steps ahead, one bias-free projection, "
        "sum over positions); multi_step: one predictor per k = 1..n_steps, mean over k",
    )
    n_steps: int = Field(12, gt=0, description="steps predicted ahead (ESS steps_predicted: 12)")
    n_negatives: int = Field(128, gt=0, description="distractors per prediction (ESS n_false_negatives: 128)")
    negatives_from_same_seq_only: bool = Field(True, description="ESS flag of the paper's best CPC model")


def draw_negatives(b: int, t: int, s: int, k: int, same_seq: bool, device: torch.device) -> Tensor:
    """Flat indices into ``z.reshape(B·T', C)`` of the distractors of each prediction, ``(T'−s, B, K)``.

    The draw of ESS ``cpc_loss`` for position i (one ``randint`` of B·K values per position, in position
    order, so that on CPU the same seed gives the same indices): a position among the T'−1 that are not
    i+s, in the prediction's own sequence (``same_seq``) or in a uniformly drawn sequence of the batch.
    """
    n = t - s
    hi = t - 1 if same_seq else b * (t - 1)
    idx = torch.randint(0, hi, (n, b * k), device=device)
    pos = torch.remainder(idx, t - 1)
    target = torch.arange(s, t, device=device)[:, None]  # i + s for every position i
    pos = pos + (pos >= target).long()  # skip the positive's own position
    if same_seq:
        seq = torch.arange(b, device=device).repeat_interleave(k)[None, :]
    else:
        seq = idx // (t - 1)
    return (seq * t + pos).view(n, b, k)


class CPCObjective(Objective):
    Config = CPCObjectiveConfig
    cfg: CPCObjectiveConfig

    def __init__(self, cfg: CPCObjectiveConfig, ctx: BuildContext) -> None:
        encoder = ctx.need("encoder")
        if not isinstance(encoder, CPC):
            raise UserError(
                f"ssl.kind = 'cpc' needs model.encoder.kind = 'cpc' (latents + LSTM context), got {type(encoder).__name__}"
            )
        super().__init__(cfg, ctx)
        if cfg.form == "single_step":
            self.proj = nn.Linear(encoder.hidden, encoder.latent_dim, bias=False)  # ESS proj, bias_proj=False
        else:
            self.predictors = nn.ModuleList(
                nn.Linear(encoder.hidden, encoder.latent_dim) for _ in range(cfg.n_steps)
            )

    # ------------------------------------------------------------------------------ single_step (ESS)

    def single_step_loss(self, c: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """ESS ``cpc_loss``: c (B, T', H), z (B, T', C) -> (sum over positions of the batch-mean CE, accuracy)."""
        b, t, _ = z.shape
        s = self.cfg.n_steps
        n = t - s
        if n < 1 or t < 2:
            raise UserError(f"ssl.n_steps = {s}: a window of {t} latent steps is too short to predict {s} ahead")
        pred = self.proj(c[:, :n])  # (B, n, C): prediction of z_{i+s} from c_i
        flat = draw_negatives(b, t, s, self.cfg.n_negatives, self.cfg.negatives_from_same_seq_only, z.device)  # (n, B, K)
        pos = (pred * z[:, s:]).sum(-1)  # (B, n)
        if self.cfg.negatives_from_same_seq_only:
            scores = pred @ z.transpose(1, 2)  # (B, n, T'): every prediction vs every latent of its sequence
            neg = scores.gather(2, (flat % t).permute(1, 0, 2))  # (B, n, K)
        else:
            cand = z.reshape(b * t, -1)[flat]  # (n, B, K, C), as ESS gathers them
            neg = torch.einsum("bnc,nbkc->bnk", pred, cand)
        logits = torch.cat([pos[..., None], neg], dim=-1)  # (B, n, 1 + K), the positive at index 0
        labels = torch.zeros(b * n, dtype=torch.long, device=z.device)
        ce = F.cross_entropy(logits.flatten(0, 1), labels, reduction="none").view(b, n)
        return ce.mean(0).sum(), (logits.argmax(-1) == 0).float().mean()

    # ------------------------------------------------------------------------------ multi_step

    def step_loss(self, c: Tensor, z: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """multi_step InfoNCE for step k: c, z (B, T', ·) -> (loss, accuracy) over the B·(T'−k) predictions."""
        b, t, _ = z.shape
        n = t - k
        pred = self.predictors[k - 1](c[:, :n])  # (B, n, C): predictions of z_{t+k}
        target = z[:, k:]  # (B, n, C)
        pos = (pred * target).sum(-1, keepdim=True)  # (B, n, 1)
        if self.cfg.negatives_from_same_seq_only:
            scores = pred @ target.transpose(1, 2)  # (B, n, n): every prediction vs every target of its sequence
            # K indices from the n − 1 other steps: draw from [0, n−1) and skip the positive's own index.
            idx = torch.randint(n - 1, (b, n, self.cfg.n_negatives), device=z.device)
            idx = idx + (idx >= torch.arange(n, device=z.device)[None, :, None]).long()
            neg = scores.gather(2, idx)
        else:
            flat = target.reshape(b * n, -1)
            pool = torch.randint(b * n, (self.cfg.n_negatives,), device=z.device)
            neg = pred @ flat[pool].T  # (B, n, K)
            own = (torch.arange(b * n, device=z.device).view(b, n, 1) == pool[None, None, :])
            neg = neg.masked_fill(own, float("-inf"))  # a pool entry that is the positive is no distractor
        logits = torch.cat([pos, neg], dim=-1).flatten(0, 1)  # (B·n, 1 + K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=z.device)
        return F.cross_entropy(logits, labels), (logits.argmax(-1) == 0).float().mean()

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> CPC loss of ``form`` and the accuracy of picking the true latent."""
        x = self.augment(batch["x"])
        z = self.encoder.encode(x)  # (B, T', C)
        c = self.encoder.context(z)  # (B, T', H)
        if self.cfg.form == "single_step":
            loss, acc = self.single_step_loss(c, z)
            return loss, {"loss": loss.detach(), "acc": acc.detach()}
        steps = [k for k in range(1, self.cfg.n_steps + 1) if z.shape[1] - k >= 2]
        if not steps:
            raise UserError(f"ssl.n_steps: a window of {z.shape[1]} latent steps is too short to predict ahead")
        losses, accs = zip(*(self.step_loss(c, z, k) for k in steps), strict=True)
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}
