"""3KG and BYOL pinned to their reference code on fixed inputs.

3KG: Jwoo5/fairseq-signals, ``fairseq_signals/criterions/3kg_criterion.py`` (``ThreeKGCriterion.compute_loss``)
and ``fairseq_signals/data/ecg/perturb_ecg_dataset.py`` (``ThreeKGECGDataset.perturb``).
BYOL: hhi-aml/ecg-selfsupervised, ``custom_byol_bolts.py`` (``MLP``, ``SiameseArm``, ``BYOLMAWeightUpdate``,
``CustomBYOL.shared_step``) and ``bolts_config.yaml``.
Each reference formula is written out here from the reference's own steps (not imported: the references are
not dependencies), and our implementation must give the same values and gradients.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgforge.encoders.resnet1d import ResNet1d
from ecgforge.objectives.byol import BYOL, cosine_tau
from ecgforge.objectives.losses import three_kg_loss
from ecgforge.objectives.three_kg import ThreeKGObjective
from tests.components import make
from tests.objectives.test_objectives import make_objective, noise

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------- 3KG


def reference_3kg(logits: Tensor, pids: Tensor, temp: float, eps: float = 1e-8) -> Tensor:
    """``ThreeKGCriterion.compute_loss`` step by step (views interleaved as its collator flattens them), then
    divided by the sample size (``get_sample_size``: the number of views), as fairseq's trainer does."""
    logits = logits / torch.max(logits.detach().norm(dim=1).unsqueeze(1), eps * torch.ones_like(logits))
    n = logits.shape[0]
    sim = logits @ logits.T
    keep = 1 - torch.eye(n, dtype=torch.uint8)
    sim = torch.masked_select(sim, keep == 1).view(n, -1)
    pos_mask = torch.masked_select(torch.stack([p == pids for p in pids]), keep == 1).view(n, -1)
    positives = sim[pos_mask].unsqueeze(1)
    negatives = sim.masked_fill(pos_mask, -float("inf"))
    negatives = torch.cat([torch.stack([row] * int(torch.count_nonzero(row == -float("inf")))) for row in negatives])
    out = torch.cat((positives, negatives), dim=1) / temp
    loss = F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long), reduction="sum")
    return loss / n


@pytest.mark.parametrize("pids", [[0, 1, 2, 3, 4], [0, 1, 1, 2, 5]], ids=["one-record-per-patient", "shared-patient"])
def test_three_kg_loss_equals_fairseq_signals_value_and_gradient(pids: list[int]) -> None:
    """fairseq-signals ``3kg_criterion.py`` ``ThreeKGCriterion.compute_loss``: detached norms, every (anchor,
    positive) pair a cross-entropy against the anchor's negatives only, summed / number of views. With a patient
    holding two records (4 views) the other positives leave each denominator, unlike SupCon."""
    g = torch.Generator().manual_seed(0)
    b = len(pids)
    z1 = (3 * torch.randn(b, 6, generator=g)).requires_grad_()
    z2 = (0.5 * torch.randn(b, 6, generator=g)).requires_grad_()
    groups = torch.tensor(pids)
    ours = three_kg_loss(torch.cat([z1, z2]), torch.cat([groups, groups]), 0.1)
    g_ours = torch.autograd.grad(ours, [z1, z2])
    inter = torch.stack([z1, z2], dim=1).flatten(0, 1)  # the collator's order: v1, v2 of sample 0, then 1, ...
    ref = reference_3kg(inter, groups.repeat_interleave(2), 0.1)
    g_ref = torch.autograd.grad(ref, [z1, z2])
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, r in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_three_kg_loss_gradient_does_not_flow_through_the_norm() -> None:
    """Detached normalisation (fairseq-signals): scaling z changes the gradient by 1/scale, and the gradient has
    a radial part (a loss on unit vectors with the norm in the graph would have none)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g).requires_grad_()
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    (grad,) = torch.autograd.grad(three_kg_loss(z, groups, 0.1), z)
    z2 = (2 * z.detach()).requires_grad_()
    (grad2,) = torch.autograd.grad(three_kg_loss(z2, groups, 0.1), z2)
    torch.testing.assert_close(grad2, grad / 2)
    assert (grad * F.normalize(z.detach(), dim=1)).sum(dim=1).abs().max() > 1e-4


def test_three_kg_objective_own_window_takes_one_crop_per_view() -> None:
    """``views = "own_window"`` asks the dataset for two independent crops and makes one view of each; the
    faithful ``same_window`` makes both views of one crop (``ThreeKGECGDataset.perturb`` on one ``feats``)."""
    enc = make(ResNet1d, depth=18, width=8)
    same = make_objective(ThreeKGObjective, enc, projector_hidden=16, projector_dim=8)
    own = make_objective(ThreeKGObjective, enc, projector_hidden=16, projector_dim=8, views="own_window")
    assert (same.cfg.n_segments, same.cfg.segment_pairing) == (1, "adjacent")
    assert (own.cfg.n_segments, own.cfg.segment_pairing) == (2, "independent")
    seen: list[Tensor] = []

    class Record(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(x)
            return x

    own.view = Record()
    x = torch.randn(4, 2, 12, 100)
    loss, _ = own({"x": x, "patient": torch.arange(4)}, "encoder")
    assert torch.isfinite(loss)
    assert torch.equal(seen[0], x[:, 0]) and torch.equal(seen[1], x[:, 1])


# -------------------------------------------------------------------------------------------------- BYOL


class _TwoViews(nn.Module):
    """Augmentation stand-in that returns fixed views: first call x + 0.1, second x − 0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x + 0.1 if self.calls % 2 else x - 0.1


def _byol(**kw: object) -> BYOL:
    torch.manual_seed(0)
    obj = make_objective(BYOL, make(ResNet1d, depth=18, width=8), projector_hidden=32, projector_dim=16,
                         predictor_hidden=32, **kw)
    obj.augment = _TwoViews()
    return obj


def test_byol_loss_has_the_gradient_of_ecg_selfsupervised_shared_step() -> None:
    """``CustomBYOL.shared_step``: −2·cos(h1, z2) − 2·cos(h2, z1) with z from the target under no_grad (the sum
    of both directions). Ours is that plus the constant 4: same value minus 4, same gradient."""
    obj = _byol()
    x = torch.randn(6, 12, 100, generator=torch.Generator().manual_seed(2))
    loss, _ = obj({"x": x}, "encoder")
    params = [p for p in obj.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(loss, params)

    def cos(a: Tensor, b: Tensor) -> Tensor:  # CustomBYOL.cosine_similarity
        return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1).mean()

    v1, v2 = x + 0.1, x - 0.1
    h1 = obj.predictor(obj.projector(obj.encoder(v1)))
    h2 = obj.predictor(obj.projector(obj.encoder(v2)))
    with torch.no_grad():
        t2 = obj.target_projector(obj.target_encoder(v2))
        t1 = obj.target_projector(obj.target_encoder(v1))
    ref = -2 * cos(h1, t2) - 2 * cos(h2, t1)
    g_ref = torch.autograd.grad(ref, params)
    assert loss.item() == pytest.approx(ref.item() + 4, abs=1e-5)
    for a, r in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_byol_heads_are_ecg_selfsupervised_mlp() -> None:
    """``custom_byol_bolts.py`` ``MLP``: Linear(in, hidden, bias=False), BatchNorm1d(hidden), ReLU,
    Linear(hidden, out, bias=True); the projector from the encoder's features, the predictor out -> out."""
    obj = _byol()
    for head, (d_in, d_out) in ((obj.projector, (obj.encoder.embed_dim, 16)), (obj.predictor, (16, 16))):
        kinds = [type(m) for m in head]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
        assert head[0].bias is None and head[3].bias is not None
        assert (head[0].in_features, head[0].out_features, head[3].out_features) == (d_in, 32, d_out)


@pytest.mark.parametrize("ema", ["weights", "all"])
def test_byol_ema_follows_byolmaweightupdate(ema: str) -> None:
    """``BYOLMAWeightUpdate.update_weights``: target ← τ·target + (1 − τ)·online for parameters whose name
    contains 'weight' only (``ema = "weights"``); biases keep their initial values. ``"all"``: every parameter."""
    obj = _byol(ema=ema, base_tau=0.9)
    with torch.no_grad():
        for p in [*obj.encoder.parameters(), *obj.projector.parameters()]:
            p.add_(torch.randn_like(p))
    online = dict([*obj.encoder.named_parameters(), *obj.projector.named_parameters()])
    target = {k: v.detach().clone() for k, v in [*obj.target_encoder.named_parameters(),
                                                 *obj.target_projector.named_parameters()]}
    expected = {k: (0.9 * target[k] + 0.1 * online[k].detach()) if ("weight" in k or ema == "all") else target[k]
                for k in target}
    obj.on_step_end(1, 100)
    new = dict([*obj.target_encoder.named_parameters(), *obj.target_projector.named_parameters()])
    assert any("weight" not in k for k in new)  # biases exist, so the two modes differ
    for k in expected:
        torch.testing.assert_close(new[k].detach(), expected[k])


def test_byol_tau_is_byolmaweightupdate_update_tau() -> None:
    """``BYOLMAWeightUpdate.update_tau``: 1 − (1 − τ0)·(cos(π·k/K) + 1)/2 with τ0 = 0.996 (its default)."""
    assert make_objective(BYOL, make(ResNet1d, depth=18, width=8), augment=noise(0.05)).cfg.base_tau == 0.996
    for k in (0, 1, 37, 150, 300):
        assert cosine_tau(0.996, k, 300) == pytest.approx(1 - (1 - 0.996) * (math.cos(math.pi * k / 300) + 1) / 2)


def test_strodthoff_byol_recipe_uses_ess_settings() -> None:
    """recipes/papers/strodthoff/byol.toml: ESS ``BYOLMAWeightUpdate(initial_tau=0.996)``, ``SiameseArm``
    hidden_size 512, ``bolts_config.yaml`` model.out_dim 16, weights-only EMA; weight decay 1e-5 (the config's
    "10e-6", eval()ed) and ESS's default 10 warm-up epochs (its config's warm-up key is misspelled), which are 40
    steps at 4 steps per epoch (folds 1-8, batch 4096; issue 26)."""
    recipe = tomllib.loads((ROOT / "recipes/papers/strodthoff/byol.toml").read_text())
    ssl, train = recipe["ssl"], recipe["train"]
    assert (ssl["base_tau"], ssl["projector_hidden"], ssl["predictor_hidden"], ssl["projector_dim"], ssl["ema"]) == \
        (0.996, 512, 512, 16, "weights")
    assert train["optim"]["encoder"]["weight_decay"] == 1e-5
    steps_per_epoch = 17_400 // train["batch_size"]  # PTB-XL folds 1-8, about 17.4k records; last batch dropped
    assert train["schedule"]["warmup_steps"] == 10 * steps_per_epoch == 40


def test_byol_own_window_takes_one_crop_per_view() -> None:
    """``views = "own_window"``: two independent crops from the dataset, one view of each (ESS: one crop)."""
    obj = _byol(views="own_window")
    assert (obj.cfg.n_segments, obj.cfg.segment_pairing) == (2, "independent")
    assert (_byol().cfg.n_segments, _byol().cfg.segment_pairing) == (1, "adjacent")
    x = torch.randn(6, 2, 12, 100, generator=torch.Generator().manual_seed(3))
    seen: list[Tensor] = []

    class Record(nn.Module):
        def forward(self, v: Tensor) -> Tensor:
            seen.append(v)
            return v

    obj.augment = Record()
    loss, _ = obj({"x": x}, "encoder")
    assert torch.isfinite(loss) and torch.equal(seen[0], x[:, 0]) and torch.equal(seen[1], x[:, 1])
