"""Pieces the sources share: a sorted streaming file walk, amplitude units, lead derivation, ages, folds."""

from __future__ import annotations

import fnmatch
import math
import os
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ecgforge.data.leads import CANONICAL_LEADS, resolve_lead
from ecgforge.data.record import RecordError, Signal

__all__ = [
    "INDEPENDENT_LEADS",
    "assemble_leads",
    "derive_limb_leads",
    "hash_fold",
    "parse_age",
    "unit_to_mv",
    "walk_files",
]

# Millivolts per unit, for every spelling the formats use (UCUM codes, MUSE's words, HL7 units).
_MV_PER_UNIT: dict[str, float] = {
    "nv": 1e-6, "nanovolt": 1e-6, "nanovolts": 1e-6,
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
}

# The eight leads an electrocardiograph records; III, aVR, aVL, aVF are linear in I and II.
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def unit_to_mv(unit: str) -> float:
    """Millivolts per ``unit`` (``"uV"``, ``"MICROVOLTS"``, ``"mV"``...). Raises RecordError for others."""
    factor = _MV_PER_UNIT.get(unit.strip().lower())
    if factor is None:
        raise RecordError(f"amplitude units {unit!r} are not a voltage (expected nV, uV, mV or V)")
    return factor


def derive_limb_leads(leads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add III, aVR, aVL, aVF where absent, from I and II (Einthoven: III = II - I; Goldberger:
    aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2). ``leads``: canonical name -> (T,) mV."""
    if "I" not in leads or "II" not in leads:
        return dict(leads)
    lead_i, lead_ii = leads["I"], leads["II"]
    derived = {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    return {**derived, **leads}  # a stored lead always wins over its derivation


def assemble_leads(
    leads: dict[str, np.ndarray], fs_hz: float, *, missing_leads: str, what: str
) -> Signal:
    """Stack named leads into a `Signal` in canonical order, deriving III/aVR/aVL/aVF from I and II.

    Args:
        leads: canonical lead name -> (T,) samples in mV (non-standard leads already dropped).
        missing_leads: ``"error"``: a missing independent lead (I, II, V1-V6) is a RecordError naming it;
            ``"absent"``: the record keeps the leads it has (the cache marks the others absent).
        what: the record, for reasons (``"rhythm waveform"``).
    """
    if not leads:
        raise RecordError(f"no standard ECG lead in the {what}")
    if not math.isfinite(fs_hz) or fs_hz <= 0:
        raise RecordError(f"sampling rate {fs_hz} Hz in the {what}")
    lengths = {name: len(x) for name, x in leads.items()}
    if len(set(lengths.values())) != 1:
        raise RecordError(f"leads of different lengths in the {what}: {lengths}")
    if missing_leads == "error":
        absent = [lead for lead in INDEPENDENT_LEADS if lead not in leads]
        if absent:
            raise RecordError(f"missing leads {', '.join(absent)} in the {what}")
    full = derive_limb_leads(leads)
    names = [lead for lead in CANONICAL_LEADS if lead in full]
    data = np.stack([np.asarray(full[n], dtype=np.float64) for n in names]).astype(np.float32)
    return Signal(data=data, fs_hz=float(fs_hz), lead_names=names)


def canonical_lead(name: str) -> str | None:
    """Canonical name of a lead label as XML/DICOM files write it (``"Lead I (Einthoven)"``, ``"V1"``)."""
    return resolve_lead(re.sub(r"\(.*?\)", "", name))


_AGE_UNITS = {"y": 1.0, "year": 1.0, "years": 1.0, "m": 1 / 12, "month": 1 / 12, "months": 1 / 12,
              "w": 7 / 365.25, "week": 7 / 365.25, "weeks": 7 / 365.25,
              "d": 1 / 365.25, "day": 1 / 365.25, "days": 1 / 365.25,
              "h": 1 / 8766, "hour": 1 / 8766, "hours": 1 / 8766}


def parse_age(value: str | None, unit: str | None = "years") -> float:
    """Age in years from a number and its unit (``"42", "YEARS"``; DICOM's ``"042Y"`` with unit None); NaN
    when absent, unparsable or negative."""
    text = (value or "").strip()
    if unit is None:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([YMWDH])?", text, re.IGNORECASE)
        if m is None:
            return math.nan
        text, unit = m.group(1), m.group(2) or "y"
    try:
        number = float(text)
    except ValueError:
        return math.nan
    factor = _AGE_UNITS.get((unit or "years").strip().lower())
    if factor is None or not math.isfinite(number) or number < 0:
        return math.nan
    return number * factor


def hash_fold(patient_id: str, n_folds: int = 10) -> int:
    """Fold 1..n_folds from a CRC32 of the patient id: deterministic across machines and subsets."""
    return zlib.crc32(patient_id.encode("utf-8")) % n_folds + 1


def walk_files(
    root: Path, pattern: str, *, ignore_case: bool = True, key: Callable[[str], str] | None = None
) -> Iterator[Path]:
    """Files under ``root`` whose name matches the glob ``pattern``, yielded as the walk goes, in the order of
    their sorted relative paths (``sorted(root.rglob(pattern))`` by relative POSIX path), without a list of the
    whole tree: only one folder's entries at a time are held.

    ``key`` maps a file name to what it sorts by (e.g. the name without ``.hea``, to order by record id).
    Symbolic links to folders are not followed (as ``rglob``).
    """
    rx = re.compile(fnmatch.translate(pattern), re.IGNORECASE if ignore_case else 0)
    by = key or (lambda name: name)

    def walk(folder: str) -> Iterator[Path]:
        # Sorting a folder's entries with "<dir>/" for each sub-folder gives exactly the sorted order of the full
        # relative paths: everything under <dir> shares that prefix and nothing else starts with it.
        with os.scandir(folder) as it:
            entries = sorted(
                (e.name + "/", e.path, True) if e.is_dir(follow_symlinks=False) else (by(e.name), e.path, False)
                for e in it
            )
        for _, path, is_dir in entries:
            if is_dir:
                yield from walk(path)
            elif rx.match(os.path.basename(path)):
                yield Path(path)

    yield from walk(str(root))
