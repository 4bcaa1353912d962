"""The CinC source on the shared Challenge sample: a streaming listing whose headers the readers parse, and
PTB-XL patients for the HR* records (issue 13)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import info
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leakage import patient_keys
from ecgforge.data.sources.cinc import CinCSource
from ecgforge.data.splits import patient_codes

pytestmark = pytest.mark.data


def _recipe(root: Path, out: Path, **source: object) -> CacheRecipe:
    return CacheRecipe.model_validate({
        "name": "cinc", "out": str(out), "signal": {"fs_hz": 100},
        "source": {"kind": "cinc", "path": str(root), "label_sets": ["scored", "dx", "chapman_rhythm"], **source},
    })


def test_headers_are_parsed_in_the_readers_and_the_cache_is_byte_identical(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent only lists names; the readers parse the headers. The cache is byte for byte the one built
    from a listing that parses every header in the parent first (what the source did before)."""
    root = shared_data / "cinc2021-sample"
    out = tmp_path / "c.h5"
    calls = tmp_path / "complete-pids.txt"
    real_complete = CinCSource.complete

    def logged(self: CinCSource, ref: object) -> object:
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real_complete(self, ref)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(CinCSource, "complete", logged)
        build_cache(_recipe(root, out), workers=2)
    streamed = out.read_bytes()
    pids = {int(p) for p in calls.read_text().split()}
    assert pids and os.getpid() not in pids  # every header was parsed in a reader process

    # The old way: every header parsed in the parent during the listing, no completion left to the readers.
    real_iter = CinCSource.iter_records

    def parsed_first(self: CinCSource) -> object:
        refs = [real_complete(self, r) for r in real_iter(self)]
        self._all_dx = {c for r in refs for c in r.labels["dx"]}
        yield from refs

    monkeypatch.setattr(CinCSource, "iter_records", parsed_first)
    monkeypatch.delattr(CinCSource, "complete")
    monkeypatch.setattr(CinCSource, "records", lambda self: list(parsed_first(self)))
    build_cache(_recipe(root, out), workers=2)
    assert out.read_bytes() == streamed
    assert len(Cache(out)) == 141


def _ptbxl_table(shared_data: Path, tmp_path: Path, same_patient: tuple[int, int] | None = None) -> Path:
    """The PTB-XL table, optionally with the second ECG of ``same_patient`` given the first one's patient."""
    src = shared_data / "ptb-xl" / "ptbxl_database.csv"
    if same_patient is None:
        return src
    df = pd.read_csv(src)
    a, b = same_patient
    df.loc[df.ecg_id == b, "patient_id"] = df.loc[df.ecg_id == a, "patient_id"].iloc[0]
    out = tmp_path / "ptbxl_database.csv"
    df.to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL)
    return out


def test_hr_records_get_their_ptbxl_patients(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "cinc2021-sample"
    table = _ptbxl_table(shared_data, tmp_path)
    out = build_cache(_recipe(root, tmp_path / "c.h5", ptbxl_database=str(table)), workers=2).path
    c = Cache(out)
    db = pd.read_csv(table, index_col="ecg_id")
    hr = np.flatnonzero(c.source.astype(str) == "ptb-xl")
    assert len(hr) == 7
    for i in hr:
        expected = int(db.loc[int(c.record_id[i][2:]), "patient_id"])
        assert c.patient_id[i] == f"ptbxl:{expected}"
        assert int(c.meta["ptbxl_patient_id"][i]) == expected
    others = np.setdiff1d(np.arange(len(c)), hr)
    assert (np.asarray(c.meta["ptbxl_patient_id"])[others] == -1).all()
    assert (c.patient_id[others].astype(str) == c.record_id[others].astype(str)).all()
    # The leakage guard's patient keys are PTB-XL's, comparable with a PTB-XL cache's ("ptbxl:<patient_id>").
    keys = patient_keys(c, hr)
    assert list(keys) == [f"ptbxl:{int(db.loc[int(c.record_id[i][2:]), 'patient_id'])}" for i in hr]
    d = info(out)
    assert not any("HR*" in line for line in d["caveats"])
    ptb, incart = int((c.source.astype(str) == "ptb").sum()), int((c.source.astype(str) == "incart").sum())
    assert ptb == 10
    assert any(f"{ptb} PTB (S*)" in line and "549 records of 290 patients" in line for line in d["caveats"])
    assert incart == 0 and not any("INCART" in line for line in d["caveats"])


def test_two_hr_records_of_one_patient_are_one_patient_in_one_fold(shared_data: Path, tmp_path: Path) -> None:
    """A table where HR00001 and HR00002 are one patient: one patient id, one fold, one patient code, and the
    count of patients drops by one."""
    root = shared_data / "cinc2021-sample"
    table = _ptbxl_table(shared_data, tmp_path, same_patient=(1, 2))
    c = Cache(build_cache(_recipe(root, tmp_path / "c.h5", ptbxl_database=str(table)), workers=1).path)
    i, j = (list(c.record_id).index(n) for n in ("HR00001", "HR00002"))
    assert c.patient_id[i] == c.patient_id[j] == "ptbxl:15709"
    assert c.fold[i] == c.fold[j]
    codes = patient_codes(c)
    assert codes[i] == codes[j]
    assert info(c.path)["n_patients"] == len(c) - 1 == 140


def test_without_the_table_the_info_says_hr_patients_are_record_names(shared_data: Path, tmp_path: Path) -> None:
    c = Cache(build_cache(_recipe(shared_data / "cinc2021-sample", tmp_path / "c.h5"), workers=1).path)
    assert "ptbxl_patient_id" not in c.meta
    lines = info(c.path)["caveats"]
    assert any("7 PTB-XL (HR*) records count as one patient each" in line for line in lines)


def test_a_missing_table_is_a_one_line_error(shared_data: Path, tmp_path: Path) -> None:
    from ecgforge.data.cache import CacheError

    with pytest.raises(CacheError, match=r"source.ptbxl_database: .*nope.csv not found"):
        build_cache(_recipe(shared_data / "cinc2021-sample", tmp_path / "c.h5",
                            ptbxl_database=str(tmp_path / "nope.csv")), workers=1)
