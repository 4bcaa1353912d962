"""Signals that are already arrays, with sampling rate, units and lead order stated in the recipe and labels,
patient, age, sex and fold from a CSV joined by record id: the path for data not in a clinical format.

What ``path`` is decides how it is read (``layout`` gives one record's axes: ``"leads_time"`` (leads, T) or
``"time_leads"`` (T, leads); a stacked array adds the record axis first, (N, leads, T) or (N, T, leads)):

- a ``.npy`` file: one stacked array; a record is one row, read with one ``os.pread`` (nothing is mapped or
  loaded whole: a reader holds one record, whatever the size of the file).
- a ``.npz`` file: the stacked array ``dataset`` names (unset: the archive's only array, when it has 3
  dimensions); otherwise every array in it is one record, its name the record id. A stacked array saved
  uncompressed (``np.savez``) is read a row at a time as in a ``.npy``; compressed (``np.savez_compressed``),
  each reader process inflates it front to back a record at a time (its records come in order), holding one.
- an HDF5 file (``.h5``, ``.hdf5``, MATLAB v7.3 ``.mat``): ``dataset`` names a stacked dataset, read one row at a
  time (an h5py slice), or a group whose datasets (at any depth) are one record each, named by their path in it.
- a folder: every ``*.npy`` / ``*.npz`` under it is one record, its id the path under the folder without the
  extension (``sub/rec01``); in a ``.npz`` the array ``dataset`` names, or its only array.

A stacked array's record ids are its row numbers (``0``, ``1``...) unless ``ids`` names an array beside it in the
same file with one id per row. Arrays (or HDF5 attributes) named ``fs_hz`` / ``fs`` / ``sampling_rate`` /
``sampling_frequency`` or ``leads`` / ``lead_names`` next to the signals are checked against the recipe: a
disagreement is an error for a whole file and a skip reason for one record.

The labels CSV has one row per record: ``id_column`` (the record id), optionally ``patient_column``,
``age_column`` (years), ``sex_column`` (M/F/male/female), ``fold_column`` (integers; default: a fold 1..10 from a
hash of the patient) and the columns of ``label_sets``: a set given as one column name reads that column's
``label_separator``-separated labels (``"AF;RBBB"``), one given as a list of columns reads each as a 0/1 flag
(the column name is the label). A record without a CSV row, and a CSV row without a record, are listed as
skipped with the reason.
"""

from __future__ import annotations

import csv
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from ecgforge.data.leads import CANONICAL_LEADS, resolve_lead
from ecgforge.data.record import RecordError, RecordRef, Signal
from ecgforge.data.sources.base import Source, any_error_is_a_reason
from ecgforge.data.sources.common import derive_limb_leads, hash_fold, unit_to_mv, walk_files
from ecgforge.errors import resolved_against
from ecgforge.registry import BuildContext

DROP = "-"  # in `leads`: a stored channel that is not an ECG lead
FS_NAMES = ("fs_hz", "fs", "sampling_rate", "sampling_frequency")
LEAD_NAMES = ("leads", "lead_names")
_H5_CHUNK_CACHE = 32 << 20  # bytes per open HDF5 file: consecutive rows of a compressed chunk inflate it once
_LABEL_SET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_TRUE, _FALSE = {"1", "1.0", "true", "yes", "y", "t"}, {"0", "0.0", "false", "no", "n", "f", ""}
_SEX = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F", "": "", "u": "", "unknown": ""}

Getter = Callable[[str], Any]  # name -> an array or attribute stated next to the signals, or None


class ArraysSourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["arrays"] = "arrays"
    path: str = Field(description="a .npy, .npz or HDF5 file, or a folder of one .npy / .npz per record")
    dataset: str | None = Field(
        None, min_length=1, description="the stacked array in a .npz, the dataset (or group of per-record "
        "datasets) in an HDF5 file, or the signal array in each .npz of a folder"
    )
    ids: str | None = Field(
        None, min_length=1, description="array in the same file holding each row's record id (default: the row number)"
    )
    layout: Literal["leads_time", "time_leads"] = Field(
        "leads_time", description="one record's axes: (leads, T) or (T, leads)"
    )
    fs_hz: float = Field(gt=0, allow_inf_nan=False, description="sampling rate of every record, Hz")
    units: str | float = Field(
        "mV", description="stored units: 'mV', 'uV', 'V', or a number: mV per stored unit (0.005 = 200 per mV)"
    )
    leads: list[str] = Field(
        min_length=1, description="the lead of each stored channel, in order ('I', 'DII', 'V1'...; '-' drops one)"
    )
    derive_limb_leads: bool = Field(False, description="compute III, aVR, aVL, aVF from I and II where not stored")
    labels_csv: str | None = Field(None, min_length=1, description="CSV with one row per record")
    id_column: str = Field("record_id", min_length=1, description="the CSV column of record ids")
    patient_column: str | None = Field(None, min_length=1, description="default: each record is its own patient")
    age_column: str | None = Field(None, min_length=1, description="age in years")
    sex_column: str | None = Field(None, min_length=1, description="M / F / male / female (empty: unknown)")
    fold_column: str | None = Field(None, min_length=1, description="integer folds (default: hashed from the patient)")
    label_sets: dict[str, str | list[str]] = Field(
        default_factory=dict, description="label set -> a column of separated labels, or a list of 0/1 columns"
    )
    label_separator: str = Field(";", min_length=1, description="between labels in a label column")

    @field_validator("units")
    @classmethod
    def _units(cls, value: str | float) -> str | float:
        if isinstance(value, str):
            try:
                unit_to_mv(value)
            except RecordError:
                raise ValueError(f"{value!r} is neither a voltage unit (nV, uV, mV, V) nor mV per stored unit") from None
        elif not (math.isfinite(value) and value > 0):
            raise ValueError(f"{value} mV per stored unit: must be a positive number")
        return value

    @field_validator("leads")
    @classmethod
    def _leads(cls, names: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for i, name in enumerate(names):
            if name.strip() == DROP:
                continue
            lead = resolve_lead(name)
            if lead is None:
                raise ValueError(f"leads[{i}] {name!r} is not a lead name (I, II, III, aVR, aVL, aVF, V1-V6 or an "
                                 f"alias such as DII or C1; {DROP!r} drops a channel)")
            if lead in seen:
                raise ValueError(f"{seen[lead]!r} and {name!r} are both lead {lead}")
            seen[lead] = name
        if not seen:
            raise ValueError(f"no ECG lead: every channel is {DROP!r}")
        return names

    @field_validator("label_sets")
    @classmethod
    def _label_sets(cls, sets: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for name, spec in sets.items():
            if not _LABEL_SET.fullmatch(name) or name == "age":
                raise ValueError(f"label set name {name!r}: letters, digits, '_' and '-' ('age' is a task of its own)")
            columns = [spec] if isinstance(spec, str) else spec
            if not columns or any(not c.strip() for c in columns) or len(set(columns)) != len(columns):
                raise ValueError(f"label set {name!r}: {spec!r} is not a column name or a list of distinct ones")
        return sets

    @model_validator(mode="after")
    def _csv_fields_need_the_csv(self) -> ArraysSourceConfig:
        named = [f for f in ("patient_column", "age_column", "sex_column", "fold_column") if getattr(self, f)]
        named += ["label_sets"] if self.label_sets else []
        if named and self.labels_csv is None:
            raise ValueError(f"{', '.join(named)} read the labels CSV: set labels_csv")
        return self


@dataclass(frozen=True)
class _Row:
    """What the labels CSV says of one record."""

    patient: str
    sex: str
    age: float
    fold: int | None
    labels: tuple[tuple[str, ...], ...]  # per label set, in `label_sets` order


@dataclass
class _Rows:
    """A stacked array opened for reading one record at a time: its shape, dtype and a row reader."""

    shape: tuple[int, ...]
    dtype: np.dtype
    row: Callable[[int], np.ndarray]
    close: Callable[[], None]
    stated: Getter  # what the file states beside the array (sampling rate, leads)


class ArraysSource(Source[ArraysSourceConfig]):
    """Records from arrays (see the module for the forms ``path`` may take), joined to a labels CSV by id."""

    Config = ArraysSourceConfig

    def __init__(self, cfg: ArraysSourceConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.path = Path(cfg.path).expanduser()
        self._mv = unit_to_mv(cfg.units) if isinstance(cfg.units, str) else float(cfg.units)
        self._names: dict[str, list[str]] | None = None  # label names, once the CSV has been read
        self._open: Any = None  # this process's open store: `_Rows`, an NpzFile or an h5py group

    # ------------------------------------------------------------------------------------------ listing

    def iter_records(self) -> Iterator[RecordRef]:
        """Records in storage order (rows, archive members, sorted files), then the CSV rows that name no record."""
        table = self._read_csv() if self.cfg.labels_csv is not None else None
        for rid, locator in self._named(self._entries()):
            if table is None:
                yield self._ref(rid, locator, None)
                continue
            row = table.pop(rid, None)
            if row is None:
                locator = f"skip:no row with {self.cfg.id_column} {rid!r} in {Path(self.cfg.labels_csv or '').name}"
            yield self._ref(rid, locator, row)
        for rid, row in (table or {}).items():
            yield self._ref(rid, f"skip:no array for {self.cfg.id_column} {rid!r} in {self.path.name}", row)

    def _named(self, entries: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        """``entries``, with a failure of numpy, zipfile or h5py on a damaged file named as ``source.path``."""
        try:
            yield from entries
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if text.startswith("source."):
                raise
            raise ValueError(f"source.path: {self.path}: {type(exc).__name__}: {text}") from None

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        """Label set -> its labels: a flag set's columns in order; a label column's labels in the CSV, sorted."""
        if self._names is None and self.cfg.labels_csv is not None:
            self._read_csv()
        return {k: list(v) for k, v in (self._names or {}).items()}

    def _ref(self, rid: str, locator: str, row: _Row | None) -> RecordRef:
        patient = row.patient if row is not None and row.patient else rid
        fold = row.fold if row is not None and row.fold is not None else hash_fold(patient)
        labels = {} if row is None else dict(zip(self.cfg.label_sets, (list(x) for x in row.labels), strict=True))
        return RecordRef(
            record_id=rid, locator=locator, patient_id=patient, source="arrays",
            meta={"fold": fold, "sex": row.sex if row else "", "age": row.age if row else math.nan},
            labels=labels,
        )

    def _form(self) -> str:
        """``"folder"``, ``"npy"``, ``"npz"`` or ``"hdf5"``; OSError / ValueError naming ``source.path``."""
        p = self.path
        if p.is_dir():
            return "folder"
        if not p.is_file():
            raise FileNotFoundError(f"source.path: {p} not found{resolved_against(p)}")
        suffix = p.suffix.lower()
        if suffix in (".npy", ".npz"):
            return suffix[1:]
        import h5py

        if h5py.is_hdf5(p):
            return "hdf5"
        raise ValueError(f"source.path: {p} is neither a .npy, .npz or HDF5 file nor a folder")

    def _entries(self) -> Iterator[tuple[str, str]]:
        """``(record id, locator)`` of every stored record, reading no signal."""
        form, cfg = self._form(), self.cfg
        if form == "folder":
            if cfg.ids is not None:
                raise ValueError(f"source.ids: {self.path} is a folder of one record per file (no stacked array)")
            for file in walk_files(self.path, "*.np[yz]"):
                yield file.relative_to(self.path).with_suffix("").as_posix(), f"file:{file}"
            return
        if form == "npy" and (cfg.dataset or cfg.ids):
            field = "dataset" if cfg.dataset else "ids"
            raise ValueError(f"source.{field}: {self.path} is a .npy file, which holds one array (use .npz or HDF5)")
        if form == "hdf5" and not cfg.dataset:
            raise ValueError(f"source.dataset: {self.path} is HDF5: name the dataset of signals (it has {_h5_names(self.path)})")
        keys = self._keys(form)
        if keys is not None:
            if cfg.ids is not None:
                raise ValueError(f"source.ids: {self.path} holds one array per record, named by its record id")
            yield from ((k, f"key:{k}") for k in keys)
            return
        name = self._stacked_name(form)
        rows = _open_rows(self.path, form, name)
        try:
            self._check_stacked(rows, f"{self.path}" + (f" {name}" if name else ""))
            ids = self._ids(form, rows.shape[0])
        finally:
            rows.close()
        for i, value in enumerate(ids):  # one id at a time: ten million rows hold no list of ten million strings
            yield _id_text(value.item() if isinstance(value, np.generic) else value), f"row:{i}"

    def _keys(self, form: str) -> list[str] | None:
        """The record names of a file with one array per record (a .npz's arrays, an HDF5 group's datasets);
        None for a stacked array. Checks what the file states beside them."""
        if form == "npz":
            if self._stacked_name(form) is not None:
                return None
            with np.load(self.path) as npz:
                where = f"{self.path}"
                self._check_stated(lambda name: npz[name] if name in npz.files else None, where, ValueError)
                return [k for k in npz.files if k not in (*FS_NAMES, *LEAD_NAMES)]
        if form == "hdf5":
            import h5py

            with h5py.File(self.path, "r") as h5:
                obj = _h5_get(h5, self.cfg.dataset or "", self.path)
                if not isinstance(obj, h5py.Group):
                    return None
                self._check_stated(_h5_stated(obj), f"{self.path} group {obj.name}", ValueError)
                names: list[str] = []
                obj.visititems(lambda name, o: names.append(name) if isinstance(o, h5py.Dataset) else None)
                return names
        return None

    def _stacked_name(self, form: str) -> str | None:
        """The name of a .npz's stacked array: ``dataset``, or unset, its only array when that has 3 dimensions."""
        if form != "npz" or self.cfg.dataset is not None:
            return self.cfg.dataset
        with zipfile.ZipFile(self.path) as zf:
            names = [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
            signals = [n for n in names if n not in (*FS_NAMES, *LEAD_NAMES, self.cfg.ids)]
            if len(signals) == 1 and len(_npz_header(zf, self.path, signals[0])[1]) == 3:
                return signals[0]
        return None

    def _check_stacked(self, rows: _Rows, where: str) -> None:
        """A stacked array has 3 dimensions, numbers, leads where ``layout`` says, and agrees with what its file
        states; ValueError naming ``where`` (the file and the array) and the field otherwise."""
        if rows.dtype.kind not in "iuf":
            raise ValueError(f"source.path: {where} holds {rows.dtype} values, not numbers")
        if len(rows.shape) != 3:
            axes = "(records, leads, T)" if self.cfg.layout == "leads_time" else "(records, T, leads)"
            raise ValueError(f"source.path: {where} has shape {rows.shape}: expected 3 dimensions {axes} for "
                             f"source.layout {self.cfg.layout!r}")
        problem = self._layout_problem(rows.shape[1:])
        if problem:
            raise ValueError(f"source.layout: {where}: {problem}")
        self._check_stated(rows.stated, where, ValueError)

    def _ids(self, form: str, n: int) -> range | np.ndarray:
        """Each row's record id: the ``ids`` array's values, or the row numbers."""
        if self.cfg.ids is None:
            return range(n)
        if form == "npz":
            with np.load(self.path) as npz:
                if self.cfg.ids not in npz.files:
                    raise ValueError(f"source.ids: {self.path} has no array {self.cfg.ids!r} (has {npz.files})")
                values = np.asarray(npz[self.cfg.ids])
        else:
            import h5py

            with h5py.File(self.path, "r") as h5:
                values = np.asarray(_h5_get(h5, self.cfg.ids, self.path, field="ids")[()])
        if values.shape != (n,):
            raise ValueError(f"source.ids: {self.path} {self.cfg.ids} has shape {values.shape}, expected ({n},): one "
                             "id per record")
        return values

    def _read_csv(self) -> dict[str, _Row]:
        """The labels CSV: record id -> `_Row`; sets ``self._names``. Raises OSError / ValueError naming the field,
        the file and the line."""
        path = Path(self.cfg.labels_csv or "").expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"source.labels_csv: {path} not found{resolved_against(path)}")
        try:
            return self._parse_csv(path)
        except UnicodeDecodeError as exc:
            raise ValueError(f"source.labels_csv: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise ValueError(f"source.labels_csv: {path}: {exc}") from None

    def _parse_csv(self, path: Path) -> dict[str, _Row]:
        """`_read_csv` once the file is known to exist: every row checked as it is read."""
        cfg = self.cfg
        sets = {name: ([spec] if isinstance(spec, str) else list(spec)) for name, spec in cfg.label_sets.items()}
        seen: dict[str, set[str]] = {name: set() for name, spec in cfg.label_sets.items() if isinstance(spec, str)}
        fields = {f: getattr(cfg, f) for f in ("id_column", "patient_column", "age_column", "sex_column", "fold_column")
                  if getattr(cfg, f) is not None}  # field -> its column
        table: dict[str, _Row] = {}
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            wanted = [*fields.items(), *((f"label_sets.{name}", c) for name, cols in sets.items() for c in cols)]
            for field, column in wanted:
                if column not in columns:
                    raise ValueError(f"source.{field}: {path} has no column {column!r} (has {columns})")

            def bad(field: str, text: str, what: str) -> ValueError:
                return ValueError(f"source.{field}: {path} line {reader.line_num}: {text!r} is not {what}")

            for row in reader:
                cell = {field: (row[column] or "").strip() for field, column in fields.items()}
                rid = cell["id_column"]
                if not rid:
                    if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                        raise bad("id_column", rid, "a record id")
                    continue  # an empty row, as spreadsheets leave at the end
                if rid in table:
                    raise ValueError(f"source.id_column: {path} line {reader.line_num}: record {rid!r} is listed twice")
                sex = _SEX.get(cell.get("sex_column", "").lower())
                if sex is None:
                    raise bad("sex_column", cell["sex_column"], "a sex (M, F, male, female; U, unknown or empty)")
                age = _number(cell.get("age_column", ""))
                if age is None or age < 0:
                    raise bad("age_column", cell["age_column"], "an age in years")
                fold = None
                if "fold_column" in cell:
                    number = _number(cell["fold_column"])
                    if number is None or not math.isfinite(number) or not number.is_integer():
                        raise bad("fold_column", cell["fold_column"], "an integer fold")
                    fold = int(number)
                labels: list[tuple[str, ...]] = []
                for name, cols in sets.items():
                    if name in seen:  # one column of separated labels
                        labs = tuple(sorted({x.strip() for x in (row[cols[0]] or "").split(cfg.label_separator)
                                             if x.strip()}))
                        seen[name].update(labs)
                    else:  # one 0/1 column per label
                        flags = {c: (row[c] or "").strip().lower() for c in cols}
                        for c, flag in flags.items():
                            if flag not in _TRUE and flag not in _FALSE:
                                raise bad(f"label_sets.{name}", row[c] or "", f"a 0/1 flag (column {c!r})")
                        labs = tuple(c for c in cols if flags[c] in _TRUE)
                    labels.append(labs)
                table[rid] = _Row(patient=cell.get("patient_column", ""), sex=sex, age=age, fold=fold,
                                  labels=tuple(labels))
        self._names = {name: (sorted(seen[name]) if name in seen else cols) for name, cols in sets.items()}
        return table

    # ------------------------------------------------------------------------------------------ reading

    @any_error_is_a_reason  # numpy, zipfile and h5py raise all sorts on a damaged file: each becomes the reason
    def read(self, locator: str) -> Signal:
        """``row:<i>``, ``key:<name>``, ``file:<path>`` -> the record's `Signal` in mV; ``skip:<reason>`` ->
        RecordError with the reason."""
        how, _, what = locator.partition(":")
        if how == "skip":
            raise RecordError(what)
        if how == "file":
            x, stated = _read_file(Path(what), self.cfg.dataset)
            where = Path(what).name
        elif how == "row":
            rows = self._store()
            x, stated, where = rows.row(int(what)), (lambda name: None), f"row {what}"  # the file was checked
        else:
            x, stated = self._member(what)
            where = what
        return self._signal(np.asarray(x), stated, where)

    def _store(self) -> Any:
        """This process's open stacked array or per-record container (opened once: reopening costs more than a
        record)."""
        if self._open is None:
            form = self._form()
            keys_name = self.cfg.dataset if form == "hdf5" else None
            if form == "npz" and self._stacked_name(form) is None:
                self._open = np.load(self.path)
            elif form == "hdf5" and _h5_is_group(self.path, keys_name or ""):
                import h5py

                self._open = h5py.File(self.path, "r", rdcc_nbytes=_H5_CHUNK_CACHE)[keys_name]
            else:
                self._open = _open_rows(self.path, form, self._stacked_name(form))
        return self._open

    def _member(self, key: str) -> tuple[np.ndarray, Getter]:
        """One record of a per-record container: a .npz's array, or an HDF5 group's dataset and its attributes."""
        store = self._store()
        if isinstance(store, np.lib.npyio.NpzFile):
            return store[key], lambda name: None  # the file's own statements were checked while listing
        ds = store[key]
        return ds[()], _h5_stated(ds, stop=store)

    def _signal(self, x: np.ndarray, stated: Getter, where: str) -> Signal:
        """One stored record -> `Signal` (leads in canonical order, mV); RecordError for the wrong rank, type,
        shape, or a rate or lead order that disagrees with the recipe."""
        if x.dtype.kind not in "iuf":
            raise RecordError(f"{where}: {x.dtype} values, not numbers")
        if x.ndim != 2:
            raise RecordError(f"{where}: shape {x.shape}, expected 2 dimensions ({self.cfg.layout.replace('_', ', ')})")
        problem = self._layout_problem(x.shape)
        if problem:
            raise RecordError(f"{where}: {problem}")
        self._check_stated(stated, where, RecordError)
        data = x if self.cfg.layout == "leads_time" else x.T
        rows = {resolve_lead(name): data[j] for j, name in enumerate(self.cfg.leads) if name.strip() != DROP}
        leads: dict[str, np.ndarray] = {k: v for k, v in rows.items() if k is not None}
        if self.cfg.derive_limb_leads:
            leads = derive_limb_leads(leads)
        names = [lead for lead in CANONICAL_LEADS if lead in leads]
        mv = np.stack([leads[n] for n in names]).astype(np.float64) * self._mv
        return Signal(data=mv.astype(np.float32), fs_hz=self.cfg.fs_hz, lead_names=names)

    def _layout_problem(self, shape: tuple[int, ...]) -> str:
        """Why one record's ``shape`` contradicts ``layout`` and the number of leads ('' when it does not)."""
        n, axis = len(self.cfg.leads), 0 if self.cfg.layout == "leads_time" else 1
        if shape[axis] == n:
            return ""
        other = "time_leads" if axis == 0 else "leads_time"
        hint = f" (the leads look like the other axis: layout {other!r}?)" if shape[1 - axis] == n else ""
        return f"record shape {shape} contradicts source.layout {self.cfg.layout!r} with {n} source.leads{hint}"

    def _check_stated(self, stated: Getter, where: str, error: type[Exception]) -> None:
        """Raise ``error`` where a sampling rate or lead list stored beside the signals disagrees with the recipe."""
        for key in FS_NAMES:
            value = stated(key)
            if value is not None:
                try:
                    fs = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
                except (TypeError, ValueError, IndexError):
                    raise error(f"source.fs_hz: {where} states {key} {value!r}, not a number of Hz") from None
                if not math.isclose(fs, self.cfg.fs_hz, rel_tol=1e-6):
                    raise error(f"source.fs_hz: {where} states {key} {fs:g} Hz, the recipe {self.cfg.fs_hz:g} Hz")
                break
        for key in LEAD_NAMES:
            value = stated(key)
            if value is not None:
                names = [_id_text(v) for v in np.asarray(value).reshape(-1).tolist()]
                same = len(names) == len(self.cfg.leads) and all(
                    mine.strip() == DROP or resolve_lead(mine) == resolve_lead(theirs)
                    for mine, theirs in zip(self.cfg.leads, names, strict=True))
                if not same:
                    raise error(f"source.leads: {where} states {key} {names}, the recipe {list(self.cfg.leads)}")
                break


# ---------------------------------------------------------------------------------------------- the files


def _id_text(value: Any) -> str:
    """A stored id or name as text: bytes decoded, integral numbers without a decimal point."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _number(text: str) -> float | None:
    """A CSV cell as a number: NaN when empty, None when not a number."""
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _npz_header(zf: zipfile.ZipFile, path: Path, name: str) -> tuple[zipfile.ZipInfo, tuple[int, ...], bool, np.dtype, int]:
    """A .npz member's zip entry, shape, Fortran order, dtype and the offset of its data in the member."""
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        names = [n.removesuffix(".npy") for n in zf.namelist()]
        raise ValueError(f"source.dataset: {path} has no array {name!r} (has {names})") from None
    with zf.open(info) as f:
        shape, fortran, dtype = _npy_header(f)
        return info, shape, fortran, dtype, f.tell()


def _open_rows(path: Path, form: str, name: str | None) -> _Rows:
    """A stacked array of a .npy, .npz or HDF5 file, opened to read one record (row) at a time."""
    if form == "npy":
        with open(path, "rb") as f:
            shape, fortran, dtype = _npy_header(f)
            return _raw_rows(path, f.tell(), shape, fortran, dtype, lambda key: None)
    if form == "npz":
        return _npz_rows(path, name or "")
    import h5py

    h5 = h5py.File(path, "r", rdcc_nbytes=_H5_CHUNK_CACHE)
    try:
        ds = _h5_get(h5, name or "", path)
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"source.dataset: {path} {name} is not a dataset")
    except BaseException:
        h5.close()
        raise
    return _Rows(tuple(ds.shape), ds.dtype, lambda i: ds[i], h5.close, _h5_stated(ds))


def _npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from the header of the .npy data at ``f``'s position (left after it)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _raw_rows(path: Path, offset: int, shape: tuple[int, ...], fortran: bool, dtype: np.dtype,
              stated: Getter) -> _Rows:
    """An array stored raw in ``path`` from byte ``offset`` (a .npy, or a .npz member saved uncompressed). A row
    of a C-order array is one ``os.pread``: nothing is mapped, so a reader's memory stays one record however
    large the file (a memory map would grow the process by every page it touched)."""
    if dtype.kind not in "iuf" or len(shape) < 2 or 0 in shape:  # `_check_stacked` names the problem
        return _Rows(shape, dtype, lambda i: np.zeros(0), lambda: None, stated)
    size = int(np.prod(shape[1:])) * dtype.itemsize
    if os.path.getsize(path) < offset + size * shape[0]:
        raise ValueError(f"source.path: {path} is cut short: {os.path.getsize(path)} bytes, the array needs "
                         f"{offset + size * shape[0]}")
    if fortran:  # a row is scattered over the file: let a read-only map gather it
        mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")
        return _Rows(shape, dtype, lambda i: np.array(mm[i]), lambda: None, stated)
    fd: list[int] = []  # opened on the first row: listing only checks the shape

    def row(i: int) -> np.ndarray:
        if not fd:
            fd.append(os.open(path, os.O_RDONLY))
        data = os.pread(fd[0], size, offset + i * size)
        if len(data) != size:
            raise RecordError(f"row {i}: {len(data)} of {size} bytes (the file shrank?)")
        return np.frombuffer(data, dtype=dtype).reshape(shape[1:])

    def close() -> None:
        while fd:
            os.close(fd.pop())

    return _Rows(shape, dtype, row, close, stated)


def _npz_rows(path: Path, name: str) -> _Rows:
    """A .npz's stacked array: read a row at a time where stored uncompressed (`_raw_rows`), else inflated
    forward one row at a time (a reader's rows come in increasing order: each reader inflates the member once)."""
    with zipfile.ZipFile(path) as zf:
        info, shape, fortran, dtype, start = _npz_header(zf, path, name)
        stated = _npz_stated(zf)
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:  # the member's data starts after its local header (30 bytes, name, extra)
            f.seek(info.header_offset)
            local = f.read(30)
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        return _raw_rows(path, info.header_offset + 30 + n_name + n_extra + start, shape, fortran, dtype, stated)
    if dtype.kind not in "iuf" or len(shape) < 2 or 0 in shape:
        return _Rows(shape, dtype, lambda i: np.zeros(0), lambda: None, stated)
    if fortran:
        raise ValueError(f"source.dataset: {path} {name} is compressed and in Fortran order: it cannot be read a "
                         "record at a time (save it with np.savez, or as .npy)")
    size = int(np.prod(shape[1:])) * dtype.itemsize
    opened: list[Any] = []  # the archive and its member, opened on the first row

    def row(i: int) -> np.ndarray:
        if not opened:
            zf = zipfile.ZipFile(path)
            opened.extend([zf, zf.open(info.filename)])
        member = opened[1]
        member.seek(start + i * size)  # forward from the last row: ZipExtFile inflates only what lies between
        return np.frombuffer(member.read(size), dtype=dtype).reshape(shape[1:])

    def close() -> None:
        while opened:
            opened.pop().close()

    return _Rows(shape, dtype, row, close, stated)


def _npz_stated(zf: zipfile.ZipFile) -> Getter:
    """What a .npz states beside its signals (`FS_NAMES`, `LEAD_NAMES`: small arrays, read now)."""
    stated = {}
    for name in (*FS_NAMES, *LEAD_NAMES):
        if f"{name}.npy" in zf.namelist():
            with zf.open(f"{name}.npy") as f:
                stated[name] = np.lib.format.read_array(f, allow_pickle=False)
    return stated.get


def _read_file(path: Path, name: str | None) -> tuple[np.ndarray, Getter]:
    """A folder's per-record file: its signal array and what it states beside it."""
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False), lambda key: None
    with np.load(path, allow_pickle=False) as npz:
        signals = [k for k in npz.files if k not in (*FS_NAMES, *LEAD_NAMES)]
        if name is None:
            if not signals:
                raise RecordError(f"{path.name} holds no signal array (its arrays: {npz.files})")
            if len(signals) > 1:
                raise RecordError(f"{path.name} holds arrays {npz.files}: name the signal in source.dataset")
            name = signals[0]
        if name not in npz.files:
            raise RecordError(f"{path.name} has no array {name!r} (source.dataset; has {npz.files})")
        stated = {k: npz[k] for k in (*FS_NAMES, *LEAD_NAMES) if k in npz.files}
        return npz[name], stated.get


def _h5_get(h5: Any, name: str, path: Path, field: str = "dataset") -> Any:
    if name not in h5:
        raise ValueError(f"source.{field}: {path} has no dataset {name!r} (it has {_h5_names(path)})")
    return h5[name]


def _h5_names(path: Path) -> list[str]:
    """The first names at the top of an HDF5 file, for error messages."""
    import h5py

    with h5py.File(path, "r") as h5:
        names = list(h5.keys())
    return names[:10] + (["..."] if len(names) > 10 else [])


def _h5_is_group(path: Path, name: str) -> bool:
    import h5py

    with h5py.File(path, "r") as h5:
        return isinstance(h5.get(name), h5py.Group)


def _h5_stated(obj: Any, stop: Any = None) -> Getter:
    """An HDF5 attribute of ``obj`` or of the nearest group above it (up to ``stop``, else the file's root)."""

    def get(name: str) -> Any:
        node = obj
        while True:
            if name in node.attrs:
                return node.attrs[name]
            if node.name in ("/", getattr(stop, "name", None)):
                return None
            node = node.parent

    return get
