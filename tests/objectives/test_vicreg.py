"""VICReg pinned to facebookresearch/vicreg (``main_vicreg.py``: ``VICReg.forward``, ``off_diagonal``,
``FullGatherLayer``) on fixed inputs; CONTRIBUTING.md shows the shipped file. Elsewhere: two processes
compute one big batch's loss (``test_losses.py``); a recipe that uses it (``tests/train/test_vicreg_recipe.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ecgforge.encoders.resnet1d import ResNet1d
from ecgforge.objectives.vicreg import VICReg, VICRegConfig, vicreg_loss
from tests.components import make
from tests.objectives.test_objectives import make_objective, noise

ROOT = Path(__file__).resolve().parents[2]


def reference_off_diagonal(x: Tensor) -> Tensor:
    """``main_vicreg.py`` ``off_diagonal``."""
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def reference_vicreg(x: Tensor, y: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                     cov_coeff: float = 1.0) -> Tensor:
    """``VICReg.forward`` after its projector, step by step, in one process (``FullGatherLayer`` returns the
    batch itself): ``args.batch_size`` = len(x), ``num_features`` = x.shape[1]."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = reference_off_diagonal(cov_x).pow_(2).sum().div(num_features) + reference_off_diagonal(
        cov_y).pow_(2).sum().div(num_features)
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def embeddings(b: int = 8, d: int = 6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two correlated views whose dimensions have std below and above 1, so every term is active."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.3, 0.5, 2.0, 1.0, 0.1, 3.0])[:d]
    z1 = torch.randn(b, d, generator=g) * scale
    z1[:, 1] += 0.8 * z1[:, 2]  # correlated dimensions: a covariance term
    z2 = z1 + 0.3 * torch.randn(b, d, generator=g)
    return z1, z2


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (3.0, 7.0, 0.5)], ids=["paper", "other"])
def test_vicreg_loss_equals_the_reference_forward(coeffs: tuple[float, float, float]) -> None:
    sim, std, cov = coeffs
    z1, z2 = (z.requires_grad_() for z in embeddings())
    ours, terms = vicreg_loss(z1, z2, VICRegConfig(sim_coeff=sim, std_coeff=std, cov_coeff=cov))
    g_ours = torch.autograd.grad(ours, [z1, z2])
    ref = reference_vicreg(z1, z2, sim, std, cov)
    g_ref = torch.autograd.grad(ref, [z1, z2])
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    for a, r in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-7)
    assert all(v > 0 for v in terms.values())  # each term contributes on these inputs
    assert ours.item() == pytest.approx(sim * terms["invariance"] + std * terms["variance"] + cov * terms["covariance"])


def test_variance_hinge_of_collapsed_embeddings_is_one_less_the_epsilon_std() -> None:
    """All embeddings equal: std = sqrt(1e-4) in every dimension, the hinge 1 − 0.01; nothing to decorrelate."""
    z = torch.ones(8, 6)
    _, terms = vicreg_loss(z, z, VICRegConfig())
    assert terms["invariance"].item() == 0.0 and terms["covariance"].item() == 0.0
    assert terms["variance"].item() == pytest.approx(0.99, abs=1e-6)


def test_vicreg_objective_is_the_reference_on_its_expanded_views() -> None:
    """Two noisy views of x through the encoder and the expander, then the reference loss; same draws."""
    torch.manual_seed(0)
    obj = make_objective(VICReg, make(ResNet1d, depth=18, width=4), augment=noise(0.1), projector_hidden=32, projector_dim=16)
    x = torch.randn(6, 12, 250)
    torch.manual_seed(3)
    loss, logs = obj({"x": x}, "encoder")
    torch.manual_seed(3)
    v1, v2 = obj.augment(x), obj.augment(x)
    ref = reference_vicreg(obj.projector(obj.encoder(v1)), obj.projector(obj.encoder(v2)))
    torch.testing.assert_close(loss, ref)
    assert set(logs) == {"loss", "invariance", "variance", "covariance"}


# --- CONTRIBUTING.md shows it whole ------------------------------------------------------------------


def test_contributing_shows_the_vicreg_file_that_ships() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "CONTRIBUTING.md").read_text(), flags=re.S)
    shipped = (ROOT / "ecgforge/objectives/vicreg.py").read_text()
    assert shipped in blocks, "CONTRIBUTING.md's objective example differs from ecgforge/objectives/vicreg.py"
    assert '"vicreg": "ecgforge.objectives.vicreg:VICReg",' in (ROOT / "CONTRIBUTING.md").read_text()
