"""CODE-15% (Ribeiro et al. 2021, Zenodo 4916206): 345,779 exams of 233,770 patients, Telehealth Network of
Minas Gerais, 12-lead, 400 Hz.

Layout as the Zenodo description documents it: ``exams.csv`` (``exam_id, age, is_male, nn_predicted_age,
1dAVb, RBBB, LBBB, SB, ST, AF, patient_id, death, timey, normal_ecg, trace_file``) and the files
``exams_part{0..17}.hdf5`` named by ``trace_file``, each with ``tracings`` (N, 4096, 12) float32 and
``exam_id`` (N,). Leads are ordered DI, DII, DIII, AVR, AVL, AVF, V1..V6 (antonior92/automatic-ecg-diagnosis
README), mapped to the canonical order by name. Amplitudes are millivolts: the PhysioNet Challenge 2025's
converter (physionetchallenges/python-example-2025, ``prepare_code15_data.py``) writes them with units mV
unchanged. Recordings shorter than 4096 samples are zero-padded at both ends; the reader trims the rows
where every lead is exactly 0 from the start and the end, as that converter does.

Labels: set ``diagnosis`` with the six abnormalities in the paper's order (1dAVb RBBB LBBB SB AF ST).
Patient = ``patient_id``; fold 1..10 from a hash of it. A record's locator is ``"<row>:<exam_id>:<part file>"``;
reading it reads that row with an h5py slice: a part file (~1.5 GB) is never loaded whole.
"""

from __future__ import annotations

import csv
import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ecgforge.data.record import RecordError, RecordRef, Signal
from ecgforge.data.sources.base import Source, any_error_is_a_reason
from ecgforge.data.sources.common import hash_fold
from ecgforge.errors import resolved_against
from ecgforge.registry import BuildContext

LABELS: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
LEADS: tuple[str, ...] = ("DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
FS_HZ = 400.0
_COLUMNS = ("exam_id", "age", "is_male", "patient_id", "trace_file", *LABELS)


class Code15SourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["code15"] = "code15"
    path: str = Field(description="folder holding exams.csv and the exams_part*.hdf5 files")


def _flag(text: str | None) -> float:
    """``"True"``/``"False"``/``"1"``/``"0"``/empty -> 1.0 / 0.0 / NaN."""
    t = (text or "").strip().lower()
    if t in ("true", "1", "1.0"):
        return 1.0
    if t in ("false", "0", "0.0"):
        return 0.0
    return math.nan


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


class Code15Source(Source[Code15SourceConfig]):
    """CODE-15% exams, listed from ``exams.csv`` (each part file's ``exam_id`` column read once)."""

    Config = Code15SourceConfig

    def __init__(self, cfg: Code15SourceConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.path).expanduser()
        self._open: OrderedDict[str, Any] = OrderedDict()  # part file -> open h5py.File, a few per process

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        return {"diagnosis": list(LABELS)}

    def _index_of(self, trace_file: str, tables: dict[str, dict[int, int] | None]) -> dict[int, int] | None:
        """exam_id -> row of the part file (None: the file is absent or unreadable). Only the small
        ``exam_id`` dataset is read."""
        if trace_file not in tables:
            part = self.root / trace_file
            table: dict[int, int] | None = None
            if part.is_file():
                import h5py

                try:
                    with h5py.File(part, "r") as h5:
                        ids = np.asarray(h5["exam_id"][()]).astype(np.int64).ravel()
                    table = {int(e): i for i, e in enumerate(ids.tolist())}
                except (OSError, KeyError, ValueError, TypeError):
                    table = None  # the reader names the problem for each of its exams
            tables[trace_file] = table
        return tables[trace_file]

    def iter_records(self) -> Iterator[RecordRef]:
        """One `RecordRef` per row of ``exams.csv``, in file order."""
        exams = self.root / "exams.csv"
        if not exams.is_file():
            raise FileNotFoundError(f"source.path: {exams} not found{resolved_against(exams)} (is {self.root} the CODE-15% folder?)")

        def refs() -> Iterator[RecordRef]:
            tables: dict[str, dict[int, int] | None] = {}
            with open(exams, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                absent = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
                if absent:
                    raise ValueError(f"source.path: {exams} has no column {', '.join(absent)}")
                for row in reader:
                    exam_id = int(float(row["exam_id"]))
                    patient = (row["patient_id"] or "").strip()
                    patient = str(int(float(patient))) if patient else str(exam_id)
                    trace_file = (row["trace_file"] or "").strip()
                    table = self._index_of(trace_file, tables) if trace_file else None
                    # -1: the exam is not in the part file; -2: the part file has no readable exam_id column.
                    index = -2 if table is None else table.get(exam_id, -1)
                    male = _flag(row["is_male"])
                    yield RecordRef(
                        record_id=str(exam_id),
                        locator=f"{index}:{exam_id}:{self.root / trace_file}",
                        patient_id=patient,
                        source="code15",
                        meta={
                            "fold": hash_fold(patient),
                            "sex": "" if math.isnan(male) else ("M" if male else "F"),
                            "age": _float(row["age"]),
                            "exam_id": exam_id,
                            "nn_predicted_age": _float(row.get("nn_predicted_age")),
                            "normal_ecg": _flag(row.get("normal_ecg")),
                            "death": _flag(row.get("death")),
                            "timey": _float(row.get("timey")),
                            "trace_file": trace_file,
                        },
                        labels={"diagnosis": [lab for lab in LABELS if _flag(row[lab]) == 1.0]},
                    )

        yield from refs()  # a repeated id: `records` and the cache build refuse it


    def _part(self, path: str) -> Any:
        """This process's open handle of a part file (kept: reopening costs more than reading one exam)."""
        import h5py

        h5 = self._open.get(path)
        if h5 is not None and h5.id.valid:
            self._open.move_to_end(path)
            return h5
        h5 = h5py.File(path, "r")
        self._open[path] = h5
        while len(self._open) > 4:  # 18 part files; a reader's batches of consecutive exams touch one or two
            _, old = self._open.popitem(last=False)
            if old.id.valid:
                old.close()
        return h5

    @any_error_is_a_reason
    def read(self, locator: str) -> Signal:
        """``"<row>:<exam_id>:<part file>"`` -> the exam's (12, T) mV `Signal` at 400 Hz, padding trimmed."""
        index_text, exam_text, path = locator.split(":", 2)
        index, exam_id = int(index_text), int(exam_text)
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise RecordError(f"trace file {name} not found")
        if index == -2:
            raise RecordError(f"{name} is not a readable part file (no HDF5 exam_id dataset could be read)")
        if index < 0:
            raise RecordError(f"exam {exam_id} is not in {name} (its exam_id column)")
        h5 = self._part(path)
        try:
            tracings, ids = h5["tracings"], h5["exam_id"]
        except KeyError as exc:
            raise RecordError(f"{name} has no dataset {exc}") from None
        if tracings.ndim != 3 or tracings.shape[2] != len(LEADS) or index >= tracings.shape[0]:
            raise RecordError(f"{name}: tracings of shape {tracings.shape}, expected (N, T, 12) with row {index}")
        if int(ids[index]) != exam_id:
            raise RecordError(f"{name} row {index} holds exam {int(ids[index])}, not {exam_id} (file changed?)")
        x = trim_padding(np.asarray(tracings[index], dtype=np.float32))  # one exam: (4096, 12), 196 KB
        if x.shape[0] == 0:
            raise RecordError(f"exam {exam_id}: the tracing is all zeros (padding only)")
        return Signal(data=np.ascontiguousarray(x.T), fs_hz=FS_HZ, lead_names=list(LEADS))


def trim_padding(x: np.ndarray) -> np.ndarray:
    """Drop the leading and trailing samples where every lead is exactly 0. ``x``: (T, leads) -> (T', leads)."""
    rows = np.flatnonzero((x != 0).any(axis=1))
    if rows.size == 0:
        return x[:0]
    return x[rows[0] : rows[-1] + 1]
