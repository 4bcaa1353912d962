"""MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset (Gow et al. 2023, PhysioNet).

About 800,000 ten-second 12-lead ECGs at 500 Hz of ~160,000 patients, as WFDB records in
``files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY.{hea,dat}`` (``pXXXXXXXX``: the subject, ``NNNN`` its first four
digits; ``sYYYYYYYY``: the study). ``record_list.csv`` maps each study to its subject and path (columns
``subject_id, study_id, file_name, ecg_time, path``; mimic.mit.edu/docs/iv/modules/ecg/record_list);
``machine_measurements.csv`` (optional) holds the cart's report (``report_0`` .. ``report_17``) and global
measurements, stored as metadata. Without ``record_list.csv`` the tree itself is listed, subject and study
read from the folder names.

Patient = ``subject_id`` (one subject's ECGs never straddle folds); fold 1..10 from a hash of it. The headers
list the leads as I, II, III, aVR, aVF, aVL, V1..V6 (aVF before aVL): the reader maps them by name.
Age and sex are not part of MIMIC-IV-ECG; ``patients_csv`` (MIMIC-IV ``hosp/patients.csv``: ``subject_id,
gender, anchor_age, anchor_year``) adds them, the age at the ECG being ``anchor_age + year(ecg_time) -
anchor_year``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ecgforge.data.record import RecordRef
from ecgforge.data.sources.base import WFDBSource
from ecgforge.data.sources.common import hash_fold, walk_files
from ecgforge.errors import resolved_against
from ecgforge.registry import BuildContext

# machine_measurements.csv's numeric global measurements (ms, and degrees for the axes), stored as meta.
MEASUREMENTS: tuple[str, ...] = (
    "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis",
)
# The carts write 29999 where a measurement could not be made (e.g. P onset in atrial fibrillation).
_NOT_MEASURED = 29999.0
_STUDY = re.compile(r"(?:^|/)p(\d+)/s(\d+)/(\d+)$")


class _Measurements:
    """``machine_measurements.csv`` keyed by study, in a temporary SQLite file while the listing runs: 800,000
    rows of report text and nine numbers held as Python dicts would be ~1 GB in the building process."""

    def __init__(self, path: Path) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ecgforge-mimic-")
        self._db = sqlite3.connect(os.path.join(self._dir.name, "measurements.sqlite"))
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        columns = ", ".join(f"{c} REAL" for c in MEASUREMENTS)
        self._db.execute(f"CREATE TABLE m (study TEXT PRIMARY KEY, report TEXT, {columns})")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            if "study_id" not in names:
                self.close()
                raise ValueError(f"source.path: {path} has no column study_id")
            reports = sorted((c for c in names if re.fullmatch(r"report_\d+", c)), key=lambda c: int(c.split("_")[1]))

            def rows() -> Iterator[tuple[str | float, ...]]:
                for row in reader:
                    lines = [(row[c] or "").strip() for c in reports]
                    yield (row["study_id"].strip(), "; ".join(t for t in lines if t),
                           *(_number(row.get(c)) for c in MEASUREMENTS))

            marks = ", ".join("?" * (2 + len(MEASUREMENTS)))
            self._db.executemany(f"INSERT OR REPLACE INTO m VALUES ({marks})", rows())  # a repeated study: the last
        self._db.commit()

    def get(self, study: str) -> dict[str, str | float] | None:
        """{"report": joined report lines, measurement: value (NaN: not measured)}, or None for an unknown study."""
        row = self._db.execute("SELECT * FROM m WHERE study = ?", (study,)).fetchone()
        if row is None:
            return None
        values = [math.nan if v is None else float(v) for v in row[2:]]  # SQLite stores NaN as NULL
        return {"report": row[1], **dict(zip(MEASUREMENTS, values, strict=True))}

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


class MimicIVECGSourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["mimic_iv_ecg"] = "mimic_iv_ecg"
    path: str = Field(description="MIMIC-IV-ECG root: the folder holding record_list.csv and files/")
    measurements: bool = Field(True, description="store machine_measurements.csv (when present) as metadata")
    patients_csv: str | None = Field(None, description="MIMIC-IV hosp/patients.csv: adds sex and age")


def _year(ecg_time: str) -> int | None:
    m = re.match(r"\s*(\d{4})-", ecg_time or "")
    return int(m.group(1)) if m else None


def _number(text: str | None) -> float:
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return math.nan if value >= _NOT_MEASURED else value


class MimicIVECGSource(WFDBSource[MimicIVECGSourceConfig]):
    """MIMIC-IV-ECG studies, listed from ``record_list.csv`` (or the ``files/`` tree)."""

    Config = MimicIVECGSourceConfig

    def __init__(self, cfg: MimicIVECGSourceConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.path).expanduser()

    def _patients(self) -> dict[str, tuple[str, float, int]]:
        """subject_id -> (sex, anchor_age, anchor_year) from MIMIC-IV ``patients.csv``."""
        if self.cfg.patients_csv is None:
            return {}
        path = Path(self.cfg.patients_csv).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"source.patients_csv: {path} not found{resolved_against(path)}")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            need = ("subject_id", "gender", "anchor_age", "anchor_year")
            absent = [c for c in need if c not in (reader.fieldnames or [])]
            if absent:
                raise ValueError(f"source.patients_csv: {path} has no column {', '.join(absent)}")
            table = {}
            for row in reader:
                sex = (row["gender"] or "").strip().upper()[:1]
                try:
                    age, year = float(row["anchor_age"]), int(row["anchor_year"])
                except ValueError:
                    age, year = math.nan, 0
                table[row["subject_id"].strip()] = (sex if sex in ("M", "F") else "", age, year)
        return table

    def _measurements(self) -> _Measurements | None:
        """machine_measurements.csv keyed by study (None: absent file, or ``measurements = false``)."""
        path = self.root / "machine_measurements.csv"
        if not self.cfg.measurements or not path.is_file():
            return None
        return _Measurements(path)

    def _listed(self) -> Iterator[tuple[str, str, str, str]]:
        """(subject_id, study_id, relative path without extension, ecg_time) per study."""
        listing = self.root / "record_list.csv"
        if listing.is_file():
            with open(listing, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                absent = [c for c in ("subject_id", "study_id", "path") if c not in (reader.fieldnames or [])]
                if absent:
                    raise ValueError(f"source.path: {listing} has no column {', '.join(absent)}")
                for row in reader:
                    rel = (row["path"] or "").strip().removesuffix(".hea")
                    yield row["subject_id"].strip(), row["study_id"].strip(), rel, (row.get("ecg_time") or "")
            return
        files = self.root / "files"
        if not files.is_dir():
            raise FileNotFoundError(f"source.path: neither {listing} nor {files}/ found (is {self.root} the "
                                    "MIMIC-IV-ECG root?)")
        for hea in walk_files(files, "*.hea"):
            rel = hea.relative_to(self.root).with_suffix("").as_posix()
            m = _STUDY.search(rel)
            if m is None:  # not a study of the documented layout (a stray header): not a MIMIC record
                continue
            yield str(int(m.group(1))), str(int(m.group(2))), rel, ""

    def iter_records(self) -> Iterator[RecordRef]:
        """One `RecordRef` per study, in ``record_list.csv`` order (else the tree's sorted order)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"source.path: {self.root} is not a folder")
        patients = self._patients()
        measured = self._measurements()
        root = os.path.join(str(self.root), "")
        blank: dict[str, str | float] = {"report": "", **{c: math.nan for c in MEASUREMENTS}}

        def refs() -> Iterator[RecordRef]:
            try:
                yield from listed()
            finally:
                if measured is not None:
                    measured.close()

        def listed() -> Iterator[RecordRef]:
            for subject, study, rel, ecg_time in self._listed():
                sex, age = "", math.nan
                if subject in patients:
                    sex, anchor_age, anchor_year = patients[subject]
                    year = _year(ecg_time)
                    if year is not None and anchor_year:
                        age = anchor_age + (year - anchor_year)
                meta: dict[str, str | int | float] = {
                    "fold": hash_fold(subject), "sex": sex, "age": age,
                    "study_id": int(study) if study.isdigit() else -1, "ecg_time": ecg_time.strip(),
                }
                if measured is not None:  # absent file (or measurements = false): no columns, not blank ones
                    meta.update(measured.get(study) or blank)
                yield RecordRef(record_id=study, locator=root + rel, patient_id=subject, source="mimic_iv_ecg",
                                meta=meta)

        yield from refs()  # a repeated id: `records` and the cache build refuse it
