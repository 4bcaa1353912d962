"""Physiological noise: ecgforge's generators against ecg-selfsupervised's (hhi-aml/ecg-selfsupervised,
``clinical_ts/timeseries_transformations.py``: ``Tnoise_baseline_wander``, ``Tnoise_electromyographic``,
``noise_powerline``, ``Tnoise_baseline_shift``, called by ``TBaselineWander``, ``TEMNoise``, ``TPowerlineNoise``,
``TBaselineShift`` with ``eval.py``'s ``t_params_by_level``).

The expected mean squares are derived from those formulas in ``ess_noise_reference.py`` (which also holds a
numpy transcription of each); every check uses fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, kstest

from ecgforge.augment.noise import (
    PHYSIO_NOISE_LEVELS_MV,
    baseline_shift_noise,
    baseline_wander_noise,
    electrode_motion_noise,
    physio_noise,
    powerline_noise,
)
from ecgforge.registry import BuildContext
from tests.augment.ess_noise_reference import ESS_LEVELS, EXPECTED_MS, REFERENCE, reference_draws
from tests.components import make

OURS = {
    "baseline_wander": baseline_wander_noise,
    "electrode_motion": electrode_motion_noise,
    "powerline": powerline_noise,
    "baseline_shift": baseline_shift_noise,
}
INDEX = {name: idx for name, (_, idx) in REFERENCE.items()}


def _draw(name: str, b: int, n_leads: int, t_len: int, fs: float, max_mv: float, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return OURS[name]((b, n_leads, t_len), fs, max_mv, generator=gen).double().numpy()


def test_levels_are_the_reference_table() -> None:
    """ecg-selfsupervised ``eval.py``, ``t_params_by_level`` (bw_cmax, em_cmax, pl_cmax, bs_cmax)."""
    assert PHYSIO_NOISE_LEVELS_MV == ESS_LEVELS


@pytest.mark.parametrize("fs", [100.0, 500.0])
@pytest.mark.parametrize("level", sorted(ESS_LEVELS))
@pytest.mark.parametrize("name", sorted(OURS))
def test_mean_square_matches_reference_formula(name: str, level: int, fs: float) -> None:
    """Over many 2.5 s, 4-lead windows, E[x²] equals the reference formula's (``ess_noise_reference.ms_*``,
    exact expectations of the ESS generators listed in the module docstring) within 4.5 standard errors."""
    t_len = int(2.5 * fs)
    max_mv = ESS_LEVELS[level][INDEX[name]]
    draws = 4000 if fs == 100.0 else 3000
    ms = (_draw(name, draws, 4, t_len, fs, max_mv, seed=10 * level + int(fs)) ** 2).mean(axis=(1, 2))
    expected = EXPECTED_MS[name](max_mv, t_len, fs)
    se = ms.std(ddof=1) / math.sqrt(draws)
    assert abs(ms.mean() - expected) < 4.5 * se, (ms.mean(), expected, se)
    assert se < 0.08 * expected  # the check has power: a 1.5x error in RMS could not pass


def test_baseline_shift_mean_square_over_several_segments() -> None:
    """10 s at 500 Hz: up to int(0.3·10 + 0.5) = 3 overlapping segments (ESS ``Tnoise_baseline_shift``)."""
    fs, t_len, max_mv = 500.0, 5000, ESS_LEVELS[3][3]
    ms = (_draw("baseline_shift", 800, 4, t_len, fs, max_mv, seed=5) ** 2).mean(axis=(1, 2))
    expected = EXPECTED_MS["baseline_shift"](max_mv, t_len, fs)
    assert abs(ms.mean() - expected) < 4.5 * ms.std(ddof=1) / math.sqrt(len(ms))


@pytest.mark.parametrize("fs", [100.0, 500.0])
@pytest.mark.parametrize("name", sorted(OURS))
def test_window_rms_distribution_matches_transcription(name: str, fs: float) -> None:
    """The law of the per-window RMS (lead I, and the mean over leads) equals that of the numpy transcription
    of the ESS generator (two-sample Kolmogorov-Smirnov, level 3, 2.5 s windows): same random structure, not
    only the same second moment."""
    t_len = int(2.5 * fs)
    ref = np.sqrt((reference_draws(name, 3, t_len, fs, 800, seed=1) ** 2).mean(-1))
    ours = np.sqrt((_draw(name, 800, 12, t_len, fs, ESS_LEVELS[3][INDEX[name]], seed=2) ** 2).mean(-1))
    assert ks_2samp(ref[:, 0], ours[:, 0]).pvalue > 1e-3
    assert ks_2samp(ref.mean(1), ours.mean(1)).pvalue > 1e-3


# --- structure -----------------------------------------------------------------------------------------


def test_baseline_wander_is_one_waveform_of_the_reference_cosines() -> None:
    """Equal on every lead; exactly a combination of cos/sin at k·0.01 Hz, k = 0..49 (the k = 0 term is the
    constant a_0·cos φ_0 of ``Tnoise_baseline_wander``'s ``torch.arange(K)``)."""
    fs, t_len = 10.0, 1000  # 100 s: the 0.01 Hz grid is orthogonal over the window
    bw = _draw("baseline_wander", 16, 12, t_len, fs, 0.3, seed=0)
    assert (bw == bw[:, :1]).all()
    t = np.arange(t_len) / fs
    freqs = 0.01 * np.arange(50)
    basis = np.concatenate([np.cos(2 * np.pi * freqs[:, None] * t), np.sin(2 * np.pi * freqs[1:, None] * t)])
    coef, *_ = np.linalg.lstsq(basis.T, bw[:, 0].T, rcond=None)
    residual = bw[:, 0].T - basis.T @ coef
    assert np.abs(residual).max() < 1e-5 * np.abs(bw).max()
    assert np.abs(coef[0]).min() > 0  # the DC component is there
    # Amplitude of each cosine: C·a_k ≤ Cmax, phase-free.
    amp = np.hypot(coef[1:50], coef[50:])
    assert amp.max() <= 0.3 * (1 + 1e-4)


def test_electrode_motion_is_white_gaussian_with_uniform_scale() -> None:
    """``Tnoise_electromyographic``: N(0, C²) i.i.d. over leads and samples, C ~ U(0, Cmax) per window."""
    em = _draw("electrode_motion", 400, 12, 1250, 500.0, 1.0, seed=3)
    sd = em.reshape(400, -1).std(axis=1)
    assert kstest(sd, "uniform").pvalue > 1e-3  # per-window sd ~ U(0, 1)
    z = em / sd[:, None, None]
    lag1 = (z[..., 1:] * z[..., :-1]).mean()
    cross = (z[:, 0] * z[:, 1]).mean()
    assert abs(lag1) < 0.01 and abs(cross) < 0.01
    kurtosis = (z**4).mean()
    assert abs(kurtosis - 3.0) < 0.05


def test_powerline_is_one_waveform_of_50hz_harmonics_times_lead_gains() -> None:
    """``noise_powerline``: rank one over leads (gains U(-1, 1)); energy only at 50, 100, 150 Hz at 500 Hz; at
    100 Hz every harmonic aliases to 0 or 50 Hz, so the waveform has period 2 samples."""
    pl = _draw("powerline", 32, 12, 5000, 500.0, 0.4, seed=4)
    ratio = pl / pl[:, :1]
    assert np.allclose(ratio, ratio[..., :1], atol=1e-4)
    power = np.abs(np.fft.rfft(pl[:, 0], axis=-1)) ** 2
    freqs = np.fft.rfftfreq(5000, 1 / 500.0)
    harmonic = np.isin(freqs, [50.0, 100.0, 150.0])
    assert power[:, harmonic].sum() > (1 - 1e-6) * power.sum()
    pl100 = _draw("powerline", 8, 2, 250, 100.0, 0.4, seed=4)
    assert np.allclose(pl100[..., 2:], pl100[..., :-2], atol=1e-7)
    # Amplitude C²·Σa_k ≤ 3·Cmax² (times |gain| ≤ 1).
    assert np.abs(pl).max() <= 3 * 0.4**2 * (1 + 1e-5)


def test_powerline_lead_gains_are_uniform() -> None:
    """Gains U(-1, 1): given the largest |g| of a window, the others' |g_l| / max |g| are U(0, 1)."""
    pl = _draw("powerline", 1000, 12, 100, 500.0, 0.4, seed=6)
    peak = np.abs(pl).max(-1)  # (B, L): |g_l| times the peak of the shared waveform
    rel = peak / peak.max(-1, keepdims=True)
    assert kstest(rel[rel < 1], "uniform").pvalue > 1e-3
    at = np.abs(pl[:, 0]).argmax(-1)
    value = pl[np.arange(len(pl)), :, at]  # (B, L) = g_l times the waveform at one instant
    ratio = (value[:, 1:] / value[:, :1]).ravel()  # g_l / g_0, signed
    rng = np.random.default_rng(0)
    g = rng.uniform(-1, 1, (20000, 2))
    assert ks_2samp(ratio, g[:, 1] / g[:, 0]).pvalue > 1e-3


def test_baseline_shift_at_most_one_segment_per_2_5_s() -> None:
    """``Tnoise_baseline_shift`` at N = 250, fs = 100: int(0.3·2.5 + 0.5) = 1, so U{0, 1} segments: a window
    has no shift or one contiguous span at one level, with lengths ~ N(3 s, 0.6 s) clipped to the window; the
    waveform is the same on every lead up to a gain."""
    bs = _draw("baseline_shift", 4000, 3, 250, 100.0, 1.0, seed=7)
    wave = bs[:, 0]
    on = wave != 0
    assert abs(on.any(-1).mean() - 0.5) < 0.03
    starts = (on[:, 1:] & ~on[:, :-1]).sum(-1) + on[:, 0]
    assert starts.max() == 1
    for b in np.flatnonzero(on.any(-1))[:200]:
        assert len(np.unique(wave[b][on[b]])) == 1
        ratio = bs[b][:, on[b]] / wave[b][on[b]]
        assert np.allclose(ratio, ratio[:, :1])
    # A 1.5 s half-length from a centre in [0, 2.5 s) almost always reaches one end of the window.
    spans = on.sum(-1)[on.any(-1)]
    assert np.median(spans) > 150


def test_baseline_shift_gains_have_reference_law() -> None:
    """Lead gains ``2*torch.randint(2) - 1*normal(1, 1)`` (``Tnoise_baseline_shift``): the scale-free ratio
    g_1 / g_0 of one window has the law of the same ratio of two such gains drawn in numpy."""
    bs = _draw("baseline_shift", 6000, 2, 250, 100.0, 1.0, seed=8)
    on = bs[:, 0] != 0
    keep = on.any(-1)
    idx = on[keep].argmax(-1)
    value = bs[keep][np.arange(keep.sum()), :, idx]  # (n, 2) = C·a·g_l
    ratio = value[:, 1] / value[:, 0]
    rng = np.random.default_rng(0)
    g = 2 * rng.integers(0, 2, (20000, 2)) - 1 * rng.normal(1, 1, (20000, 2))
    assert ks_2samp(ratio, g[:, 1] / g[:, 0]).pvalue > 1e-3


def test_physio_noise_deterministic_growing_and_same_draws_per_level() -> None:
    x = torch.zeros(64, 12, 250)
    rms = []
    for level in sorted(PHYSIO_NOISE_LEVELS_MV):
        y = physio_noise(x, 100.0, level, generator=torch.Generator().manual_seed(0))
        assert torch.equal(y, physio_noise(x, 100.0, level, generator=torch.Generator().manual_seed(0)))
        rms.append(y.pow(2).mean().sqrt().item())
    assert (np.diff(rms) > 0).all(), rms
    # Levels 3 and 4 differ only in wander and powerline Cmax: with the same generator state, doubling the
    # wander Cmax doubles it, so the difference is exactly (wander + powerline) of level 4 minus level 3.
    y3 = physio_noise(x, 100.0, 3, generator=torch.Generator().manual_seed(0))
    y4 = physio_noise(x, 100.0, 4, generator=torch.Generator().manual_seed(0))
    gen3, gen4 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    bw3 = baseline_wander_noise((64, 12, 250), 100.0, 0.1, generator=gen3)
    pl3 = powerline_noise((64, 12, 250), 100.0, 0.2, generator=gen3)
    bw4 = baseline_wander_noise((64, 12, 250), 100.0, 0.2, generator=gen4)
    pl4 = powerline_noise((64, 12, 250), 100.0, 0.4, generator=gen4)
    torch.testing.assert_close(bw4, 2 * bw3)
    torch.testing.assert_close(pl4, 4 * pl3)  # amplitude C², as in ESS
    torch.testing.assert_close(y4 - y3, (bw4 - bw3) + (pl4 - pl3), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        physio_noise(x, 100.0, 7)


def test_modules_draw_from_the_global_generator_per_sample() -> None:
    from ecgforge.augment.noise import BaselineShift, BaselineWander, ElectrodeMotion, Powerline

    x = torch.zeros(256, 12, 250)
    ctx = BuildContext(fs_hz=100.0)
    for module in (make(cls, ctx) for cls in (BaselineWander, Powerline, ElectrodeMotion, BaselineShift)):
        torch.manual_seed(0)
        a = module(x)
        torch.manual_seed(0)
        assert torch.equal(a, module(x))
        per_sample = a.pow(2).mean(dim=(1, 2))
        assert per_sample.std() > 0.2 * per_sample.mean(), type(module).__name__  # C drawn per sample
