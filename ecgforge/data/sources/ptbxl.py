"""PTB-XL (Wagner et al. 2020, PhysioNet) as a record source.

Labels follow the PTB-XL benchmark exactly (Strodthoff et al. 2020, "Deep learning for ECG analysis:
benchmarks and insights from PTB-XL", `compute_label_aggregations` in helme/ecg_ptbxl_benchmarking):

- ``all``: every key of ``scp_codes`` (whatever its likelihood, including 0);
- ``diagnostic``: keys whose ``scp_statements.diagnostic == 1``;
- ``subdiagnostic`` / ``superdiagnostic``: those keys' ``diagnostic_subclass`` / ``diagnostic_class``;
- ``form`` / ``rhythm``: keys whose ``form == 1`` / ``rhythm == 1``.

The benchmark's later step (dropping classes with few examples, dropping records without a label) is a
choice of the evaluation, not of the listing, so it is not applied here.
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ecgforge.data.record import RecordRef
from ecgforge.data.sources.base import WFDBSource
from ecgforge.errors import resolved_against
from ecgforge.registry import BuildContext

PTBXLLabelSet = Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]


class PTBXLSourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["ptbxl"] = "ptbxl"
    path: str = Field(description="PTB-XL root: the folder holding ptbxl_database.csv and records100/")
    records: Literal["records100", "records500"] = Field(
        "records100", description="records100 (100 Hz, filename_lr) or records500 (500 Hz, filename_hr)"
    )
    label_sets: list[PTBXLLabelSet] = Field(default_factory=lambda: ["superdiagnostic"])


class PTBXLSource(WFDBSource[PTBXLSourceConfig]):
    """PTB-XL records from ``ptbxl_database.csv`` and ``scp_statements.csv`` (listed once, on first use)."""

    Config = PTBXLSourceConfig

    def __init__(self, cfg: PTBXLSourceConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.path).expanduser()
        self._cache: tuple[list[RecordRef], dict[str, list[str]]] | None = None

    def _load(self) -> tuple[list[RecordRef], dict[str, list[str]]]:
        if self._cache is not None:
            return self._cache
        import pandas as pd  # deferred: `ecgforge list` must stay cheap

        db_path, st_path = self.root / "ptbxl_database.csv", self.root / "scp_statements.csv"
        for p in (db_path, st_path):
            if not p.is_file():
                raise FileNotFoundError(f"source.path: {p} not found{resolved_against(p)} (is {self.root} the PTB-XL root?)")
        file_col = "filename_lr" if self.cfg.records == "records100" else "filename_hr"
        used = ("ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", file_col)
        db = pd.read_csv(db_path, usecols=lambda c: c in used)  # the free-text columns cost most to parse
        absent = [c for c in used if c not in db.columns]
        if absent:
            raise ValueError(f"source.path: {db_path} has no column {', '.join(absent)}")
        st = pd.read_csv(st_path, index_col=0)

        def flagged(column: str) -> set[str]:
            return {str(k) for k in st.index[st[column] == 1.0]}

        diag = st[st["diagnostic"] == 1.0]
        diag_codes = {str(k) for k in diag.index}
        sub = {str(k): str(v) for k, v in diag["diagnostic_subclass"].items() if isinstance(v, str)}
        sup = {str(k): str(v) for k, v in diag["diagnostic_class"].items() if isinstance(v, str)}
        form, rhythm = flagged("form"), flagged("rhythm")

        # Label set -> {statement code: the label it gives}; "all" keeps every code as it is.
        label_of: dict[str, dict[str, str] | None] = {
            "all": None,
            "diagnostic": {c: c for c in diag_codes},
            "subdiagnostic": sub,
            "superdiagnostic": sup,
            "form": {c: c for c in form},
            "rhythm": {c: c for c in rhythm},
        }
        wanted = [(name, label_of[name]) for name in self.cfg.label_sets]
        refs: list[RecordRef] = []
        observed: set[str] = set()
        root = os.path.join(str(self.root), "")  # with the separator: records are root + file name
        # Plain lists of the columns used: iterating the frame's rows costs more than the rest of the listing.
        columns = [db[c].tolist() for c in used]
        for ecg_id, patient_id, age, sex, scp_codes, fold, file_name in zip(*columns, strict=True):
            codes = _scp_keys(scp_codes)
            observed.update(codes)
            ecg_id = int(ecg_id)
            age = float(age)
            refs.append(
                RecordRef(
                    record_id=f"{ecg_id:05d}",
                    locator=root + str(file_name),
                    patient_id=str(int(patient_id)) if not _isnan(patient_id) else f"{ecg_id:05d}",
                    source="ptbxl",
                    meta={
                        "fold": int(fold),
                        "sex": _SEX.get(sex, ""),
                        # PTB-XL writes ages above 89 as 300 (de-identification): they are 90 or more.
                        "age": 90.0 if age >= 300 else age,
                        "ecg_id": ecg_id,
                    },
                    labels={
                        name: sorted(set(codes) if of is None else {of[c] for c in codes if c in of})
                        for name, of in wanted
                    },
                )
            )
        names = {
            # scp_statements lists every statement; the union guards against a code missing from it.
            "all": sorted({str(k) for k in st.index} | observed),
            "diagnostic": sorted(diag_codes),
            "subdiagnostic": sorted(set(sub.values())),
            "superdiagnostic": sorted(set(sup.values())),
            "form": sorted(form),
            "rhythm": sorted(rhythm),
        }
        self._cache = (refs, {name: names[name] for name in self.cfg.label_sets})
        return self._cache

    def iter_records(self) -> Iterator[RecordRef]:
        """Every row of ``ptbxl_database.csv``, in file (``ecg_id``) order; the locator is
        ``root / filename_{lr,hr}``."""
        yield from self._load()[0]

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        """Label set -> every label it can hold, sorted (from ``scp_statements.csv``, not just those seen)."""
        return {k: list(v) for k, v in self._load()[1].items()}


_SEX = {0: "M", 1: "F"}  # PTB-XL's sex column: 0 male, 1 female (floats 0.0/1.0 find these keys; NaN: unknown)

# A key of the scp_codes dict literal: PTB-XL writes "{'NORM': 100.0, 'SR': 0.0}".
_SCP_KEY = re.compile(r"'([^':]*)'\s*:")


def _scp_keys(text: str) -> list[str]:
    """The statement codes of one ``scp_codes`` value, in order. A regular expression instead of
    ``ast.literal_eval`` (40 times faster; the listing is a serial part of every cache build), falling back
    to it for anything but that plain form."""
    keys = _SCP_KEY.findall(text)
    if len(keys) != text.count(":"):
        keys = [str(k) for k in ast.literal_eval(text)]
    return keys


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
