"""GE MUSE resting-ECG XML exports (``<RestingECG>``), one file per ECG.

The rhythm strip is the ``Waveform`` whose ``WaveformType`` is ``Rhythm`` (the other is the ``Median`` beat);
its rate is ``SampleBase * 10**SampleExponent``. Each ``LeadData`` holds ``LeadID``, base64 little-endian
int16 ``WaveFormData`` (``LeadSampleSize`` 2), ``LeadSampleCountTotal``, ``LeadAmplitudeUnitsPerBit`` and
``LeadAmplitudeUnits`` (``MICROVOLTS``); mV = sample * units-per-bit * (mV per unit). MUSE usually stores
the eight independent leads I, II, V1-V6; III, aVR, aVL, aVF are derived as GE's own exporter does
(musexmlex.py, Ricke 2009: III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2).

Metadata from the header: ``PatientDemographics/PatientID`` (the patient; the file when empty),
``PatientAge`` with ``AgeUnits``, ``Gender``, and the statement text of ``Diagnosis`` (else
``OriginalDiagnosis``): each ``DiagnosisStatement/StmtText``, a ``StmtFlag`` ``ENDSLINE`` ending a line.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from pathlib import Path
from typing import Literal

import numpy as np

from ecgforge.data.record import RecordError, Signal
from ecgforge.data.sources.common import assemble_leads, canonical_lead, parse_age, unit_to_mv
from ecgforge.data.sources.file_sources import (
    FileSource,
    FileSourceConfig,
    Header,
    MissingLeads,
    iter_until,
    parse_file,
)

_WHITESPACE = re.compile(rb"\s+")


class MuseXMLSourceConfig(FileSourceConfig):
    kind: Literal["muse_xml"] = "muse_xml"


def _statements(diagnosis: list[tuple[str, bool]]) -> str:
    """Statement fragments -> one text: fragments of a line joined by spaces, lines by ``"; "``."""
    lines, line = [], []
    for text, ends_line in diagnosis:
        if text:
            line.append(text)
        if ends_line and line:
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return "; ".join(lines)


class MuseXMLSource(FileSource[MuseXMLSourceConfig]):
    """MUSE XML files under a folder (``*.xml``), with patient, age, sex and statements."""

    Config = MuseXMLSourceConfig
    source_name = "muse_xml"

    def parse_header(self, path: Path) -> Header:
        values: dict[str, str] = {}
        statements: dict[str, list[tuple[str, bool]]] = {"Diagnosis": [], "OriginalDiagnosis": []}
        section, text, flags = "", "", []
        for event, elem in iter_until(path, lambda e: e.tag == "Waveform"):
            tag = elem.tag
            if event == "start":
                if tag in statements:
                    section = tag
                elif tag == "DiagnosisStatement":
                    text, flags = "", []
                continue
            if tag in ("PatientID", "PatientAge", "AgeUnits", "Gender") and tag not in values:
                values[tag] = (elem.text or "").strip()
            elif tag == "StmtText":
                text = (elem.text or "").strip()
            elif tag == "StmtFlag":
                flags.append((elem.text or "").strip().upper())
            elif tag == "DiagnosisStatement" and section:
                statements[section].append((text, "ENDSLINE" in flags))
            elif tag in statements:
                section = ""
        gender = values.get("Gender", "").upper()
        return {
            "patient": values.get("PatientID", ""),
            "sex": {"MALE": "M", "FEMALE": "F"}.get(gender, ""),
            "age": parse_age(values.get("PatientAge"), values.get("AgeUnits") or "years"),
            "statement": _statements(statements["Diagnosis"] or statements["OriginalDiagnosis"]),
        }

    def read_file(self, path: str) -> Signal:
        return read_muse_xml(path, self.cfg.missing_leads)


def _text(elem, tag: str) -> str:  # noqa: ANN001
    child = elem.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _number(elem, tag: str, what: str) -> float:  # noqa: ANN001
    text = _text(elem, tag)
    try:
        return float(text)
    except ValueError:
        raise RecordError(f"{what}: {tag} {text!r} is not a number") from None


def read_muse_xml(path: str, missing_leads: MissingLeads = "error") -> Signal:
    """The rhythm strip of MUSE XML file ``path`` as a `Signal` in mV (III/aVR/aVL/aVF derived)."""
    root = parse_file(path)
    if root.tag != "RestingECG":
        raise RecordError(f"root element <{root.tag}>, not <RestingECG> (not a MUSE resting ECG)")
    rhythm = next((w for w in root.iter("Waveform") if "rhythm" in _text(w, "WaveformType").lower()), None)
    if rhythm is None:
        raise RecordError("no Waveform with WaveformType Rhythm")
    base = _number(rhythm, "SampleBase", "rhythm waveform")
    exponent = _number(rhythm, "SampleExponent", "rhythm waveform") if _text(rhythm, "SampleExponent") else 0.0
    fs = base * 10.0**exponent
    leads: dict[str, np.ndarray] = {}
    for lead in rhythm.iter("LeadData"):
        name = _text(lead, "LeadID")
        what = f"lead {name or '?'}"
        canonical = canonical_lead(name)
        if canonical is None:
            continue  # a non-standard lead (e.g. a 15-lead system's V4R): not one of the 12
        if canonical in leads:
            raise RecordError(f"lead {canonical} stored twice")
        size = _text(lead, "LeadSampleSize")
        if size and size != "2":
            raise RecordError(f"{what}: LeadSampleSize {size} (MUSE stores 2-byte samples)")
        payload = _text(lead, "WaveFormData")
        if not payload:
            raise RecordError(f"{what}: no WaveFormData")
        try:
            raw = base64.b64decode(_WHITESPACE.sub(b"", payload.encode("ascii")), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise RecordError(f"{what}: bad base64 in WaveFormData ({exc})") from None
        if len(raw) % 2:
            raise RecordError(f"{what}: truncated WaveFormData ({len(raw)} bytes, not whole int16 samples)")
        samples = np.frombuffer(raw, dtype="<i2")
        count = _text(lead, "LeadSampleCountTotal")
        if count:
            expected = int(_number(lead, "LeadSampleCountTotal", what))
            if samples.size != expected:
                raise RecordError(f"{what}: truncated WaveFormData ({samples.size} of {expected} samples)")
        per_bit = _number(lead, "LeadAmplitudeUnitsPerBit", what)
        if not math.isfinite(per_bit) or per_bit <= 0:
            raise RecordError(f"{what}: LeadAmplitudeUnitsPerBit {per_bit}")
        units = _text(lead, "LeadAmplitudeUnits")
        if not units:  # no guess: a wrong unit is a 1000-fold error that nothing downstream would notice
            raise RecordError(f"{what}: no LeadAmplitudeUnits")
        leads[canonical] = samples.astype(np.float64) * (per_bit * unit_to_mv(units))
    return assemble_leads(leads, fs, missing_leads=missing_leads, what="rhythm waveform")

