"""The leakage guard (app/leakage.py, data/leakage.py): overlapping splits are refused in one line, or allowed
with a reason that results.json keeps."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tomli_w
from typer.testing import CliRunner

from ecgforge.app.leakage import check_leakage, find_overlaps
from ecgforge.cli import app
from ecgforge.data.cache import Cache, seal_metadata
from ecgforge.data.leakage import patient_keys, record_keys
from ecgforge.recipe import Recipe
from tests.evaluation.test_protocols import SPLITS, _ids, cache  # noqa: F401  (module fixture: a tiny cache)


def _raw(cache_path: Path, splits: dict, pretrain: str = "train", **data: object) -> dict:
    return {"name": "leak", "data": {"cache": str(cache_path), "splits": splits, "window_s": 2.5,
                                     "pretrain_split": pretrain, **data},
            "model": {"encoder": {"kind": "resnet1d", "width": 8}},
            "ssl": {"kind": "simclr"}, "train": {"max_steps": 1, "batch_size": 4},
            "eval": [{"kind": "linear_probe", "task": "label", "epochs": 1, "bootstrap": 0}]}


def test_disjoint_splits_pass(cache: Cache) -> None:  # noqa: F811
    assert check_leakage(Recipe.model_validate(_raw(cache.path, SPLITS)), cache, "r.toml") == ([], None)


def test_pretraining_on_the_test_records_is_refused_in_one_line_per_table(cache: Cache) -> None:  # noqa: F811
    raw = _raw(cache.path, SPLITS, pretrain="all")
    raw["eval"] *= 2
    lines, allowed = check_leakage(Recipe.model_validate(raw), cache, "r.toml")
    assert allowed is None and len(lines) == 2
    for i, line in enumerate(lines):
        assert line.startswith(f"r.toml: eval[{i}]: leakage: pretrain split 'all' and test split 'test' share 12 "
                               "records; ")
        assert 'allow_overlap = ["pretrain", "test"]' in line


def test_a_test_split_sharing_patients_with_training_is_refused(cache: Cache) -> None:  # noqa: F811
    # Training takes record 0 of patients 0-11, testing records 1-2 of patients 8-15: 4 patients in both.
    splits = {"train": {"record_id": [f"p{p:02d}_r0" for p in range(12)]}, "val": SPLITS["val"],
              "test": {"record_id": [f"p{p:02d}_r{r}" for p in range(8, 16) for r in (1, 2)]},
              "pre": {"record_id": _ids(range(0, 4))}}
    recipe = Recipe.model_validate(_raw(cache.path, splits, pretrain="pre"))
    [o] = find_overlaps(recipe, cache, Cache)
    assert (o.roles, o.splits, o.unit, o.count) == (("train", "test"), ("train", "test"), "patients", 4)
    # Pretraining on other records of the test patients is caught by patient, once records are disjoint.
    pre = Recipe.model_validate(_raw(cache.path, {**SPLITS, "pre": {"record_id": ["p13_r0"]},
                                                  "test": {"record_id": ["p13_r1", "p14_r1"]}}, pretrain="pre"))
    [o] = find_overlaps(pre, cache, Cache)
    assert (o.roles, o.unit, o.count) == (("pretrain", "test"), "patients", 1)


def test_allowed_overlap_is_recorded_with_its_reason(cache: Cache) -> None:  # noqa: F811
    why = "the paper pretrains on every record"
    recipe = Recipe.model_validate(_raw(cache.path, SPLITS, pretrain="all", allow_overlap=["pretrain", "test"],
                                        allow_overlap_reason=why))
    got = check_leakage(recipe, cache, "r.toml")
    assert got == ([], {"roles": ["pretrain", "test"], "reason": why,
                   "overlaps": ["eval[0]: pretrain split 'all' and test split 'test' share 12 records"]})


@pytest.mark.parametrize(("allow", "reason", "match"), [
    (["pretrain", "test"], None, "needs allow_overlap_reason"),
    (["pretrain", "train"], "x", "name 'test'"),
    (["pretrain", "tset"], "x", "tset"),
])
def test_allow_overlap_is_validated(cache: Cache, allow: list, reason: str | None, match: str) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=match):
        Recipe.model_validate(_raw(cache.path, SPLITS, allow_overlap=allow, allow_overlap_reason=reason))


def _with_meta(src: Path, dst: Path, column: str, values: np.ndarray) -> Cache:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        h5["meta"].create_dataset(column, data=values)
        seal_metadata(h5)  # an edit on purpose: new metadata checksums, or readers refuse it as damage
    return Cache(dst)


def test_ptbxl_ecgs_inside_a_cinc_cache_are_the_same_records_as_in_ptbxl(cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    """CinC 'HR*' records are PTB-XL ECGs: pretraining on them and testing on a PTB-XL cache leaks, which the
    guard sees once HR* records are kept (exclude_ptbxl_overlap = false)."""
    n = len(cache)
    cinc = _with_meta(cache.path, tmp_path / "cinc.h5", "ptbxl_ecg_id", np.where(np.arange(n) < 6, np.arange(n), -1))
    ptbxl = _with_meta(cache.path, tmp_path / "ptbxl.h5", "ecg_id", np.arange(n) + 3)
    assert len(np.intersect1d(record_keys(cinc, np.arange(n)).astype(str),
                              record_keys(ptbxl, np.arange(n)).astype(str))) == 3  # ecg_id 3, 4, 5
    assert patient_keys(ptbxl, np.arange(2))[0].startswith("ptbxl:")
    raw = _raw(cinc.path, {**SPLITS, "everything": {}}, pretrain="everything", exclude_ptbxl_overlap=False)
    raw["eval"] = [{"kind": "linear_probe", "task": "label", "cache": str(ptbxl.path), "train_split": "train",
                    "val_split": "val", "test_split": "everything", "epochs": 1, "bootstrap": 0}]
    lines, _ = check_leakage(Recipe.model_validate(raw), cinc, "r.toml")
    assert "r.toml: eval[0]: leakage: pretrain split 'everything' and test split 'everything' share 3 records; " in (
        line[: line.index("; ") + 2] for line in lines)
    raw["data"]["exclude_ptbxl_overlap"] = True  # HR* records dropped from every split: no overlap left
    recipe = Recipe.model_validate(raw)
    assert all(o.roles == ("train", "test") for o in find_overlaps(recipe, cinc, Cache))


def test_validate_and_run_refuse_a_leaking_recipe_with_exit_2(cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "leak.toml"
    path.write_text(tomli_w.dumps(_raw(cache.path, SPLITS, pretrain="all")))
    runner = CliRunner()
    for argv in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "run")]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 2, res.output
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, res.stderr  # one line, no traceback
        assert "eval[0]: leakage: pretrain split 'all' and test split 'test' share 12 records" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training
    missing = tmp_path / "absent.toml"
    missing.write_text(tomli_w.dumps(_raw(tmp_path / "nope.h5", SPLITS, pretrain="all")))
    res = runner.invoke(app, ["validate", str(missing)])
    assert res.exit_code == 0 and "leakage not checked" in res.output
