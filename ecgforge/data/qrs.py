"""QRS complexes of ECG windows: R peaks from a band-passed lead, widened to a fixed-width QRS interval.

Used to ask whether learned masks (adversarial masking, Bo et al. 2022) hide QRS complexes more often than
chance. The detector is deliberately plain (Pan & Tompkins' band, no adaptive thresholds): the R peaks are
``scipy.signal.find_peaks`` on |band-passed lead| (2nd-order Butterworth, 5-15 Hz, zero phase) with a
minimum height of ``rel_height`` times the window's maximum and at least ``min_rr_s`` between peaks; each
peak marks ±``half_width_s`` around it (a QRS lasts about 80-120 ms).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt


def band_pass(x: np.ndarray, fs_hz: float, band_hz: tuple[float, float] = (5.0, 15.0)) -> np.ndarray:
    """x (..., T) -> zero-phase Butterworth band-pass along the last axis (upper edge kept below Nyquist)."""
    lo, hi = band_hz
    hi = min(hi, 0.45 * fs_hz)
    sos = butter(2, (lo, hi), btype="band", fs=fs_hz, output="sos")
    return sosfiltfilt(sos, x, axis=-1)


def r_peaks(lead: np.ndarray, fs_hz: float, rel_height: float = 0.35, min_rr_s: float = 0.25) -> np.ndarray:
    """lead (T,) in mV -> sorted int indices of its R peaks (empty for a flat lead)."""
    energy = np.abs(band_pass(np.asarray(lead, dtype=np.float64), fs_hz))
    top = float(energy.max(initial=0.0))
    if top <= 1e-9:  # a zeroed (missing) lead has no beats to find
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(energy, height=rel_height * top, distance=max(int(round(min_rr_s * fs_hz)), 1))
    return peaks.astype(np.int64)


def qrs_mask(x: np.ndarray, fs_hz: float, lead: int = 1, half_width_s: float = 0.05) -> np.ndarray:
    """x (B, leads, T) mV -> (B, T) bool, True within ±half_width_s of an R peak found on ``lead`` (II)."""
    b, _, t = x.shape
    out = np.zeros((b, t), dtype=bool)
    hw = int(round(half_width_s * fs_hz))
    for i in range(b):
        for p in r_peaks(x[i, lead], fs_hz):
            out[i, max(p - hw, 0): p + hw + 1] = True
    return out
