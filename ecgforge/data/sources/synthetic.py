"""Synthetic 12-lead ECGs: the built-in default dataset, written as real WFDB records.

The heart is a single 3D dipole (the vectorcardiogram, Frank axes: X to the patient's left, Y to the feet,
Z to the back). Each beat is a sum of Gaussian bumps per axis for P, QRS and T, in the spirit of ECGSYN
(McSharry et al. 2003, "A dynamical model for generating synthetic electrocardiogram signals", IEEE TBME
50:289-294) but in 3D, and the dipole is projected onto the leads with the Dower transform, so the 12 leads
are consistent with one heart: III = II - I and aVR + aVL + aVF = 0 hold exactly (noise is added per
electrode, before the leads are formed).

What is simulated, per record (``(12, T)`` float32, mV, canonical lead order):
- rhythm: ``sinus`` 60-100 bpm, ``brady`` 40-59.5, ``tachy`` 100.5-150 (mean rate over the record), each with
  heart-rate variability (respiratory sinus arrhythmia at the breathing rate + a 0.04-0.15 Hz LF wave);
  ``afib``: i.i.d. log-normal RR (coefficient of variation 0.15-0.30, mean 60-140 bpm), no P waves,
  fibrillatory f-waves at 4-9 Hz of 0.03-0.12 mV.
- conduction: ``normal`` or ``wide_qrs`` (bundle-branch-like, QRS >= 120 ms; a patient prone to it has a
  left-like pattern, broad notched R in I/V5/V6 and QS in V1, or a right-like one, rsR' in V1 and a broad
  terminal S in I/V6; the T wave is discordant in both).
- patient: sex, age, heart orientation, amplitude and width scales, PR and QTc, drawn once per patient;
  each record adds a small jitter. Sex, loosely after Macfarlane et al. 1994, Rautaharju et al. 2009
  (AHA/ACCF/HRS QT recommendations) and Rijnbeek et al. 2014 (normal ECG values): women have ~15 % lower
  QRS and T amplitude, ~6 % shorter QRS and a QTc ~12 ms longer. Age: QRS amplitude -0.4 %/year and
  frontal axis -0.25 deg/year around 50 years, PR +0.4 ms/year, QTc +0.2 ms/year.
- noise per electrode: baseline wander (breathing rate and slower drifts, all < 0.5 Hz), powerline
  interference (50 or 60 Hz per patient, omitted when above Nyquist) and EMG (white, slowly modulated),
  each at a level drawn log-uniformly per record.

`generate` writes ``<record>.hea/.dat`` (format 16, 1 uV per unit), ``labels.csv`` and ``synthetic.json``
(the parameters) into a temporary folder next to the target and renames it into place, so a crash never
leaves a half-written dataset; a complete folder with the same parameters is left as it is.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ecgforge.data.record import RecordRef
from ecgforge.data.sources.base import WFDBSource
from ecgforge.errors import UserError
from ecgforge.fsio import atomic_dir

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RHYTHMS: tuple[str, ...] = ("sinus", "brady", "tachy", "afib")
CONDUCTIONS: tuple[str, ...] = ("normal", "wide_qrs")
SEXES: tuple[str, ...] = ("F", "M")
SyntheticLabelSet = Literal["rhythm", "conduction", "sex"]

LABELS_FILE = "labels.csv"
MANIFEST_FILE = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the signal model changes, so stale folders are regenerated
ADC_GAIN = 1000.0  # digital units per mV: 1 uV resolution, +-32.7 mV range in format 16
N_FOLDS = 10

# Mean heart rate (bpm) per rhythm class. Boundaries follow the usual clinical cut-offs (60 and 100 bpm).
RATE_BPM: dict[str, tuple[float, float]] = {
    "sinus": (60.0, 100.0),
    "brady": (40.0, 59.5),
    "tachy": (100.5, 150.0),
    "afib": (60.0, 140.0),
}

# Dower transform, VCG (X, Y, Z) -> (I, II, V1..V6), mV per mV. Dower, Machado & Osborne 1980, "On deriving
# the electrocardiogram from vectorcardiographic leads", Clin Cardiol 3:87-95 (coefficients as tabulated by
# Edenbrandt & Pahlm 1988, J Electrocardiol 21:361-367). The Z coefficients of V1-V3 are negative: +Z points
# to the back.
DOWER = np.array(
    [
        [0.632, -0.235, 0.059],  # I
        [0.235, 1.066, -0.132],  # II
        [-0.515, 0.157, -0.917],  # V1
        [0.044, 0.164, -1.387],  # V2
        [0.882, 0.098, -1.277],  # V3
        [1.213, 0.127, -0.601],  # V4
        [1.125, 0.127, -0.086],  # V5
        [0.831, 0.076, 0.230],  # V6
    ]
)


class SyntheticDataError(UserError):
    """A problem with the synthetic source's folder a user can fix; one line naming the path."""


class SyntheticSourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["synthetic"] = "synthetic"
    path: str = Field(description="folder for the generated WFDB records (created on first use)")
    n_patients: int = Field(100, gt=0)
    records_per_patient: int = Field(4, gt=0)
    duration_s: float = Field(10.0, gt=0)
    fs_hz: float = Field(500.0, gt=0)
    seed: int = Field(0, ge=0)
    label_sets: list[SyntheticLabelSet] = Field(default_factory=lambda: ["rhythm", "conduction", "sex"])


# ------------------------------------------------------------------------------------------ morphology

# One wave: (offset from the R peak in s, Gaussian sigma in s, dipole vector (X, Y, Z) in mV). Values are
# for a 50-year-old man with heart rate 60 bpm, before the patient's rotation and scales; they were chosen
# so that the Dower projection gives textbook leads (R ~1 mV in II, ~1.4 mV in V5, rS in V1-V2, q in I/V6,
# P ~0.15 mV in II and biphasic in V1, upright T except V1).
_Wave = tuple[float, float, tuple[float, float, float]]

_P: tuple[_Wave, ...] = (
    (0.0, 0.018, (0.02, 0.09, -0.05)),  # right atrium: anterior first (positive part of P in V1)
    (0.03, 0.020, (0.07, 0.06, 0.05)),  # left atrium: posterior later (negative part of P in V1)
)
_QRS: dict[str, tuple[_Wave, ...]] = {
    "normal": (
        (-0.030, 0.008, (-0.12, 0.02, -0.20)),  # septal forces: rightward, anterior (q in I/V6, r in V1)
        (0.000, 0.012, (1.20, 0.75, 0.25)),  # left-ventricular free wall
        (0.030, 0.010, (-0.35, -0.25, 0.55)),  # basal, posterior terminal forces (S in V1-V3)
    ),
    "left": (  # left-bundle-branch-like: septum activated from the right, slow leftward-posterior spread
        (-0.035, 0.020, (0.70, 0.10, 0.45)),
        (0.030, 0.020, (0.80, -0.05, 0.75)),  # the second hump makes the notch in I, V5, V6
    ),
    "right": (  # right-bundle-branch-like: normal start, then slow rightward-anterior right-ventricle
        (-0.030, 0.008, (-0.12, 0.02, -0.20)),
        (-0.005, 0.012, (1.00, 0.65, 0.30)),
        (0.025, 0.010, (-0.20, -0.15, 0.35)),
        (0.065, 0.022, (-0.45, -0.05, -0.65)),  # R' in V1, broad S in I and V6
    ),
}
# T: a wider early and a narrower late Gaussian make the slow upstroke and steeper downstroke.
_T: dict[str, tuple[_Wave, ...]] = {
    "normal": ((0.22, 0.055, (0.20, 0.16, -0.12)), (0.27, 0.035, (0.12, 0.10, -0.07))),
    "left": ((0.26, 0.055, (-0.20, 0.05, -0.25)), (0.31, 0.035, (-0.12, 0.03, -0.15))),
    "right": ((0.26, 0.055, (0.25, 0.15, 0.15)), (0.31, 0.035, (0.15, 0.09, 0.09))),
}
# Atrial fibrillation: the f-wave dipole points forward, rightward and down, so it is largest in V1 (~1x
# the amplitude), about half of that in II, as on real recordings.
_ATRIAL_DIR = np.array([-0.30, 0.40, -0.85])

_ELECTRODES = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")


def _rotation(frontal_deg: float, horizontal_deg: float, sagittal_deg: float) -> np.ndarray:
    """``(3, 3)`` rotation of the heart: about Z (frontal plane, X toward Y = more vertical axis), about Y
    (horizontal plane, X toward Z = clockwise, transition zone moves to the left) and about X."""
    a, b, c = np.deg2rad([frontal_deg, horizontal_deg, sagittal_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rx @ ry @ rz


@dataclass(frozen=True)
class Patient:
    """Per-patient parameters, drawn once by `draw_patient`.

    Attributes:
        sex: ``"F"``/``"M"``. age: years.
        rotation: ``(3, 3)`` heart orientation applied to every dipole vector.
        qrs_scale, t_scale, p_scale: amplitude factors (sex and age included).
        qrs_width: time factor of the QRS waves (offsets and widths). p_width: same for P.
        pr_s: PR interval at 60 bpm (P onset to QRS onset). qtc_s: rate-corrected QT (Fridericia).
        bbb_kind: ``"left"``/``"right"``: the pattern this patient shows when the QRS is wide.
        bbb_prone: whether most of this patient's records have a wide QRS.
        line_hz: mains frequency where this patient was recorded (50 or 60).
    """

    sex: str
    age: int
    rotation: np.ndarray
    qrs_scale: float
    t_scale: float
    p_scale: float
    qrs_width: float
    p_width: float
    pr_s: float
    qtc_s: float
    bbb_kind: str
    bbb_prone: bool
    line_hz: float


def draw_patient(rng: np.random.Generator) -> Patient:
    """Draw one synthetic patient (sex 1:1, age ~ N(58, 16) clipped to 18-95)."""
    sex = SEXES[int(rng.integers(2))]
    age = int(np.clip(round(rng.normal(58.0, 16.0)), 18, 95))
    female = sex == "F"
    years = age - 50.0
    # Frontal QRS axis: the reference dipole sits at ~+35 deg; N(0, 20) around it minus 0.25 deg/year
    # covers the normal -30..+90 deg range, with the left drift of older hearts.
    frontal = float(np.clip(rng.normal(-0.25 * years, 20.0), -55.0, 55.0))
    rotation = _rotation(frontal, rng.normal(0.0, 12.0), rng.normal(0.0, 8.0))
    return Patient(
        sex=sex,
        age=age,
        rotation=rotation,
        qrs_scale=float(rng.lognormal(0.0, 0.2) * (0.85 if female else 1.0) * max(0.6, 1.0 - 0.004 * years)),
        t_scale=float(rng.lognormal(0.0, 0.25) * (0.85 if female else 1.0)),
        p_scale=float(rng.lognormal(0.0, 0.2)),
        qrs_width=float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.2) * (0.94 if female else 1.0)),
        p_width=float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25)),
        pr_s=float(np.clip(rng.normal(0.155 + 0.0004 * years, 0.018), 0.12, 0.21)),
        qtc_s=float(
            np.clip(rng.normal(0.400 + (0.012 if female else 0.0) + 0.0002 * years, 0.018), 0.35, 0.47)
        ),
        bbb_kind="left" if rng.random() < 0.5 else "right",
        bbb_prone=bool(rng.random() < 0.3),
        line_hz=50.0 if rng.random() < 0.5 else 60.0,
    )


# ------------------------------------------------------------------------------------------- rhythm


def _beat_times(rhythm: str, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """R-peak times ``(n,)`` in s, starting ~2 s before the record so its first samples hold a T wave.

    Returns the times, the breathing frequency (Hz) and the breathing phase (rad), which the baseline
    wander and the QRS amplitude modulation share with the respiratory sinus arrhythmia.
    """
    lo, hi = RATE_BPM[rhythm]
    rr_mean = 60.0 / rng.uniform(lo, hi)
    resp_hz, resp_phase = rng.uniform(0.15, 0.4), rng.uniform(0, 2 * np.pi)
    n = int(math.ceil((duration_s + 3.0) / (0.6 * rr_mean))) + 2  # enough even for short RRs
    if rhythm == "afib":
        mult = rng.lognormal(0.0, rng.uniform(0.15, 0.30), n)
    else:
        t_approx = np.arange(n) * rr_mean
        rsa = rng.uniform(0.005, 0.02) if rhythm == "tachy" else rng.uniform(0.02, 0.06)
        lf_hz = rng.uniform(0.04, 0.15)
        mult = (
            1.0
            + rsa * np.sin(2 * np.pi * resp_hz * t_approx + resp_phase)
            + rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * lf_hz * t_approx + rng.uniform(0, 2 * np.pi))
            + rng.normal(0.0, 0.006, n)
        )
    rr = rr_mean * mult / mult.mean()  # the drawn rate is the record's mean rate
    if rhythm == "afib":
        rr = np.maximum(rr, 0.28)  # AV-node refractoriness
    t = -2.0 - rng.uniform(0, rr_mean) + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    return t[t < duration_s + 0.5], resp_hz, resp_phase


# ------------------------------------------------------------------------------------------ rendering


def _waves(
    patient: Patient,
    conduction: str,
    rhythm: str,
    r_times: np.ndarray,
    rotation: np.ndarray,
    scales: tuple[float, float, float],
    width: float,
    resp: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every Gaussian of every beat: centres ``(W,)`` s, sigmas ``(W,)`` s, dipole vectors ``(W, 3)`` mV."""
    qrs_scale, t_scale, p_scale = scales
    pattern = patient.bbb_kind if conduction == "wide_qrs" else "normal"
    rr_prev = np.diff(r_times, prepend=r_times[0] - np.mean(np.diff(r_times)))
    qrs_w = patient.qrs_width * width
    centres, sigmas, vectors = [], [], []

    def add(offset: np.ndarray, sigma: np.ndarray, vec: tuple[float, float, float], amp: np.ndarray) -> None:
        centres.append(r_times + offset)
        sigmas.append(np.broadcast_to(sigma, r_times.shape))
        vectors.append(amp[:, None] * (rotation @ np.asarray(vec))[None, :])

    ones = np.ones_like(r_times)
    for off, sig, vec in _QRS[pattern]:
        add(np.full_like(r_times, off * qrs_w), np.asarray(sig * qrs_w), vec, qrs_scale * resp)
    # QT follows the preceding RR (Fridericia, QT = QTc * RR^(1/3)); a wide QRS delays repolarisation.
    qt_factor = (patient.qtc_s / 0.400) * np.cbrt(rr_prev)
    for off, sig, vec in _T[pattern]:
        add(off * qt_factor, sig * qt_factor, vec, t_scale * ones)
    if rhythm != "afib":
        pr = patient.pr_s * rr_prev**0.1  # PR shortens a little at fast rates
        p_start = -pr - 0.05 * qrs_w + 2.5 * _P[0][1] * patient.p_width  # P onset 2.5 sigma before its peak
        for off, sig, vec in _P:
            add(p_start + off * patient.p_width, np.asarray(sig * patient.p_width), vec, p_scale * ones)
    return np.concatenate(centres), np.concatenate(sigmas), np.concatenate(vectors)


def _render(centres: np.ndarray, sigmas: np.ndarray, vectors: np.ndarray, n: int, fs_hz: float) -> np.ndarray:
    """Sum of Gaussians sampled at ``k / fs_hz``: ``(3, n)`` mV. Each is evaluated on +-4 sigma only
    (truncation error < 4e-4 of its amplitude, under the 1 uV quantisation), which keeps it O(waves)."""
    half = int(math.ceil(4.0 * sigmas.max() * fs_hz)) + 1
    idx = np.rint(centres * fs_hz).astype(np.int64)[:, None] + np.arange(-half, half + 1)[None, :]
    g = np.exp(-0.5 * ((idx / fs_hz - centres[:, None]) / sigmas[:, None]) ** 2)
    keep = (idx >= 0) & (idx < n)
    idx_k, g_k = idx[keep], g[keep]
    rows = np.nonzero(keep)[0]
    return np.stack([np.bincount(idx_k, weights=g_k * vectors[rows, a], minlength=n) for a in range(3)])


def _fwaves(t: np.ndarray, fs_hz: float, rotation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Atrial fibrillatory activity ``(3, T)`` mV: 4-9 Hz, slowly wandering frequency and amplitude."""
    f0 = rng.uniform(4.5, 8.5)
    freq = np.clip(f0 + rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t), 4.0, 9.0)
    phase = 2 * np.pi * np.cumsum(freq) / fs_hz + rng.uniform(0, 2 * np.pi)  # integrated frequency
    amp = np.exp(rng.uniform(np.log(0.03), np.log(0.12))) * (
        1 + 0.3 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6.3))
    )
    wave = amp * (np.sin(phase) + 0.25 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))  # saw-tooth-like
    direction = rotation @ (_ATRIAL_DIR / np.linalg.norm(_ATRIAL_DIR))
    return direction[:, None] * wave[None, :]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _electrode_noise(
    t: np.ndarray, fs_hz: float, line_hz: float, resp_hz: float, rng: np.random.Generator
) -> np.ndarray:
    """Noise at the 9 electrodes (RA, LA, LL, V1..V6): ``(9, T)`` mV.

    Common-mode parts cancel in the leads, so what survives is the electrode-to-electrode difference, as on a
    real amplifier; the levels are drawn per record to span clean resting ECGs to noisy ambulatory ones.
    """
    n_el = len(_ELECTRODES)
    # Baseline wander: breathing (moves the chest electrodes most) plus two slow drifts, all < 0.5 Hz.
    bw = _log_uniform(rng, 0.02, 0.3)
    chest = np.r_[np.full(3, 0.5), np.ones(6)]
    wander = (bw * chest * rng.normal(1.0, 0.5, n_el))[:, None] * np.sin(
        2 * np.pi * resp_hz * t + rng.uniform(0, 6.3)
    )
    for _ in range(2):
        f = rng.uniform(0.02, 0.15)
        wander += (bw * rng.normal(0.0, 0.6, n_el))[:, None] * np.sin(
            2 * np.pi * f * t[None, :] + rng.uniform(0, 6.3, (n_el, 1))
        )
    # Powerline: one phase plus electrode-impedance imbalance. Above Nyquist a real recorder's anti-alias
    # filter removes it, so it is left out there rather than aliased.
    noise = wander
    if line_hz < fs_hz / 2:
        pl = _log_uniform(rng, 0.001, 0.05)
        phase = rng.uniform(0, 2 * np.pi) + rng.normal(0.0, 0.3, (n_el, 1))
        noise += (pl * rng.normal(1.0, 0.7, n_el))[:, None] * np.sin(2 * np.pi * line_hz * t[None, :] + phase)
    # EMG: broadband, strongest on the limb electrodes (arm and leg muscle), amplitude waxing and waning.
    emg = _log_uniform(rng, 0.002, 0.04)
    limb = np.r_[np.ones(3), np.full(6, 0.5)]
    envelope = np.exp(0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3)))
    noise += (emg * limb)[:, None] * envelope[None, :] * rng.standard_normal((n_el, len(t)))
    return noise


def simulate(
    patient: Patient, rhythm: str, conduction: str, duration_s: float, fs_hz: float, rng: np.random.Generator
) -> np.ndarray:
    """One record of ``patient``: ``(12, T)`` float32 mV, T = round(duration_s * fs_hz), canonical leads.

    III, aVR, aVL and aVF are formed from I and II in float32, so III == II - I exactly and
    aVR + aVL + aVF == 0 to float32 rounding.
    """
    if rhythm not in RHYTHMS or conduction not in CONDUCTIONS:
        raise ValueError(f"unknown rhythm/conduction {rhythm!r}/{conduction!r}")
    n = int(round(duration_s * fs_hz))
    t = np.arange(n) / fs_hz
    # Per-record jitter of the patient's morphology: electrode placement, posture, hydration.
    rotation = _rotation(*rng.normal(0.0, 2.5, 3)) @ patient.rotation
    jitter = rng.lognormal(0.0, 0.04, 3)
    scales = (patient.qrs_scale * jitter[0], patient.t_scale * jitter[1], patient.p_scale * jitter[2])
    width = float(rng.normal(1.0, 0.02))

    r_times, resp_hz, resp_phase = _beat_times(rhythm, duration_s, rng)
    # Breathing moves the heart relative to the electrodes: the QRS amplitude swings by a few percent.
    resp = 1.0 + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * resp_hz * r_times + resp_phase)
    vcg = _render(*_waves(patient, conduction, rhythm, r_times, rotation, scales, width, resp), n, fs_hz)
    if rhythm == "afib":
        vcg += _fwaves(t, fs_hz, rotation, rng)

    heart = DOWER @ vcg  # (8, T): I, II, V1..V6
    e = _electrode_noise(t, fs_hz, patient.line_hz, resp_hz, rng)  # RA, LA, LL, V1..V6
    wilson = e[:3].mean(axis=0)  # Wilson's central terminal: the precordial leads' reference
    lead_i = (heart[0] + e[1] - e[0]).astype(np.float32)
    lead_ii = (heart[1] + e[2] - e[0]).astype(np.float32)
    out = np.empty((12, n), dtype=np.float32)
    out[0], out[1] = lead_i, lead_ii
    out[2] = lead_ii - lead_i  # Einthoven
    out[3] = -(lead_i + lead_ii) / 2  # Goldberger
    out[4] = lead_i - lead_ii / 2
    out[5] = lead_ii - lead_i / 2
    out[6:] = heart[2:] + e[3:] - wilson
    return out


# ------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class SyntheticRecord:
    """One generated record: ``data (12, T)`` float32 mV and its labels."""

    record_id: str
    patient_id: str
    patient_index: int
    sex: str
    age: int
    rhythm: str
    conduction: str
    data: np.ndarray


def patient_id(patient_index: int) -> str:
    return f"p{patient_index + 1:05d}"


def make_patient(seed: int, patient_index: int) -> Patient:
    """The patient ``patient_index`` (0-based) of the dataset with ``seed``; independent of dataset size."""
    return draw_patient(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(patient_index, 0))))


def make_record(
    seed: int, patient_index: int, record_index: int, duration_s: float, fs_hz: float
) -> SyntheticRecord:
    """Record ``record_index`` of patient ``patient_index``: a pure function of its arguments, so any record
    can be regenerated alone (and in any order, or in parallel)."""
    patient = make_patient(seed, patient_index)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(patient_index, record_index + 1)))
    rhythm = RHYTHMS[int(rng.integers(len(RHYTHMS)))]  # balanced classes for the quickstart's linear probe
    # Bundle-branch block is mostly a property of the patient; rarely rate-dependent/intermittent otherwise.
    conduction = "wide_qrs" if rng.random() < (0.85 if patient.bbb_prone else 0.05) else "normal"
    pid = patient_id(patient_index)
    return SyntheticRecord(
        record_id=f"{pid}_{record_index + 1:02d}",
        patient_id=pid,
        patient_index=patient_index,
        sex=patient.sex,
        age=patient.age,
        rhythm=rhythm,
        conduction=conduction,
        data=simulate(patient, rhythm, conduction, duration_s, fs_hz, rng),
    )


def fold_of(patient_index: int) -> int:
    """Patient-stratified fold 1..10: round-robin over patients, so folds are balanced and disjoint."""
    return patient_index % N_FOLDS + 1


def _manifest(n_patients: int, records_per_patient: int, duration_s: float, fs_hz: float, seed: int) -> dict:
    return {
        "generator": "ecgforge.data.sources.synthetic",
        "version": GENERATOR_VERSION,
        "n_patients": n_patients,
        "records_per_patient": records_per_patient,
        "duration_s": float(duration_s),
        "fs_hz": float(fs_hz),
        "seed": seed,
    }


def _is_complete(out: Path, manifest: dict) -> bool:
    """``out`` holds exactly this dataset: same manifest, and every listed record's files are present."""
    try:
        if json.loads((out / MANIFEST_FILE).read_text()) != manifest:
            return False
        with open(out / LABELS_FILE, newline="") as f:
            names = [row["record"] for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return False
    present = {p.name for p in out.iterdir()}
    return len(names) == manifest["n_patients"] * manifest["records_per_patient"] and all(
        f"{r}.hea" in present and f"{r}.dat" in present for r in names
    )


def write_wfdb(rec: SyntheticRecord, fs_hz: float, out_dir: str | Path) -> None:
    """``rec`` as a WFDB record in ``out_dir`` (``.hea`` + format-16 ``.dat``): byte for byte what ``wfdb.wrsamp``
    writes for it (tests/data/test_synthetic.py compares them), without its ~17 ms a record of header
    bookkeeping (pandas lookups per field), which was most of a synthetic build's time."""
    out = Path(out_dir)
    # wfdb's adc: physical * gain + baseline (0), rounded half to even; clipped to the format-16 range first
    digital = np.round(np.clip(rec.data.T.astype(np.float64), -32.0, 32.0) * ADC_GAIN).astype(np.int64)
    digital.astype("<i2").tofile(out / f"{rec.record_id}.dat")
    checksums = digital.sum(axis=0) % 65536
    n_samples = digital.shape[0]
    lines = [f"{rec.record_id} {len(LEADS)} {fs_hz:g} {n_samples}"]
    lines += [f"{rec.record_id}.dat 16 {ADC_GAIN!r}(0)/mV 16 0 {int(digital[0, i]) if n_samples else 0} "
              f"{int(checksums[i])} 0 {lead}" for i, lead in enumerate(LEADS)]
    lines += [f"# patient_id: {rec.patient_id}", f"# age: {rec.age}", f"# sex: {rec.sex}", f"# rhythm: {rec.rhythm}",
              f"# conduction: {rec.conduction}"]
    (out / f"{rec.record_id}.hea").write_text("\n".join(lines) + "\n")


def _write_patients(
    out_dir: str, patients: range, records_per_patient: int, duration_s: float, fs_hz: float, seed: int
) -> list[tuple[str, str, str, int, str, str]]:
    """Generate and write every record of ``patients`` into ``out_dir``; returns their labels.csv rows."""
    rows = []
    for p in patients:
        for r in range(records_per_patient):
            rec = make_record(seed, p, r, duration_s, fs_hz)
            write_wfdb(rec, fs_hz, out_dir)
            rows.append((rec.record_id, rec.patient_id, rec.sex, rec.age, rec.rhythm, rec.conduction))
    return rows


def _auto_workers(n_records: int) -> int:
    # ~5 ms of CPU a record (synthesis and `write_wfdb`); a spawned worker costs ~1 s of CPU to start. For the
    # quickstart's 800 records two workers still end sooner than one, quiet or beside other work, though they
    # spend more CPU (BENCHMARKS.md, "The quickstart's synthetic cache"); not for the handful a test writes.
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8, n_records // 100))


def generate(
    out_dir: str | Path,
    n_patients: int = 100,
    records_per_patient: int = 4,
    duration_s: float = 10.0,
    fs_hz: float = 500.0,
    seed: int = 0,
    *,
    workers: int = 0,
) -> Path:
    """Write the synthetic dataset into ``out_dir`` (WFDB records + ``labels.csv`` + ``synthetic.json``).

    Does nothing if ``out_dir`` already holds this exact dataset; regenerates a synthetic folder written with
    other parameters; refuses a non-empty folder that is not a synthetic dataset. ``workers``: processes
    (0 = by size and CPU count); the output is identical whatever their number. Returns ``out_dir``.
    """
    out = Path(out_dir).expanduser()
    manifest = _manifest(n_patients, records_per_patient, duration_s, fs_hz, seed)
    if _is_complete(out, manifest):
        return out
    if out.exists() and not out.is_dir():
        raise SyntheticDataError(f"source.path: {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).exists():
        raise SyntheticDataError(
            f"source.path: {out} exists and is not a synthetic dataset folder; choose an empty or new folder"
        )

    n_workers = workers if workers > 0 else _auto_workers(n_patients * records_per_patient)
    with atomic_dir(out) as tmp:
        write = partial(
            _write_patients,
            str(tmp),
            records_per_patient=records_per_patient,
            duration_s=duration_s,
            fs_hz=fs_hz,
            seed=seed,
        )
        if n_workers == 1:
            rows = write(range(n_patients))
        else:
            # Contiguous patient chunks, several per worker for balance; map keeps their order, and every
            # record is a pure function of (seed, patient, record), so the folder is the same as serially.
            bounds = np.linspace(0, n_patients, min(n_patients, 4 * n_workers) + 1).astype(int)
            chunks = [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]
            # spawn, not fork: the caller may hold torch/OpenMP threads, which fork would copy half-locked
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
                rows = [row for part in pool.map(write, chunks) for row in part]
        with open(tmp / LABELS_FILE, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["record", "patient_id", "sex", "age", "rhythm", "conduction"])
            writer.writerows(rows)
        # Written last: its presence (with matching parameters) is what marks the folder complete.
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


class SyntheticSource(WFDBSource[SyntheticSourceConfig]):
    """The synthetic records, generating the folder first (when absent or stale) as the listing starts."""

    Config = SyntheticSourceConfig

    def iter_records(self) -> Iterator[RecordRef]:
        """One `RecordRef` per record, in generation order (patient, then record)."""
        cfg = self.cfg
        root = generate(Path(cfg.path).expanduser(), n_patients=cfg.n_patients,
                        records_per_patient=cfg.records_per_patient, duration_s=cfg.duration_s, fs_hz=cfg.fs_hz,
                        seed=cfg.seed)
        with open(root / LABELS_FILE, newline="") as f:
            for row in csv.DictReader(f):
                p_index = int(row["patient_id"].lstrip("p")) - 1
                yield RecordRef(
                    record_id=row["record"],
                    locator=str(root / row["record"]),
                    patient_id=row["patient_id"],
                    source="synthetic",
                    meta={"fold": fold_of(p_index), "sex": row["sex"], "age": float(row["age"])},
                    labels={s: [row[s]] for s in cfg.label_sets},
                )

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        """Label set -> every label it can hold, in a fixed order (not only those present)."""
        names = {"rhythm": list(RHYTHMS), "conduction": list(CONDUCTIONS), "sex": list(SEXES)}
        return {s: names[s] for s in self.cfg.label_sets}
