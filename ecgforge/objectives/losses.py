"""Pure loss functions shared by the objectives: batched tensors in, scalar tensor out.

Contrastive losses use cosine similarity divided by a temperature and gather candidates across processes
with ``layers.distributed.gather_with_grad``, so N processes with batch B optimise the same loss as one
process with batch N·B (each process averages over its own anchors; the data-parallel gradient average
then gives the global mean).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ecgforge.layers.distributed import gather_with_grad, world


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020), both directions.

    Each of the 2B local views is an anchor whose positive is the other view of its sample and whose
    negatives are the 2·N·B − 2 other views of every process (N processes, B samples each).

    Args:
        z1: ``(B, D)`` projections of the first views (need not be normalised).
        z2: ``(B, D)`` projections of the second views, row i paired with row i of ``z1``.
        temperature: τ > 0 dividing the cosine similarities.

    Returns:
        Scalar: mean cross-entropy over the 2B local anchors.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"nt_xent: z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} differ in shape")
    b = z1.shape[0]
    rank, _ = world()
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)  # (N·B, D) each
    nb = all1.shape[0]
    anchors = torch.cat([z1, z2])  # (2B, D)
    logits = anchors @ torch.cat([all1, all2]).T / temperature  # (2B, 2NB); candidates: all z1 then all z2
    local = rank * b + torch.arange(b, device=z1.device)  # this process's rows among the gathered ones
    self_idx = torch.cat([local, local + nb])
    pos_idx = torch.cat([local + nb, local])
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * nb).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_idx)


def ess_nt_xent(z1: Tensor, z2: Tensor, temperature: float, eps: float = 1e-6) -> Tensor:
    """NT-Xent as hhi-aml/ecg-selfsupervised computes it (``custom_simclr_bolts.py``,
    ``CustomSimCLR.nt_xent_loss``, taken from an early PyTorch Lightning Bolts).

    With unit vectors, anchor a's loss is ``−log(exp(s_ap/τ) / (max(Σ_j exp(s_aj/τ) − e, eps) + eps))``, the
    sum running over every candidate *including a itself*. Subtracting e = exp(1) removes the self term only
    for τ = 1: at the Strodthoff recipe's τ = 0.5, ``e² − e ≈ 4.67`` of the self-similarity stays in every
    denominator. Kept as the reference wrote it so that its recipe reproduces the paper's loss; `nt_xent` is
    the usual form.

    Args:
        z1, z2: ``(B, D)`` projections of the two views (normalised here, as ESS's ``Projection`` does).
        temperature: τ > 0.

    Returns:
        Scalar: mean over the 2B local anchors; candidates gathered across processes.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"ess_nt_xent: z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} differ in shape")
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    anchors = torch.cat([z1, z2])  # (2B, D)
    cands = torch.cat([gather_with_grad(z1), gather_with_grad(z2)])  # (2NB, D)
    neg = (torch.exp(anchors @ cands.T / temperature).sum(dim=-1) - math.e).clamp_min(eps)
    pos = torch.exp((z1 * z2).sum(dim=-1) / temperature).repeat(2)
    return -torch.log(pos / (neg + eps)).mean()


def multi_positive_nt_xent(z: Tensor, groups: Tensor, temperature: float) -> Tensor:
    """Contrastive loss with several positives per anchor (SupCon, Khosla et al. 2020, eq. 2 "out").

    Every other item with the same group id is a positive (e.g. segments of a record, views of a patient). The
    objectives use their references' own forms instead (``cmsc_loss``, ``three_kg_loss``); this one is kept as
    the general SupCon form. For anchor i with positives P(i),
    ℓ_i = −mean_{p ∈ P(i)} log softmax_{a ≠ i}(s_ia / τ)_p; anchors without a positive are left out.
    With two views per group this is exactly ``nt_xent``.

    Args:
        z: ``(N, D)`` local projections (need not be normalised).
        groups: ``(N,)`` int64 group ids. Gathered across processes with ``z``, so ids must mean the same
            thing on every process (patient or record index, or batch position offset by rank·N).
        temperature: τ > 0.

    Returns:
        Scalar: mean of ℓ_i over local anchors that have a positive (0 with grad if none has).
    """
    if groups.shape != z.shape[:1]:
        raise ValueError(f"multi_positive_nt_xent: groups {tuple(groups.shape)} must be ({z.shape[0]},)")
    n = z.shape[0]
    rank, _ = world()
    z = F.normalize(z, dim=-1)
    all_z = gather_with_grad(z)
    all_groups = gather_with_grad(groups)
    local = rank * n + torch.arange(n, device=z.device)
    is_self = F.one_hot(local, all_z.shape[0]).bool()  # (N, N_all)
    logits = (z @ all_z.T / temperature).masked_fill(is_self, float("-inf"))
    log_prob = logits.log_softmax(dim=1)
    positive = (groups[:, None] == all_groups[None, :]) & ~is_self
    n_pos = positive.sum(dim=1)
    # where() rather than multiply: log_prob is -inf on the diagonal and 0·(-inf) is NaN.
    per_anchor = -torch.where(positive, log_prob, 0.0).sum(dim=1) / n_pos.clamp_min(1)
    has_pos = n_pos > 0
    return (per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)


def three_kg_loss(z: Tensor, groups: Tensor, temperature: float, eps: float = 1e-8) -> Tensor:
    """3KG's contrastive loss as in fairseq-signals (``criterions/3kg_criterion.py``,
    ``ThreeKGCriterion.compute_loss``): one cross-entropy term per (anchor, positive) pair, whose denominator
    is that positive and the anchor's *negatives* only (the anchor's other positives are left out).

    Each row is divided by its *detached* norm (``max(norm, eps)``), so no gradient flows through the
    normalisation. With logits ``L = ẑ ẑᵀ / τ`` (self excluded), P(i) the other items of anchor i's group and
    N(i) the items of other groups:
    ``loss = Σ_i Σ_{p ∈ P(i)} −log(exp(L_ip) / (exp(L_ip) + Σ_{n ∈ N(i)} exp(L_in))) / n_items``
    (fairseq-signals sums and divides by the sample size, the number of views). With two views per group
    this is NT-Xent on detached norms.

    Across processes the candidates are gathered, anchors stay local (each process divides by its own count).

    Args:
        z: ``(N, D)`` local projections (need not be normalised); the order of views does not matter.
        groups: ``(N,)`` int64 group ids (patient, or the batch position for "views of one window").
        temperature: τ > 0 (fairseq-signals: 0.1).
        eps: lower bound of the norm.

    Returns:
        Scalar.
    """
    if groups.shape != z.shape[:1]:
        raise ValueError(f"three_kg_loss: groups {tuple(groups.shape)} must be ({z.shape[0]},)")
    n = z.shape[0]
    rank, _ = world()
    z = z / z.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
    all_z, all_groups = gather_with_grad(z), gather_with_grad(groups)
    local = rank * n + torch.arange(n, device=z.device)
    is_self = F.one_hot(local, all_z.shape[0]).bool()  # (N, N_all)
    logits = z @ all_z.T / temperature
    same = groups[:, None] == all_groups[None, :]
    positive = same & ~is_self
    neg_lse = logits.masked_fill(same, float("-inf")).logsumexp(dim=1, keepdim=True)  # (N, 1), −inf if none
    per_pair = torch.logaddexp(logits, neg_lse) - logits  # −log softmax over {p} ∪ N(i)
    return torch.where(positive, per_pair, 0.0).sum() / n


def info_nce(pred: Tensor, pos: Tensor, negs: Tensor, temperature: float, cosine: bool = True) -> Tensor:
    """InfoNCE of CPC (van den Oord et al. 2018) / wav2vec 2.0 (Baevski et al. 2020): classify the positive
    among itself and K negatives.

    As in wav2vec 2.0, a negative identical to its positive (sampled from the same position or an equal
    quantised target) is excluded (logit −inf) rather than counted as a wrong answer.

    Args:
        pred: ``(N, D)`` predictions (context vectors after the prediction head).
        pos: ``(N, D)`` targets, row i the positive of row i.
        negs: ``(N, K, D)`` K negatives per prediction.
        temperature: τ > 0 dividing the similarities.
        cosine: cosine similarity (wav2vec 2.0) if True, else dot product (CPC).

    Returns:
        Scalar: mean cross-entropy with the positive at index 0 of the K + 1 candidates.
    """
    if cosine:
        sims = F.cosine_similarity(
            pred[:, None, :], torch.cat([pos[:, None, :], negs], dim=1), dim=-1, eps=1e-8
        )
    else:
        sims = torch.einsum("nd,nkd->nk", pred, torch.cat([pos[:, None, :], negs], dim=1))
    logits = sims / temperature  # (N, K+1)
    neg_is_pos = (negs == pos[:, None, :]).all(dim=-1)  # (N, K)
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(neg_is_pos, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros(pred.shape[0], dtype=torch.long, device=pred.device))


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL regression loss (Grill et al. 2020): 2 − 2·cos(p, z), averaged over the batch.

    Args:
        p: ``(B, D)`` online predictions.
        z: ``(B, D)`` target projections; detached here, the target network never gets gradients.

    Returns:
        Scalar in [0, 4].
    """
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


def sparsity_penalty(masks: Tensor, ratio: float = 1.0) -> Tensor:
    """ADIOS-style sparsity penalty used by adversarial masking (Bo et al. 2022, ``advmask_model.py``):
    Σ_m mean_b 1 / (sin(ratio·π·mean_t masks[b, m]) + 1e-10).

    It grows without bound as a mask goes all-off (mean 0) or, for ratio = 1, all-on, and is smallest (M)
    where each mask covers a fraction 1/(2·ratio) of the samples; this keeps the masker from collapsing.

    Args:
        masks: ``(B, M, T)`` soft masks in [0, 1].
        ratio: in (0, 1]; the sine's argument then stays in [0, π] so the penalty stays positive.

    Returns:
        Scalar (multiply by the objective's α).
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"sparsity_penalty: ratio must be in (0, 1], got {ratio}")
    # float64: in float32, π·1.0 rounds above π and sin(π) = −8.7e-8, so a mask that is all on would earn a
    # penalty of −1e7 (a reward) instead of a huge one; the clamp covers a mean rounding a hair above 1.
    coverage = masks.double().mean(dim=-1)  # (B, M)
    penalty = 1.0 / (torch.sin(ratio * math.pi * coverage).clamp_min(0) + 1e-10)
    return penalty.mean(dim=0).sum().to(masks.dtype)


def cmsc_loss(z0: Tensor, z1: Tensor, g0: Tensor, g1: Tensor, temperature: float, eps: float = 1e-8) -> Tensor:
    """CMSC loss of fairseq-signals (``criterions/cmsc_criterion.py``, ``CMSCCriterion.compute_loss``; the
    same formula in ``Wav2Vec2WithCMSCCriterion``): segment-0 x segment-1 logits, symmetric.

    Each representation is divided by its *detached* norm (``max(norm, eps)``, so no gradient flows through
    the normalisation, as in the reference). Logits ``L = z0 @ z1ᵀ / τ``; every (segment 0, segment 1) pair
    of the same group (fairseq-signals' ``patient_id``) is a positive, the other segment-1 items of the
    batch are the denominator (same-segment items never are). Loss:
    ``(mean_{(i,j) positive} −log softmax_j(L)_ij + mean_{(j,i) positive} −log softmax_i(Lᵀ)_ji) / 2``.

    Across processes the candidates are gathered (as fairseq-signals with ``all_gather``), anchors stay
    local: rows of this process against the columns of all.

    Args:
        z0: ``(B, D)`` first segments; z1: ``(B, D)`` second segments (need not be normalised).
        g0, g1: ``(B,)`` int64 group ids (record or patient index) of z0 and z1.
        temperature: τ > 0 (fairseq-signals: 0.1).
        eps: lower bound of the norm.

    Returns:
        Scalar.
    """
    if z0.shape != z1.shape or g0.shape != z0.shape[:1] or g1.shape != z1.shape[:1]:
        raise ValueError(f"cmsc_loss: z0 {tuple(z0.shape)}, z1 {tuple(z1.shape)}, g0 {tuple(g0.shape)}, "
                         f"g1 {tuple(g1.shape)} must be (B, D), (B, D), (B,), (B,)")
    z0 = z0 / z0.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
    z1 = z1 / z1.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
    all0, all1 = gather_with_grad(z0), gather_with_grad(z1)
    all_g0, all_g1 = gather_with_grad(g0), gather_with_grad(g1)

    def direction(anchors: Tensor, groups: Tensor, cands: Tensor, cand_groups: Tensor) -> Tensor:
        nll = -(anchors @ cands.T / temperature).log_softmax(dim=-1)  # (B, N·B)
        return nll[groups[:, None] == cand_groups[None, :]].mean()

    return (direction(z0, g0, all1, all_g1) + direction(z1, g1, all0, all_g0)) / 2


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """SwAV's Sinkhorn-Knopp assignments (Caron et al. 2020) as in ecg-selfsupervised
    ``custom_swav_bolts.py`` ``CustomSwAV.sinkhorn``: equal-partition soft codes of N items over K prototypes.

    ``Q = exp(scores / ε)ᵀ`` (K, N), divided by its sum; then ``iterations`` times: rows scaled to sum 1/K,
    columns to 1/N; finally each column normalised to sum 1. Computed in float32 (``exp(1/0.05)`` overflows
    float16). Call it on the scores of every process (gathered), so that N processes equal one.

    Args:
        scores: ``(N, K)`` cosine scores of N items (batch, and queue if used) against K prototypes.
        epsilon: ε > 0, the entropic regularisation (ESS: 0.05).
        iterations: Sinkhorn iterations (ESS: 3).

    Returns:
        ``(N, K)`` float32, every row a distribution over prototypes.
    """
    q = torch.exp(scores.float() / epsilon).t()  # (K, N)
    q /= q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q *= (1.0 / k / q.sum(dim=1)).unsqueeze(1)
        q *= (1.0 / n / q.sum(dim=0)).unsqueeze(0)
    return (q / q.sum(dim=0, keepdim=True)).t()


def swapped_prediction(codes: Tensor, scores: Tensor, temperature: float) -> Tensor:
    """SwAV's swapped-prediction term: ``−mean_b Σ_k codes_bk · log softmax(scores_b / τ)_k``.

    Args:
        codes: ``(B, K)`` Sinkhorn assignments of one view (no gradient).
        scores: ``(B, K)`` prototype scores of another view of the same items.
        temperature: τ > 0 (ESS: 0.1).
    """
    return -(codes * F.log_softmax(scores / temperature, dim=1)).sum(dim=1).mean()


def moco_infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE (He et al. 2020) as in ecg-selfsupervised ``custom_moco_bolts.py``
    ``CustomMoCo.forward`` + ``training_step``: logits ``[q·k, q·queue] / τ``, cross-entropy with the key at 0.

    Args:
        q: ``(B, D)`` unit-norm queries (gradient flows); k: ``(B, D)`` unit-norm keys (detached here).
        queue: ``(K, D)`` unit-norm negatives (detached here).
        temperature: τ > 0.

    Returns:
        Scalar: mean cross-entropy over the B queries.
    """
    l_pos = (q * k.detach()).sum(dim=1, keepdim=True)  # (B, 1)
    l_neg = q @ queue.detach().t()  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits.float(), torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
