"""Dataset sources: PTB-XL, CinC and WFDB-folder listings, labels and metadata."""

from __future__ import annotations

import ast
import csv
import inspect
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from pydantic import TypeAdapter, ValidationError

from ecgforge import registry
from ecgforge.data import wfdb_io
from ecgforge.data.record import RecordError
from ecgforge.data.sources import SOURCES, SourceConfig
from ecgforge.data.sources.cinc import (
    SHIPPED_SCORED_MAPPING,
    CinCSource,
    database_of,
    load_scored_mapping,
    parse_comments,
)
from ecgforge.data.sources.folder import WFDBFolderSource
from ecgforge.data.sources.ptbxl import PTBXLSource
from ecgforge.data.wfdb_io import read_record

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = TypeAdapter(SourceConfig)
PTBXL_SETS = ["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]


def build(raw: dict):
    """Validate a [source] table and construct its source the way the cache builder does."""
    return registry.build(SOURCES, ADAPTER.validate_python(raw))


# ---------------------------------------------------------------------------------------------- configs


def test_every_source_is_built_from_its_config_alone() -> None:
    """``cls(cfg, ctx)``: a source reads its fields from the config it keeps (no second copy of them)."""
    required = {"arrays": {"fs_hz": 500, "leads": ["I"]}}  # what plain arrays cannot say, the recipe must
    for kind in SOURCES:
        cfg = SOURCES.config(kind).model_validate({"kind": kind, "path": "/nowhere", **required.get(kind, {})})
        source = registry.build(SOURCES, cfg)
        assert source.cfg is cfg and list(inspect.signature(SOURCES[kind]).parameters) == ["cfg", "ctx"], kind


def test_config_defaults_and_validation() -> None:
    cfg = ADAPTER.validate_python({"kind": "ptbxl", "path": "/x"})
    assert (cfg.records, cfg.label_sets) == ("records100", ["superdiagnostic"])
    assert ADAPTER.validate_python({"kind": "cinc", "path": "/x"}).label_sets == ["scored"]
    assert ADAPTER.validate_python({"kind": "wfdb_folder", "path": "/x"}).label_column == "label"
    for bad in (
        {"kind": "ptbxl", "path": "/x", "records": "records250"},
        {"kind": "ptbxl", "path": "/x", "label_sets": ["diagnostics"]},
        {"kind": "ptbxl", "path": "/x", "typo": 1},
        {"kind": "cinc", "path": "/x", "label_sets": ["superdiagnostic"]},
        {"kind": "nope", "path": "/x"},
    ):
        with pytest.raises(ValidationError):
            ADAPTER.validate_python(bad)


def test_missing_files_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"source\.path: .*ptbxl_database\.csv not found"):
        PTBXLSource(PTBXLSource.Config(path=str(tmp_path))).records()
    with pytest.raises(FileNotFoundError, match=r"source\.scored_mapping: .*absent\.csv not found"):
        CinCSource(CinCSource.Config(path=str(tmp_path), scored_mapping=str(tmp_path / "absent.csv"))).records()
    with pytest.raises(FileNotFoundError, match=r"source\.path: .* is not a folder"):
        WFDBFolderSource(WFDBFolderSource.Config(path=str(tmp_path / "absent"))).records()


def test_ptbxl_database_without_a_needed_column_names_it(tmp_path: Path) -> None:
    (tmp_path / "ptbxl_database.csv").write_text("ecg_id,patient_id,age,sex,scp_codes,strat_fold\n1,2,50,0,{},1\n")
    (tmp_path / "scp_statements.csv").write_text(",diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n")
    with pytest.raises(ValueError, match=r"^source\.path: .*ptbxl_database\.csv has no column filename_lr$"):
        PTBXLSource(PTBXLSource.Config(path=str(tmp_path))).records()


# ----------------------------------------------------------------------------------------------- PTB-XL


def _benchmark_superdiagnostic(root: Path) -> pd.Series:
    """Independent re-computation of superdiagnostic counts with pandas joins (not the source's code)."""
    db = pd.read_csv(root / "ptbxl_database.csv")
    st = pd.read_csv(root / "scp_statements.csv", index_col=0)
    pairs = db[["ecg_id", "scp_codes"]].assign(code=db.scp_codes.map(lambda s: list(ast.literal_eval(s))))
    pairs = pairs.explode("code").dropna(subset=["code"])
    diag = st[st.diagnostic == 1.0][["diagnostic_class"]].dropna()
    joined = pairs.merge(diag, left_on="code", right_index=True).drop_duplicates(
        ["ecg_id", "diagnostic_class"]
    )
    return joined.diagnostic_class.value_counts().sort_index()


@pytest.mark.data
def test_ptbxl_counts(shared_data: Path) -> None:
    root = shared_data / "ptb-xl"
    src = build({"kind": "ptbxl", "path": str(root), "label_sets": PTBXL_SETS})
    refs = src.records()
    db = pd.read_csv(root / "ptbxl_database.csv")
    assert len(refs) == len(db) == 6548
    assert len({r.patient_id for r in refs}) == db.patient_id.nunique() == 5614
    assert len({r.record_id for r in refs}) == len(refs)
    counts = Counter(lab for r in refs for lab in r.labels["superdiagnostic"])
    assert counts == {"CD": 1453, "HYP": 791, "MI": 1615, "NORM": 2898, "STTC": 1565}
    assert counts == _benchmark_superdiagnostic(root).to_dict()
    assert sum(not r.labels["superdiagnostic"] for r in refs) == 121
    names = src.label_names()
    assert names["superdiagnostic"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert {k: len(v) for k, v in names.items()} == {
        "all": 71,
        "diagnostic": 44,
        "subdiagnostic": 23,
        "superdiagnostic": 5,
        "form": 19,
        "rhythm": 12,
    }
    for r in refs:
        for set_name, labs in r.labels.items():
            assert set(labs) <= set(names[set_name]) and labs == sorted(labs)
    assert Counter(r.meta["fold"] for r in refs) == {1: 2175, 2: 2181, 3: 2192}
    # Folds are patient-stratified: a patient never spans two folds.
    fold_of: dict[str, int] = {}
    for r in refs:
        assert fold_of.setdefault(r.patient_id, r.meta["fold"]) == r.meta["fold"]


@pytest.mark.data
def test_ptbxl_first_record_and_meta(shared_data: Path) -> None:
    root = shared_data / "ptb-xl"
    refs = PTBXLSource(PTBXLSource.Config(path=str(root), label_sets=PTBXL_SETS)).records()
    r = refs[0]
    assert (r.record_id, r.patient_id, r.source) == ("00001", "15709", "ptbxl")
    assert r.locator == str(root / "records100" / "00000" / "00001_lr")
    assert r.meta == {"fold": 3, "sex": "F", "age": 56.0, "ecg_id": 1}
    assert r.labels == {
        "all": ["LVOLT", "NORM", "SR"],
        "diagnostic": ["NORM"],
        "subdiagnostic": ["NORM"],
        "superdiagnostic": ["NORM"],
        "form": ["LVOLT"],
        "rhythm": ["SR"],
    }
    db = pd.read_csv(root / "ptbxl_database.csv")
    ages = [r.meta["age"] for r in refs]
    assert sum(a == 90.0 for a in ages) == int(((db.age == 300) | (db.age == 90)).sum()) > 0
    assert max(a for a in ages if not math.isnan(a)) <= 90.0
    assert Counter(r.meta["sex"] for r in refs) == {
        "M": int((db.sex == 0).sum()),
        "F": int((db.sex == 1).sum()),
    }
    for r in refs[::500]:
        assert Path(r.locator + ".hea").is_file()


@pytest.mark.data
def test_ptbxl_records500_paths(shared_data: Path) -> None:
    refs = PTBXLSource(PTBXLSource.Config(path=str(shared_data / "ptb-xl"), records="records500")).records()
    assert refs[0].locator.endswith("records500/00000/00001_hr")
    on_disk = [r for r in refs if Path(r.locator + ".hea").is_file()]
    assert len(on_disk) == 138  # the README's subset; the rest are listed and will be skipped as missing
    assert read_record(on_disk[-1].locator).data.shape == (12, 5000)


# -------------------------------------------------------------------------------------------------- CinC


def _mapping_csv(path: Path, code_column: str = "SNOMEDCTCode") -> Path:
    rows = [
        ("atrial fibrillation", "164889003", "AF"),
        ("complete left bundle branch block", "733534002", "CLBBB"),
        ("complete right bundle branch block", "713427006", "CRBBB"),
        ("left bundle branch block", "164909002", "LBBB"),
        ("right bundle branch block", "59118001", "RBBB"),
        ("sinus rhythm", "426783006", "NSR"),
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Dx", code_column, "Abbreviation"])
        w.writerows(rows)
    return path


def _cinc_header(folder: Path, name: str, comments: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{name} 1 500 10"] + [f"{name}.mat 16+24 1000/mV 16 0 0 0 0 I"] + comments
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def test_parse_comments_variants() -> None:
    assert parse_comments(["Age: 56", "Sex: Female", "Dx: 1,2"]) == (56.0, "F", ["1", "2"])
    age, sex, dx = parse_comments(["Age: NaN", "Sex: M", "Dx:"])
    assert math.isnan(age) and sex == "M" and dx == []
    assert parse_comments(["age:61.0", "sex: male", "Dx: 3 , 4,3"]) == (61.0, "M", ["3", "4"])
    age, sex, _ = parse_comments(["Age: Unknown", "Sex: Unknown", "Rx: Unknown"])
    assert math.isnan(age) and sex == ""


@pytest.mark.parametrize(
    "name,db",
    [
        ("A0001", "cpsc_2018"),
        ("Q0001", "cpsc_2018_extra"),
        ("E00001", "georgia"),
        ("S0001", "ptb"),
        ("HR00001", "ptb-xl"),
        ("I0001", "incart"),
        ("JS00001", "chapman_shaoxing"),
        ("JS10646", "chapman_shaoxing"),
        ("JS10647", "ningbo"),
        ("JS45551", "ningbo"),
    ],
)
def test_database_from_name(name: str, db: str) -> None:
    assert database_of(name) == db


@pytest.mark.parametrize("column", ["SNOMEDCTCode", "SNOMED CT Code"])
def test_scored_mapping_merges_equivalent_classes(tmp_path: Path, column: str) -> None:
    code_to_class, names = load_scored_mapping(_mapping_csv(tmp_path / "m.csv", column))
    assert names == ["AF", "CLBBB", "CRBBB", "NSR"]
    assert code_to_class["164909002"] == "CLBBB" and code_to_class["59118001"] == "CRBBB"


def test_cinc_scored_table_from_the_recipe_else_the_data_folder_else_the_one_shipped(tmp_path: Path) -> None:
    """Issue 28: the Challenge's dx_mapping_scored.csv is not in the training-data download; ecgforge ships it."""
    root = tmp_path / "training"
    _cinc_header(root / "georgia", "E00001", ["#Age: 61", "#Sex: Female", "#Dx: 164909002,10370003"])
    shipped_codes, shipped_names = load_scored_mapping(SHIPPED_SCORED_MAPPING)
    assert len(shipped_names) == 26 and {"AF", "CLBBB", "NSR", "PR"} <= set(shipped_names)

    def scored(**cfg: str) -> tuple[list[str], list[str]]:
        src = build({"kind": "cinc", "path": str(root), **cfg})
        [ref] = src.records()
        return ref.labels["scored"], src.label_names()["scored"]

    assert scored() == (["CLBBB", "PR"], shipped_names)  # no table beside the records: the shipped one
    (root / "evaluation-2021").mkdir()
    _mapping_csv(root / "evaluation-2021" / "dx_mapping_scored.csv")
    assert scored() == (["CLBBB"], ["AF", "CLBBB", "CRBBB", "NSR"])  # the data folder's table
    mine = tmp_path / "mine.csv"
    mine.write_text("Dx,SNOMEDCTCode,Abbreviation\npacing rhythm,10370003,PR\n")
    assert scored(scored_mapping=str(mine)) == (["PR"], ["PR"])  # the recipe's table wins
    assert (SHIPPED_SCORED_MAPPING.parent / "LICENSE").read_text().startswith("BSD 2-Clause License")


@pytest.mark.data
def test_cinc_cache_build_of_a_folder_without_its_evaluation_table(shared_data: Path, tmp_path: Path) -> None:
    """`ecgforge cache build recipes/caches/cinc2021.toml --source DIR` on records as downloaded (no evaluation-2021)."""
    from typer.testing import CliRunner

    from ecgforge.cli import app
    from ecgforge.data.cache import Cache

    training = tmp_path / "training"
    for db in ("cpsc_2018", "chapman_shaoxing"):
        shutil.copytree(shared_data / "cinc2021-sample" / db, training / db)
    out = tmp_path / "cinc.h5"
    res = CliRunner().invoke(app, ["cache", "build", str(ROOT / "recipes" / "caches" / "cinc2021.toml"),
                                   "--source", str(training), "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    cache = Cache(out)
    assert len(cache) == 23 and cache.label_names["scored"] == load_scored_mapping(SHIPPED_SCORED_MAPPING)[1]
    assert cache.labels["scored"].sum() > 0


def test_cinc_labels_from_header_variants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cinc"
    _cinc_header(root / "georgia", "E00001", ["# Age: 61", "# Sex: Female", "# Dx: 164909002, 59118001,111"])
    _cinc_header(root / "georgia", "E00002", ["#Age: NaN", "#Sex: F", "#Dx:"])
    _cinc_header(root / "chapman", "JS00001", ["#Age: 40", "#Sex: Male", "#Dx: 164889003,164890007"])
    _cinc_header(
        root / "chapman", "JS00002", ["#Age: 40", "#Sex: Male", "#Dx: 426177001,426783006"]
    )  # SB + SR
    _cinc_header(
        root / "chapman", "JS00003", ["#Age: 40", "#Sex: Male", "#Dx: 426783006,427393009"]
    )  # SR + SA
    _cinc_header(root / "chapman", "JS20000", ["#Age: 40", "#Sex: Male", "#Dx: 427084000"])  # ningbo, ST
    _cinc_header(root / "ptbxl", "HR00042", ["#Age: 70", "#Sex: Male", "#Dx: 426783006"])
    (root / "ptbxl" / "HR00043.hea").write_bytes(b"\x00\x01garbage")  # unparsable: listed with no labels
    mapping = _mapping_csv(tmp_path / "map.csv")

    def no_signal_reads(*args, **kwargs):
        raise AssertionError("listing must not read signals")

    monkeypatch.setattr(wfdb_io, "read_signal", no_signal_reads)
    monkeypatch.setattr(np, "fromfile", no_signal_reads)
    src = build(
        {
            "kind": "cinc",
            "path": str(root),
            "label_sets": ["scored", "dx", "chapman_rhythm"],
            "scored_mapping": str(mapping),
        }
    )
    refs = {r.record_id: r for r in src.records()}
    assert list(refs) == [
        "JS00001",
        "JS00002",
        "JS00003",
        "JS20000",
        "E00001",
        "E00002",
        "HR00042",
        "HR00043",
    ]
    e1, e2 = refs["E00001"], refs["E00002"]
    assert e1.labels == {
        "scored": ["CLBBB", "CRBBB"],
        "dx": ["111", "164909002", "59118001"],
        "chapman_rhythm": [],
    }
    from ecgforge.data.sources.cinc import hash_fold

    assert e1.meta == {"fold": hash_fold("E00001"), "sex": "F", "age": 61.0, "ptbxl_ecg_id": -1}
    assert {hash_fold(f"A{i:04d}") for i in range(200)} == set(range(1, 11))
    assert math.isnan(e2.meta["age"]) and e2.meta["sex"] == "F" and e2.labels["dx"] == []
    assert refs["JS00001"].labels["chapman_rhythm"] == ["AFIB"]
    assert refs["JS00002"].labels["chapman_rhythm"] == []  # two groups: excluded, not guessed
    assert refs["JS00003"].labels["chapman_rhythm"] == ["SR"]
    assert refs["JS20000"].labels["chapman_rhythm"] == ["GSVT"] and refs["JS20000"].source == "ningbo"
    hr = refs["HR00042"]
    assert (hr.source, hr.patient_id, hr.meta["ptbxl_ecg_id"]) == ("ptb-xl", "HR00042", 42)
    broken = refs["HR00043"]
    assert broken.labels == {"scored": [], "dx": [], "chapman_rhythm": []} and math.isnan(broken.meta["age"])
    names = src.label_names()
    assert names["scored"] == ["AF", "CLBBB", "CRBBB", "NSR"]
    assert names["chapman_rhythm"] == ["AFIB", "GSVT", "SB", "SR"]
    assert names["dx"] == sorted({c for r in refs.values() for c in r.labels["dx"]})
    monkeypatch.undo()
    with pytest.raises(RecordError, match="header is binary"):
        read_record(broken.locator)


@pytest.mark.data
def test_cinc_against_records_index(shared_data: Path) -> None:
    root = shared_data / "cinc2021-sample"
    # the default mapping file
    src = CinCSource(CinCSource.Config(path=str(root), label_sets=["scored", "dx", "chapman_rhythm"]))
    refs = {r.record_id: r for r in src.records()}
    index = pd.read_csv(root / "records_index.csv", dtype={"dx": str})
    assert len(refs) == len(index) == 141
    for row in index.itertuples(index=False):
        folder, name = row.record.split("/")
        r = refs[name]
        assert r.source == folder  # the name prefix names the same database as the folder
        assert r.locator == str(root / folder / name)
        assert r.meta["sex"] == {"male": "M", "female": "F"}[row.sex.lower()]
        assert (math.isnan(r.meta["age"]) and math.isnan(row.age)) or r.meta["age"] == row.age
        # a code may repeat in a header (E00015): labels are a set
        expected_dx = sorted(set(row.dx.split(","))) if isinstance(row.dx, str) else []
        assert r.labels["dx"] == expected_dx, name
        assert r.meta["ptbxl_ecg_id"] == (int(name[2:]) if folder == "ptb-xl" else -1)
    names = src.label_names()
    assert len(names["scored"]) == 26  # 30 scored codes, 4 equivalent pairs (weights.csv has 26 classes)
    assert "LBBB" not in names["scored"] and "CLBBB" in names["scored"]
    counts = Counter(lab for r in refs.values() for lab in r.labels["scored"])
    assert counts["NSR"] == sum("426783006" in r.labels["dx"] for r in refs.values())
    assert Counter(r.source for r in refs.values()) == Counter(index.record.str.split("/").str[0])


# ----------------------------------------------------------------------------------------- WFDB folder


def _write_record(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    d = np.arange(40, dtype=np.int32).reshape(20, 2)
    wfdb.wrsamp(
        name,
        fs=100,
        units=["mV", "mV"],
        sig_name=["I", "II"],
        d_signal=d,
        fmt=["16", "16"],
        adc_gain=[100.0, 100.0],
        baseline=[0, 0],
        write_dir=str(folder),
    )


def test_folder_source_with_labels(tmp_path: Path) -> None:
    root = tmp_path / "ecgs"
    _write_record(root, "a")
    _write_record(root / "site2", "b")
    _write_record(root / "site2", "c")
    labels = tmp_path / "labels.csv"
    labels.write_text("record,dx\na,AF;LBBB\nsite2/b,\nc, NORM ;\nzzz,RARE\n")
    src = build({"kind": "wfdb_folder", "path": str(root), "labels_csv": str(labels), "label_column": "dx"})
    refs = src.records()
    assert [r.record_id for r in refs] == ["a", "site2/b", "site2/c"]
    assert [r.labels["label"] for r in refs] == [["AF", "LBBB"], [], ["NORM"]]
    assert src.label_names() == {"label": ["AF", "LBBB", "NORM", "RARE"]}
    assert all(
        r.source == "wfdb_folder" and r.meta["fold"] == -1 and r.patient_id == r.record_id for r in refs
    )
    np.testing.assert_allclose(read_record(refs[2].locator).data[1, :3], [0.01, 0.03, 0.05], rtol=1e-6)


def test_folder_source_without_labels_and_ambiguous_stem(tmp_path: Path) -> None:
    root = tmp_path / "ecgs"
    _write_record(root / "x", "r")
    _write_record(root / "y", "r")
    assert WFDBFolderSource(WFDBFolderSource.Config(path=str(root))).label_names() == {}
    labels = tmp_path / "labels.csv"
    labels.write_text("record,label\nr,AF\ny/r,NORM\n")
    refs = WFDBFolderSource(WFDBFolderSource.Config(path=str(root), labels_csv=str(labels))).records()
    # "r" names two records, so it labels neither; the full id still works.
    assert [(r.record_id, r.labels["label"]) for r in refs] == [("x/r", []), ("y/r", ["NORM"])]


def test_folder_source_csv_errors(tmp_path: Path) -> None:
    _write_record(tmp_path / "ecgs", "a")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na,AF\n")
    with pytest.raises(ValueError, match=r"source\.labels_csv: .*bad\.csv has no column 'record'"):
        WFDBFolderSource(WFDBFolderSource.Config(path=str(tmp_path / "ecgs"), labels_csv=str(bad))).records()
    bad.write_text("record,label\na,AF\na,NORM\n")
    with pytest.raises(ValueError, match="listed twice"):
        WFDBFolderSource(WFDBFolderSource.Config(path=str(tmp_path / "ecgs"), labels_csv=str(bad))).records()
