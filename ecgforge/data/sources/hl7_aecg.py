"""HL7 v3 annotated ECG (aECG, the FDA's format; HL7 aECG Implementation Guide, 21 March 2005), one file per ECG.

``<AnnotatedECG xmlns="urn:hl7-org:v3">`` holds ``component/series`` (the ``RHYTHM`` series is preferred),
whose ``component/sequenceSet`` holds one ``component/sequence`` per channel: the time sequence (code
``TIME_ABSOLUTE``/``TIME_RELATIVE``, value ``GLIST_TS``/``GLIST_PQ``; ``increment`` is the sample interval, so
fs = 1 / increment) and one ``SLIST_PQ`` per lead (code ``MDC_ECG_LEAD_I`` .. ``MDC_ECG_LEAD_V6``): value =
``origin + scale * digits``, each with its unit (``uV``, ``mV``...). Derived series (representative beats,
under ``derivation``) are not read. Leads are mapped by their code's name; III/aVR/aVL/aVF are derived from I
and II when the file stores only the independent leads.

Metadata from the header: the trial subject's ``id`` (the patient), ``administrativeGenderCode``, and the
age at the ECG from ``birthTime`` and the ECG's ``effectiveTime``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from ecgforge.data.record import RecordError, Signal
from ecgforge.data.sources.common import assemble_leads, canonical_lead, unit_to_mv
from ecgforge.data.sources.file_sources import (
    FileSource,
    FileSourceConfig,
    Header,
    MissingLeads,
    iter_until,
    local,
    parse_file,
)

NS = {"v3": "urn:hl7-org:v3"}
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


class HL7aECGSourceConfig(FileSourceConfig):
    kind: Literal["hl7_aecg"] = "hl7_aecg"


def _when(value: str | None) -> datetime | None:
    """An HL7 TS (``YYYYMMDD[HHMMSS[.fff]]``, maybe with a zone) as a datetime; None if absent or odd."""
    m = re.match(r"(\d{4})(\d{2})(\d{2})", value or "")
    if m is None:
        return None
    try:
        return datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


class HL7aECGSource(FileSource[HL7aECGSourceConfig]):
    """HL7 aECG files under a folder (``*.xml``), with subject, sex and age."""

    Config = HL7aECGSourceConfig
    source_name = "hl7_aecg"

    def parse_header(self, path: Path) -> Header:
        root: ET.Element | None = None
        for _, elem in iter_until(path, lambda e: local(e.tag) == "series"):
            root = elem if root is None else root
        if root is None or local(root.tag) != "AnnotatedECG":
            return {}
        # The document so far (everything before the first series): attributes are set at each start tag.
        subject = root.find(".//v3:trialSubject/v3:id", NS)
        patient = ""
        if subject is not None:
            patient = subject.get("extension") or subject.get("root") or ""
        gender = root.find(".//v3:subjectDemographicPerson/v3:administrativeGenderCode", NS)
        sex = (gender.get("code", "") if gender is not None else "").upper()
        birth = root.find(".//v3:subjectDemographicPerson/v3:birthTime", NS)
        when = root.find("v3:effectiveTime/v3:low", NS)
        if when is None:
            when = root.find("v3:effectiveTime/v3:center", NS)
        born = _when(birth.get("value") if birth is not None else None)
        taken = _when(when.get("value") if when is not None else None)
        age = (taken - born).days / 365.25 if born and taken and taken >= born else math.nan
        return {"patient": patient, "sex": sex if sex in ("M", "F") else "", "age": age}

    def read_file(self, path: str) -> Signal:
        return read_hl7_aecg(path, self.cfg.missing_leads)


def _quantity(elem: ET.Element | None, what: str) -> tuple[float, str]:
    if elem is None:
        raise RecordError(f"{what} is missing")
    try:
        return float(elem.get("value", "")), elem.get("unit", "")
    except ValueError:
        raise RecordError(f"{what}: value {elem.get('value')!r} is not a number") from None


def _sequence_set(root: ET.Element) -> ET.Element:
    series = root.findall("v3:component/v3:series", NS)
    if not series:
        raise RecordError("no component/series")
    rhythm = [s for s in series if (s.find("v3:code", NS) is not None and
                                   s.find("v3:code", NS).get("code", "").upper() == "RHYTHM")]
    for s in rhythm or series:
        found = s.find("v3:component/v3:sequenceSet", NS)
        if found is not None:
            return found
    raise RecordError("no sequenceSet in the series")


def read_hl7_aecg(path: str, missing_leads: MissingLeads = "error") -> Signal:
    """The rhythm series of HL7 aECG file ``path`` as a `Signal` in mV."""
    root = parse_file(path)
    if local(root.tag) != "AnnotatedECG" or not root.tag.startswith("{urn:hl7-org:v3}"):
        raise RecordError(f"root element <{root.tag}>, not urn:hl7-org:v3 AnnotatedECG")
    fs: float | None = None
    leads: dict[str, np.ndarray] = {}
    for seq in _sequence_set(root).findall("v3:component/v3:sequence", NS):
        code_elem, value = seq.find("v3:code", NS), seq.find("v3:value", NS)
        code = code_elem.get("code", "") if code_elem is not None else ""
        if value is None:
            raise RecordError(f"sequence {code or '?'} has no value")
        kind = value.get(_XSI_TYPE, "").rsplit(":", 1)[-1]
        if code.startswith("TIME_") or kind in ("GLIST_TS", "GLIST_PQ"):
            step, unit = _quantity(value.find("v3:increment", NS), f"time sequence {code} increment")
            if unit not in _SECONDS or not step > 0:
                raise RecordError(f"time sequence {code}: increment {step} {unit!r}")
            fs = 1.0 / (step * _SECONDS[unit])
            continue
        name = code.removeprefix("MDC_ECG_LEAD_")
        canonical = canonical_lead(name)
        if canonical is None:
            continue  # not one of the 12 leads (e.g. MDC_ECG_LEAD_V4R)
        if kind != "SLIST_PQ":
            raise RecordError(f"lead {code}: value of type {kind or '?'}, expected SLIST_PQ")
        origin, origin_unit = _quantity(value.find("v3:origin", NS), f"lead {code} origin")
        scale, scale_unit = _quantity(value.find("v3:scale", NS), f"lead {code} scale")
        digits = value.find("v3:digits", NS)
        text = (digits.text or "").split() if digits is not None else []
        if not text:
            raise RecordError(f"lead {code}: no digits")
        try:
            samples = np.array(text, dtype=np.int64)
        except ValueError:
            bad = next(t for t in text if not re.fullmatch(r"[+-]?\d+", t))
            raise RecordError(f"lead {code}: digit {bad!r} is not an integer") from None
        if canonical in leads:
            raise RecordError(f"lead {canonical} stored twice")
        leads[canonical] = origin * unit_to_mv(origin_unit or scale_unit) + scale * unit_to_mv(scale_unit) * samples
    if fs is None:
        raise RecordError("no time sequence (GLIST_TS / GLIST_PQ increment): sampling rate unknown")
    return assemble_leads(leads, fs, missing_leads=missing_leads, what="rhythm sequenceSet")

