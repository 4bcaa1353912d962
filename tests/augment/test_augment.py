"""Augmentations: registry coverage and the properties each one promises (seeded synthetic signals)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from scipy.spatial.transform import Rotation

from ecgforge.augment import AUGMENTS, AugmentConfig
from ecgforge.augment.crop import RandomResizedCrop, TimeOut
from ecgforge.augment.leads import RandomLeadMask
from ecgforge.augment.noise import physio_noise
from ecgforge.augment.three_kg_views import INDEPENDENT_LEADS, LEADS_TO_VCG, ThreeKG, limb_leads, rotation_zyx
from ecgforge.registry import BuildContext
from ecgforge.registry import build as registry_build
from tests.components import make

FS_HZ = 100.0


def ecg_like(b: int = 4, t_len: int = 500, seed: int = 0) -> torch.Tensor:
    """(B, 12, T) smooth random signal in mV whose limb leads obey Einthoven/Goldberger."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(t_len) / FS_HZ
    freqs = torch.rand(b, 8, 3, 1, generator=g) * 5 + 0.5
    phases = torch.rand(b, 8, 3, 1, generator=g) * 2 * math.pi
    amps = torch.rand(b, 8, 3, 1, generator=g)
    leads8 = (amps * torch.sin(2 * math.pi * freqs * t + phases)).sum(2)  # (B, 8, T)
    return torch.cat([leads8[:, :2], limb_leads(leads8[:, 0], leads8[:, 1]), leads8[:, 2:]], dim=1)


def _config_classes() -> list[type]:
    return list(AUGMENTS.configs())


def test_union_tags_match_registry_dict() -> None:
    kinds = {cls.model_fields["kind"].default for cls in _config_classes()}
    assert kinds == set(AUGMENTS)
    cfg = TypeAdapter(AugmentConfig).validate_python({"kind": "threekg", "angle_deg": 30})
    assert type(AUGMENTS[cfg.kind]) is type and cfg.angle_deg == 30
    with pytest.raises(ValidationError):
        TypeAdapter(AugmentConfig).validate_python({"kind": "time_out", "min_frac": 0.6, "max_frac": 0.5})
    with pytest.raises(ValidationError):
        TypeAdapter(AugmentConfig).validate_python({"kind": "random_lead_mask", "p_lead": 1.5})


@pytest.fixture
def build():
    """``registry.build`` on the augmentation table, with the run facts given as keywords."""
    return lambda cfg, **facts: registry_build(AUGMENTS, cfg, BuildContext(**facts))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cfg_cls", _config_classes(), ids=lambda c: c.model_fields["kind"].default)
def test_every_default_builds_and_keeps_shape(build, cfg_cls: type, dtype: torch.dtype) -> None:
    module = build(cfg_cls(), fs_hz=FS_HZ, window=500, n_leads=12)
    assert isinstance(module, AUGMENTS[cfg_cls.model_fields["kind"].default])
    x = ecg_like().to(dtype)
    y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x), "default config should change the signal"


@pytest.mark.parametrize("cfg_cls", _config_classes(), ids=lambda c: c.model_fields["kind"].default)
def test_probability_zero_is_identity(build, cfg_cls: type) -> None:
    x = ecg_like()
    assert torch.equal(build(cfg_cls(p=0.0), fs_hz=FS_HZ)(x), x)


def test_probability_applies_per_sample() -> None:
    from ecgforge.augment.noise import GaussianNoise

    torch.manual_seed(1)
    x = torch.zeros(4000, 1, 8)
    changed = (make(GaussianNoise, std_mv=1.0, p=0.3)(x) != 0).any(dim=(1, 2)).float().mean()
    assert abs(changed.item() - 0.3) < 0.03


# --- 3KG -----------------------------------------------------------------------------------------------


def dipolar_ecg(b: int = 4, t_len: int = 500) -> torch.Tensor:
    """12-lead signal whose 8 independent leads lie in the range of pinv(D) (a pure dipole, as 3KG assumes)."""
    d = torch.tensor(LEADS_TO_VCG, dtype=torch.float64)
    vcg = ecg_like(b, t_len)[:, :3].double()
    leads8 = (torch.linalg.pinv(d) @ vcg).float()
    return torch.cat([leads8[:, :2], limb_leads(leads8[:, 0], leads8[:, 1]), leads8[:, 2:]], dim=1)


def test_rotation_matches_scipy_extrinsic_zyx() -> None:
    angles = torch.tensor([[0.3, -0.7, 1.1], [-0.2, 0.5, 0.05]], dtype=torch.float64)
    expected = Rotation.from_euler("zyx", angles.numpy()).as_matrix()
    np.testing.assert_allclose(rotation_zyx(angles).numpy(), expected, atol=1e-12)


def test_threekg_identity_preserves_dipolar_leads() -> None:
    x = dipolar_ecg()
    y = make(ThreeKG, angle_deg=0.0, max_scale=1.0, mask_ratio=0.0)(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
    energy = (x[:, :2] ** 2).sum(-1)
    torch.testing.assert_close((y[:, :2] ** 2).sum(-1), energy, rtol=1e-5, atol=1e-6)


def test_threekg_identity_is_a_projection_on_any_signal() -> None:
    noisy = ecg_like() + 0.3 * torch.randn(4, 12, 500)
    identity = make(ThreeKG, angle_deg=0.0, max_scale=1.0, mask_ratio=0.0)
    once = identity(noisy)
    assert not torch.allclose(once[:, INDEPENDENT_LEADS], noisy[:, INDEPENDENT_LEADS], atol=1e-2)
    torch.testing.assert_close(identity(once), once, atol=1e-5, rtol=1e-5)


def test_threekg_rotation_keeps_vcg_norm_with_unit_scale() -> None:
    x = ecg_like()
    y = make(ThreeKG, angle_deg=45.0, max_scale=1.0, mask_ratio=0.0)(x)
    d = torch.tensor(LEADS_TO_VCG)
    norm_in = (d @ x[:, INDEPENDENT_LEADS]).norm(dim=1)
    norm_out = (d @ y[:, INDEPENDENT_LEADS]).norm(dim=1)
    torch.testing.assert_close(norm_out, norm_in, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(y, x, atol=1e-2)


def test_threekg_scale_stretches_vcg_within_bounds() -> None:
    x = ecg_like()
    y = make(ThreeKG, angle_deg=0.0, max_scale=1.5, mask_ratio=0.0)(x)
    d = torch.tensor(LEADS_TO_VCG)
    ratio = (d @ y[:, INDEPENDENT_LEADS]).norm(dim=-1) / (d @ x[:, INDEPENDENT_LEADS]).norm(dim=-1)  # (B, 3)
    assert (ratio >= 1 - 1e-5).all() and (ratio <= 1.5 + 1e-5).all()
    assert ratio.std() > 0.01


def _limb_residuals(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lead_i, lead_ii, lead_iii, avr, avl, avf = y[:, :6].unbind(1)
    return lead_iii - (lead_ii - lead_i), avr + avl + avf


def test_threekg_limb_leads_always_derived() -> None:
    x = ecg_like() + 0.3 * torch.randn(4, 12, 500)  # limb leads of the input deliberately inconsistent
    iii_res, sum_res = _limb_residuals(x)
    assert iii_res.abs().max() > 0.1 and sum_res.abs().max() > 0.1
    iii_res, sum_res = _limb_residuals(make(ThreeKG, mask_ratio=0.0)(x))
    assert iii_res.abs().max() < 1e-6 and sum_res.abs().max() < 1e-6
    # With the temporal mask the relations hold wherever none of the six limb leads is masked.
    y = make(ThreeKG, mask_ratio=0.5)(x)
    unmasked = (y[:, :6] != 0).all(dim=1)
    assert unmasked.any()
    iii_res, sum_res = _limb_residuals(y)
    assert iii_res[unmasked].abs().max() < 1e-6 and sum_res[unmasked].abs().max() < 1e-6


@pytest.mark.parametrize("t_len", [500, 333])
def test_threekg_mask_zeroes_contiguous_fraction_per_lead(t_len: int) -> None:
    module = make(ThreeKG, angle_deg=0.0, max_scale=1.0, mask_ratio=0.5)
    mask = module.sample_time_mask(64, t_len, "cpu")
    assert mask.shape == (64, 12, t_len)
    assert (mask.sum(-1) == math.floor(0.5 * t_len)).all()
    # Contiguous on the circle: exactly one off->on transition per lead, wrap-around included.
    starts = (mask & ~mask.roll(1, dims=-1)).sum(-1)
    assert (starts == 1).all()
    assert (mask[..., 0] & mask[..., -1]).any(), "some span should wrap past the end"

    x = dipolar_ecg(8, t_len) + 5.0  # offset: no sample is zero by chance
    torch.manual_seed(3)
    y = module(x)
    torch.manual_seed(3)
    module.sample_transform(8, "cpu")  # same draw order as forward
    expected = module.sample_time_mask(8, t_len, "cpu")
    assert torch.equal(y == 0, expected)


# --- random lead masking -------------------------------------------------------------------------------


def test_random_lead_mask_zeroes_exactly_the_chosen_leads() -> None:
    x = ecg_like(16) + 1.0
    module = make(RandomLeadMask, p_lead=0.5)
    torch.manual_seed(7)
    mask = module.sample_mask(16, "cpu")
    torch.manual_seed(7)
    y = module(x)
    assert mask.dtype == torch.bool and mask.shape == (16, 12)
    assert (y[mask] == 0).all()
    assert torch.equal(y[~mask], x[~mask])  # bit-identical


def test_random_lead_mask_rate_and_keep_one() -> None:
    mask = make(RandomLeadMask, p_lead=0.5).sample_mask(20000, "cpu")
    rate = mask.float().mean(0)
    assert ((rate - 0.5).abs() < 0.02).all()
    all_off = make(RandomLeadMask, p_lead=1.0, keep_at_least_one=True).sample_mask(2000, "cpu")
    assert (all_off.sum(1) == 11).all()
    kept = (~all_off).float().mean(0)  # the kept lead is uniform over the 12
    assert ((kept - 1 / 12).abs() < 0.03).all()


# --- physiological noise: tests/augment/test_physio_noise.py ----------------------------------------------


# --- crops and amplitude -------------------------------------------------------------------------------


def test_random_resized_crop_is_linear_time_dilation() -> None:
    t_len = 500
    ramp = torch.arange(t_len, dtype=torch.float32).expand(6, 12, t_len).clone()
    y = make(RandomResizedCrop, min_scale=0.5, max_scale=0.5)(ramp)
    assert y.shape == ramp.shape
    slope = y[..., 1:] - y[..., :-1]
    torch.testing.assert_close(slope, torch.full_like(slope, 0.5), atol=1e-3, rtol=0)
    assert (y[..., 0] >= 0).all() and (y[..., -1] <= t_len - 1).all()
    assert torch.equal(make(RandomResizedCrop, min_scale=1.0, max_scale=1.0)(ramp), ramp)


@pytest.mark.parametrize("frac", [0.1, 0.29, 0.5])
def test_time_out_zeroes_the_right_fraction(frac: float) -> None:
    x = ecg_like(32) + 5.0
    y = make(TimeOut, min_frac=frac, max_frac=frac)(x)
    zero = y == 0
    assert y.shape == x.shape
    assert (zero.all(dim=1) == zero.any(dim=1)).all(), "same span in every lead"
    per_sample = zero[:, 0]
    assert (per_sample.sum(-1) == round(frac * 500)).all()
    assert ((per_sample & ~per_sample.roll(1, -1)).sum(-1) == 1).all(), "one contiguous span"
    assert torch.equal(y[~zero], x[~zero])


def test_amplitude_gains_within_range() -> None:
    from ecgforge.augment.amplitude import AmplitudeScale, ChannelResize

    x = torch.ones(2000, 12, 4)
    per_sample = make(AmplitudeScale, min_scale=0.5, max_scale=2.0)(x)
    assert (per_sample == per_sample[:, :1, :1]).all()
    gains = per_sample[:, 0, 0]
    assert gains.min() >= 0.5 and gains.max() <= 2.0
    assert abs(gains.log().mean().item()) < 0.05  # log-uniform: symmetric around 1
    per_lead = make(ChannelResize, min_scale=0.5, max_scale=2.0)(x)
    assert (per_lead.std(dim=1) > 0).all() and per_lead.min() >= 0.5 and per_lead.max() <= 2.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_and_physio_noise_device_independent(build) -> None:
    x = ecg_like(8, 1000)
    for cls in _config_classes():
        y = build(cls(), fs_hz=FS_HZ)(x.cuda())
        assert y.is_cuda and y.shape == x.shape and torch.isfinite(y).all(), cls
    cpu = physio_noise(x, FS_HZ, 4, generator=torch.Generator().manual_seed(0))
    gpu = physio_noise(x.cuda(), FS_HZ, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
