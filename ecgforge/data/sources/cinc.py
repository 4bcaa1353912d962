"""PhysioNet/CinC Challenge 2020/2021 training data (Perez Alday et al. 2020; Reyna et al. 2021).

Records are WFDB headers with MATLAB v4 signals; labels live in header comments (``#Age: 56``,
``# Sex: Female``, ``#Dx: 426177001,164889003``). Label sets:

- ``scored``: SNOMED codes mapped to the Challenge's scored classes (``dx_mapping_scored.csv``), with the
  Challenge's equivalent classes merged as its metric scores them (named as the first of each pair);
- ``dx``: every SNOMED code as a string;
- ``chapman_rhythm``: the four rhythm groups of the Chapman-Shaoxing database (Zheng et al. 2020, as used
  by Bo et al.): SB, AFIB, GSVT, SR; only for records whose rhythm codes fall in exactly one group.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from ecgforge.data.record import RecordError, RecordRef
from ecgforge.data.sources.base import WFDBSource
from ecgforge.data.sources.common import hash_fold, walk_files
from ecgforge.data.wfdb_io import parse_header
from ecgforge.errors import resolved_against
from ecgforge.registry import BuildContext

CinCLabelSet = Literal["scored", "dx", "chapman_rhythm"]

# The Challenge metric treats each pair as one class (weights.csv "a|b" columns); named as the first code.
EQUIVALENT_CODES: dict[str, str] = {
    "164909002": "733534002",  # LBBB -> CLBBB
    "59118001": "713427006",  # RBBB -> CRBBB
    "63593006": "284470004",  # SVPB -> PAC
    "17338001": "427172004",  # VPB -> PVC
}

# Chapman-Shaoxing rhythm merging (Zheng et al. 2020, Sci. Data 7:48): 11 rhythms -> 4 groups.
CHAPMAN_RHYTHM_GROUPS: dict[str, tuple[str, ...]] = {
    "AFIB": ("164889003", "164890007"),  # atrial fibrillation, atrial flutter
    "GSVT": (
        "426761007",  # supraventricular tachycardia
        "713422000",  # atrial tachycardia
        "17366009",  # sinus atrium to atrial wandering rhythm
        "427084000",  # sinus tachycardia
        "251166008",  # atrioventricular node reentrant tachycardia
        "233897008",  # atrioventricular reentrant tachycardia
    ),
    "SB": ("426177001",),  # sinus bradycardia
    "SR": ("426783006", "427393009"),  # sinus rhythm, sinus arrhythmia (sinus irregularity)
}
_RHYTHM_OF = {code: group for group, codes in CHAPMAN_RHYTHM_GROUPS.items() for code in codes}

# Record-name prefix -> sub-database (the Challenge's naming). "JS" is split by number below.
_PREFIXES = (
    ("HR", "ptb-xl"),
    ("JS", ""),
    ("A", "cpsc_2018"),
    ("Q", "cpsc_2018_extra"),
    ("E", "georgia"),
    ("S", "ptb"),
    ("I", "incart"),
)
_LAST_CHAPMAN_JS = 10646  # JS00001..JS10646 are Chapman-Shaoxing; higher numbers are Ningbo
_COMMENT = re.compile(r"^(age|sex|dx)\s*:\s*(.*)$", re.IGNORECASE)


#: The Challenge 2021's scored classes as shipped with ecgforge (its evaluation repository's
#: dx_mapping_scored.csv, BSD-2-Clause: cinc2021/SOURCE.md), used where neither the recipe nor the data folder
#: gives the table.
SHIPPED_SCORED_MAPPING = Path(__file__).with_name("cinc2021") / "dx_mapping_scored.csv"


class CinCSourceConfig(BaseModel, extra="forbid", frozen=True):
    kind: Literal["cinc"] = "cinc"
    path: str = Field(description="folder searched recursively for .hea files (the Challenge training data)")
    label_sets: list[CinCLabelSet] = Field(default_factory=lambda: ["scored"])
    scored_mapping: str | None = Field(
        None, description="dx_mapping_scored.csv; default: evaluation-2021/dx_mapping_scored.csv under path, "
        "else the Challenge 2021's table shipped with ecgforge"
    )
    ptbxl_database: str | None = Field(
        None, description="PTB-XL's ptbxl_database.csv: the HR* records (PTB-XL ECGs) get their PTB-XL patient"
    )

    @model_serializer(mode="wrap")
    def _without_unset_table(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``ptbxl_database`` out while unset: caches built before it existed keep their spec hash."""
        data = handler(self)
        if data.get("ptbxl_database") is None:
            data.pop("ptbxl_database", None)
        return data


def database_of(record_name: str) -> str:
    """Sub-database of a Challenge record from its name (``JS00001`` -> ``chapman_shaoxing``)."""
    for prefix, source in _PREFIXES:
        if record_name.startswith(prefix):
            if prefix == "JS":
                digits = record_name[2:]
                if not digits.isdigit():
                    return "cinc"
                return "chapman_shaoxing" if int(digits) <= _LAST_CHAPMAN_JS else "ningbo"
            return source
    return "cinc"


def parse_comments(comments: list[str]) -> tuple[float, str, list[str]]:
    """Header comments -> (age in years or NaN, sex "M"/"F"/"", SNOMED codes in header order).

    Accepts ``Age: 56``, ``Age: NaN``, ``Age: 56.0``, ``Sex: Female``/``female``/``F``/``Male``/``M``,
    ``Dx:`` empty, and codes separated by commas with stray spaces.
    """
    age, sex, dx = math.nan, "", []
    for comment in comments:
        m = _COMMENT.match(comment.strip())
        if m is None:
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        if key == "age":
            try:
                age = float(value)
            except ValueError:
                age = math.nan
            if not math.isfinite(age) or age < 0:  # "NaN", "Unknown", -1 all mean unknown
                age = math.nan
        elif key == "sex":
            first = value[:1].upper()
            sex = first if first in ("M", "F") else ""
        else:
            dx = list(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))
    return age, sex, dx


def load_scored_mapping(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """``dx_mapping_scored.csv`` -> (SNOMED code -> class abbreviation, class names in file order).

    Equivalent codes (`EQUIVALENT_CODES`) map to the abbreviation of the first code of their pair, and the
    second name is dropped from the class list. Handles the 2020 (``SNOMED CT Code``) and 2021
    (``SNOMEDCTCode``) column names.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"source.scored_mapping: {path} has no rows")
    code_col = next((c for c in rows[0] if c and c.replace(" ", "").lower() == "snomedctcode"), None)
    if code_col is None or "Abbreviation" not in rows[0]:
        raise ValueError(f"source.scored_mapping: {path} lacks a SNOMED code or Abbreviation column")
    abbrev = {row[code_col].strip(): row["Abbreviation"].strip() for row in rows}
    code_to_class = {
        code: abbrev.get(EQUIVALENT_CODES.get(code, code), name) for code, name in abbrev.items()
    }
    names = list(dict.fromkeys(code_to_class.values()))
    return code_to_class, names


def load_ptbxl_patients(path: str | Path) -> dict[int, int]:
    """PTB-XL ``ptbxl_database.csv`` -> ``ecg_id -> patient_id`` (the rows with both; ids as PTB-XL writes them,
    ``15709.0``). Raises FileNotFoundError / ValueError naming ``source.ptbxl_database``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"source.ptbxl_database: {path} not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"ecg_id", "patient_id"} <= set(reader.fieldnames or []):
            raise ValueError(f"source.ptbxl_database: {path} has no ecg_id and patient_id columns")
        table: dict[int, int] = {}
        for row in reader:
            try:
                ecg, patient = float(row["ecg_id"]), float(row["patient_id"])
            except (TypeError, ValueError):
                continue  # a row without a patient: its HR record keeps its own name
            if math.isfinite(ecg) and math.isfinite(patient):
                table[int(ecg)] = int(patient)
    if not table:
        raise ValueError(f"source.ptbxl_database: {path} has no row with an ecg_id and a patient_id")
    return table


class CinCSource(WFDBSource[CinCSourceConfig]):
    """Challenge records (``*.hea`` under ``path``, sorted by relative path) with labels from their header
    comments.

    The listing streams: `iter_records` walks the tree and yields each record with what its name tells (source,
    patient, fold); `complete` parses its header (age, sex, labels). A cache build calls `complete` in its reader
    processes, so the parent never parses a header; `records` does both here.

    Patients: the Challenge gives none, so a record's patient is its name, except the ``HR*`` records (PTB-XL
    ECGs) when ``ptbxl_database`` is given: their patient is ``ptbxl:<PTB-XL patient_id>`` (meta
    ``ptbxl_patient_id``; -1 for other records). PTB (``S*``: 549 records of 290 patients) and INCART (``I*``: 75
    records of 32 patients) repeat patients too, which nothing in the data resolves.
    """

    Config = CinCSourceConfig
    completes = True

    def __init__(self, cfg: CinCSourceConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.root = Path(cfg.path).expanduser()
        self._scored: tuple[dict[str, str], list[str]] | None = None  # loaded once per process
        self._ptbxl: dict[int, int] | None = None
        self._all_dx: set[str] | None = None  # the dx codes `records` found

    def _mapping(self) -> tuple[dict[str, str], list[str]]:
        if self._scored is not None:
            return self._scored
        if "scored" not in self.cfg.label_sets:
            self._scored = ({}, [])
            return self._scored
        if self.cfg.scored_mapping is not None:
            path = Path(self.cfg.scored_mapping).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"source.scored_mapping: {path} not found{resolved_against(path)}")
        else:  # the data folder's copy of the table, else the one that ships with ecgforge
            path = self.root / "evaluation-2021" / "dx_mapping_scored.csv"
            if not path.is_file():
                path = SHIPPED_SCORED_MAPPING
        self._scored = load_scored_mapping(path)
        return self._scored

    def iter_records(self) -> Iterator[RecordRef]:
        """One `RecordRef` per ``.hea`` under ``path`` (sorted by relative path) with its name's facts only: no
        header is read (`complete` adds age, sex and labels)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"source.path: {self.root} is not a folder")
        self._mapping()  # a missing mapping file is a recipe error: before any record
        if self.cfg.ptbxl_database is not None and self._ptbxl is None:
            self._ptbxl = load_ptbxl_patients(self.cfg.ptbxl_database)
        # A name in two folders: `records` and the cache build refuse it (no set of names held while streaming).
        for hea in walk_files(self.root, "*.hea", ignore_case=False):
            name = hea.stem
            ecg_id = int(name[2:]) if name.startswith("HR") and name[2:].isdigit() else -1
            patient, meta = name, {}
            if self._ptbxl is not None:
                ptbxl_patient = self._ptbxl.get(ecg_id, -1) if ecg_id >= 0 else -1
                if ptbxl_patient >= 0:
                    patient = f"ptbxl:{ptbxl_patient}"
                meta["ptbxl_patient_id"] = ptbxl_patient
            yield RecordRef(
                record_id=name,
                locator=str(hea.with_suffix("")),
                patient_id=patient,
                source=database_of(name),
                meta={
                    # The Challenge has no official folds: a stable hash of the patient id gives folds 1..10 that
                    # never split a patient and do not depend on which records are present.
                    "fold": hash_fold(patient),
                    "sex": "",
                    "age": math.nan,
                    # HR records are PTB-XL ECGs (ecg_id = the number): lets runs drop the overlap.
                    "ptbxl_ecg_id": ecg_id,
                    **meta,
                },
            )

    def complete(self, ref: RecordRef) -> RecordRef:
        """``ref`` with age, sex and labels from its header's comments. A header that cannot be parsed leaves the
        record without them: reading it raises the same error, and the cache lists it as skipped with that
        reason instead of it silently vanishing."""
        try:
            age, sex, dx = parse_comments(parse_header(ref.locator + ".hea").comments)
        except RecordError:
            age, sex, dx = math.nan, "", []
        code_to_class = self._mapping()[0]
        labels: dict[str, list[str]] = {}
        for label_set in self.cfg.label_sets:
            if label_set == "scored":
                labels[label_set] = sorted({code_to_class[c] for c in dx if c in code_to_class})
            elif label_set == "dx":
                labels[label_set] = sorted(dx)
            else:
                groups = {_RHYTHM_OF[c] for c in dx if c in _RHYTHM_OF}
                labels[label_set] = sorted(groups) if len(groups) == 1 else []
        return replace(ref, meta={**ref.meta, "sex": sex, "age": age}, labels=labels)

    def records(self) -> list[RecordRef]:
        """Every record of `iter_records`, completed (headers read here, no signals)."""
        refs = super().records()
        self._all_dx = {c for r in refs for c in r.labels.get("dx", [])} if "dx" in self.cfg.label_sets else set()
        return refs

    def label_names(self, observed: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
        """Label set -> labels: scored classes in mapping-file order, dx codes sorted, the 4 rhythm groups.

        ``observed``: the labels the completed records carry (what a cache build's readers found); without it
        the dx codes are those `records` found (listing the records first if needed)."""
        if observed is not None:
            all_dx = set(observed.get("dx", set()))
        else:
            if self._all_dx is None:
                self.records()
            all_dx = self._all_dx or set()
        names = {
            "scored": self._mapping()[1],
            "dx": sorted(all_dx),
            "chapman_rhythm": sorted(CHAPMAN_RHYTHM_GROUPS),
        }
        return {s: list(names[s]) for s in self.cfg.label_sets}
