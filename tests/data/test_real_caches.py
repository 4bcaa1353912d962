"""The shipped PTB-XL and CinC cache recipes, built from ../shared/data through the CLI.

`ecgforge cache info --json` is checked against counts recomputed here, independently of the sources'
code, from ``ptbxl_database.csv`` / ``scp_statements.csv`` (pandas joins) and from the CinC header text
(plain string parsing, the Challenge's ``weights.csv`` for the equivalent classes); cached samples are
checked against ``wfdb.rdrecord`` to within the 1 uV storage step.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.data.cache import SCALE_MV, Cache

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
# Storage rounds to the nearest 1 uV step; float32 adds at most an ulp of values up to ~30 mV.
TO_ROUNDING_MV = SCALE_MV / 2 + 1e-5

pytestmark = pytest.mark.data


def _build(recipe: str, shared_data: Path, out: Path) -> dict:
    """`cache build` then `cache verify` then `cache info --json` through the CLI; returns the info."""
    src = shared_data / ("ptb-xl" if "ptbxl" in recipe else "cinc2021-sample")
    res = runner.invoke(app, ["cache", "build", str(ROOT / "recipes" / "caches" / recipe), "--source", str(src),
                              "--out", str(out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["cache", "verify", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["cache", "info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def ptbxl(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ptbxl") / "ptbxl.h5"
    return _build("ptbxl.toml", shared_data, out), out


@pytest.fixture(scope="module")
def cinc(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cinc") / "cinc.h5"
    return _build("cinc2021.toml", shared_data, out), out


# ----------------------------------------------------------------------------------------------- PTB-XL


def _ptbxl_label_counts(root: Path) -> dict[str, Counter]:
    """Records per label for each benchmark label set, by pandas joins over the two CSVs."""
    db = pd.read_csv(root / "ptbxl_database.csv")
    st = pd.read_csv(root / "scp_statements.csv", index_col=0)
    pairs = db[["ecg_id"]].assign(code=db.scp_codes.map(lambda s: list(ast.literal_eval(s)))).explode("code")
    pairs = pairs.dropna(subset=["code"]).merge(st, left_on="code", right_index=True, how="left")
    diag = pairs[pairs.diagnostic == 1.0]

    def per_record(frame: pd.DataFrame, column: str) -> Counter:
        return Counter(frame[["ecg_id", column]].dropna().drop_duplicates()[column])

    return {
        "all": per_record(pairs, "code"),
        "diagnostic": per_record(diag, "code"),
        "subdiagnostic": per_record(diag, "diagnostic_subclass"),
        "superdiagnostic": per_record(diag, "diagnostic_class"),
        "form": per_record(pairs[pairs.form == 1.0], "code"),
        "rhythm": per_record(pairs[pairs.rhythm == 1.0], "code"),
    }


def test_ptbxl_cache_info_matches_the_csv(ptbxl: tuple[dict, Path], shared_data: Path) -> None:
    d, _ = ptbxl
    root = shared_data / "ptb-xl"
    db = pd.read_csv(root / "ptbxl_database.csv")
    assert len(db) == sum(1 for _ in (root / "records100").glob("*/*.hea")) == 6548
    assert d["skipped"] == []
    assert d["n_records"] == len(db)
    assert d["n_patients"] == db.patient_id.nunique()
    assert d["fs_hz"] == 100.0 and d["duration_s"]["min"] == d["duration_s"]["max"] == 10.0
    assert d["sex"] == {"M": int((db.sex == 0).sum()), "F": int((db.sex == 1).sum())}
    assert d["folds"] == {str(k): int(v) for k, v in db.strat_fold.value_counts().items()}
    assert set(d["lead_presence"].values()) == {len(db)}
    expected = _ptbxl_label_counts(root)
    assert d["label_sets"]["superdiagnostic"] == {"CD": 1453, "HYP": 791, "MI": 1615, "NORM": 2898, "STTC": 1565}
    for name, counts in expected.items():
        got = {lab: n for lab, n in d["label_sets"][name].items() if n}
        assert got == dict(counts), name
    assert {k: len(v) for k, v in d["label_sets"].items()} == {
        "all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}


def test_ptbxl_cache_samples_match_rdrecord(ptbxl: tuple[dict, Path], shared_data: Path) -> None:
    _, path = ptbxl
    c = Cache(path)
    db = pd.read_csv(shared_data / "ptb-xl" / "ptbxl_database.csv", index_col="ecg_id")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(c), size=60, replace=False):
        ecg_id = int(c.record_id[i])
        ref = wfdb.rdrecord(str(shared_data / "ptb-xl" / db.loc[ecg_id, "filename_lr"])).p_signal.T
        assert c.patient_id[i] == str(int(db.loc[ecg_id, "patient_id"]))
        assert c.fold[i] == db.loc[ecg_id, "strat_fold"]
        np.testing.assert_allclose(c.read(i), ref, rtol=0, atol=TO_ROUNDING_MV, err_msg=c.record_id[i])


# ------------------------------------------------------------------------------------------------- CinC


def _header_comments(hea: Path) -> dict[str, str]:
    """``# Key: value`` lines of a header (any spacing) as {key lower-case: value}."""
    out = {}
    for line in hea.read_text(encoding="latin-1").splitlines():
        if line.startswith("#") and ":" in line:
            key, value = line[1:].split(":", 1)
            out[key.strip().lower()] = value.strip()
    return out


def test_cinc_cache_info_matches_the_headers(cinc: tuple[dict, Path], shared_data: Path) -> None:
    d, _ = cinc
    root = shared_data / "cinc2021-sample"
    heads = sorted(h for h in root.rglob("*.hea") if not h.parent.name.startswith("evaluation"))
    assert len(heads) == 141
    comments = {h.stem: _header_comments(h) for h in heads}
    assert d["skipped"] == []
    assert d["n_records"] == len(heads)
    assert d["n_patients"] == len(heads)  # the Challenge gives no patient ids: one patient per record
    assert d["sources"] == dict(Counter(h.parent.name for h in heads))
    assert d["sex"] == dict(Counter(c["sex"][0].upper() for c in comments.values()))
    assert set(d["lead_presence"].values()) == {len(heads)}

    # Scored classes as the Challenge's metric sees them: weights.csv columns, "a|b" being one class, each
    # named by dx_mapping_scored.csv's abbreviation of its first code.
    ev = root / "evaluation-2021"
    classes = [col.split("|") for col in pd.read_csv(ev / "weights.csv", index_col=0).columns]
    mapping = pd.read_csv(ev / "dx_mapping_scored.csv", dtype=str)
    abbrev = dict(zip(mapping.SNOMEDCTCode, mapping.Abbreviation, strict=True))
    dx = {name: {c.strip() for c in com.get("dx", "").split(",") if c.strip()} for name, com in comments.items()}
    expected = {abbrev[codes[0]]: sum(bool(set(codes) & codes_of) for codes_of in dx.values()) for codes in classes}
    assert d["label_sets"]["scored"] == expected
    assert sum(expected.values()) > 0
    all_codes = Counter(code for codes in dx.values() for code in codes)
    assert d["label_sets"]["dx"] == dict(sorted(all_codes.items()))


def test_cinc_cache_samples_match_rdrecord(cinc: tuple[dict, Path], shared_data: Path) -> None:
    _, path = cinc
    c = Cache(path)
    root = shared_data / "cinc2021-sample"
    paths = {h.stem: h.with_suffix("") for h in root.rglob("*.hea")}
    checked = Counter()
    for i in range(0, len(c), 3):
        rec = wfdb.rdrecord(str(paths[c.record_id[i]]))
        ref = rec.p_signal.T
        if rec.fs == 500:  # stored as read: equal to the storage rounding
            np.testing.assert_allclose(c.read(i), ref, rtol=0, atol=TO_ROUNDING_MV, err_msg=c.record_id[i])
        else:  # PTB at 1000 Hz: the polyphase resampling of rdrecord's values, then the rounding
            assert rec.fs == 1000
            np.testing.assert_allclose(c.read(i), resample_poly(ref, 1, 2, axis=-1), rtol=0, atol=TO_ROUNDING_MV + 1e-4,
                                       err_msg=c.record_id[i])
        checked[c.source[i]] += 1
    assert set(checked) == set(c.source)  # every sub-database, .mat signals at 500 and 1000 Hz


# ----------------------------------------------------------------------------------------------- leakage


def _shipped_recipes() -> list[Path]:
    return sorted(p for p in (ROOT / "recipes").rglob("*.toml") if "caches" not in p.parts)


def test_every_shipped_recipe_passes_the_preflight_on_the_real_samples(
        ptbxl: tuple[dict, Path], cinc: tuple[dict, Path], tmp_path: Path) -> None:
    """Each shipped run recipe, on the real PTB-XL folds and CinC sample, passes the pre-flight: its splits
    exist, its tasks are label sets (or meta tasks) of the cache, of types its protocols support, and it tests
    on nothing it trains on. On this PTB-XL copy (folds 1-3) a split of a full-dataset recipe (folds 9, 10)
    may select nothing; no other problem is allowed. The lead_agnostic recipes as they were (pretraining on
    every Chapman-Shaoxing record and on the HR* PTB-XL ECGs that identification tests on) are refused."""
    from ecgforge.app import preflight
    from ecgforge.app.recipes import resolve_splits
    from ecgforge.config_files import RecipeError

    built = {"ptbxl": Cache(ptbxl[1]), "cinc": Cache(cinc[1])}

    def open_cache(path: str) -> Cache:  # the 500 Hz PTB-XL cache holds the same ECGs as the 100 Hz one
        return built["cinc" if "cinc" in Path(path).name else "ptbxl"]

    passed, only_absent_folds = [], []
    for path in _shipped_recipes():
        recipe = preflight.load_recipe(path)
        name = Path(recipe.data.cache).name
        if not name.startswith(("ptbxl", "cinc")):
            continue
        cache = open_cache(name)
        try:
            checked = preflight.check(resolve_splits(recipe, cache), str(path), cache, open_cache=open_cache)
        except RecipeError as exc:
            lines = str(exc).splitlines()
            assert all(line.endswith("(0 records selected)") for line in lines), lines
            only_absent_folds.append(path.relative_to(ROOT / "recipes").as_posix())
            continue
        assert checked.allowed_overlap is None and not checked.notes, (path, checked)
        passed.append(path.relative_to(ROOT / "recipes").as_posix())
    cpu = {f"ptbxl_cpu/{p.name}" for p in (ROOT / "recipes" / "ptbxl_cpu").glob("*.toml")}  # made for this copy
    assert {"suites/ptbxl.toml", "suites/cinc2021.toml", *cpu} <= set(passed) and len(cpu) >= 10, passed
    assert all(p.startswith("papers/strodthoff/") for p in only_absent_folds), only_absent_folds
    old = ROOT / "recipes/papers/lead_agnostic/cmsc.toml"
    text = old.read_text().replace(
        'pretrain = { source = ["cpsc_2018", "cpsc_2018_extra", "georgia", "chapman_shaoxing", "ningbo"], '
        'fold = [1, 2, 3, 4, 5, 6, 7, 8] }',
        'pretrain = { source = ["cpsc_2018", "cpsc_2018_extra", "georgia", "ptb-xl", "chapman_shaoxing", "ningbo"] }',
    ).replace('pretrain_split = "pretrain"', 'pretrain_split = "pretrain"\nexclude_ptbxl_overlap = false')
    assert text != old.read_text()
    leaky = tmp_path / "cmsc.toml"  # its relative paths resolve against the working directory, as before
    leaky.write_text(text)
    with pytest.raises(RecipeError) as exc:
        preflight.check(preflight.load_recipe(leaky), "cmsc.toml", built["cinc"], open_cache=open_cache)
    lines = str(exc.value).splitlines()
    assert lines and all(line.startswith("cmsc.toml: eval[") and ": leakage: " in line for line in lines), lines
