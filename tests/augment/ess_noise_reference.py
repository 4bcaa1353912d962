"""A numpy transcription of the ECG noise generators that ecg-selfsupervised's robustness test applies, and the
exact expected mean square of each, derived from those formulas.

Reference: hhi-aml/ecg-selfsupervised, ``clinical_ts/timeseries_transformations.py``. ``eval.py --test_noised``
builds ``["BaselineWander", "PowerlineNoise", "EMNoise", "BaselineShift"]`` through
``clinical_ts/simclr_dataset_wrapper.py::transformations_from_strings``, i.e. the torch classes
``TBaselineWander`` (-> ``Tnoise_baseline_wander``), ``TPowerlineNoise`` (-> ``noise_powerline``), ``TEMNoise``
(-> ``Tnoise_electromyographic``) and ``TBaselineShift`` (-> ``Tnoise_baseline_shift``), each with its default
``fs=100`` and its ``Cmax`` from ``eval.py``'s ``t_params_by_level``, applied to every 250-sample (2.5 s) crop.
Each class draws ``C = random.uniform(0, Cmax)`` per crop. Python's ``random`` / torch's RNG are replaced by a
numpy ``Generator`` with the same distributions; arrays are ``(N, channels)`` as in the reference.

Run ``python -m tests.augment.ess_noise_reference`` for the RMS table of docs/findings/noise.md.
"""

from __future__ import annotations

import math

import numpy as np

# eval.py, t_params_by_level: (bw_cmax, em_cmax, pl_cmax, bs_cmax).
ESS_LEVELS = {
    1: (0.05, 0.25, 0.1, 0.5),
    2: (0.1, 0.5, 0.2, 1.0),
    3: (0.1, 1.0, 0.2, 2.0),
    4: (0.2, 1.0, 0.4, 2.0),
    5: (0.2, 1.5, 0.4, 2.5),
    6: (0.3, 2.0, 0.5, 3.0),
}


def _time(n: int, fs: float) -> np.ndarray:
    # The reference writes np/torch.arange(0, N/fs, 1/fs); for the lengths used here that is n/fs, n = 0..N-1.
    return np.arange(n) / fs


def ref_baseline_wander(rng: np.random.Generator, n: int, fs: float, cmax: float, fc: float = 0.5,
                        fdelta: float = 0.01, channels: int = 12) -> np.ndarray:
    """``TBaselineWander`` / ``Tnoise_baseline_wander``: C·Σ_{k=0}^{K-1} a_k cos(2π k fdelta t + φ_k),
    K = int(fc/fdelta + 0.5), a_k ~ U(0, 1), φ_k ~ U(0, 2π), the same on every channel
    (``noise.repeat(channels).reshape(channels, timesteps).T``)."""
    c = rng.uniform(0, cmax)
    k_max = int(fc / fdelta + 0.5)
    k = np.arange(k_max)[:, None]
    phase = rng.uniform(0, 2 * math.pi, k_max)[:, None]
    a = rng.uniform(0, 1, k_max)[:, None]
    res = (a * np.cos(2 * math.pi * k * fdelta * _time(n, fs)[None, :] + phase)).sum(0)
    return np.repeat((c * res)[:, None], channels, axis=1)


def ref_powerline(rng: np.random.Generator, n: int, fs: float, cmax: float, fn: float = 50.0, k_harm: int = 3,
                  channels: int = 12) -> np.ndarray:
    """``TPowerlineNoise`` / ``noise_powerline``: signal = Σ_{k=1}^{K} C·a_k cos(2π k fn t + φ) (one phase for
    all harmonics, a_k ~ U(0, 1)), then ``C*signal`` again (amplitude C²), times channel gains U(-1, 1)."""
    c = rng.uniform(0, cmax)
    t = _time(n, fs)
    signal = np.zeros(n)
    phi1 = rng.uniform(0, 2 * math.pi)
    for k in range(1, k_harm + 1):
        ak = rng.uniform(0, 1)
        signal += c * ak * np.cos(2 * math.pi * k * fn * t + phi1)
    signal = c * signal[:, None]
    return signal * rng.uniform(-1, 1, channels)[None]


def ref_electrode_motion(rng: np.random.Generator, n: int, fs: float, cmax: float, channels: int = 12) -> np.ndarray:
    """``TEMNoise`` / ``Tnoise_electromyographic``: i.i.d. N(0, C²) over every sample and channel."""
    c = rng.uniform(0, cmax)
    return rng.normal(0.0, c, (n, channels))


def ref_baseline_shift(rng: np.random.Generator, n: int, fs: float, cmax: float, mean_segment_length: float = 3.0,
                       max_segments_per_second: float = 0.3, channels: int = 12) -> np.ndarray:
    """``TBaselineShift`` / ``Tnoise_baseline_shift``: U{0..maxsegs} segments, maxsegs = int(0.3·N/fs + 0.5);
    each: mid ~ U{0..N-1}, length ~ N(3, 0.6²) s, ``signal[left:right+1] = a_k`` with a_k ~ U(-1, 1) (a later
    segment overwrites), times C, times channel gains ``2*randint(2) - 1*normal(1, 1)``."""
    c = rng.uniform(0, cmax)
    signal = np.zeros(n)
    maxsegs = int(max_segments_per_second * n / fs + 0.5)
    for _ in range(rng.integers(0, maxsegs + 1)):
        mid = rng.integers(0, n)
        seglen = rng.normal(mean_segment_length, 0.2 * mean_segment_length)
        left = max(0, int(mid - 0.5 * fs * seglen))
        right = min(n - 1, int(mid + 0.5 * fs * seglen))
        signal[left:right + 1] = rng.uniform(-1, 1)
    signal = c * signal[:, None]
    # Operator precedence makes this 2r - N(1, 1), r in {0, 1}: N(-1, 1) or N(1, 1), the same law as ±N(1, 1).
    gains = 2 * rng.integers(0, 2, channels) - 1 * rng.normal(1, 1, channels)
    return signal * gains[None]


REFERENCE = {
    "baseline_wander": (ref_baseline_wander, 0),
    "electrode_motion": (ref_electrode_motion, 1),
    "powerline": (ref_powerline, 2),
    "baseline_shift": (ref_baseline_shift, 3),
}


# --- exact expectations: E[x²] averaged over draws, channels and the N samples of a window ----------------


def ms_baseline_wander(cmax: float, n: int, fs: float, fc: float = 0.5, fdelta: float = 0.01) -> float:
    """E[C²]·K·E[a²]·E[cos²] = (Cmax²/3)·K/6: the K cosines are uncorrelated (independent uniform phases)."""
    return cmax**2 / 3 * int(fc / fdelta + 0.5) / 6


def ms_electrode_motion(cmax: float, n: int, fs: float) -> float:
    """E[C²] = Cmax²/3."""
    return cmax**2 / 3


def ms_powerline(cmax: float, n: int, fs: float, fn: float = 50.0, k_harm: int = 3) -> float:
    """E[g²]·E[C⁴]·mean_t E[(Σ a_k cos(θ_k t + φ))²] with E[g²] = 1/3, E[C⁴] = Cmax⁴/5 and, over the shared
    phase, E[cos(A+φ)cos(B+φ)] = cos(A−B)/2, E[a_j a_k] = 1/3 (j = k) or 1/4: harmonics that alias onto each
    other (e.g. 50 and 150 Hz at fs = 100) add coherently."""
    t = _time(n, fs)
    total = 0.0
    for j in range(1, k_harm + 1):
        for k in range(1, k_harm + 1):
            m = 1 / 3 if j == k else 1 / 4
            total += m * 0.5 * np.cos(2 * math.pi * (j - k) * fn * t).mean()
    return (1 / 3) * cmax**4 / 5 * total


def ms_baseline_shift(cmax: float, n: int, fs: float, mean_segment_length: float = 3.0,
                      max_segments_per_second: float = 0.3) -> float:
    """E[C²]·E[g²]·E[a²]·mean_t P(t covered) = (Cmax²/3)·2·(1/3)·mean_t P(t covered).

    One segment covers sample t iff h = 0.5·fs·seglen ≥ max(t − mid, mid − t − 1) (``int`` truncation of
    left/right), so q_t = mean_mid P(seglen ≥ 2·max(...)/fs) with seglen ~ N(μ, (0.2μ)²); with m ~ U{0..M}
    independent segments, P(t covered) = mean_m 1 − (1 − q_t)^m (the last covering one sets the level).
    """
    mu, sd = mean_segment_length, 0.2 * mean_segment_length
    t = np.arange(n)[:, None]
    mid = np.arange(n)[None, :]
    need = 2 * np.maximum(t - mid, mid - t - 1) / fs
    z = (need - mu) / sd
    q = (0.5 * np.vectorize(math.erfc)(z / math.sqrt(2))).mean(axis=1)  # (n,)
    maxsegs = int(max_segments_per_second * n / fs + 0.5)
    covered = np.mean([1 - (1 - q) ** m for m in range(maxsegs + 1)], axis=0)
    return cmax**2 / 3 * 2 * (1 / 3) * covered.mean()


EXPECTED_MS = {
    "baseline_wander": ms_baseline_wander,
    "electrode_motion": ms_electrode_motion,
    "powerline": ms_powerline,
    "baseline_shift": ms_baseline_shift,
}


def reference_draws(name: str, level: int, n: int, fs: float, draws: int, seed: int = 0) -> np.ndarray:
    """``(draws, channels, n)`` from the numpy transcription of generator ``name`` at ``level``."""
    fn, idx = REFERENCE[name]
    rng = np.random.default_rng(seed)
    return np.stack([fn(rng, n, fs, ESS_LEVELS[level][idx]).T for _ in range(draws)])


def _table(noise_py: str | None = None, draws: int = 2000) -> None:
    """Prints, per generator and level at 100 Hz and 500 Hz over 2.5 s windows: the reference's mean
    per-window-per-lead RMS (numpy transcription), ecgforge's, and the exact and ecgforge's root mean square.
    ``noise_py``: another ecgforge ``augment/noise.py`` to measure (e.g. an older version), else the installed one.
    """
    import importlib.util

    import torch

    if noise_py is None:
        from ecgforge.augment import noise
    else:
        spec = importlib.util.spec_from_file_location("noise_under_test", noise_py)
        assert spec is not None and spec.loader is not None
        noise = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(noise)

    ours = {"baseline_wander": noise.baseline_wander_noise, "electrode_motion": noise.electrode_motion_noise,
            "powerline": noise.powerline_noise, "baseline_shift": noise.baseline_shift_noise}
    print("fs_hz generator level | mean window RMS: reference ours | RMS over all: exact ours   (mV)")
    for fs in (100.0, 500.0):
        n = int(2.5 * fs)
        for name, (_, idx) in REFERENCE.items():
            for level in sorted(ESS_LEVELS):
                ref = reference_draws(name, level, n, fs, draws, seed=level)
                ours_x = ours[name]((draws, 12, n), fs, ESS_LEVELS[level][idx],
                                    generator=torch.Generator().manual_seed(level)).double().numpy()
                exact = math.sqrt(EXPECTED_MS[name](ESS_LEVELS[level][idx], n, fs))
                print(f"{fs:5.0f} {name:16s} {level} | {np.sqrt((ref**2).mean(-1)).mean():7.3f} "
                      f"{np.sqrt((ours_x**2).mean(-1)).mean():7.3f} | {exact:7.3f} {np.sqrt((ours_x**2).mean()):7.3f}")


if __name__ == "__main__":
    import sys

    _table(sys.argv[1] if len(sys.argv) > 1 else None)
