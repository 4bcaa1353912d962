"""Additive noise augmentations for ECG and the graded physiological noise of Mehari & Strodthoff (2022).

Every module maps ``x (B, L, T)`` in mV to ``(B, L, T)``, drawing from torch's global generator on
``x.device``, independently per sample. The physiological noises (baseline wander, electrode motion,
powerline, baseline shift) follow the ECG noise transformations of Mehari & Strodthoff's code
(hhi-aml/ecg-selfsupervised, after Friesen et al. 1990), changed in one respect: each waveform is
normalised to a peak of 1 before scaling, so that ``max_mv`` is a hard bound on the added noise's absolute
value. That makes the graded levels of ``physio_noise`` (maximum amplitudes in mV) exact bounds.

The ``*_noise`` functions return the noise alone, ``(B, L, T)`` float32, and accept an optional
``torch.Generator`` for reproducible draws; the modules wrap them with a per-sample probability ``p``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

# Maximum amplitudes in mV of (baseline wander, electrode motion, powerline, baseline shift) per noise level
# of Mehari & Strodthoff's robustness test (PAPERS.md, "Noise levels").
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


def apply_with_probability(x: Tensor, augmented: Tensor, p: float) -> Tensor:
    """Per sample, ``augmented`` with probability ``p``, else ``x``. x, augmented (B, L, T).

    The augmentation is computed for the whole batch and selected afterwards: on a GPU one batched op plus
    a select is cheaper than indexing out the chosen samples.
    """
    if p >= 1.0:
        return augmented
    keep = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(keep[:, None, None], augmented, x)


def _peak_normalise(w: Tensor) -> Tensor:
    """Scale each waveform ``w (..., T)`` to a peak absolute value of 1 (zeros stay zeros)."""
    return w / w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)


def _lead_gains(shape: Shape, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """(B, L, 1) gains U(-1, 1): one waveform per sample reaches the leads with different sign and size,
    as in ESS's ``channel_gains`` (the noise source is shared, the lead projections differ)."""
    b, n_leads, _ = shape
    return (2 * _rand((b, n_leads), device, generator) - 1)[..., None]


def baseline_wander_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    cutoff_hz: float = 0.5,
    n_components: int = 50,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Baseline wander: sum of ``n_components`` sinusoids at k·cutoff/(n+1) Hz (k = 1..n, all below ``cutoff_hz``),
    random weights U(0, 1) and phases U(0, 2π) (ESS ``noise_baseline_wander``, after PMC5361052).

    Returns ``(B, L, T)`` mV with peak |noise| = U(0, max_mv) · |lead gain| ≤ ``max_mv``.
    """
    device = torch.device(device)
    b, _, t_len = shape
    t = torch.arange(t_len, device=device, dtype=torch.float32) / fs_hz
    freqs = (
        cutoff_hz * torch.arange(1, n_components + 1, device=device, dtype=torch.float32) / (n_components + 1)
    )
    omega_t = 2 * math.pi * freqs[:, None] * t[None, :]  # (K, T)
    weights = _rand((b, n_components), device, generator)
    phases = 2 * math.pi * _rand((b, n_components), device, generator)
    # Σ a cos(ωt + φ) = (a cos φ)·cos ωt − (a sin φ)·sin ωt: two (B, K) @ (K, T) matmuls, no (B, K, T) tensor.
    wave = (weights * phases.cos()) @ omega_t.cos() - (weights * phases.sin()) @ omega_t.sin()
    amp = max_mv * _rand((b, 1, 1), device, generator)
    return amp * _lead_gains(shape, device, generator) * _peak_normalise(wave)[:, None, :]


def powerline_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    freq_hz: float = 50.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Powerline interference: one sinusoid at ``freq_hz`` with random phase U(0, 2π), amplitude U(0, max_mv),
    lead gains U(-1, 1) (ESS ``noise_powerline`` without its harmonics).

    Sampled as is: where ``fs_hz`` ≤ 2·``freq_hz`` it aliases, as an unfiltered recording would.
    Returns ``(B, L, T)`` mV with |noise| ≤ ``max_mv``.
    """
    device = torch.device(device)
    b, _, t_len = shape
    t = torch.arange(t_len, device=device, dtype=torch.float32) / fs_hz
    phases = 2 * math.pi * _rand((b, 1), device, generator)
    wave = torch.cos(2 * math.pi * freq_hz * t[None, :] + phases)
    amp = max_mv * _rand((b, 1, 1), device, generator)
    return amp * _lead_gains(shape, device, generator) * wave[:, None, :]


def electrode_motion_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    low_hz: float = 1.0,
    high_hz: float = 30.0,
    min_burst_frac: float = 0.2,
    max_burst_frac: float = 1.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Electrode-motion / EMG artefact modelled as band-limited bursts.

    Per lead, white Gaussian noise is band-passed to [``low_hz``, ``high_hz``] (zeroing FFT bins outside the
    band; the band is clipped at Nyquist) and normalised to a peak of 1. Per sample, a burst envelope
    sin²(π·(t − start)/len) over a random span of U(min_burst_frac, max_burst_frac) of the window (same span
    for every lead: the motion of one electrode disturbs several leads at once) gates it, and an amplitude
    U(0, max_mv) scales it. ESS models this noise as white Gaussian noise over the whole window; the band
    limit keeps it inside the ECG band, where it is hard to filter, and the burst makes it transient.

    Returns ``(B, L, T)`` mV with |noise| ≤ ``max_mv``.
    """
    device = torch.device(device)
    b, n_leads, t_len = shape
    white = _randn((b, n_leads, t_len), device, generator)
    spectrum = torch.fft.rfft(white, dim=-1)
    freqs = torch.fft.rfftfreq(t_len, d=1.0 / fs_hz).to(device)
    band = (freqs >= low_hz) & (freqs <= high_hz)
    wave = _peak_normalise(torch.fft.irfft(spectrum * band, n=t_len, dim=-1))
    frac = min_burst_frac + (max_burst_frac - min_burst_frac) * _rand((b, 1), device, generator)
    length = (frac * t_len).clamp_min(1.0)
    start = _rand((b, 1), device, generator) * (t_len - length)
    phase = (torch.arange(t_len, device=device, dtype=torch.float32)[None, :] - start) / length  # (B, T)
    envelope = torch.where((phase >= 0) & (phase <= 1), torch.sin(math.pi * phase) ** 2, 0.0)
    amp = max_mv * _rand((b, 1, 1), device, generator)
    return amp * envelope[:, None, :] * wave


def baseline_shift_noise(
    shape: Shape,
    fs_hz: float,
    max_mv: float,
    max_segments: int = 3,
    mean_segment_s: float = 3.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Baseline shifts: U{0..max_segments} steps per sample, each a span of N(mean, (0.2·mean)²) s centred at
    a uniform time, at a level U(-1, 1)·max_mv; a later span overwrites an earlier one (ESS
    ``noise_baseline_shift``). Lead gains U(-1, 1).

    Returns ``(B, L, T)`` mV with |noise| ≤ ``max_mv``.
    """
    device = torch.device(device)
    b, _, t_len = shape
    t = torch.arange(t_len, device=device, dtype=torch.float32)[None, :]
    n_active = (_rand((b, 1), device, generator) * (max_segments + 1)).floor()
    wave = torch.zeros(b, t_len, device=device)
    # A loop over segments (≤ max_segments), not over samples: each step is one batched select.
    for s in range(max_segments):
        mid = _rand((b, 1), device, generator) * t_len
        half = 0.5 * fs_hz * mean_segment_s * (1 + 0.2 * _randn((b, 1), device, generator)).clamp_min(0)
        level = 2 * _rand((b, 1), device, generator) - 1
        inside = ((t - mid).abs() <= half) & (n_active > s)
        wave = torch.where(inside, level, wave)
    return max_mv * _lead_gains(shape, device, generator) * wave[:, None, :]


def physio_noise(x: Tensor, fs_hz: float, level: int, generator: torch.Generator | None = None) -> Tensor:
    """Add baseline wander, electrode motion, powerline (50 Hz) and baseline shift at noise ``level`` 1–6 of
    Mehari & Strodthoff (2022): maximum amplitudes in ``PHYSIO_NOISE_LEVELS_MV``.

    Args:
        x: ``(B, L, T)`` signal in mV.
        fs_hz: sampling rate of ``x``.
        level: 1 (mildest) to 6.
        generator: makes the noise a function of the generator's state only (a CPU generator gives the same
            noise on any device), so every model in a robustness test sees identical inputs.

    Returns:
        ``(B, L, T)`` in ``x.dtype``; each component's |noise| is at most its level's maximum.
    """
    if level not in PHYSIO_NOISE_LEVELS_MV:
        raise ValueError(f"physio_noise: level must be one of 1..6, got {level}")
    bw_mv, em_mv, pl_mv, bs_mv = PHYSIO_NOISE_LEVELS_MV[level]
    shape: Shape = tuple(x.shape)  # type: ignore[assignment]
    kw = {"device": x.device, "generator": generator}
    noise = (
        baseline_wander_noise(shape, fs_hz, bw_mv, **kw)
        + electrode_motion_noise(shape, fs_hz, em_mv, **kw)
        + powerline_noise(shape, fs_hz, pl_mv, **kw)
        + baseline_shift_noise(shape, fs_hz, bs_mv, **kw)
    )
    return x + noise.to(x.dtype)


class GaussianNoiseConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["gaussian_noise"] = "gaussian_noise"
    std_mv: float = Field(0.05, gt=0, description="standard deviation of the white noise, mV")
    p: float = Field(1.0, ge=0, le=1, description="probability of applying it to a sample")


class GaussianNoise(nn.Module):
    """Additive white Gaussian noise, i.i.d. over leads and time (ESS ``GaussianNoise``)."""

    def __init__(self, std_mv: float = 0.05, p: float = 1.0) -> None:
        super().__init__()
        self.std_mv, self.p = std_mv, p

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        return apply_with_probability(x, x + self.std_mv * torch.randn_like(x), self.p)


class BaselineWanderConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["baseline_wander"] = "baseline_wander"
    max_mv: float = Field(0.2, gt=0, description="bound on |added wander|, mV")
    cutoff_hz: float = Field(0.5, gt=0, description="highest sinusoid frequency, Hz")
    n_components: int = Field(50, gt=0, description="sinusoids at k*cutoff/(n+1) Hz, k = 1..n")
    p: float = Field(1.0, ge=0, le=1)


class BaselineWander(nn.Module):
    """Low-frequency baseline wander (< ``cutoff_hz``), see ``baseline_wander_noise``."""

    def __init__(
        self,
        fs_hz: float,
        max_mv: float = 0.2,
        cutoff_hz: float = 0.5,
        n_components: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        self.fs_hz, self.max_mv, self.cutoff_hz, self.n_components, self.p = (
            fs_hz,
            max_mv,
            cutoff_hz,
            n_components,
            p,
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        noise = baseline_wander_noise(
            tuple(x.shape), self.fs_hz, self.max_mv, self.cutoff_hz, self.n_components, x.device
        )
        return apply_with_probability(x, x + noise.to(x.dtype), self.p)


class PowerlineConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["powerline"] = "powerline"
    max_mv: float = Field(0.2, gt=0, description="bound on |added interference|, mV")
    freq_hz: Literal[50, 60] = Field(50, description="mains frequency, Hz")
    p: float = Field(1.0, ge=0, le=1)


class Powerline(nn.Module):
    """Mains interference at 50 or 60 Hz with random phase, see ``powerline_noise``."""

    def __init__(self, fs_hz: float, max_mv: float = 0.2, freq_hz: float = 50, p: float = 1.0) -> None:
        super().__init__()
        self.fs_hz, self.max_mv, self.freq_hz, self.p = fs_hz, max_mv, float(freq_hz), p

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        noise = powerline_noise(tuple(x.shape), self.fs_hz, self.max_mv, self.freq_hz, x.device)
        return apply_with_probability(x, x + noise.to(x.dtype), self.p)


class ElectrodeMotionConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["electrode_motion"] = "electrode_motion"
    max_mv: float = Field(1.0, gt=0, description="bound on |added artefact|, mV")
    low_hz: float = Field(1.0, ge=0, description="lower band edge, Hz")
    high_hz: float = Field(30.0, gt=0, description="upper band edge, Hz (clipped at Nyquist)")
    min_burst_frac: float = Field(0.2, gt=0, le=1, description="shortest burst, fraction of the window")
    max_burst_frac: float = Field(1.0, gt=0, le=1, description="longest burst, fraction of the window")
    p: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> ElectrodeMotionConfig:
        if self.low_hz >= self.high_hz:
            raise ValueError(f"low_hz ({self.low_hz}) must be below high_hz ({self.high_hz})")
        if self.min_burst_frac > self.max_burst_frac:
            raise ValueError(
                f"min_burst_frac ({self.min_burst_frac}) exceeds max_burst_frac ({self.max_burst_frac})"
            )
        return self


class ElectrodeMotion(nn.Module):
    """Band-limited noise bursts (electrode motion / EMG), see ``electrode_motion_noise``."""

    def __init__(
        self,
        fs_hz: float,
        max_mv: float = 1.0,
        low_hz: float = 1.0,
        high_hz: float = 30.0,
        min_burst_frac: float = 0.2,
        max_burst_frac: float = 1.0,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        self.fs_hz, self.max_mv, self.low_hz, self.high_hz = fs_hz, max_mv, low_hz, high_hz
        self.min_burst_frac, self.max_burst_frac, self.p = min_burst_frac, max_burst_frac, p

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        noise = electrode_motion_noise(
            tuple(x.shape), self.fs_hz, self.max_mv, self.low_hz, self.high_hz,
            self.min_burst_frac, self.max_burst_frac, x.device,
        )  # fmt: skip
        return apply_with_probability(x, x + noise.to(x.dtype), self.p)


class BaselineShiftConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["baseline_shift"] = "baseline_shift"
    max_mv: float = Field(1.0, gt=0, description="bound on |step level|, mV")
    max_segments: int = Field(3, ge=1, description="at most this many shifted spans per window")
    mean_segment_s: float = Field(3.0, gt=0, description="mean span duration, s (sd 20 %)")
    p: float = Field(1.0, ge=0, le=1)


class BaselineShift(nn.Module):
    """Step changes of the baseline over random spans, see ``baseline_shift_noise``."""

    def __init__(
        self,
        fs_hz: float,
        max_mv: float = 1.0,
        max_segments: int = 3,
        mean_segment_s: float = 3.0,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        self.fs_hz, self.max_mv, self.max_segments, self.mean_segment_s, self.p = (
            fs_hz,
            max_mv,
            max_segments,
            mean_segment_s,
            p,
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, T) mV -> (B, L, T) mV."""
        noise = baseline_shift_noise(
            tuple(x.shape), self.fs_hz, self.max_mv, self.max_segments, self.mean_segment_s, x.device
        )
        return apply_with_probability(x, x + noise.to(x.dtype), self.p)
