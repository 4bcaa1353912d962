"""The DICOM ECG source: objects written with pydicom from DICOM PS3.3 C.10.9 (Waveform module) in tmp_path,
with other units, 8-bit samples, leads named only by Code Meaning, truncated data, a missing lead, a
non-DICOM file; and pydicom's own real ``waveform_ecg.dcm``. Skipped where pydicom is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import info
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS
from tests.data.test_file_sources import EIGHT, QUANTUM, reference_limb_leads

pydicom = pytest.importorskip("pydicom", reason="the dicom_ecg source needs pydicom (pip install 'ecgforge[dicom]')")

from ecgforge.data.sources.dicom_ecg import DicomECGSource  # noqa: E402  (after the importorskip)


def cache_of(source: dict, out: Path, fs_hz: float) -> tuple[dict, Cache]:
    spec = CacheRecipe.model_validate({"name": "t", "out": str(out), "source": source, "signal": {"fs_hz": fs_hz}})
    build_cache(spec, workers=1)
    return info(out), Cache(out)

SCPECG = {"I": "5.6.3-9-1", "II": "5.6.3-9-2", "V1": "5.6.3-9-3", "V2": "5.6.3-9-4", "V3": "5.6.3-9-5",
          "V4": "5.6.3-9-6", "V5": "5.6.3-9-7", "V6": "5.6.3-9-8", "III": "5.6.3-9-61", "aVR": "5.6.3-9-62",
          "aVL": "5.6.3-9-63", "aVF": "5.6.3-9-64"}


def write_dicom(path: Path, raw: np.ndarray, leads: list[str], *, fs: float = 500.0, units: str = "uV",
                sensitivity: float = 2.5, baseline: float = 0.0, correction: float = 1.0, bits: int = 16,
                patient: str = "D1", sex: str = "M", age: str = "055Y", truncate: int = 0,
                code_meaning_only: bool = False) -> None:
    """A 12-lead ECG object per DICOM PS3.3 C.10.9: one ORIGINAL multiplex group, channel-interleaved samples,
    ChannelSourceSequence (SCPECG codes), sensitivity with UCUM units, baseline, correction factor."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG Waveform Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientSex, ds.PatientAge, ds.Modality = patient, sex, age, "ECG"
    note = Dataset()
    note.UnformattedTextValue = "Sinus rhythm"
    ds.WaveformAnnotationSequence = Sequence([note])
    group = Dataset()
    group.WaveformOriginality, group.MultiplexGroupLabel = "ORIGINAL", "RHYTHM"
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = len(leads), raw.shape[0]
    group.SamplingFrequency = fs
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = bits, "SS" if bits == 16 else "SB"
    channels = []
    for lead in leads:
        ch, src, unit = Dataset(), Dataset(), Dataset()
        src.CodeValue, src.CodingSchemeDesignator = ("x", "99LOCAL") if code_meaning_only else (SCPECG[lead], "SCPECG")
        src.CodeMeaning = f"Lead {lead}" + (" (Einthoven)" if lead == "I" else "")
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = units, "UCUM", units
        ch.ChannelSourceSequence, ch.ChannelSensitivityUnitsSequence = Sequence([src]), Sequence([unit])
        ch.ChannelSensitivity, ch.ChannelSensitivityCorrectionFactor = sensitivity, correction
        ch.ChannelBaseline, ch.WaveformBitsStored = baseline, bits
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    data = raw.astype("<i2" if bits == 16 else "i1").tobytes()
    group.WaveformData = data[: len(data) - truncate] if truncate else data
    ds.WaveformSequence = Sequence([group])
    ds.save_as(path, enforce_file_format=True)


def test_dicom_reader_matches_pydicom_on_its_real_sample(tmp_path: Path) -> None:
    """pydicom's own ``waveform_ecg.dcm`` (12 leads, 1 kHz, uV): our values equal pydicom's
    ``multiplex_array(ds, 0, as_raw=False)`` (raw * sensitivity * correction + baseline) / 1000."""
    from pydicom.data import get_testdata_file
    from pydicom.waveforms.numpy_handler import multiplex_array

    real = Path(get_testdata_file("waveform_ecg.dcm"))
    (tmp_path / "real.dcm").write_bytes(real.read_bytes())
    source = DicomECGSource(DicomECGSource.Config(path=str(tmp_path)))
    ref = source.records()[0]
    assert (ref.patient_id, ref.meta["sex"], ref.meta["age"]) == ("642341", "F", 42.0)
    sig = source.read(ref.locator)
    ds = pydicom.dcmread(real)
    expected = multiplex_array(ds, 0, as_raw=False) / 1000.0  # (samples, channels), uV -> mV
    names = [c.ChannelSourceSequence[0].CodeMeaning for c in ds.WaveformSequence[0].ChannelDefinitionSequence]
    assert names[0] == "Lead I (Einthoven)" and sig.fs_hz == 1000.0 and sig.lead_names == list(CANONICAL_LEADS)
    file_order = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    for j, lead in enumerate(file_order):
        np.testing.assert_allclose(sig.data[CANONICAL_LEADS.index(lead)], expected[:, j], rtol=0, atol=1e-6)


def test_dicom_cache_counts_samples_and_reasons(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    root = tmp_path / "dcm"
    root.mkdir()
    twelve = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    shuffled = ["V6", "aVF", "I", "V1", "II", "III", "aVL", "V2", "aVR", "V3", "V4", "V5"]
    raw12 = rng.integers(-400, 400, size=(1000, 12))
    raw8 = rng.integers(-400, 400, size=(1000, 8))
    raw_small = rng.integers(-100, 100, size=(1000, 12))
    write_dicom(root / "a.dcm", raw12, shuffled, sensitivity=2.5, baseline=-10.0, correction=0.8)
    write_dicom(root / "b.dcm", raw8, list(EIGHT), units="mV", sensitivity=0.004, patient="D2", sex="F", age="030Y")
    write_dicom(root / "c.dcm", raw_small, twelve, bits=8, sensitivity=10.0, code_meaning_only=True, patient="D3")
    write_dicom(root / "d.dcm", raw12, twelve, truncate=100, patient="D4")
    write_dicom(root / "e.dcm", raw12[:, :11], twelve[:11], patient="D5")  # no V6
    write_dicom(root / "f.dcm", raw12, twelve, units="mm[Hg]", patient="D6")
    (root / "g.dcm").write_bytes(b"DICM" * 10)
    summary, cache = cache_of({"kind": "dicom_ecg", "path": str(root)}, tmp_path / "c.h5", 500)
    assert summary["n_records"] == 3 and summary["n_patients"] == 3 and summary["sex"] == {"F": 1, "M": 2}
    skipped = {s["record"]: s["reason"] for s in summary["skipped"]}
    assert skipped["d"] == "truncated WaveformData: 23900 bytes of 24000 (12 channels x 1000 samples x 2 bytes)"
    assert skipped["e"] == "missing leads V6 in the waveform multiplex group"
    assert skipped["f"].startswith("amplitude units 'mm[Hg]'")
    assert skipped["g"].startswith("not a readable DICOM file")
    got = {rid: cache.read(i) for i, rid in enumerate(cache.record_id)}
    a = {lead: (raw12[:, j] * 2.5 * 0.8 - 10.0) * 1e-3 for j, lead in enumerate(shuffled)}
    np.testing.assert_allclose(got["a"], np.stack([a[lead] for lead in CANONICAL_LEADS]), atol=QUANTUM, rtol=0)
    b = {lead: raw8[:, j] * 0.004 for j, lead in enumerate(EIGHT)}
    b = {**reference_limb_leads(b["I"], b["II"]), **b}
    np.testing.assert_allclose(got["b"], np.stack([b[lead] for lead in CANONICAL_LEADS]), atol=QUANTUM, rtol=0)
    c = {lead: raw_small[:, j] * 10.0e-3 for j, lead in enumerate(twelve)}  # leads from Code Meaning alone
    np.testing.assert_allclose(got["c"], np.stack([c[lead] for lead in CANONICAL_LEADS]), atol=QUANTUM, rtol=0)
    assert list(cache.meta["statement"]) == ["Sinus rhythm"] * 3
