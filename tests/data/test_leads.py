"""Lead aliases and canonical ordering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgforge.data.leads import CANONICAL_LEADS, canonicalize, resolve_lead
from ecgforge.data.record import RecordError, Signal
from ecgforge.data.wfdb_io import read_record


def test_canonical_order() -> None:
    assert CANONICAL_LEADS == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.mark.parametrize(
    "name,lead",
    [
        ("I", "I"),
        ("AVR", "aVR"),
        ("avr", "aVR"),
        ("aVL", "aVL"),
        ("AVF", "aVF"),
        ("MLII", "II"),
        ("DI", "I"),
        ("DII", "II"),
        ("DIII", "III"),
        ("V1 ", "V1"),
        (" v6", "V6"),
        ("C3", "V3"),
        ("Lead II", "II"),
        ("lead_aVF", "aVF"),
        ("ECG V2", "V2"),
        ("iii", "III"),
    ],
)
def test_aliases(name: str, lead: str) -> None:
    assert resolve_lead(name) == lead


@pytest.mark.parametrize("name", ["ABP", "-aVR", "V7", "1", "signal 0", "", "MCL1", "IV"])
def test_not_standard_leads(name: str) -> None:
    assert resolve_lead(name) is None


def test_canonicalize_reorders_drops_and_marks_missing() -> None:
    rng = np.random.default_rng(0)
    names = ["V6", "ABP", "avr", "MLII", "V1 "]
    data = rng.standard_normal((5, 50)).astype(np.float32)
    out, present = canonicalize(Signal(data=data, fs_hz=360.0, lead_names=names))
    assert out.shape == (12, 50) and out.dtype == np.float32 and present.dtype == bool
    assert [CANONICAL_LEADS[j] for j in np.flatnonzero(present)] == ["II", "aVR", "V1", "V6"]
    np.testing.assert_array_equal(out[CANONICAL_LEADS.index("V6")], data[0])
    np.testing.assert_array_equal(out[CANONICAL_LEADS.index("aVR")], data[2])
    np.testing.assert_array_equal(out[CANONICAL_LEADS.index("II")], data[3])
    np.testing.assert_array_equal(out[CANONICAL_LEADS.index("V1")], data[4])
    assert not out[~present].any()  # absent leads are zero *and* marked absent
    assert not np.isin(data[1], out).any()  # ABP was dropped, not placed anywhere


def test_canonicalize_is_invariant_to_input_order() -> None:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((12, 30)).astype(np.float32)
    ref, ref_present = canonicalize(Signal(data, 500.0, list(CANONICAL_LEADS)))
    np.testing.assert_array_equal(ref, data)
    perm = rng.permutation(12)
    out, present = canonicalize(Signal(data[perm], 500.0, [CANONICAL_LEADS[i].upper() for i in perm]))
    np.testing.assert_array_equal(out, ref)
    assert present.all() and ref_present.all()


def test_zero_lead_that_exists_is_present() -> None:
    data = np.zeros((2, 10), np.float32)
    _, present = canonicalize(Signal(data, 100.0, ["I", "II"]))
    assert present.tolist() == [True, True] + [False] * 10


@pytest.mark.parametrize("names", [["II", "MLII"], ["aVR", "AVR"], ["V1", "C1"], ["DI", "I "]])
def test_duplicates_after_aliasing_raise(names: list[str]) -> None:
    with pytest.raises(RecordError, match="duplicated lead"):
        canonicalize(Signal(np.zeros((2, 5), np.float32), 100.0, names))


def test_name_count_mismatch_raises() -> None:
    with pytest.raises(RecordError, match="3 lead names for data of shape"):
        canonicalize(Signal(np.zeros((2, 5), np.float32), 100.0, ["I", "II", "III"]))


@pytest.mark.data
def test_real_records_have_all_12_leads(shared_data: Path) -> None:
    for rec in (
        shared_data / "ptb-xl" / "records100" / "00000" / "00001_lr",  # upper-case AVR/AVL/AVF
        shared_data / "cinc2021-sample" / "georgia" / "E07501",
    ):
        sig = read_record(rec)
        out, present = canonicalize(sig)
        assert present.all()
        np.testing.assert_array_equal(out, sig.data)  # both files are already in canonical order
