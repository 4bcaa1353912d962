"""MUSE XML and HL7 aECG sources: files written in tmp_path from each format's published
description, with the variants the wild has: missing leads, other
units, other sampling rates, truncated payloads, bad base64, not well-formed files."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from ecgforge.data.cache import SCALE_MV, Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import info
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.data.record import RecordError
from ecgforge.data.sources.common import derive_limb_leads, parse_age, unit_to_mv
from ecgforge.data.sources.hl7_aecg import HL7aECGSource
from ecgforge.data.sources.muse_xml import MuseXMLSource

QUANTUM = SCALE_MV / 2 + 1e-6
EIGHT = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def cache_of(source: dict, out: Path, fs_hz: float, workers: int = 1) -> tuple[dict, Cache]:
    spec = CacheRecipe.model_validate({"name": "t", "out": str(out), "source": source, "signal": {"fs_hz": fs_hz}})
    build_cache(spec, workers=workers)
    return info(out), Cache(out)


def reference_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """GE's own MUSE exporter (rickead/musexmlexport, musexmlex.py, ``MuseXmlParser.writeCSV``):
    III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2."""
    return {"III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2, "aVL": lead_i - lead_ii / 2,
            "aVF": lead_ii - lead_i / 2}


def test_helpers_units_ages_and_derivation() -> None:
    assert unit_to_mv("MICROVOLTS") == 1e-3 and unit_to_mv("uV") == 1e-3 and unit_to_mv("mV") == 1.0
    with pytest.raises(RecordError, match="amplitude units 'mmHg' are not a voltage"):
        unit_to_mv("mmHg")
    assert parse_age("042Y", None) == 42.0 and parse_age("006M", None) == 0.5 and np.isnan(parse_age("", None))
    assert parse_age("62", "YEARS") == 62.0 and np.isnan(parse_age("x", "YEARS"))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    got = derive_limb_leads({"I": a, "II": b})
    for lead, ref in reference_limb_leads(a, b).items():
        np.testing.assert_allclose(got[lead], ref, rtol=0, atol=1e-12)
    assert derive_limb_leads({"I": a, "II": b, "III": a})["III"] is a  # a stored lead wins


# ---------------------------------------------------------------------------------------------- MUSE XML


def muse_xml(leads: dict[str, np.ndarray], *, fs: int = 500, per_bit: float = 4.88, units: str = "MICROVOLTS",
             patient: str = "P1", age: str = "62", sex: str = "MALE",
             statements: tuple[tuple[str, bool], ...] = (("Normal sinus rhythm", True), ("Normal ECG", True)),
             payload: dict[str, str] | None = None, count: dict[str, int] | None = None) -> str:
    """A MUSE RestingECG export: demographics, diagnosis, a Median and a Rhythm waveform. ``leads``:
    LeadID -> int16 samples; ``payload`` / ``count`` override a lead's base64 text / LeadSampleCountTotal."""
    stmts = "".join(f"<DiagnosisStatement>{'<StmtFlag>ENDSLINE</StmtFlag>' if ends else ''}"
                    f"<StmtText>{text}</StmtText></DiagnosisStatement>" for text, ends in statements)

    def waveform(kind: str, data: dict[str, np.ndarray]) -> str:
        out = [f"<Waveform><WaveformType>{kind}</WaveformType><WaveformStartTime>0</WaveformStartTime>"
               f"<NumberofLeads>{len(data)}</NumberofLeads><SampleType>CONTINUOUS_SAMPLES</SampleType>"
               f"<SampleBase>{fs}</SampleBase><SampleExponent>0</SampleExponent>"]
        for name, x in data.items():
            b64 = base64.b64encode(x.astype("<i2").tobytes()).decode()
            b64 = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))  # MUSE wraps the base64 text
            text = (payload or {}).get(name, b64) if kind == "Rhythm" else b64
            n = (count or {}).get(name, len(x)) if kind == "Rhythm" else len(x)
            out.append(f"<LeadData><LeadByteCountTotal>{2 * n}</LeadByteCountTotal><LeadTimeOffset>0</LeadTimeOffset>"
                       f"<LeadSampleCountTotal>{n}</LeadSampleCountTotal>"
                       f"<LeadAmplitudeUnitsPerBit>{per_bit}</LeadAmplitudeUnitsPerBit>"
                       f"<LeadAmplitudeUnits>{units}</LeadAmplitudeUnits><LeadID>{name}</LeadID>"
                       f"<LeadSampleSize>2</LeadSampleSize><WaveFormData>{text}</WaveFormData></LeadData>")
        return "".join(out) + "</Waveform>"

    median = {name: x[:300] for name, x in leads.items()}
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
            f"<RestingECG><MuseInfo><MuseVersion>9.0.9.18167</MuseVersion></MuseInfo>"
            f"<PatientDemographics><PatientID>{patient}</PatientID><PatientAge>{age}</PatientAge>"
            f"<AgeUnits>YEARS</AgeUnits><Gender>{sex}</Gender></PatientDemographics>"
            f"<TestDemographics><DataType>RESTING</DataType></TestDemographics>"
            f"<Diagnosis><Modality>RESTING</Modality>{stmts}</Diagnosis>"
            f"<OriginalDiagnosis><DiagnosisStatement><StmtText>unconfirmed</StmtText></DiagnosisStatement>"
            f"</OriginalDiagnosis>{waveform('Median', median)}{waveform('Rhythm', leads)}</RestingECG>")


def _int16(rng: np.random.Generator, names: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
    return {name: rng.integers(-300, 300, size=n).astype(np.int16) for name in names}


def write_muse(root: Path, rng: np.random.Generator) -> dict[str, tuple[dict[str, np.ndarray] | None, str]]:
    """The folder of MUSE files; returns file -> (expected canonical lead -> mV, or None, expected reason)."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[dict[str, np.ndarray] | None, str]] = {}

    def put(name: str, text: str, expected: dict[str, np.ndarray] | None, reason: str = "") -> None:
        (root / f"{name}.xml").write_text(text, encoding="latin-1")
        out[name] = (expected, reason)

    def mv(leads: dict[str, np.ndarray], per_bit: float, to_mv: float) -> dict[str, np.ndarray]:
        got = {k: v.astype(np.float64) * per_bit * to_mv for k, v in leads.items()}
        return {**reference_limb_leads(got["I"], got["II"]), **got}

    eight = _int16(rng, EIGHT, 1000)
    put("a_eight", muse_xml(eight), mv(eight, 4.88, 1e-3))
    twelve = _int16(rng, ("I", "II", "III", "aVR", "aVL", "aVF", *EIGHT[2:]), 1000)
    put("b_twelve", muse_xml(twelve, patient="P2", sex="FEMALE", age="30"), mv(twelve, 4.88, 1e-3))
    milli = _int16(rng, EIGHT, 1000)
    put("c_millivolts", muse_xml(milli, per_bit=0.005, units="MILLIVOLTS", patient="P1"), mv(milli, 0.005, 1.0))
    slow = _int16(rng, EIGHT, 500)
    put("d_250hz", muse_xml(slow, fs=250, patient="P3"), mv(slow, 4.88, 1e-3))
    put("e_missing_v4", muse_xml({k: v for k, v in eight.items() if k != "V4"}, patient="P4"), None,
        "missing leads V4 in the rhythm waveform")
    put("f_bad_base64", muse_xml(eight, payload={"V2": "QUJD$$$="}, patient="P5"), None,
        "lead V2: bad base64 in WaveFormData")
    put("g_truncated", muse_xml(eight, count={"V6": 1200}, patient="P6"), None,
        "lead V6: truncated WaveFormData (1000 of 1200 samples)")
    put("h_odd_bytes", muse_xml(eight, payload={"I": base64.b64encode(b"\x01\x02\x03").decode()}, patient="P7"),
        None, "lead I: truncated WaveFormData (3 bytes, not whole int16 samples)")
    put("i_furlongs", muse_xml(eight, units="FURLONGS", patient="P8"), None, "amplitude units 'FURLONGS'")
    put("j_not_xml", muse_xml(eight)[:5000], None, "not well-formed XML")
    return out


def test_muse_header_gives_patient_age_sex_and_statements(tmp_path: Path) -> None:
    write_muse(tmp_path, np.random.default_rng(0))
    source = MuseXMLSource(MuseXMLSource.Config(path=str(tmp_path)))
    refs = {r.record_id: r for r in source.records()}
    a = refs["a_eight"]
    assert a.locator == str(tmp_path / "a_eight.xml")  # a record is found by its file
    assert (a.patient_id, a.meta["sex"], a.meta["age"]) == ("P1", "M", 62.0)
    assert a.meta["statement"] == "Normal sinus rhythm; Normal ECG"
    assert (refs["b_twelve"].meta["sex"], refs["b_twelve"].meta["age"]) == ("F", 30.0)
    # Cut inside the waveforms: the header still parses (the listing stops before the waveforms).
    assert refs["j_not_xml"].patient_id == "P1"
    (tmp_path / "k_garbage.xml").write_text("<RestingECG><PatientDemographics><Pati")
    garbage = next(r for r in source.records() if r.record_id == "k_garbage")
    assert garbage.patient_id == "k_garbage"  # unreadable header: listed all the same, the reader says why
    with pytest.raises(RecordError, match="^not well-formed XML"):
        source.read(garbage.locator)
    assert 1 <= a.meta["fold"] <= 10 and a.meta["fold"] == refs["c_millivolts"].meta["fold"]  # same patient


def test_muse_cache_counts_samples_and_reasons(tmp_path: Path) -> None:
    files = write_muse(tmp_path / "muse", np.random.default_rng(1))
    summary, cache = cache_of({"kind": "muse_xml", "path": str(tmp_path / "muse")}, tmp_path / "c.h5", 500)
    good = [k for k, (exp, _) in files.items() if exp is not None]
    assert summary["n_records"] == len(good) == 4 and summary["n_patients"] == 3
    assert summary["sex"] == {"F": 1, "M": 3}
    skipped = {s["record"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == set(files) - set(good)
    for name, reason in skipped.items():
        assert reason.startswith(files[name][1]), (name, reason)
    for i, rid in enumerate(cache.record_id):
        expected = files[rid][0]
        if rid == "d_250hz":  # another sampling rate: resampled to the cache's 500 Hz
            assert cache.lengths[i] == 1000
            continue
        want = np.stack([expected[lead] for lead in CANONICAL_LEADS])
        np.testing.assert_allclose(cache.read(i), want, atol=QUANTUM, rtol=0)


def test_muse_missing_leads_absent_keeps_the_record(tmp_path: Path) -> None:
    write_muse(tmp_path, np.random.default_rng(2))
    source = MuseXMLSource(MuseXMLSource.Config(path=str(tmp_path), missing_leads="absent"))
    sig = source.read(next(r.locator for r in source.records() if r.record_id == "e_missing_v4"))
    assert sig.lead_names == [lead for lead in CANONICAL_LEADS if lead != "V4"] and sig.fs_hz == 500.0


def test_muse_without_a_rhythm_waveform(tmp_path: Path) -> None:
    text = muse_xml(_int16(np.random.default_rng(0), EIGHT, 600)).replace("<WaveformType>Rhythm", "<WaveformType>Other")
    (tmp_path / "x.xml").write_text(text, encoding="latin-1")
    source = MuseXMLSource(MuseXMLSource.Config(path=str(tmp_path)))
    with pytest.raises(RecordError, match="no Waveform with WaveformType Rhythm"):
        source.read(source.records()[0].locator)


# ---------------------------------------------------------------------------------------------- HL7 aECG


def aecg_xml(leads: dict[str, np.ndarray], *, increment: str = '<increment value="0.002" unit="s"/>',
             scale: tuple[float, str] = (5.0, "uV"), origin: tuple[float, str] = (0.0, "uV"),
             subject: str = "S-001", sex: str = "M", digits: dict[str, str] | None = None,
             time_type: str = "GLIST_TS") -> str:
    """An HL7 aECG document as the 2005 Implementation Guide lays it out: subject in componentOf, then a
    RHYTHM series with a sequenceSet of a time sequence and one SLIST_PQ per lead (``MDC_ECG_LEAD_*``)."""
    head = '<head value="20021122091000.000"/>' if time_type == "GLIST_TS" else '<head value="0" unit="s"/>'
    code = "TIME_ABSOLUTE" if time_type == "GLIST_TS" else "TIME_RELATIVE"
    seqs = [f'<component><sequence><code code="{code}" codeSystem="2.16.840.1.113883.5.4"/>'
            f'<value xsi:type="{time_type}">{head}{increment}</value></sequence></component>']
    for name, x in leads.items():
        text = (digits or {}).get(name, " ".join(str(int(v)) for v in x))
        seqs.append(f'<component><sequence><code code="MDC_ECG_LEAD_{name}" codeSystem="2.16.840.1.113883.6.24"/>'
                    f'<value xsi:type="SLIST_PQ"><origin value="{origin[0]}" unit="{origin[1]}"/>'
                    f'<scale value="{scale[0]}" unit="{scale[1]}"/><digits>{text}</digits></value></sequence>'
                    "</component>")
    derived = ('<derivation><derivedSeries><component><sequenceSet><component><sequence>'
               '<code code="MDC_ECG_LEAD_I"/><value xsi:type="SLIST_PQ"><origin value="0" unit="uV"/>'
               '<scale value="1" unit="uV"/><digits>1 2 3</digits></value></sequence></component>'
               "</sequenceSet></component></derivedSeries></derivation>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<id root="61d1a24f-b47e-41aa-ae95-f8ac302f4eeb"/><code code="93000" codeSystem="2.16.840.1.113883.6.12"/>'
            '<effectiveTime><low value="20021122091000"/><high value="20021122091010"/></effectiveTime>'
            "<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>"
            f'<id root="2.16.840.1.113883.3.5" extension="{subject}"/><subjectDemographicPerson>'
            f'<administrativeGenderCode code="{sex}" codeSystem="2.16.840.1.113883.5.1"/>'
            '<birthTime value="19620315"/></subjectDemographicPerson></trialSubject></subject>'
            "</subjectAssignment></componentOf></timepointEvent></componentOf>"
            '<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>'
            f"<component><sequenceSet>{''.join(seqs)}</sequenceSet></component>{derived}</series></component>"
            "</AnnotatedECG>")


AECG_TWELVE = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")


def test_hl7_aecg_cache_counts_samples_and_reasons(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "aecg"
    root.mkdir()
    twelve = {k: rng.integers(-200, 200, size=1000) for k in AECG_TWELVE}
    eight = {k: rng.integers(-200, 200, size=1000) for k in EIGHT}
    files = {
        "a_twelve": aecg_xml(twelve),
        "b_eight_mv": aecg_xml(eight, scale=(0.002, "mV"), origin=(0.1, "mV"), subject="S-002", sex="F"),
        "c_1000hz_relative": aecg_xml(twelve, increment='<increment value="1" unit="ms"/>', time_type="GLIST_PQ"),
        "d_bad_digit": aecg_xml(twelve, digits={"V3": "1 2 x3 4"}, subject="S-003"),
        "e_no_increment": aecg_xml(twelve, increment="", subject="S-004"),
        "f_missing_v5": aecg_xml({k: v for k, v in twelve.items() if k != "V5"}, subject="S-005"),
        "g_volts_per_furlong": aecg_xml(twelve, scale=(1.0, "mmHg"), subject="S-006"),
        "h_short_lead": aecg_xml({**twelve, "V6": twelve["V6"][:999]}, subject="S-007"),
    }
    for name, text in files.items():
        (root / f"{name}.xml").write_text(text)
    refs = {r.record_id: r for r in HL7aECGSource(HL7aECGSource.Config(path=str(root))).records()}
    assert (refs["a_twelve"].patient_id, refs["a_twelve"].meta["sex"]) == ("S-001", "M")
    assert refs["a_twelve"].meta["age"] == pytest.approx((2002 - 1962) + (251 / 365.25), abs=0.01)
    summary, cache = cache_of({"kind": "hl7_aecg", "path": str(root)}, tmp_path / "c.h5", 500)
    assert summary["n_records"] == 3 and summary["n_patients"] == 2 and summary["sex"] == {"F": 1, "M": 2}
    skipped = {s["record"]: s["reason"] for s in summary["skipped"]}
    assert skipped["d_bad_digit"] == "lead MDC_ECG_LEAD_V3: digit 'x3' is not an integer"
    assert skipped["e_no_increment"].startswith("time sequence TIME_ABSOLUTE increment is missing")
    assert skipped["f_missing_v5"] == "missing leads V5 in the rhythm sequenceSet"
    assert skipped["g_volts_per_furlong"].startswith("amplitude units 'mmHg'")
    assert skipped["h_short_lead"].startswith("leads of different lengths")
    canon = dict(zip(AECG_TWELVE, CANONICAL_LEADS, strict=True))
    want_a = np.stack([twelve[k] * 5e-3 for k in AECG_TWELVE])
    got = {rid: cache.read(i) for i, rid in enumerate(cache.record_id)}
    np.testing.assert_allclose(got["a_twelve"], want_a, atol=QUANTUM, rtol=0)
    b = {k: 0.1 + 0.002 * v for k, v in eight.items()}
    b = {**reference_limb_leads(b["I"], b["II"]), **b}
    np.testing.assert_allclose(got["b_eight_mv"], np.stack([b[lead] for lead in CANONICAL_LEADS]),
                               atol=QUANTUM, rtol=0)
    assert got["c_1000hz_relative"].shape == (12, 500)  # 1 ms increment: 1000 Hz, resampled to 500 Hz
    assert list(canon.values()) == list(CANONICAL_LEADS)
