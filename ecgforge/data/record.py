"""What a dataset source hands the cache builder: `RecordRef` (a record as listed), `Signal` (its samples) and
`RecordError` (why it cannot be used).

A source (`ecgforge.data.sources.base.Source`) lists `RecordRef`s: where a record lives and what is known about
it from metadata alone. The cache builder asks the same source to read each one into a `Signal` and stores it.
Anything that goes wrong with one record raises `RecordError` with a short reason; the builder lists the record
as skipped with that reason and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RecordError(Exception):
    """A record cannot be used; `str(err)` is a one-line reason such as 'truncated signal: 4000 of 5000 samples'."""


@dataclass(frozen=True)
class RecordRef:
    """One record as a source lists it, before its signal is read.

    Attributes:
        record_id: unique within the source (e.g. PTB-XL ``"00001"``, CinC ``"A0001"``).
        locator: where the source finds the record when asked to read it (`Source.read`): a WFDB record path
            without extension (``.../00001_lr``), a file, a row of a file; only its source interprets it.
        patient_id: the patient; records of one patient never straddle splits. Unknown: the record id.
        source: sub-database name (``"ptbxl"``, ``"cpsc_2018"``, ``"georgia"``, ``"synthetic"``, ...).
        meta: scalar metadata columns: ``fold`` (int, -1 unknown), ``sex`` (``"M"``/``"F"``/``""``),
            ``age`` (float years, NaN unknown), and any source-specific scalar (str/int/float).
        labels: label set name -> list of label names present in this record (multi-label).
    """

    record_id: str
    locator: str
    patient_id: str
    source: str
    meta: dict[str, str | int | float] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Signal:
    """A record's samples in physical units.

    Attributes:
        data: ``(leads, T)`` float32, millivolts. NaN is allowed only where the writer should reject it.
        fs_hz: sampling rate in Hz.
        lead_names: names as written in the header (aliases are resolved later, in `leads.canonicalize`).
    """

    data: np.ndarray
    fs_hz: float
    lead_names: list[str]
