"""wav2vec 2.0 pretraining (Baevski et al. 2020) for ECG, with Oh et al. 2022's settings (fairseq-signals
``examples/w2v_cmsc`` configs; ``Wav2Vec2Model.forward`` and ``GumbelVectorQuantizer``).

Per window: conv features f (B, T', C) -> tokens; spans of ``mask_length`` tokens starting at a random
``mask_prob``·T'/``mask_length`` positions are replaced by the learnt ``mask_emb``; the transformer gives the
context c. At every masked step, ``final_proj(c_t)`` must identify the quantised, projected unmasked feature
q_t among ``n_negatives`` quantised features of other masked steps of the same sequence (cosine similarity
/ ``logit_temperature``). Quantisation is a product Gumbel-softmax quantiser (G groups x V entries,
straight-through hard one-hot; temperature annealed max(2·0.999995^step, 0.5)). The total loss is

    L = InfoNCE + 0.1 · (G·V − perplexity(mean softmax)) / (G·V) + 10 · mean(f_raw²)

(Oh et al.'s ``loss_weights`` [0.1, 10]: the codebook diversity term keeps codes in use; the L2 penalty on
the raw conv features keeps them from growing to cheat the layer norm). ``feature_grad_mult`` (0.1) is a
field of the ``wav2vec2`` encoder, ``[model.encoder]``: it scales the conv front end's gradient.
``augment`` applies to x before the conv front end (Oh et al.: none).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ecgforge.encoders.wav2vec2 import Wav2Vec2
from ecgforge.errors import UserError
from ecgforge.layers.grad import GradMultiply
from ecgforge.objectives.base import AugmentedConfig, Objective, ObjectiveConfig
from ecgforge.objectives.losses import info_nce
from ecgforge.registry import BuildContext


def compute_mask_indices(
    b: int, t: int, mask_prob: float, mask_length: int, min_masks: int = 2, device: torch.device | str = "cpu",
    require_same_masks: bool = True,
) -> Tensor:
    """fairseq's ``compute_mask_indices`` (static lengths, overlap allowed, ``require_same_masks``).

    num_spans = max(min_masks, int(mask_prob·T/mask_length + U(0, 1))) distinct start positions per row
    from [0, T − mask_length); each covers mask_length steps. Overlapping spans make the masked fraction
    about mask_prob·(1 − overlap) (≈ 0.49 for 0.65 / 10). Rows are then trimmed at random to the smallest
    row's count (``require_same_masks``, as fairseq when pretraining), so every row masks the same number
    of steps; in a large batch that minimum, and so the fraction masked, is a little lower.

    Returns:
        ``(B, T)`` bool, True at masked steps.
    """
    num = max(min_masks, int(mask_prob * t / mask_length + float(torch.rand(()))))
    min_len = mask_length
    if t - min_len <= num:
        min_len = t - num - 1
    span = max(min_len, 1)
    num = min(num, t - min_len)
    starts = torch.rand(b, t - min_len, device=device).argsort(dim=1)[:, :num]  # distinct per row
    pos = (starts[:, :, None] + torch.arange(span, device=device)).flatten(1).clamp_max(t - 1)
    mask = torch.zeros(b, t, dtype=torch.bool, device=device).scatter_(1, pos, True)
    if not require_same_masks:
        return mask
    target = int(mask.sum(dim=1).min())
    # Keep `target` masked steps per row, chosen at random among its masked steps.
    scores = torch.rand(b, t, device=device).masked_fill(~mask, -1.0)
    keep = scores.topk(target, dim=1).indices
    return torch.zeros_like(mask).scatter_(1, keep, True)


class GumbelQuantiser(nn.Module):
    """Product quantiser with Gumbel-softmax (Jang et al. 2017; wav2vec 2.0's ``GumbelVectorQuantizer``).

    ``(N, dim) -> (N, vq_dim)``: G groups each pick one of V learnt vectors of size vq_dim/G (hard one-hot
    forward, softmax gradient in training; argmax in eval), concatenated.
    """

    def __init__(self, dim: int, groups: int, entries: int, vq_dim: int, temp: tuple[float, float, float]) -> None:
        super().__init__()
        if vq_dim % groups:
            raise ValueError(f"final_dim ({vq_dim}) must be divisible by quantiser_groups ({groups})")
        self.groups, self.entries = groups, entries
        self.codevectors = nn.Parameter(torch.empty(1, groups * entries, vq_dim // groups).uniform_())
        self.weight_proj = nn.Linear(dim, groups * entries)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.max_temp, self.min_temp, self.temp_decay = temp
        self.register_buffer("curr_temp", torch.tensor(float(self.max_temp), dtype=torch.float64))

    def set_num_updates(self, step: int) -> None:
        self.curr_temp.fill_(max(self.max_temp * self.temp_decay**step, self.min_temp))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, dim) -> (q (N, vq_dim), prob_perplexity (differentiable), code_perplexity (of hard codes))."""
        n = x.shape[0]
        logits = self.weight_proj(x).float().view(n, self.groups, self.entries)
        hard = F.one_hot(logits.argmax(-1), self.entries).float()  # (N, G, V)
        hard_probs = hard.mean(dim=0)
        code_ppl = torch.exp(-(hard_probs * torch.log(hard_probs + 1e-7)).sum(-1)).sum()
        avg_probs = logits.softmax(-1).mean(dim=0)  # (G, V)
        prob_ppl = torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(-1)).sum()
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=float(self.curr_temp), hard=True, dim=-1)
        else:
            onehot = hard
        onehot = onehot.to(self.codevectors.dtype).view(n, self.groups * self.entries, 1)
        q = (onehot * self.codevectors).view(n, self.groups, self.entries, -1).sum(-2).flatten(1)
        return q, prob_ppl, code_ppl.detach()


class Wav2Vec2ObjectiveConfig(ObjectiveConfig, AugmentedConfig):
    kind: Literal["wav2vec2"] = "wav2vec2"
    mask_prob: float = Field(0.65, gt=0, lt=1, description="span starts = mask_prob·T'/mask_length")
    mask_length: int = Field(10, gt=0, description="tokens per masked span")
    min_masks: int = Field(2, ge=1)
    quantiser_groups: int = Field(2, gt=0)
    quantiser_entries: int = Field(320, gt=1)
    quantiser_temp: tuple[float, float, float] = Field((2.0, 0.5, 0.999995), description="(max, min, decay per step)")
    final_dim: int = Field(256, gt=0)
    n_negatives: int = Field(100, gt=0, description="distractors from the same sequence")
    logit_temperature: float = Field(0.1, gt=0)
    diversity_weight: float = Field(0.1, ge=0, description="Oh et al. loss_weights[0]")
    feature_penalty_weight: float = Field(10.0, ge=0, description="Oh et al. loss_weights[1]")


class Wav2Vec2Objective(Objective):
    Config = Wav2Vec2ObjectiveConfig
    cfg: Wav2Vec2ObjectiveConfig

    def __init__(self, cfg: Wav2Vec2ObjectiveConfig, ctx: BuildContext) -> None:
        encoder = ctx.need("encoder")
        if not isinstance(encoder, Wav2Vec2):
            raise UserError(
                f"ssl.kind = '{cfg.kind}' needs model.encoder.kind = 'wav2vec2', got {type(encoder).__name__}"
            )
        super().__init__(cfg, ctx)
        self.quantiser = GumbelQuantiser(encoder.feature_dim, cfg.quantiser_groups, cfg.quantiser_entries,
                                         cfg.final_dim, cfg.quantiser_temp)
        self.project_q = nn.Linear(cfg.final_dim, cfg.final_dim)
        self.final_proj = nn.Linear(encoder.embed_dim, cfg.final_dim)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, leads, T) -> (layer-normed features (B, T', C), L2 penalty mean(raw²) before the norm)."""
        enc = self.encoder
        if enc.feature_grad_mult > 0:
            raw = enc.feature_extractor(x)
            if enc.feature_grad_mult != 1.0 and raw.requires_grad:
                raw = GradMultiply.apply(raw, enc.feature_grad_mult)
        else:
            with torch.no_grad():
                raw = enc.feature_extractor(x)
        penalty = raw.float().pow(2).mean()
        return enc.layer_norm(raw.transpose(1, 2)), penalty

    def sample_negatives(self, y: Tensor) -> Tensor:
        """y (B, n, D) -> (B, n, K, D): for each step, K others of the same row (never itself; n ≥ 2)."""
        b, n, _ = y.shape
        idx = torch.randint(n - 1, (b, n, self.cfg.n_negatives), device=y.device)
        idx = idx + (idx >= torch.arange(n, device=y.device)[None, :, None]).long()
        return y[torch.arange(b, device=y.device)[:, None, None], idx]

    def w2v_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """x (B, leads, T) -> (loss, logs, context (B, T', D) of the masked input)."""
        enc, cfg = self.encoder, self.cfg
        feats, feat_pen = self._features(x)
        targets = enc.dropout_features(feats)
        tokens = enc.project(feats)
        b, t, _ = tokens.shape
        mask = compute_mask_indices(b, t, cfg.mask_prob, cfg.mask_length, cfg.min_masks, tokens.device)
        tokens = torch.where(mask[..., None], enc.mask_emb.to(tokens.dtype), tokens)
        context = enc.contextualise(tokens)
        n = int(mask[0].sum())
        y = targets[mask]  # (B·n, C), row-major so it reshapes to (B, n, C)
        q, prob_ppl, code_ppl = self.quantiser(y)
        q = self.project_q(q).view(b, n, -1)
        pred = self.final_proj(context[mask])  # (B·n, final_dim)
        negs = self.sample_negatives(q).flatten(0, 1)
        contrastive = info_nce(pred, q.flatten(0, 1), negs, cfg.logit_temperature, cosine=True)
        n_vars = self.quantiser.groups * self.quantiser.entries
        diversity = (n_vars - prob_ppl) / n_vars
        loss = contrastive + cfg.diversity_weight * diversity + cfg.feature_penalty_weight * feat_pen
        logs = {
            "w2v_contrastive": contrastive.detach(), "diversity": diversity.detach(), "feature_pen": feat_pen.detach(),
            "code_perplexity": code_ppl, "prob_perplexity": prob_ppl.detach(),
            "gumbel_temp": self.quantiser.curr_temp.detach().float(), "mask_frac": mask.float().mean(),
        }
        return loss, logs, context

    def forward(self, batch: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, leads, T) -> wav2vec 2.0 loss (see the module docstring)."""
        loss, logs, _ = self.w2v_loss(self.augment(batch["x"]))
        return loss, {"loss": loss.detach(), **logs}

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Anneal the Gumbel temperature: max(max_temp·decay^step, min_temp) (fairseq ``set_num_updates``)."""
        self.quantiser.set_num_updates(step)
