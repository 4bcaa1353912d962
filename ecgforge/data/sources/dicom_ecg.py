"""DICOM waveform objects of ECGs (12-Lead ECG, General ECG: DICOM PS3.3 C.10.9 Waveform module), read with
pydicom (``pip install 'ecgforge[dicom]'``).

The ``WaveformSequence`` holds multiplex groups; the first ``ORIGINAL`` group is read (not a ``DERIVED``
median beat). Per group: ``SamplingFrequency``, ``NumberOfWaveformChannels``, ``NumberOfWaveformSamples``,
``WaveformBitsAllocated`` with ``WaveformSampleInterpretation`` (``SS`` int16, ``SB`` int8, ``SL`` int32...)
and ``WaveformData``, channel-interleaved. Per channel (``ChannelDefinitionSequence``): the lead is the
``ChannelSourceSequence`` code (SCPECG ``5.6.3-9-N`` or MDC ``2:N``, else its Code Meaning, e.g. ``Lead I
(Einthoven)``), and value = raw * ``ChannelSensitivity`` * ``ChannelSensitivityCorrectionFactor`` +
``ChannelBaseline`` in the UCUM unit of ``ChannelSensitivityUnitsSequence`` (``uV``, ``mV``), converted
to mV (PS3.3 C.10.9.1.4.3; pydicom's ``multiplex_array(as_raw=False)`` computes the same).

Metadata: ``PatientID`` (the patient), ``PatientSex``, ``PatientAge`` (``042Y``), and the text of the
``WaveformAnnotationSequence`` (``UnformattedTextValue``) as the statement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ecgforge.data.record import RecordError, Signal
from ecgforge.data.sources.common import assemble_leads, canonical_lead, parse_age, unit_to_mv
from ecgforge.data.sources.file_sources import (
    FileSource,
    FileSourceConfig,
    Header,
    MissingLeads,
)
from ecgforge.errors import UserError
from ecgforge.registry import BuildContext

INSTALL_HINT = "dicom_ecg needs pydicom: pip install 'ecgforge[dicom]' (or pip install pydicom)"

# DICOM CID 3001 (ECG Leads): SCPECG and MDC (ISO/IEEE 11073) code values of the 12 standard leads.
_LEAD_CODES: dict[str, str] = {}
for _n, _lead in {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
                  61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}.items():
    _LEAD_CODES[f"5.6.3-9-{_n}"] = _lead
    _LEAD_CODES[f"2:{_n}"] = _lead

# (WaveformBitsAllocated, WaveformSampleInterpretation) -> little-endian dtype (PS3.3 C.10.9.1.5).
_DTYPES = {(8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "<i2", (16, "US"): "<u2",
           (32, "SL"): "<i4", (32, "UL"): "<u4"}


class MissingDependency(UserError):
    """An optional package a source needs is not installed; the message says what to install."""


def _pydicom():  # noqa: ANN202
    try:
        import pydicom
    except ImportError:
        raise MissingDependency(INSTALL_HINT) from None
    return pydicom


class DicomECGSourceConfig(FileSourceConfig):
    kind: Literal["dicom_ecg"] = "dicom_ecg"
    pattern: str = Field("*.dcm", min_length=1, description="file-name glob (case-insensitive)")


class DicomECGSource(FileSource[DicomECGSourceConfig]):
    """DICOM ECG files under a folder (``*.dcm``), with patient, age, sex and annotation text."""

    Config = DicomECGSourceConfig
    source_name = "dicom_ecg"

    def __init__(self, cfg: DicomECGSourceConfig, ctx: BuildContext | None = None) -> None:
        _pydicom()  # fail at once, in one line, rather than once per record
        super().__init__(cfg, ctx)

    def parse_header(self, path: Path) -> Header:
        pydicom = _pydicom()
        try:
            # The patient module and the annotations (0040,B020) only, which precede the waveforms (5400,0100)
            # in the file: the waveform's bytes are skipped, not read.
            ds = pydicom.dcmread(path, specific_tags=["PatientID", "PatientSex", "PatientAge",
                                                      "WaveformAnnotationSequence"])
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a non-DICOM file
            raise ValueError(str(exc)) from None
        sex = str(ds.get("PatientSex", "") or "").upper()
        return {
            "patient": str(ds.get("PatientID", "") or ""),
            "sex": sex if sex in ("M", "F") else "",
            "age": parse_age(str(ds.get("PatientAge", "") or ""), None),
            "statement": "; ".join(
                str(a.UnformattedTextValue).strip() for a in ds.get("WaveformAnnotationSequence") or []
                if "UnformattedTextValue" in a and str(a.UnformattedTextValue).strip()
            ),
        }

    def read_file(self, path: str) -> Signal:
        return read_dicom_ecg(path, self.cfg.missing_leads)


def _lead_of(channel) -> str | None:  # noqa: ANN001
    source = channel.get("ChannelSourceSequence")
    if not source:
        return None
    code = source[0]
    value = str(code.get("CodeValue", "") or "")
    if value in _LEAD_CODES:
        return _LEAD_CODES[value]
    return canonical_lead(str(code.get("CodeMeaning", "") or ""))


def _group(ds):  # noqa: ANN001, ANN202
    groups = ds.get("WaveformSequence")
    if not groups:
        raise RecordError("no WaveformSequence (not a DICOM waveform object)")
    original = [g for g in groups if str(g.get("WaveformOriginality", "")).upper() == "ORIGINAL"]
    return (original or list(groups))[0]


def read_dicom_ecg(path: str, missing_leads: MissingLeads = "error") -> Signal:
    """The first original multiplex group of DICOM file ``path`` as a `Signal` in mV."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise RecordError(f"{path} not found") from None
    except Exception as exc:  # noqa: BLE001 - InvalidDicomError, struct.error, EOFError on a cut file...
        raise RecordError(f"not a readable DICOM file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    group = _group(ds)
    for need in ("SamplingFrequency", "NumberOfWaveformChannels", "NumberOfWaveformSamples",
                 "WaveformBitsAllocated", "WaveformSampleInterpretation", "WaveformData",
                 "ChannelDefinitionSequence"):
        if need not in group:
            raise RecordError(f"multiplex group has no {need}")
    n_ch, n_s = int(group.NumberOfWaveformChannels), int(group.NumberOfWaveformSamples)
    key = (int(group.WaveformBitsAllocated), str(group.WaveformSampleInterpretation))
    if key not in _DTYPES:
        raise RecordError(f"waveform samples of {key[0]} bits, interpretation {key[1]!r}: not supported")
    dtype = np.dtype(_DTYPES[key])
    data = bytes(group.WaveformData)
    if len(data) < n_ch * n_s * dtype.itemsize:
        raise RecordError(f"truncated WaveformData: {len(data)} bytes of {n_ch * n_s * dtype.itemsize} "
                          f"({n_ch} channels x {n_s} samples x {dtype.itemsize} bytes)")
    channels = list(group.ChannelDefinitionSequence)
    if len(channels) != n_ch:
        raise RecordError(f"{len(channels)} channel definitions for {n_ch} channels")
    # Channel-interleaved (C1S1, C2S1, ..., CnS1, C1S2...): (samples, channels); padding bytes ignored.
    raw = np.frombuffer(data, dtype=dtype, count=n_ch * n_s).reshape(n_s, n_ch)
    leads: dict[str, np.ndarray] = {}
    for j, channel in enumerate(channels):
        lead = _lead_of(channel)
        if lead is None:
            continue
        if lead in leads:
            raise RecordError(f"lead {lead} in two channels")
        units = channel.get("ChannelSensitivityUnitsSequence")
        if "ChannelSensitivity" not in channel or not units:
            raise RecordError(f"lead {lead}: no ChannelSensitivity with units")
        to_mv = unit_to_mv(str(units[0].get("CodeValue", "")))
        sensitivity = float(channel.ChannelSensitivity)
        correction = float(channel.get("ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
        baseline = float(channel.get("ChannelBaseline", 0.0) or 0.0)
        leads[lead] = (raw[:, j].astype(np.float64) * (sensitivity * correction) + baseline) * to_mv
    return assemble_leads(leads, float(group.SamplingFrequency), missing_leads=missing_leads,
                          what="waveform multiplex group")

