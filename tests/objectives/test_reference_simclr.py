"""SimCLR as hhi-aml/ecg-selfsupervised (ESS) trains it, pinned on fixed inputs: its projection head and its
NT-Xent variant, both used by recipes/papers/strodthoff/simclr.toml."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgforge.augment.noise import GaussianNoise
from ecgforge.encoders.resnet1d import ResNet1d
from ecgforge.objectives.losses import ess_nt_xent, nt_xent
from ecgforge.objectives.simclr import SimCLR, SimCLRConfig
from tests.components import make

ROOT = Path(__file__).resolve().parents[2]


def ess_projection_forward(lin1: nn.Linear, lin2: nn.Linear, h: Tensor) -> Tensor:
    """ESS ``custom_simclr_bolts.py``, ``Projection.forward``: Flatten, Linear(bias), ReLU, Linear(bias) (the
    BatchNorm1d line is commented out), then ``F.normalize(x, dim=1)``."""
    return F.normalize(lin2(F.relu(lin1(h.flatten(1)))), dim=1)


def ess_nt_xent_loss(out_1: Tensor, out_2: Tensor, temperature: float, eps: float = 1e-6) -> Tensor:
    """ESS ``custom_simclr_bolts.py``, ``CustomSimCLR.nt_xent_loss`` (single process), line by line."""
    out = torch.cat([out_1, out_2], dim=0)
    cov = torch.mm(out, out.t().contiguous())
    sim = torch.exp(cov / temperature)
    neg = sim.sum(dim=-1)
    row_sub = torch.Tensor(neg.shape).fill_(math.e)
    neg = torch.clamp(neg - row_sub, min=eps)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / temperature)
    pos = torch.cat([pos, pos], dim=0)
    return -torch.log(pos / (neg + eps)).mean()


def test_ess_nt_xent_equals_the_reference_and_differs_from_nt_xent() -> None:
    torch.manual_seed(0)
    z1 = torch.randn(6, 16, requires_grad=True)
    z2 = torch.randn(6, 16, requires_grad=True)
    for tau in (0.5, 0.1, 1.0):
        ours = ess_nt_xent(z1, z2, tau)
        ref = ess_nt_xent_loss(F.normalize(z1, dim=1), F.normalize(z2, dim=1), tau)
        torch.testing.assert_close(ours, ref)
        for a, b in zip(torch.autograd.grad(ours, [z1, z2]), torch.autograd.grad(ref, [z1, z2]), strict=True):
            torch.testing.assert_close(a, b)
    # At tau = 1 subtracting e removes the self term exactly: the usual NT-Xent. At 0.5 it does not.
    torch.testing.assert_close(ess_nt_xent(z1, z2, 1.0), nt_xent(z1, z2, 1.0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ess_nt_xent(z1, z2, 0.5), nt_xent(z1, z2, 0.5), atol=1e-3)


def test_simclr_with_the_ess_head_and_loss_equals_the_reference_step() -> None:
    """``CustomSimCLR.shared_forward`` + ``nt_xent_loss``: h = encoder features (here a small ResNet), z =
    ``Projection(h)``, loss on the two views; same augmentation draws for ours and the reference."""
    torch.manual_seed(0)
    obj = SimCLR(make(ResNet1d, depth=18, width=4), make(GaussianNoise, std_mv=0.1), temperature=0.5, projector_hidden=32,
                 projector_dim=16, projector_bn=False, loss="ess")
    lin1, relu, lin2 = obj.projector
    assert isinstance(relu, nn.ReLU) and lin1.bias is not None and lin2.bias is not None
    assert not any(isinstance(m, nn.BatchNorm1d) for m in obj.projector.modules())
    x = torch.randn(5, 12, 250)
    torch.manual_seed(3)
    loss, _ = obj({"x": x}, "encoder")
    torch.manual_seed(3)
    v1, v2 = obj.augment(x), obj.augment(x)
    ref = ess_nt_xent_loss(ess_projection_forward(lin1, lin2, obj.encoder(v1)),
                           ess_projection_forward(lin1, lin2, obj.encoder(v2)), 0.5)
    torch.testing.assert_close(loss, ref)


def test_strodthoff_recipe_uses_the_ess_head_and_loss() -> None:
    """bolts_config.yaml ``out_dim: 16``, ``temperature: 0.5``; ``cli_main``: ``Projection(input_dim=512,
    hidden_dim=512, output_dim=out_dim)``; the defaults elsewhere stay the usual SimCLR."""
    ssl = tomllib.loads((ROOT / "recipes/papers/strodthoff/simclr.toml").read_text())["ssl"]
    cfg = SimCLRConfig.model_validate(ssl)
    assert (cfg.projector_hidden, cfg.projector_dim, cfg.temperature) == (512, 16, 0.5)
    assert (cfg.projector_bn, cfg.loss) == (False, "ess")
    assert (SimCLRConfig().projector_bn, SimCLRConfig().loss) == (True, "nt_xent")
