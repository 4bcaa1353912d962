"""Signal processing applied when a cache is built (and by ``encoder.preprocess(..., resample=True)``)."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ecgforge.data.cache_spec import FilterConfig


def preprocess(data: np.ndarray, fs_in: float, fs_out: float, filt: FilterConfig) -> np.ndarray:
    """Filter (zero-phase Butterworth / notch at the input rate) then resample polyphase.

    Args:
        data: ``(leads, T)`` float32, mV.
    Returns:
        ``(leads, T')`` float32 with ``T' = round(T * fs_out / fs_in)``.
    """
    resample = abs(fs_in - fs_out) > 1e-6
    if not (filt.highpass_hz or filt.lowpass_hz or filt.notch_hz or resample):
        return data.astype(np.float32, copy=False)  # nothing to do: no float64 round trip
    # Deferred: scipy.signal takes half a second to import, and `cache info` / `cache verify` never need it.
    from scipy import signal as sps

    x = data.astype(np.float64, copy=False)
    nyq = fs_in / 2
    if filt.highpass_hz or filt.lowpass_hz:
        lo = filt.highpass_hz
        hi = filt.lowpass_hz if filt.lowpass_hz and filt.lowpass_hz < nyq else None
        if lo and hi:
            sos = sps.butter(filt.order, [lo, hi], btype="bandpass", fs=fs_in, output="sos")
        elif lo:
            sos = sps.butter(filt.order, lo, btype="highpass", fs=fs_in, output="sos")
        else:
            sos = sps.butter(filt.order, hi, btype="lowpass", fs=fs_in, output="sos") if hi else None
        if sos is not None and x.shape[-1] > 3 * (2 * len(sos) + 1):
            x = sps.sosfiltfilt(sos, x, axis=-1)
    if filt.notch_hz and filt.notch_hz < nyq:
        b, a = sps.iirnotch(filt.notch_hz, Q=30.0, fs=fs_in)
        if x.shape[-1] > 3 * max(len(a), len(b)):
            x = sps.filtfilt(b, a, x, axis=-1)
    if resample:
        ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
        x = sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    return x.astype(np.float32)
