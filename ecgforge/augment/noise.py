"""Additive noise augmentations for ECG and the graded physiological noise of Mehari & Strodthoff (2022).

Every module maps ``x (B, L, T)`` in mV to ``(B, L, T)``, drawing from torch's global generator on
``x.device``, independently per sample. The physiological noises (baseline wander, electrode motion,
powerline, baseline shift) reproduce the generators that Mehari & Strodthoff's robustness test applies
(hhi-aml/ecg-selfsupervised, ``clinical_ts/timeseries_transformations.py``: ``TBaselineWander``,
``TEMNoise``, ``TPowerlineNoise``, ``TBaselineShift``, after Friesen et al. 1990): the same random structure
and distributions, drawn per sample, with times in seconds and frequencies in Hz taken at ``fs_hz`` (the
reference assumes 100 Hz). Each draws a scale ``C ~ U(0, max_mv)`` per sample, so ``max_mv`` is the
reference's ``Cmax``, not a bound on the noise: the wander sums 50 unnormalised cosines of amplitude C·U(0, 1),
the electrode motion is N(0, C²), the powerline amplitude is C² and the baseline shift has Gaussian lead
gains. The expected mean square of each is in ``tests/augment/ess_noise_reference.py``; the measured RMS per
level in docs/findings/noise.md.

The ``*_noise`` functions return the noise alone, ``(B, L, T)`` float32, and accept an optional
``torch.Generator`` for reproducible draws; the modules wrap them with a per-sample probability ``p``.
The number of draws never depends on ``max_mv``, so one generator state gives the same noise at every level,
scaled.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from ecgforge.registry import BuildContext

# Cmax in mV of (baseline wander, electrode motion, powerline, baseline shift) per noise level of Mehari &
# Strodthoff's robustness test (ecg-selfsupervised eval.py, ``t_params_by_level``: bw/em/pl/bs_cmax).
PHYSIO_NOISE_LEVELS_MV: dict[int, tuple[float, float, float, float]] = {
    1: (0.05, 0.25, 0.1, 0.5),
    2: (0.1, 0.5, 0.2, 1.0),
    3: (0.1, 1.0, 0.2, 2.0),
    4: (0.2, 1.0, 0.4, 2.0),
    5: (0.2, 1.5, 0.4, 2.5),
    6: (0.3, 2.0, 0.5, 3.0),
}

Shape = tuple[int, int, int]


def _rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) float32 on ``device``; drawn on the generator's own device so a CPU generator gives the same
    numbers whatever device the signal is on (the robustness test must add identical noise for every model)."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randn(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) float32 on ``device``; see ``_rand`` for the generator's device."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _randint(high: int, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Integers U{0..high-1} as float32 on ``device``; see ``_rand`` for the generator's device."""
    if generator is None:
        return torch.randint(high, shape, device=device).float()
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device).float()


def _cos_sin_table(freqs_hz: Tensor, t_len: int, fs_hz: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin of 2π·f·n/fs, each ``(K, T)`` float32 on ``device``, for ``freqs_hz (K,)``.

    Computed in float64 on the CPU with the phase reduced to whole cycles first: in float32 a 150 Hz
    harmonic over a minute-long record would lose ~0.003 rad of phase.
    """
    n = torch.arange(t_len, dtype=torch.float64)
    cycles = torch.remainder(freqs_hz.double().cpu()[:, None] * n[None, :] / fs_hz, 1.0)
    arg = 2 * math.pi * cycles
    return arg.cos().float().to(device), arg.sin().float().to(device)


def apply_with_probability(x: Tensor, augmented: Tensor, p: float) -> Tensor:
    """Per sample, ``augmented`` with probability ``p``, else ``x``. x, augmented (B, L, T).

    The augmentation is computed for the whole batch and selected afterwards: on a GPU one batched op plus
    a select is cheaper than indexing out the chosen samples.
    """
    if p >= 1.0:
        return augmented
    keep = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(keep[:, None, None], augmented, x)


def ordered(lo: str, hi: str) -> Any:
    """A config's after-validator (``_ordered = ordered("min_scale", "max_scale")``): ValueError where field
    ``lo`` exceeds field ``hi``."""

    def check(cfg: BaseModel) -> BaseModel:
        if getattr(cfg, lo) > getattr(cfg, hi):
            raise ValueError(f"{lo} ({getattr(cfg, lo)}) exceeds {hi} ({getattr(cfg, hi)})")
        return cfg

    return model_validator(mode="after")(check)


def baseline_wander_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    cutoff_hz: float = 0.5,
    n_components: int = 50,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Baseline wander, equal on every lead: C·Σ_{k=0}^{K-1} a_k·cos(2π·k·Δf·t + φ_k) with K = ``n_components``,
    Δf = ``cutoff_hz``/K (0.01 Hz by default), a_k ~ U(0, 1), φ_k ~ U(0, 2π), C ~ U(0, ``max_mv``), t in s
    (ESS ``Tnoise_baseline_wander`` with fc = 0.5 Hz, fdelta = 0.01 Hz, as ``TBaselineWander`` calls it).

    The sum is not normalised (RMS = C·√(K/6) on average over phases) and k = 0 contributes a constant
    offset a_0·cos φ_0, both as in the reference. Returns ``(B, L, T)`` mV.
    """
    device = torch.device(device)
    b, n_leads, t_len = shape
    cos_t, sin_t = _cos_sin_table((cutoff_hz / n_components) * torch.arange(n_components), t_len, fs_hz, device)
    weights = _rand((b, n_components), device, generator)
    phases = 2 * math.pi * _rand((b, n_components), device, generator)
    scale = max_mv * _rand((b, 1), device, generator)
    # Σ a cos(ωt + φ) = (a cos φ)·cos ωt − (a sin φ)·sin ωt: two (B, K) @ (K, T) matmuls, no (B, K, T) tensor.
    wave = (weights * phases.cos()) @ cos_t - (weights * phases.sin()) @ sin_t
    return (scale * wave)[:, None, :].expand(b, n_leads, t_len).contiguous()


def powerline_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    freq_hz: float = 50.0,
    n_harmonics: int = 3,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Powerline interference: g_l·C²·Σ_{k=1}^{K} a_k·cos(2π·k·``freq_hz``·t + φ), one phase φ ~ U(0, 2π) for
    all K = ``n_harmonics`` harmonics, a_k ~ U(0, 1), C ~ U(0, ``max_mv``), lead gains g_l ~ U(-1, 1)
    (ESS ``noise_powerline`` as ``TPowerlineNoise`` calls it: it scales by C twice, so the amplitude is C²).

    Sampled as is: where ``fs_hz`` ≤ 2·k·``freq_hz`` a harmonic aliases (at 100 Hz, 50 and 150 Hz fold onto
    the Nyquist frequency and 100 Hz onto a constant), as in the reference. Returns ``(B, L, T)`` mV.
    """
    device = torch.device(device)
    b, n_leads, t_len = shape
    cos_t, sin_t = _cos_sin_table(freq_hz * torch.arange(1, n_harmonics + 1), t_len, fs_hz, device)
    scale = max_mv * _rand((b, 1), device, generator)
    phase = 2 * math.pi * _rand((b, 1), device, generator)
    weights = _rand((b, n_harmonics), device, generator)
    # Σ a_k cos(ω_k t + φ) = cos φ·(a @ cos ωt) − sin φ·(a @ sin ωt), (B, T).
    wave = phase.cos() * (weights @ cos_t) - phase.sin() * (weights @ sin_t)
    gains = 2 * _rand((b, n_leads, 1), device, generator) - 1
    return gains * (scale**2 * wave)[:, None, :]


def electrode_motion_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Electrode-motion / electromyographic noise: i.i.d. N(0, C²) over every lead and sample, C ~ U(0,
    ``max_mv``) per sample (ESS ``Tnoise_electromyographic`` as ``TEMNoise`` calls it).

    The reference's noise is white per sample, so it has no time constant: ``fs_hz`` is accepted for the
    common signature and does not enter. Returns ``(B, L, T)`` mV.
    """
    device = torch.device(device)
    scale = max_mv * _rand((shape[0], 1, 1), device, generator)
    return scale * _randn(shape, device, generator)


def baseline_shift_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    max_segments_per_s: float = 0.3,
    mean_segment_s: float = 3.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Baseline shifts (ESS ``Tnoise_baseline_shift`` as ``TBaselineShift`` calls it), per sample:

    M = int(``max_segments_per_s``·T/fs + 0.5) (1 for a 2.5 s window), U{0..M} segments; each has a centre
    ``mid`` ~ U{0..T-1} and a duration ``len`` ~ N(μ, (0.2μ)²) s (μ = ``mean_segment_s``) and sets samples
    ``int(mid − fs·len/2)`` .. ``int(mid + fs·len/2)`` (clipped to the window) to a level U(-1, 1); a later
    segment overwrites an earlier one. The waveform is scaled by C ~ U(0, ``max_mv``) and by lead gains
    2·U{0, 1} − N(1, 1) (the reference's expression; the same law as ±N(1, 1)).

    Returns ``(B, L, T)`` mV.
    """
    device = torch.device(device)
    b, n_leads, t_len = shape
    t = torch.arange(t_len, device=device, dtype=torch.float32)[None, :]
    max_segments = int(max_segments_per_s * t_len / fs_hz + 0.5)
    n_active = _randint(max_segments + 1, (b, 1), device, generator)
    wave = torch.zeros(b, t_len, device=device)
    # A loop over segments (≤ M), not over samples: each step is one batched select. Segments beyond a
    # sample's count are drawn too and discarded, so the draws do not depend on the count or on max_mv.
    for s in range(max_segments):
        mid = _randint(t_len, (b, 1), device, generator)
        half = 0.5 * fs_hz * mean_segment_s * (1 + 0.2 * _randn((b, 1), device, generator))
        level = 2 * _rand((b, 1), device, generator) - 1
        # trunc, as Python's int(); an inverted span (negative duration) sets nothing, as an empty slice.
        left = torch.trunc(mid - half).clamp_min(0)
        right = torch.trunc(mid + half).clamp_max(t_len - 1)
        inside = (t >= left) & (t <= right) & (n_active > s)
        wave = torch.where(inside, level, wave)
    scale = max_mv * _rand((b, 1, 1), device, generator)
    gains = 2 * _randint(2, (b, n_leads, 1), device, generator) - (1 + _randn((b, n_leads, 1), device, generator))
    return scale * gains * wave[:, None, :]


def physio_noise(x: Tensor, fs_hz: float, level: int, generator: torch.Generator | None = None) -> Tensor:
    """Add baseline wander, powerline (50 Hz), electrode motion and baseline shift at noise ``level`` 1–6 of
    Mehari & Strodthoff (2022), each with its level's Cmax from ``PHYSIO_NOISE_LEVELS_MV`` (ESS ``eval.py
    --test_noised``, which chains ``BaselineWander, PowerlineNoise, EMNoise, BaselineShift``).

    Args:
        x: ``(B, L, T)`` signal in mV.
        fs_hz: sampling rate of ``x``.
        level: 1 (mildest) to 6.
        generator: makes the noise a function of the generator's state only (a CPU generator gives the same
            noise on any device), so every model in a robustness test sees identical inputs.

    Returns:
        ``(B, L, T)`` in ``x.dtype``. The reference applies it to 2.5 s windows at 100 Hz; the number of
        baseline shifts grows with the window's duration, as there.
    """
    if level not in PHYSIO_NOISE_LEVELS_MV:
        raise ValueError(f"physio_noise: level must be one of 1..6, got {level}")
    bw_mv, em_mv, pl_mv, bs_mv = PHYSIO_NOISE_LEVELS_MV[level]
    shape: Shape = tuple(x.shape)  # type: ignore[assignment]
    kw = {"device": x.device, "generator": generator}
    noise = (
        baseline_wander_noise(shape, fs_hz, bw_mv, **kw)
        + powerline_noise(shape, fs_hz, pl_mv, **kw)
        + electrode_motion_noise(shape, fs_hz, em_mv, **kw)
        + baseline_shift_noise(shape, fs_hz, bs_mv, **kw)
    )
    return x + noise.to(x.dtype)


class GaussianNoiseConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["gaussian_noise"] = "gaussian_noise"
    std_mv: float = Field(0.05, gt=0, description="standard deviation of the white noise, mV")
    p: float = Field(1.0, ge=0, le=1, description="probability of applying it to a sample")


class GaussianNoise(nn.Module):
    """Additive white Gaussian noise, i.i.d. over leads and time (ESS ``GaussianNoise``)."""

    Config = GaussianNoiseConfig

    def __init__(self, cfg: GaussianNoiseConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        return apply_with_probability(x, x + self.cfg.std_mv * torch.randn_like(x), self.cfg.p)


# Defaults of the four physiological modules: the t_params of ESS's pretraining scripts (custom_simclr_bolts.py
# and siblings: bw_cmax 0.1, em_cmax 0.5, pl_cmax 0.2, bs_cmax 1).


class AddedNoise(nn.Module):
    """Base of the physiological noise modules: ``noise(x)`` ``(B, L, T)`` mV, drawn at the cache's sampling
    rate (``ctx.need("fs_hz")``), is added to each sample with probability ``cfg.p``."""

    def __init__(self, cfg: Any, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg, self.fs_hz = cfg, ctx.need("fs_hz")  # of the cache

    def noise(self, x: Tensor) -> Tensor:
        """x (B, L, T) -> the noise to add, (B, L, T) mV (float32)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        return apply_with_probability(x, x + self.noise(x).to(x.dtype), self.cfg.p)


class BaselineWanderConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["baseline_wander"] = "baseline_wander"
    max_mv: float = Field(0.1, gt=0, description="Cmax: per-sample scale C ~ U(0, max_mv) of each cosine, mV")
    cutoff_hz: float = Field(0.5, gt=0, description="frequency spacing times n_components, Hz")
    n_components: int = Field(50, gt=0, description="cosines at k*cutoff/n Hz, k = 0..n-1")
    p: float = Field(1.0, ge=0, le=1)


class BaselineWander(AddedNoise):
    """Low-frequency baseline wander (< ``cutoff_hz``), equal on every lead, see ``baseline_wander_noise``."""

    Config = BaselineWanderConfig
    cfg: BaselineWanderConfig

    def noise(self, x: Tensor) -> Tensor:
        c = self.cfg
        return baseline_wander_noise(tuple(x.shape), self.fs_hz, c.max_mv, c.cutoff_hz, c.n_components, x.device)


class PowerlineConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["powerline"] = "powerline"
    max_mv: float = Field(0.2, gt=0, description="Cmax: C ~ U(0, max_mv); the amplitude is C^2 (as in ESS)")
    freq_hz: Literal[50, 60] = Field(50, description="mains frequency, Hz")
    n_harmonics: int = Field(3, ge=1, description="harmonics k*freq_hz, k = 1..n, sharing one phase")
    p: float = Field(1.0, ge=0, le=1)


class Powerline(AddedNoise):
    """Mains interference at 50 or 60 Hz and its harmonics, see ``powerline_noise``."""

    Config = PowerlineConfig
    cfg: PowerlineConfig

    def noise(self, x: Tensor) -> Tensor:
        c = self.cfg
        # float: the harmonic frequencies are then a float tensor (an int Literal would make them integers).
        return powerline_noise(tuple(x.shape), self.fs_hz, c.max_mv, float(c.freq_hz), c.n_harmonics, x.device)


class ElectrodeMotionConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["electrode_motion"] = "electrode_motion"
    max_mv: float = Field(0.5, gt=0, description="Cmax: white noise of std C ~ U(0, max_mv), mV")
    p: float = Field(1.0, ge=0, le=1)


class ElectrodeMotion(AddedNoise):
    """White Gaussian noise of random strength (electrode motion / EMG), see ``electrode_motion_noise``."""

    Config = ElectrodeMotionConfig
    cfg: ElectrodeMotionConfig

    def noise(self, x: Tensor) -> Tensor:
        return electrode_motion_noise(tuple(x.shape), self.fs_hz, self.cfg.max_mv, x.device)


class BaselineShiftConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["baseline_shift"] = "baseline_shift"
    max_mv: float = Field(1.0, gt=0, description="Cmax: step levels U(-1, 1) scaled by C ~ U(0, max_mv), mV")
    max_segments_per_s: float = Field(
        0.3, gt=0, description="at most int(this * window s + 0.5) shifted spans per window (1 per 2.5 s)"
    )
    mean_segment_s: float = Field(3.0, gt=0, description="mean span duration, s (sd 20 %)")
    p: float = Field(1.0, ge=0, le=1)


class BaselineShift(AddedNoise):
    """Step changes of the baseline over random spans, see ``baseline_shift_noise``."""

    Config = BaselineShiftConfig
    cfg: BaselineShiftConfig

    def noise(self, x: Tensor) -> Tensor:
        c = self.cfg
        return baseline_shift_noise(tuple(x.shape), self.fs_hz, c.max_mv, c.max_segments_per_s, c.mean_segment_s,
                                    x.device)
