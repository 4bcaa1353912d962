"""Adversarial masking pinned to the reference code on fixed inputs, and its mask metrics on hand-built masks.

References (fetched with ``fetch github:jessica-bo/advmask_ecg`` and ``github:YugeTen/adios``): each test
transcribes the reference computation in plain torch and compares it with ecgforge's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ecgforge.encoders.resnet1d import ResNet1d
from ecgforge.errors import UserError
from ecgforge.objectives.adv_mask import (
    AdvMask,
    binarise,
    entropy_across_masks,
    mask_coverage,
    qrs_share,
)
from ecgforge.objectives.losses import nt_xent, sparsity_penalty
from tests.components import make as component
from tests.objectives.test_objectives import make_objective


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(12, 16, 9, 2), nn.ReLU(), nn.Conv1d(16, 16, 9, 2))
        self.embed_dim = 16

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).mean(-1)


def make(n_masks: int = 1, activation: str = "auto", **kw: object) -> AdvMask:
    torch.manual_seed(0)
    masker = {"kind": "unet1d", "n_masks": n_masks, "width": 4, "activation": activation}
    return make_objective(AdvMask, Tiny(), masker=masker, projector_hidden=16, projector_dim=8, **kw)


def signals(b: int = 6, t: int = 250, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(t) / 100.0
    rate = 1.0 + torch.rand(b, 1, 1, generator=g)
    return torch.randn(b, 12, 1, generator=g) * torch.sin(2 * math.pi * rate * time) ** 15 + 0.05 * torch.randn(
        b, 12, t, generator=g)


# ------------------------------------------------------------------------------ jessica-bo/advmask_ecg


def authors_simclr_loss_fn(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """advmask_ecg ``utils/losses.py``, ``simclr_loss_fn`` (positive_pairing 'SimCLR' or 'CMSC')."""
    n1, n2 = z1.norm(dim=1).unsqueeze(0), z2.norm(dim=1).unsqueeze(0)
    sim = torch.exp(z1 @ z2.T / ((n1.T @ n2) * temperature))
    s11 = torch.exp(z1 @ z1.T / ((n1.T @ n1) * temperature))
    s22 = torch.exp(z2 @ z2.T / ((n2.T @ n2) * temperature))
    off1 = torch.triu(s11, 1) + torch.tril(s11, -1)
    off2 = torch.triu(s22, 1) + torch.tril(s22, -1)
    d1 = sim.sum(1) + off1.sum(1)
    d2 = sim.sum(0) + off2.sum(0)
    diag = torch.diag(sim)
    return (-torch.mean(torch.log(diag / d1)) - torch.mean(torch.log(diag / d2))) / 2


def test_nt_xent_equals_the_authors_simclr_loss_fn() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g)
    assert torch.allclose(nt_xent(z1, z2, 0.1), authors_simclr_loss_fn(z1, z2, 0.1), atol=1e-5)


@pytest.mark.parametrize("ratio", [0.8, 1.0])
def test_sparsity_penalty_equals_the_authors_mask_forward(ratio: float) -> None:
    """advmask_ecg ``model/advmask_model.py``, ``AdvMaskModel.mask_forward``:
    ``alpha * (1 / (sin(ratio * masks.sum(-1) / T * pi) + 1e-10)).mean(0).sum(0)`` on the soft masks."""
    masks = torch.rand(5, 3, 40, generator=torch.Generator().manual_seed(2))
    alpha = 0.5
    ref = alpha * (1 / (torch.sin(ratio * (masks.sum([-1]) / masks.shape[-1]) * np.pi) + 1e-10)).mean(0).sum(0)
    assert torch.allclose(alpha * sparsity_penalty(masks, ratio), ref, rtol=1e-5)


def test_binarisation_equals_the_authors_encoder_forward() -> None:
    """advmask_ecg ``AdvMaskModel.encoder_forward``: ``1 / (1 + exp(-binarization * (mask - 0.5)))`` with
    ``--binarization`` 50, as of commits 33e5be3 ("tune training details") and 5b49bfe (the newest); the earlier
    1c6f0ea applied ``(masks > 1 / nmasks).float()``, a hard threshold that passes no gradient to the masker
    through the applied mask. We follow the newest code."""
    m = torch.linspace(0, 1, 101)
    assert torch.allclose(binarise(m, 50.0), 1.0 / (1 + torch.exp(-50 * (m - 0.5))), atol=1e-6)
    assert torch.equal(binarise(m, 0.0), m)  # 0 = soft application (ADIOS)


def test_per_lead_mode_applies_mask_k_to_lead_k() -> None:
    """advmask_ecg ``encoder_forward`` with ``nmasks == 12``: sigmoid masks, ``x * (1 - sigmoid(b (masks - .5)))``
    element-wise, mask k on lead k."""
    obj = make(n_masks=12, activation="sigmoid", mask_mode="per_lead")
    x = signals(3)
    masks = torch.rand(3, 12, 250, generator=torch.Generator().manual_seed(3))
    ref = x * (1 - 1.0 / (1 + torch.exp(-50 * (masks - 0.5))))
    assert torch.allclose(obj.apply_mask(x, masks), ref, atol=1e-6)
    with pytest.raises(UserError, match="per_lead"):
        make(n_masks=3, mask_mode="per_lead")


def test_authors_update_leaves_one_mask_only_the_penalty_gradient() -> None:
    """advmask_ecg ``AdvMaskModel.training_step``: the encoder phase back-propagates +NT-Xent into the masker
    (its masks are not detached, ``opt_m.zero_grad`` only follows ``opt_m.step``), the masker phase then adds
    −NT-Xent + α·penalty. With one mask both NT-Xent terms are the same number: only the penalty is learned."""
    obj = make(n_masks=1, authors_update=True, sparsity_alpha=0.1, binarization=50.0)
    assert obj.cfg.phases == ("encoder", "masker")
    x = signals()
    loss, _ = obj({"x": x}, "masker")
    grads = torch.autograd.grad(loss, list(obj.masker.parameters()))
    penalty = 0.1 * sparsity_penalty(obj.masker(x), 1.0)
    ref = torch.autograd.grad(penalty, list(obj.masker.parameters()))
    for g, r in zip(grads, ref, strict=True):
        assert torch.allclose(g, r, atol=1e-5 * max(1.0, float(r.abs().max())))
    plain = make(n_masks=1, sparsity_alpha=0.1)  # ecgforge's update: the adversarial term survives
    loss, _ = plain({"x": x}, "masker")
    g_plain = torch.autograd.grad(loss, list(plain.masker.parameters()))
    assert any(not torch.allclose(g, r, atol=1e-4) for g, r in zip(g_plain, ref, strict=True))


def test_cmsc_pairing_contrasts_the_two_segments_and_masks_the_second() -> None:
    """advmask_ecg ``data/dataset_wrapper.py`` (positive_pairing 'CMSC'): view 1 is the first half of the
    record, view 2 (the one the masker sees and masks) the second half."""
    obj = make(n_masks=1, positive_pairing="cmsc")
    assert obj.cfg.n_segments == 2
    seg = torch.stack([signals(4, seed=0), signals(4, seed=1)], dim=1)  # (B, 2, leads, T)
    v1, v2 = obj.views(seg)
    assert torch.equal(v1, seg[:, 0]) and torch.equal(v2, seg[:, 1])
    loss, logs = obj({"x": seg}, "masker")
    assert torch.isfinite(loss) and "coverage_m0" in logs
    with pytest.raises(UserError, match="2 segments"):
        obj({"x": signals(4)}, "masker")


# ---------------------------------------------------------------------------------------- YugeTen/adios


def adios_simclr_loss_func(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """adios ``src/losses/simclr.py``, ``simclr_loss_func`` (pos_only False, no extra positives)."""
    b = z1.size(0)
    z = torch.nn.functional.normalize(torch.cat((z1, z2)), dim=-1)
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    pos = torch.zeros(2 * b, 2 * b, dtype=torch.bool)
    pos[:, b:].fill_diagonal_(True)
    pos[b:, :].fill_diagonal_(True)
    logit_mask = torch.ones_like(pos).fill_diagonal_(False)
    log_prob = logits - torch.log((torch.exp(logits) * logit_mask).sum(1, keepdim=True))
    return -((pos * log_prob).sum(1) / pos.sum(1)).mean()


def test_each_mode_soft_equals_adios_mask_forward() -> None:
    """adios ``src/methods/simclr_adios.py``, ``SimCLR_ADIOS.mask_forward``: every mask applied softly in turn,
    ``x * (1 - mask)``, one SimCLR loss each, summed; minus α_sparsity·Σ_k mean_b 1/(sin(π·mean m_k) + 1e-10),
    plus α_entropy·Entropy(summed masks) (``src/utils/metrics.py``, ``Entropy``: Σ softmax·log_softmax);
    the masker minimises the negative of that."""
    obj = make(n_masks=3, mask_mode="each", binarization=0.0, sparsity_alpha=0.2, entropy_alpha=0.3).eval()
    x = signals()
    loss, _ = obj({"x": x}, "masker")
    with torch.no_grad():
        masks = obj.masker(x)
        z1 = obj.projector(obj.encoder(x))
        similarity = torch.tensor(0.0)
        summed = []
        for mask in torch.chunk(masks, 3, dim=1):
            z2 = obj.projector(obj.encoder(x * (1 - mask)))
            term = adios_simclr_loss_func(z1, z2, 0.1)
            sm = mask.sum([-1, -2]) / masks.shape[-1]  # (B,): ADIOS's sum over the image / img_size**2
            summed.append(sm)
            term -= 0.2 * (1 / (torch.sin(sm * np.pi) + 1e-10)).mean(0).sum(0)
            similarity = similarity + term
        s = torch.stack(summed, dim=1)
        similarity += 0.3 * (torch.softmax(s, dim=1) * torch.log_softmax(s, dim=1)).sum()
    assert torch.allclose(loss.detach(), -similarity, rtol=1e-4, atol=1e-4)
    assert torch.allclose(entropy_across_masks(masks), -(torch.softmax(s, 1) * torch.log_softmax(s, 1)).sum())


# --------------------------------------------------------------------------------------------- metrics


def test_coverage_and_qrs_share_on_hand_built_masks() -> None:
    applied = torch.zeros(2, 3, 100)
    applied[:, 0, :50] = 1.0   # hides half of every window
    applied[:, 1, 10:20] = 1.0  # hides exactly the QRS interval
    qrs = torch.zeros(2, 100, dtype=torch.bool)
    qrs[:, 10:20] = True
    qrs[:, 60:70] = True
    assert torch.allclose(mask_coverage(applied), torch.tensor([0.5, 0.1, 0.0]))
    # mask 0 hides 50 samples of which 10 are QRS; mask 1 hides only QRS; mask 2 hides nothing -> 0.
    assert torch.allclose(qrs_share(applied, qrs), torch.tensor([0.2, 1.0, 0.0]))
    soft = applied * 0.5  # a half occlusion counts half
    assert torch.allclose(mask_coverage(soft), torch.tensor([0.25, 0.05, 0.0]))
    assert torch.allclose(qrs_share(soft, qrs), torch.tensor([0.2, 1.0, 0.0]))


def test_masker_logs_per_mask_coverage_of_the_binarised_masks() -> None:
    obj = make(n_masks=3)
    x = signals()
    _, logs = obj({"x": x}, "masker")
    with torch.no_grad():
        applied = binarise(obj.masker(x), 50.0)
    for k in range(3):
        assert torch.isclose(logs[f"coverage_m{k}"], applied[:, k].mean(), atol=1e-6)
        assert 0.0 <= float(logs[f"qrs_share_m{k}"]) <= 1.0
    assert 0.05 < float(logs["qrs_share_signal"]) < 0.6  # 1-2 beats/s, ±50 ms each, in 2.5 s windows


# --------------------------------------------------------------------------------------------- encoder


def test_authors_resnet18_variant_has_their_parameter_count() -> None:
    """advmask_ecg ``model/backbones/resnet.py``, ``resnet1d18(num_lead=12, embedding_dim=512)``: stem
    Conv1d(12, 64, 7, bias=False) + BN, BasicBlocks of kernel-3 convs without bias (1x1 conv + BN shortcut
    where the shape changes), ``fc = Linear(512, 512)``. Count its parameters from that structure."""
    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k

    def bn(c: int) -> int:
        return 2 * c

    n = conv(12, 64, 7) + bn(64)
    c_in = 64
    for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for j in range(2):
            s = stride if j == 0 else 1
            n += conv(c_in, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if s != 1 or c_in != planes:
                n += conv(c_in, planes, 1) + bn(planes)
            c_in = planes
    n += 512 * 512 + 512
    ours = component(ResNet1d, depth=18, width=64, kernel_size=3, stem_kernel=7, fc=True)
    assert sum(p.numel() for p in ours.parameters()) == n
    assert ours(torch.randn(2, 12, 500)).shape == (2, 512)
    default = component(ResNet1d, depth=18, width=64)
    assert default.stem[0].kernel_size == (15,) and isinstance(default.fc, nn.Identity)


@pytest.mark.slow  # ~10-40 s on a busy 2-core CPU
def test_shipped_setting_keeps_the_applied_mask_partial_while_training() -> None:
    """recipes/ptbxl_cpu/adv_mask.toml's setting (one sigmoid mask, binarised, penalty on the applied mask,
    α 0.1), both phases alternating for 40 steps on ECG-like signals: the mask that reaches the encoder
    neither vanishes nor hides everything."""
    obj = make(n_masks=1, sparsity_alpha=0.1, binarization=50.0, penalty_on="applied")
    opts = {g: torch.optim.Adam(ps, lr=1e-3) for g, ps in obj.param_groups().items()}
    x = signals(32)
    coverage = []
    for step in range(40):
        batch = {"x": x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(step))}
        for phase in obj.cfg.phases:
            loss, logs = obj(batch, phase)
            opts[phase].zero_grad()
            loss.backward()
            opts[phase].step()
            if phase == "masker":
                coverage.append(float(logs["coverage_m0"]))
    assert all(math.isfinite(c) for c in coverage)
    assert 0.05 <= np.mean(coverage[-10:]) <= 0.9
