"""The benchmark suites (recipes/suites): they validate, evaluate any saved encoder in place of their stand-in,
and fall back to the folds present on a subset of the dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgforge.app.recipes import load_run_recipe, resolve_init, resolve_splits
from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache
from ecgforge.encoder_files import save_encoder
from ecgforge.encoders import ENCODERS
from ecgforge.recipe import load_recipe
from ecgforge.registry import build
from tests.evaluation.test_protocols import cache  # noqa: F401 (fixture: 16 patients x 3 records, no folds)

ROOT = Path(__file__).resolve().parents[2]
PTBXL, CINC = ROOT / "recipes/suites/ptbxl.toml", ROOT / "recipes/suites/cinc2021.toml"


def test_ptbxl_suite_has_every_task_protocol_and_fraction() -> None:
    r = load_run_recipe(PTBXL)
    got = {(e.task, e.kind, getattr(e, "head", "linear")) for e in r.eval}
    tasks = ["superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all", "sex", "age"]
    assert got == {(t, k, h) for t in tasks for k, h in
                   [("linear_probe", "linear"), ("linear_probe", "mlp"), ("finetune", "linear")]}
    assert all(e.label_fractions == [0.01, 0.1, 1.0] for e in r.eval)
    assert r.data.splits == {"train": {"fold": list(range(1, 9))}, "val": {"fold": [9]}, "test": {"fold": [10]}}


def test_cinc_suite_scores_the_challenge_on_scored_and_chapman_on_its_own_splits() -> None:
    r = load_run_recipe(CINC)
    assert {e.task for e in r.eval} == {"scored", "chapman_rhythm", "sex"}
    probes = [e for e in r.eval if e.task == "scored" and e.kind == "linear_probe"]
    assert len(probes) == 2 and all(e.challenge_weights and Path(ROOT / e.challenge_weights).name
                                    == "weights_abbreviations.csv" for e in probes)
    chapman = [e for e in r.eval if e.task == "chapman_rhythm"]
    assert len(chapman) == 3 and all(e.test_split == "chapman_test" for e in chapman)
    assert r.data.splits["chapman_test"]["source"] == "chapman_shaoxing"


def test_fallback_splits_must_name_the_same_splits() -> None:
    with pytest.raises(RecipeError, match="fallback_splits"):
        load_recipe(PTBXL, ["data.fallback_splits={train={fold=[1]}}"])


def test_an_empty_split_selects_the_fallback(cache: Cache) -> None:  # noqa: F811
    r = load_recipe(PTBXL, [f"data.cache='{cache.path}'"])
    notes: list[str] = []
    primary = {"train": {"record_id": ["p00_r0"]}, "val": {"record_id": ["p01_r0"]},
               "test": {"record_id": ["absent"]}}  # as fold 10 on a copy of PTB-XL with folds 1-3
    fb = {"train": {"record_id": ["p00_r0", "p01_r0"]}, "val": {"record_id": ["p02_r0"]},
          "test": {"record_id": ["p03_r0"]}}
    r = r.model_copy(update={"data": r.data.model_copy(update={"splits": primary, "fallback_splits": fb})})
    used = resolve_splits(r, cache, notes.append)
    assert used.data.splits == fb and len(notes) == 1 and "['test'] select no record" in notes[0]
    assert "train: 2 records" in notes[0]
    full = r.model_copy(update={"data": r.data.model_copy(update={"splits": fb})})
    assert resolve_splits(full, cache, notes.append) is full and len(notes) == 1  # nothing empty: unchanged


def test_model_init_replaces_the_stand_in_encoder(tmp_path: Path) -> None:
    saved_cfg = ENCODERS.config("resnet1d")(depth=18, width=8)
    save_encoder(build(ENCODERS, saved_cfg), saved_cfg, tmp_path / "enc",
                 {"fs_hz": 100.0, "window_s": 2.5, "leads": ["I"] * 12})
    r = load_run_recipe(PTBXL, [f"model.init='{tmp_path / 'enc'}'"])
    assert r.model.encoder == saved_cfg  # the suite's width-32 stand-in gave way
    strict = load_recipe(PTBXL, [f"model.init='{tmp_path / 'enc'}'", "model.encoder_is_default=false"])
    with pytest.raises(RecipeError, match="differs from the saved encoder"):
        resolve_init(strict, "suite")
