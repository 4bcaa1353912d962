"""Any folder of WFDB records, with optional labels from a CSV.

Records are the ``.hea`` files found recursively under ``path``; the record id is the header's path
relative to ``path`` without extension (``sub/rec01``), so records in different sub-folders never collide.
The labels CSV has a ``record`` column (that relative id, or the bare file stem where it is unique) and a
label column holding ``;``-separated labels (``"AF;LBBB"``; empty = no label).

The patient is the record id, unless ``patient_from`` says where the tree encodes it: a path part index
(``0`` = the first folder under ``path``, ``-2`` = the record's own folder, ``-1`` = the file stem) or a
regular expression with a named group ``patient``, searched in the relative id (``p1000/p10000032/s1/1``:
``"p(?P<patient>\\d+)/s"``). With it each record gets a fold 1..10 from a hash of its patient (as the CinC
source does), so fold-based splits never straddle a patient; without it the fold is -1 (unknown).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ecgforge.data.record import RecordRef
from ecgforge.data.sources.base import WFDBSource
from ecgforge.data.sources.common import hash_fold, walk_files
from ecgforge.errors import resolved_against
from ecgforge.registry import BuildContext


class WFDBFolderSourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["wfdb_folder"] = "wfdb_folder"
    path: str = Field(description="folder searched recursively for .hea files")
    labels_csv: str | None = Field(None, description="CSV with a 'record' column and a label column")
    label_column: str = Field("label", min_length=1, description="column of ';'-separated labels")
    patient_from: int | str | None = Field(
        None, description="where the relative path names the patient: a path part index, or a regex with a "
        "named group 'patient'; default: the record id"
    )

    @field_validator("patient_from")
    @classmethod
    def _patient_pattern(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            try:
                compiled = re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression ({exc})") from None
            if "patient" not in compiled.groupindex:
                raise ValueError(f"{value!r} has no named group (?P<patient>...)")
        return value


def patient_of(record_id: str, patient_from: int | str | None) -> str:
    """The patient a relative record id (``sub/dir/rec``) names, per ``patient_from`` (see the module).

    Raises:
        ValueError: the id has no such part, or the expression does not match it (naming the field).
    """
    if patient_from is None:
        return record_id
    if isinstance(patient_from, int):
        parts = record_id.split("/")
        if not -len(parts) <= patient_from < len(parts):
            raise ValueError(f"source.patient_from: record {record_id!r} has no path part {patient_from}")
        return parts[patient_from]
    m = re.search(patient_from, record_id)
    if m is None or not m.group("patient"):
        raise ValueError(f"source.patient_from: {patient_from!r} does not match record {record_id!r}")
    return m.group("patient")


class WFDBFolderSource(WFDBSource[WFDBFolderSourceConfig]):
    """Every WFDB record under a folder (listed without header or signal reads); label set name ``"label"``."""

    Config = WFDBFolderSourceConfig

    def __init__(self, cfg: WFDBFolderSourceConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.path).expanduser()
        self._cache: tuple[list[RecordRef], dict[str, list[str]]] | None = None

    def _read_labels(self, labels_csv: str) -> dict[str, list[str]]:
        """CSV -> record key -> labels. Raises ValueError/FileNotFoundError naming the file and column."""
        csv_path = Path(labels_csv).expanduser()
        if not csv_path.is_file():
            raise FileNotFoundError(f"source.labels_csv: {csv_path} not found{resolved_against(csv_path)}")
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for column in ("record", self.cfg.label_column):
                if column not in columns:
                    raise ValueError(
                        f"source.labels_csv: {csv_path} has no column {column!r} (has {columns})"
                    )
            table: dict[str, list[str]] = {}
            for row in reader:
                key = (row["record"] or "").strip()
                if not key:
                    continue
                if key in table:
                    raise ValueError(f"source.labels_csv: record {key!r} is listed twice in {csv_path}")
                raw = row[self.cfg.label_column] or ""
                table[key] = sorted({lab.strip() for lab in raw.split(";") if lab.strip()})
        return table

    def _load(self) -> tuple[list[RecordRef], dict[str, list[str]]]:
        if self._cache is not None:
            return self._cache
        if not self.root.is_dir():
            raise FileNotFoundError(f"source.path: {self.root} is not a folder")
        ids = sorted(p.relative_to(self.root).with_suffix("").as_posix() for p in self.root.rglob("*.hea"))
        table = self._read_labels(self.cfg.labels_csv) if self.cfg.labels_csv is not None else None
        stems: dict[str, list[str]] = {}
        for rid in ids:
            stems.setdefault(rid.rsplit("/", 1)[-1], []).append(rid)

        refs: list[RecordRef] = []
        # Every label the CSV names (not only those of listed records), so cache columns do not depend on
        # which records happen to be on disk.
        all_labels = {lab for labs in (table or {}).values() for lab in labs}
        for rid in ids:
            found: list[str] | None = None
            if table is not None:
                stem = rid.rsplit("/", 1)[-1]
                # The bare stem counts only where it names one record: otherwise labels could cross records.
                found = table.get(rid, table.get(stem, []) if len(stems[stem]) == 1 else [])
            refs.append(self._ref(rid, found))
        names = {"label": sorted(all_labels)} if table is not None else {}
        self._cache = (refs, names)
        return self._cache

    def iter_records(self) -> Iterator[RecordRef]:
        """The records of `records`, in the same order, yielded as the folder walk goes (without a labels CSV:
        with one, whether a bare file stem names a single record needs the whole listing first)."""
        if self.cfg.labels_csv is not None:
            yield from self._load()[0]
            return
        if not self.root.is_dir():
            raise FileNotFoundError(f"source.path: {self.root} is not a folder")
        for hea in walk_files(self.root, "*.hea", ignore_case=False, key=lambda name: name[: -len(".hea")]):
            rid = hea.relative_to(self.root).with_suffix("").as_posix()
            yield self._ref(rid, None)

    def _ref(self, rid: str, labels: list[str] | None) -> RecordRef:
        patient = patient_of(rid, self.cfg.patient_from)
        return RecordRef(
            record_id=rid,
            locator=str(self.root / rid),
            patient_id=patient,
            source="wfdb_folder",
            meta={"fold": -1 if self.cfg.patient_from is None else hash_fold(patient), "sex": "", "age": math.nan},
            labels={} if labels is None else {"label": labels},
        )

    def records(self) -> list[RecordRef]:
        """One `RecordRef` per ``.hea`` under ``path``, sorted by relative path."""
        return list(self._load()[0])

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        """``{"label": every label in the CSV, sorted}``, or ``{}`` without a CSV (no listing needed: a cache
        build calls this after streaming the records, and a second listing would hold them all)."""
        if self._cache is not None:
            return {k: list(v) for k, v in self._cache[1].items()}
        if self.cfg.labels_csv is None:
            return {}
        return {"label": sorted({lab for labs in self._read_labels(self.cfg.labels_csv).values() for lab in labs})}
