"""The run object: the plan a run derives once from (recipe, cache), and the run directory's layout, its one
checkpoint rule and its typed results.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgforge.data.cache import Cache
from ecgforge.data.splits import select
from ecgforge.errors import UserError
from ecgforge.evaluation.rows import ResultRow
from ecgforge.recipe import Recipe
from ecgforge.rundir import Results, RunDir, RunPlan, samples
from ecgforge.version import __version__
from tests.evaluation.test_protocols import SPLITS, cache  # noqa: F401  (module fixture: 48 records, 100 Hz)


def _recipe(cache_path: Path, **data: object) -> Recipe:
    return Recipe.model_validate({
        "name": "plan", "seed": 3,
        "data": {"cache": str(cache_path), "splits": SPLITS, "pretrain_split": "train", **data},
        "model": {"encoder": {"kind": "resnet1d", "width": 8}},
    })


def test_plan_window_stride_splits_and_context(cache: Cache) -> None:  # noqa: F811
    plan = RunPlan.build(_recipe(cache.path, window_s=2.504, eval_stride_s=1.25), cache)
    assert (plan.window, plan.stride) == (250, 125)  # rounded to the nearest sample at 100 Hz
    assert set(plan.split_indices) == set(SPLITS)
    for name, sel in SPLITS.items():
        assert np.array_equal(plan.split_indices[name], select(cache, sel, True)), name
    assert len(plan.pretrain_indices) == 24 and len(plan.split_indices["all"]) == 48
    assert (plan.ctx.fs_hz, plan.ctx.window, plan.ctx.n_leads) == (100.0, 250, 12)
    assert plan.ctx.encoder is None and plan.ctx.n_classes is None  # the trainer adds what it builds
    default = RunPlan.build(_recipe(cache.path, window_s=5.0), cache)
    assert default.stride == default.window == 500  # eval_stride_s defaults to window_s
    assert samples(2.5, 500.0) == 1250


def _checkpoint(root: Path, name: str, complete: bool) -> Path:
    d = root / "checkpoints" / name
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"w")
    if complete:
        (d / "progress.json").write_text("{}")
    return d


def test_one_checkpoint_rule_progress_json_written_last(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.checkpoints() == [] and rd.latest_checkpoint() is None  # no checkpoints folder yet
    s3, s12 = _checkpoint(tmp_path, "step_3", True), _checkpoint(tmp_path, "step_12", True)
    _checkpoint(tmp_path, "step_15", False)  # weights without progress.json: not a checkpoint
    scratch = _checkpoint(tmp_path, ".step_18.tmp", True)
    old = _checkpoint(tmp_path, ".step_12.old", True)
    assert rd.checkpoints() == [s3, s12]  # by step number, not by name (12 after 3)
    assert rd.latest_checkpoint() == s12 == rd.checkpoint(12)
    assert rd.scratch_checkpoint(18) == scratch
    rd.remove_scratch_checkpoints()
    assert not scratch.exists() and not old.exists() and s12.exists()
    rd.prune_checkpoints(keep=1)
    assert rd.checkpoints() == [s12] and not s3.exists()


def _row(seed: int, **extra: object) -> ResultRow:
    return ResultRow(kind="linear_probe", task="rhythm", task_type="multiclass", init="pretrained",
                     label_fraction=1.0, seed=seed, split="test", metrics={"macro_auroc": 0.9}, primary="macro_auroc",
                     ci95={"macro_auroc": [0.85, 0.95]}, conditions=dict(extra))


def test_results_json_round_trip_keeps_keys_and_order(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.read_results() is None
    written = {"recipe": "q", "ecgforge_version": "9.9", "seed": 0, "cache": "c.h5", "cache_spec_hash": "ab",
               "pretrain_seconds": 1.0, "eval_seconds": 2.0, "eval": [_row(0).to_json(), _row(1, leads="6").to_json()],
               "warnings": [], "allowed_overlap": {"roles": ["pretrain", "test"]}, "later_key": [1, 2]}
    rd.results_json.write_text(json.dumps(written))
    results = rd.read_results()
    assert results is not None and results.rows[1].conditions == {"leads": "6"}
    assert results.other == {"later_key": [1, 2]}
    rd.write_results(results)
    back = json.loads(rd.results_json.read_text())
    assert back == written and list(back) == list(written)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # atomic: no scratch left
    # A file of an older version (no run facts): read, and written back without inventing any.
    assert Results.from_json({"eval": []}).to_json() == {"eval": []}


def test_results_over_previous_keep_what_an_evaluation_does_not_redo(tmp_path: Path, cache: Cache) -> None:  # noqa: F811
    rd = RunDir(tmp_path)
    previous = {"recipe": "old", "ecgforge_version": "0.0.1", "seed": 1, "pretrain_seconds": 12.5,
                "eval_seconds": 99.0, "eval": [_row(0).to_json()], "warnings": ["old warning"],
                "allowed_overlap": {"roles": ["pretrain", "test"]}, "later_key": "kept"}
    rd.results_json.write_text(json.dumps(previous))
    fresh = Results.of_evaluation(_recipe(cache.path), cache, [_row(0), _row(1)], warnings=[], eval_seconds=3.0)
    merged = rd.merge_results(fresh.replace(eval_overrides=["eval.0.seeds=[0, 1]"]))
    assert json.loads(rd.results_json.read_text()) == merged.to_json()
    out = merged.to_json()
    assert out["pretrain_seconds"] == 12.5 and out["later_key"] == "kept"
    assert (out["recipe"], out["seed"], out["ecgforge_version"], out["eval_seconds"]) == ("plan", 3, __version__, 3.0)
    assert out["cache"] == str(cache.path) and out["cache_spec_hash"] == cache.spec_hash
    assert out["warnings"] == [] and "allowed_overlap" not in out  # this evaluation allowed none
    assert [r["seed"] for r in out["eval"]] == [0, 1] and out["eval_overrides"] == ["eval.0.seeds=[0, 1]"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"eval": {"a": 1}}', '{"eval": [3]}'])
def test_a_broken_results_json_is_one_line_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(UserError) as err:
        RunDir(tmp_path).read_results()
    assert str(tmp_path / "results.json") in str(err.value) and "\n" not in str(err.value)
