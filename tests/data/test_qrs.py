"""QRS detection used by the adversarial-masking metrics: R peaks where they were put, intervals of the set width."""

from __future__ import annotations

import numpy as np

from ecgforge.data.qrs import qrs_mask, r_peaks


def synthetic_lead(peaks: list[int], t: int = 250, fs: float = 100.0, seed: int = 0) -> np.ndarray:
    """Narrow Gaussian R waves (σ 15 ms, 1 mV) at ``peaks``, broad T waves 250 ms later, small noise."""
    rng = np.random.default_rng(seed)
    n = np.arange(t)
    x = 0.02 * rng.standard_normal(t) + 0.3 * np.sin(2 * np.pi * 0.3 * n / fs)  # noise and baseline wander
    for p in peaks:
        x += np.exp(-0.5 * ((n - p) / (0.015 * fs)) ** 2)
        x += 0.3 * np.exp(-0.5 * ((n - p - 0.25 * fs) / (0.06 * fs)) ** 2)
    return x


def test_r_peaks_found_where_the_beats_are() -> None:
    truth = [30, 110, 190]
    found = r_peaks(synthetic_lead(truth), 100.0)
    assert len(found) == 3
    assert np.abs(found - np.array(truth)).max() <= 2  # within 20 ms


def test_flat_lead_has_no_peaks() -> None:
    assert r_peaks(np.zeros(250), 100.0).size == 0


def test_qrs_mask_marks_the_set_width_around_each_peak() -> None:
    x = np.zeros((2, 12, 250))
    x[0, 1] = synthetic_lead([50, 150])
    m = qrs_mask(x, 100.0, lead=1, half_width_s=0.05)
    assert m.shape == (2, 250)
    assert m[0].sum() in range(20, 25)  # two intervals of 11 samples, give or take the detected peak
    assert m[0, 50] and m[0, 150] and not m[0, 100]
    assert not m[1].any()  # lead II zeroed: nothing to find
