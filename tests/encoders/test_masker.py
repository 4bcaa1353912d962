"""Adversarial masker (Bo et al. 2022): mask ranges, partition across masks, any length, gradients, registry."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from ecgforge.maskers import MASKERS, MaskerConfig
from ecgforge.maskers.unet1d import UNet1d, UNet1dConfig
from ecgforge.registry import BuildContext, build
from tests.components import make


@pytest.mark.parametrize("t", [500, 997, 1251])
def test_single_mask_in_unit_interval_any_length(t: int) -> None:
    masker = make(UNet1d, n_masks=1, width=8)
    m = masker(torch.randn(2, 12, t))
    assert m.shape == (2, 1, t)
    assert (m >= 0).all() and (m <= 1).all()


@pytest.mark.parametrize("n_masks", [2, 3])
def test_multiple_masks_partition_each_step(n_masks: int) -> None:
    masker = make(UNet1d, n_masks=n_masks, width=8, strides=[1, 5, 5])
    m = masker(torch.randn(2, 12, 333))
    assert m.shape == (2, n_masks, 333)
    assert (m >= 0).all() and (m <= 1).all()
    assert torch.allclose(m.sum(dim=1), torch.ones(2, 333), atol=1e-5)


def test_masks_vary_over_time_and_depend_on_input() -> None:
    """A masker that ignores its input (or outputs a constant) could not be trained adversarially."""
    masker = make(UNet1d, n_masks=2, width=8, strides=[1, 5, 5]).eval()
    x = torch.randn(2, 12, 250)
    m = masker(x)
    assert m.std(dim=-1).min() > 0
    assert not torch.allclose(masker(x.flip(-1)), m)


def test_gradient_reaches_masker_weights_and_input() -> None:
    masker = make(UNet1d, n_masks=2, width=8, depth=2, strides=[2, 5])
    x = torch.randn(2, 12, 301, requires_grad=True)
    m = masker(x)
    assert m.shape == (2, 2, 301)
    (m[:, 0] * x[:, 0]).sum().backward()  # the sort of loss the masking objective back-propagates
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in masker.parameters())


def test_paper_setting_size() -> None:
    with torch.device("meta"):
        paper = make(UNet1d, width=512, depth=1, strides=[1, 5, 5, 5])
    n = sum(p.numel() for p in paper.parameters())
    # Authors: 247M including an unused fifth stage (~94M); the stages their forward uses come to ~152M.
    assert 140e6 < n < 165e6
    small = sum(p.numel() for p in make(UNet1d).parameters())
    assert small < 2e6


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        UNet1dConfig(kernel_size=4)
    with pytest.raises(ValidationError):
        UNet1dConfig(strides=[1, 0])
    with pytest.raises(ValidationError):
        UNet1dConfig(n_masks=0)


def test_registry_builds_default_config() -> None:
    cfg = TypeAdapter(MaskerConfig).validate_python({"kind": "unet1d"})
    masker = build(MASKERS, cfg, BuildContext(fs_hz=500.0, window=5000, n_leads=12))
    assert isinstance(masker, MASKERS["unet1d"])
    assert masker(torch.randn(1, 12, 777)).shape == (1, 1, 777)
