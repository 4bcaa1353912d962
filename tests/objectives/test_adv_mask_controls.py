"""Issue 26: the random-mask control, the bounded sparsity penalty and the encoder warm-up of adv_mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgforge.maskers import MASKERS
from ecgforge.maskers.random_mask import RandomMask, RandomMaskConfig, mask_statistics
from ecgforge.objectives import OBJECTIVES
from ecgforge.objectives.adv_mask import AdvMask, AdvMaskConfig, bounded_sparsity_penalty
from ecgforge.objectives.losses import sparsity_penalty
from ecgforge.registry import BuildContext, build
from tests.objectives.test_adv_mask_reference import Tiny
from tests.objectives.test_objectives import make_objective


def adv(n_masks: int = 1, **kw: object) -> AdvMask:
    """adv_mask with a tiny encoder and a 4-wide U-Net masker, built as the trainer builds it."""
    torch.manual_seed(0)
    masker = {"kind": "unet1d", "n_masks": n_masks, "width": 4}
    return make_objective(AdvMask, Tiny(), masker=masker, projector_hidden=16, projector_dim=8, **kw)


def random_masker(**kw: object) -> RandomMask:
    return RandomMask(RandomMaskConfig(**kw), BuildContext(fs_hz=100.0))


# ------------------------------------------------------------------------------------------- random_mask


@pytest.mark.parametrize("coverage", [0.05, 0.2, 0.6])
def test_random_mask_hides_exactly_the_asked_coverage_of_every_window(coverage: float) -> None:
    torch.manual_seed(0)
    m = random_masker(n_masks=3, coverage=coverage, span_s=0.1)(torch.zeros(16, 12, 250))
    assert m.shape == (16, 3, 250)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(m.sum(-1) == round(coverage * 250))


def test_random_mask_spans_follow_the_asked_mean_length() -> None:
    """Geometric spans of mean 0.1 s and 0.5 s at 100 Hz, 20 % of 20 s windows: the measured mean run lengths
    are near 0.1 s and 0.5 s (touching spans merge into longer runs and the last span is trimmed, so roughly)."""
    torch.manual_seed(0)
    x = torch.zeros(64, 12, 2000)
    short = mask_statistics(random_masker(coverage=0.2, span_s=0.1)(x), 100.0)
    long = mask_statistics(random_masker(coverage=0.2, span_s=0.5)(x), 100.0)
    assert short["coverage"] == [pytest.approx(0.2)]
    assert 0.09 <= short["span_s"][0] <= 0.13
    assert 0.42 <= long["span_s"][0] <= 0.58


def test_random_mask_fixed_spans_have_the_asked_length() -> None:
    """Fixed 0.2 s spans hiding 8 % of 250 samples = 20 samples: one span, a single run of 20 samples."""
    torch.manual_seed(0)
    m = random_masker(coverage=0.08, span_s=0.2, span_dist="fixed")(torch.zeros(32, 12, 250))
    assert mask_statistics(m, 100.0)["span_s"] == [pytest.approx(0.2)]


def test_mask_statistics_on_a_hand_built_mask() -> None:
    m = torch.zeros(1, 2, 10)
    m[0, 0, 1:3] = 1  # a run of 2
    m[0, 0, 6:10] = 1  # a run of 4, to the window's end
    m[0, 1, 0] = 0.8  # one run of 1 (above 0.5) and half of nothing
    stats = mask_statistics(m, fs_hz=10.0)
    assert stats["coverage"] == pytest.approx([0.6, 0.08])
    assert stats["span_s"] == pytest.approx([0.3, 0.1])


def test_random_mask_ignores_the_input_and_has_no_parameters() -> None:
    masker = random_masker(n_masks=2, coverage=0.3)
    assert not list(masker.parameters())
    zeros, noise = torch.zeros(4, 12, 100), torch.randn(4, 12, 100)
    torch.manual_seed(1)
    a = masker(zeros)
    torch.manual_seed(1)
    b = masker(noise)
    assert torch.equal(a, b)


def test_adv_mask_with_random_masks_is_built_from_a_config_and_trains_only_the_encoder() -> None:
    """The control through the registry: adv_mask with ssl.masker = random_mask has one phase, the encoder's;
    its masked view hides the asked coverage."""
    cfg = AdvMaskConfig(masker={"kind": "random_mask", "n_masks": 3, "coverage": 0.25, "span_s": 0.1},
                        projector_hidden=16, projector_dim=8)
    assert "random_mask" in MASKERS
    obj = build(OBJECTIVES, cfg, BuildContext(encoder=Tiny(), fs_hz=100.0, window=250, n_leads=12))
    assert cfg.phases == ("encoder",)
    assert set(obj.param_groups()["masker"]) == set()
    torch.manual_seed(0)
    loss, logs = obj({"x": torch.randn(8, 12, 250)}, "encoder")
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert float(logs["coverage_m0"]) == pytest.approx(round(0.25 * 250) / 250)
    x = torch.ones(8, 12, 250)
    masked = obj.apply_mask(x, obj.masker(x))
    assert torch.allclose((masked < 0.5).float().mean(dim=(1, 2)), torch.full((8,), 0.248), atol=1e-6)


# -------------------------------------------------------------------------------------- bounded penalty


def test_bounded_penalty_has_no_spike_at_mean_0_or_1() -> None:
    """The authors' penalty is 1e10 per mask at mean 0; the bounded one at most 1/eps, and finite gradients."""
    for value in (0.0, 1.0):
        masks = torch.full((4, 3, 50), value, requires_grad=True)
        p = bounded_sparsity_penalty(masks, 1.0, eps=0.1)
        p.backward()
        assert float(p) == pytest.approx(3 * 10.0, rel=1e-5)
        assert torch.isfinite(masks.grad).all()
    assert float(sparsity_penalty(torch.zeros(4, 3, 50))) > 1e9  # the spike it removes


def test_bounded_penalty_has_the_authors_minimum_and_pushes_masks_inwards() -> None:
    grid = torch.linspace(0, 1, 101)
    values = torch.stack([bounded_sparsity_penalty(torch.full((1, 1, 10), float(g)), 1.0, 0.1) for g in grid])
    assert float(grid[values.argmin()]) == pytest.approx(0.5)
    assert float(values.min()) == pytest.approx(1 / 1.1)
    for value, sign in ((0.05, -1.0), (0.95, 1.0)):  # descending the penalty moves the mean towards 0.5
        m = torch.full((1, 1, 10), value, requires_grad=True)
        bounded_sparsity_penalty(m, 1.0, 0.1).backward()
        assert float(torch.sign(m.grad.sum())) == sign


def test_objective_uses_the_bounded_penalty_when_asked() -> None:
    obj = adv(n_masks=3, penalty_form="bounded", penalty_eps=0.1, penalty_on="applied")
    _, logs = obj({"x": torch.randn(6, 12, 250)}, "masker")
    assert 3 / 1.1 - 1e-4 <= float(logs["penalty"]) <= 30.0


# ------------------------------------------------------------------------------------------- warm-up


def test_warmup_trains_the_encoder_on_unmasked_views_before_the_masker_starts() -> None:
    obj = adv(masker_warmup_steps=2)
    opts = {g: torch.optim.Adam(ps, lr=1e-2) for g, ps in obj.param_groups().items()}
    before = [p.detach().clone() for p in obj.masker.parameters()]
    x = torch.randn(8, 12, 250)
    masker_losses = []
    for _ in range(3):
        for phase in obj.cfg.phases:
            loss, logs = obj({"x": x}, phase)
            opts[phase].zero_grad()
            loss.backward()
            opts[phase].step()
            if phase == "masker":
                masker_losses.append(float(loss))
                if len(masker_losses) <= 2:
                    assert all(torch.equal(a, b) for a, b in zip(before, obj.masker.parameters(), strict=True))
            else:
                assert (float(logs["mask_mean"]) == 0.0) == (len(masker_losses) <= 2)
    assert masker_losses[:2] == [0.0, 0.0] and masker_losses[2] != 0.0
    assert not all(torch.equal(a, b) for a, b in zip(before, obj.masker.parameters(), strict=True))
    assert int(obj.encoder_steps) == 3


def test_warmup_is_off_in_eval_mode_and_by_default() -> None:
    obj = adv(masker_warmup_steps=5)
    assert obj.warming_up()
    assert not obj.eval().warming_up()
    assert not adv().warming_up()
    assert np.isclose(AdvMaskConfig().penalty_eps, 0.1)


def test_own_window_pairing_takes_two_independent_crops_and_masks_the_second() -> None:
    """positive_pairing = 'own_window' (3KG's views): the dataset cuts two independent crops (segment_pairing
    'independent'); view 1 is the first crop, view 2 the second, masked."""
    obj = adv(positive_pairing="own_window")
    assert (obj.cfg.n_segments, obj.cfg.segment_pairing) == (2, "independent")
    x = torch.randn(4, 2, 12, 250)
    v1, v2 = obj.views(x)
    assert torch.equal(v1, x[:, 0]) and torch.equal(v2, x[:, 1])
    loss, _ = obj({"x": x}, "encoder")
    assert math.isfinite(float(loss.detach()))
