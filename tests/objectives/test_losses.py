"""Pure losses: hand-computed values, symmetries, reductions between them, and the multi-process equivalence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgforge.objectives.losses import byol_loss, info_nce, multi_positive_nt_xent, nt_xent, sparsity_penalty
from ecgforge.objectives.vicreg import VICRegConfig, vicreg_loss
from tests.gloo import spawn_gloo


def nt_xent_by_hand(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """SimCLR's loss written out anchor by anchor."""
    views = np.concatenate([z1, z2])
    views = views / np.linalg.norm(views, axis=1, keepdims=True)
    n, b = len(views), len(z1)
    total = 0.0
    for k in range(n):
        pos = (k + b) % n
        denom = sum(math.exp(views[k] @ views[j] / tau) for j in range(n) if j != k)
        total += -math.log(math.exp(views[k] @ views[pos] / tau) / denom)
    return total / n


def test_nt_xent_closed_form_on_orthogonal_pairs() -> None:
    # Two samples, identical views, orthogonal across samples: each anchor sees its positive at cos 1 and
    # two negatives at cos 0, so the loss is -log(e^(1/τ) / (e^(1/τ) + 2)).
    z = torch.eye(2)
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_matches_hand_computation_and_is_symmetric() -> None:
    z1, z2 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    loss = nt_xent(z1, z2, 0.1)
    assert loss.item() == pytest.approx(nt_xent_by_hand(z1.numpy(), z2.numpy(), 0.1), rel=1e-10)
    assert nt_xent(z2, z1, 0.1).item() == pytest.approx(loss.item(), rel=1e-12)
    # Scale-invariant (cosine similarity) and permutation-equivariant over samples.
    perm = torch.randperm(5)
    assert nt_xent(3 * z1[perm], 0.2 * z2[perm], 0.1).item() == pytest.approx(loss.item(), rel=1e-10)


def test_nt_xent_gradients() -> None:
    z1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))


def test_multi_positive_reduces_to_nt_xent() -> None:
    z1, z2 = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    groups = torch.arange(6).repeat(2)
    multi = multi_positive_nt_xent(torch.cat([z1, z2]), groups, 0.2)
    assert multi.item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-12)


def test_multi_positive_hand_value_with_three_positives_and_a_loner() -> None:
    z = torch.randn(6, 4, dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 2])  # item 5 has no positive: not an anchor, still a negative
    tau = 0.5
    v = F.normalize(z, dim=1).numpy()
    losses = []
    for i in range(6):
        positives = [j for j in range(6) if j != i and groups[j] == groups[i]]
        if not positives:
            continue
        denom = sum(math.exp(v[i] @ v[a] / tau) for a in range(6) if a != i)
        losses.append(-np.mean([math.log(math.exp(v[i] @ v[p] / tau) / denom) for p in positives]))
    expected = float(np.mean(losses))
    assert multi_positive_nt_xent(z, groups, tau).item() == pytest.approx(expected, rel=1e-10)


def test_multi_positive_without_any_positive_is_zero_with_grad() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    loss = multi_positive_nt_xent(z, torch.arange(4), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("cosine", [True, False])
def test_info_nce_hand_value(cosine: bool) -> None:
    n, k, d, tau = 3, 4, 5, 0.1
    pred, pos, negs = torch.randn(n, d), torch.randn(n, d), torch.randn(n, k, d)
    losses = []
    for i in range(n):
        cands = [pos[i]] + [negs[i, j] for j in range(k)]
        if cosine:
            sims = [float(pred[i] @ c / (pred[i].norm() * c.norm())) for c in cands]
        else:
            sims = [float(pred[i] @ c) for c in cands]
        logits = np.array(sims, dtype=np.float64) / tau
        losses.append(-(logits[0] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
    expected = float(np.mean(losses))
    assert info_nce(pred, pos, negs, tau, cosine=cosine).item() == pytest.approx(expected, rel=1e-4)


def test_info_nce_ignores_negatives_equal_to_the_positive() -> None:
    pred, pos, negs = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4, 3)
    with_copy = negs.clone()
    with_copy[:, 0] = pos
    reference = info_nce(pred, pos, negs[:, 1:], 0.1)
    assert info_nce(pred, pos, with_copy, 0.1).item() == pytest.approx(reference.item(), rel=1e-6)


def test_byol_loss_values_and_stop_gradient() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    z = torch.tensor([[2.0, 0.0], [0.0, -1.0], [0.0, 1.0]], requires_grad=True)
    loss = byol_loss(p, z)  # cos = 1, -1, 0 -> 2 - 2 * mean = 2
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert z.grad is None and p.grad is not None


@pytest.mark.parametrize("ratio", [1.0, 0.8])
def test_sparsity_penalty_minimum_at_half_over_ratio(ratio: float) -> None:
    t_len, n_masks = 1000, 3
    fractions = torch.arange(1, t_len) / t_len
    values = []
    for frac in fractions:
        masks = (torch.arange(t_len) < frac * t_len).float().expand(2, n_masks, t_len)
        values.append(sparsity_penalty(masks, ratio).item())
    best = fractions[int(np.argmin(values))].item()
    assert best == pytest.approx(1 / (2 * ratio), abs=1e-3)
    assert min(values) == pytest.approx(n_masks, rel=1e-5)  # Σ_m of 1/sin(π/2)
    assert values[0] > 50 * n_masks


def test_sparsity_penalty_all_on_mask_is_penalised_not_rewarded() -> None:
    # In float32, sin(π·1.0) < 0: without care an all-on mask would get a large negative penalty.
    assert sparsity_penalty(torch.ones(2, 1, 50), 1.0).item() > 1e6
    with pytest.raises(ValueError):
        sparsity_penalty(torch.ones(2, 1, 50), 1.5)


def test_sparsity_penalty_averages_batch_and_sums_masks() -> None:
    masks = torch.zeros(2, 2, 4)
    masks[0, 0, :2] = 1  # coverage 0.5 -> 1
    masks[1, 0, :1] = 1  # coverage 0.25 -> 1/sin(π/4)
    masks[:, 1, :2] = 1  # both 0.5 -> 1
    expected = (1 + 1 / math.sin(math.pi / 4)) / 2 + 1
    assert sparsity_penalty(masks).item() == pytest.approx(expected, rel=1e-6)


# --- N processes × batch B == one process × N·B ----------------------------------------------------------

WORLD, B, D = 2, 3, 5


def _full_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    z1 = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    z2 = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    groups = torch.randint(0, 3, (WORLD * B,), generator=g)  # patient-like global ids, shared by views
    return z1, z2, groups


def _worker(rank: int, out_dir: str) -> None:
    z1, z2, groups = _full_inputs()
    rows = slice(rank * B, (rank + 1) * B)
    a = z1[rows].clone().requires_grad_(True)
    b = z2[rows].clone().requires_grad_(True)
    loss = nt_xent(a, b, 0.2)
    loss.backward()
    z = torch.cat([z1[rows], z2[rows]]).requires_grad_(True)
    multi = multi_positive_nt_xent(z, torch.cat([groups[rows], groups[rows]]), 0.2)
    multi.backward()
    torch.save(
        {"loss": loss.detach(), "g1": a.grad, "g2": b.grad, "multi": multi.detach(), "gz": z.grad},
        Path(out_dir) / f"rank{rank}.pt",
    )


def test_gathered_negatives_equal_one_big_batch(tmp_path: Path) -> None:
    spawn_gloo(_worker, WORLD, tmp_path, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    z1, z2, groups = _full_inputs()
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    loss = nt_xent(z1, z2, 0.2)
    loss.backward()
    # Each process averages its own anchors; data-parallel training averages gradients over processes,
    # so the mean loss is the big-batch loss and each process's gradient is WORLD × its slice.
    assert np.mean([r["loss"].item() for r in ranks]) == pytest.approx(loss.item(), rel=1e-12)
    for rank, r in enumerate(ranks):
        rows = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(r["g1"], WORLD * z1.grad[rows])
        torch.testing.assert_close(r["g2"], WORLD * z2.grad[rows])

    # Multi-positive with global ids: same equivalence (every anchor here has its other view as positive,
    # so every process has the same number of anchors and the mean of the means is the global mean).
    views = [
        torch.cat([z1.detach()[r * B : (r + 1) * B], z2.detach()[r * B : (r + 1) * B]]) for r in range(WORLD)
    ]
    z = torch.cat(views).requires_grad_(True)
    multi = multi_positive_nt_xent(
        z, torch.cat([torch.cat([groups[r * B : (r + 1) * B]] * 2) for r in range(WORLD)]), 0.2
    )
    multi.backward()
    assert np.mean([r["multi"].item() for r in ranks]) == pytest.approx(multi.item(), rel=1e-12)
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["gz"], WORLD * z.grad[rank * 2 * B : (rank + 1) * 2 * B])


def _vicreg_worker(rank: int, out_dir: str) -> None:
    z1, z2, _ = _full_inputs()
    rows = slice(rank * B, (rank + 1) * B)
    a, b = (0.5 * z1[rows]).requires_grad_(True), z2[rows].clone().requires_grad_(True)
    loss, _ = vicreg_loss(a, b, VICRegConfig())
    loss.backward()
    torch.save({"loss": loss.detach(), "g1": a.grad, "g2": b.grad}, Path(out_dir) / f"rank{rank}.pt")


def test_vicreg_of_two_processes_is_the_big_batch_vicreg(tmp_path: Path) -> None:
    """VICReg's variance and covariance over the gathered batch (``FullGatherLayer``), its MSE per process: the
    mean of the processes' losses is the big-batch loss and each gradient WORLD times its slice (z1 halved, so
    that the variance hinge is active)."""
    spawn_gloo(_vicreg_worker, WORLD, tmp_path, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    z1, z2, _ = _full_inputs()
    z1 = (0.5 * z1).requires_grad_(True)
    z2.requires_grad_(True)
    loss, terms = vicreg_loss(z1, z2, VICRegConfig())
    loss.backward()
    assert terms["variance"] > 0 and terms["covariance"] > 0
    assert np.mean([r["loss"].item() for r in ranks]) == pytest.approx(loss.item(), rel=1e-12)
    for rank, r in enumerate(ranks):
        rows = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(r["g1"], WORLD * z1.grad[rows])
        torch.testing.assert_close(r["g2"], WORLD * z2.grad[rows])
