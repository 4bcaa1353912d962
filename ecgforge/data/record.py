"""The contract between dataset sources, the WFDB reader and the cache writer.

A *source* (PTB-XL, CinC, a WFDB folder, the synthetic generator) lists `RecordRef`s: where a record lives
and what is known about it from metadata alone. The cache writer reads each one into a `Signal` and stores
it. Anything that goes wrong with one record raises `RecordError` with a short reason; the writer lists the
record as skipped with that reason and goes on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class RecordError(Exception):
    """A record cannot be used; `str(err)` is a one-line reason such as 'truncated signal: 4000 of 5000 samples'."""


@dataclass(frozen=True)
class RecordRef:
    """One record as a source lists it, before its signal is read.

    Attributes:
        record_id: unique within the source (e.g. PTB-XL ``"00001"``, CinC ``"A0001"``).
        path: the WFDB record path without extension (``.../00001_lr``); the header is ``path + ".hea"``.
        patient_id: the patient; records of one patient never straddle splits. Unknown: the record id.
        source: sub-database name (``"ptbxl"``, ``"cpsc_2018"``, ``"georgia"``, ``"synthetic"``, ...).
        meta: scalar metadata columns: ``fold`` (int, -1 unknown), ``sex`` (``"M"``/``"F"``/``""``),
            ``age`` (float years, NaN unknown), and any source-specific scalar (str/int/float).
        labels: label set name -> list of label names present in this record (multi-label).
    """

    record_id: str
    path: str
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


# ------------------------------------------------------------------------------------- non-WFDB readers
#
# The cache writer hands each reader process only ``RecordRef.path`` and reads it with
# `ecgforge.data.wfdb_io.read_record`. A record in another format (an HDF5 row, an XML or DICOM file) is
# addressed by a *reader path*, ``"ecgforge-reader:<reader>:<locator>"``; `read_record` sees the prefix and
# hands the locator to the reader function registered under that name. Readers are looked up by name in the
# reader process, so nothing but the path string travels to it (fork and spawn alike).

READER_PREFIX = "ecgforge-reader:"

_READERS: dict[str, Callable[[str], Signal]] = {}


def register_reader(name: str, reader: Callable[[str], Signal]) -> None:
    """Register ``reader(locator) -> Signal`` (millivolts) under ``name`` (letters, digits, ``_``)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"reader name {name!r}: letters, digits and '_' only")
    _READERS[name] = reader


def reader_path(name: str, locator: str) -> str:
    """The `RecordRef.path` of a record that reader ``name`` reads from ``locator`` (a file path, or
    whatever the reader understands, e.g. ``"17:4991:/data/exams_part3.hdf5"``)."""
    return f"{READER_PREFIX}{name}:{locator}"


def is_reader_path(path: str) -> bool:
    return path.startswith(READER_PREFIX)


def read_with_reader(path: str) -> Signal:
    """Read a reader path (see `reader_path`) with its registered reader.

    Raises:
        RecordError: the reader's own reasons; any other exception a reader raises on odd data becomes a
            RecordError naming its type, so one bad file never ends a build with a traceback.
    """
    name, sep, locator = path[len(READER_PREFIX) :].partition(":")
    if not sep:
        raise RecordError(f"malformed reader path {path!r}")
    if name not in _READERS and name.replace("_", "").isalnum():
        # A built-in reader is named after its source module, which registers it on import; importing by
        # name keeps this low module from depending on the sources package (a spawned reader process has
        # imported nothing yet).
        try:
            importlib.import_module(f"ecgforge.data.sources.{name}")
        except ModuleNotFoundError:
            pass
    reader = _READERS.get(name)
    if reader is None:
        raise RecordError(f"no reader registered under {name!r} (path {path!r})")
    try:
        return reader(locator)
    except RecordError:
        raise
    except MemoryError:
        raise RecordError("out of memory reading the record") from None
    except Exception as exc:  # noqa: BLE001 - a reader meets the wild; the build must go on
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise RecordError(f"{type(exc).__name__}: {first}".rstrip(": ")) from None
