"""The pre-flight (app/preflight.py): `validate` and `run` refuse what a recipe gets wrong before anything is
trained, one line per problem naming the recipe file and the TOML path, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import tomli_w
from typer.testing import CliRunner

from ecgforge.app import preflight
from ecgforge.cli import app
from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache
from ecgforge.data.splits import task_targets
from ecgforge.evaluation.knn import KNNConfig
from ecgforge.recipe import Recipe
from tests.test_encoder_files import SPLITS, make_cache

ROOT = Path(__file__).resolve().parents[2]
cli = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic cache of 20 patients x 2 records, folds 1-10; label sets conduction, rhythm, sex."""
    return make_cache(tmp_path_factory.mktemp("preflight"), "syn")


def _raw(cache: Path, **data: object) -> dict:
    """SimCLR on a width-8 ResNet, then a linear probe and a fine-tune on rhythm: a recipe that passes."""
    return {
        "name": "pf", "data": {"cache": str(cache), "window_s": 2.5, "splits": _splits(), **data},
        "model": {"encoder": {"kind": "resnet1d", "width": 8}},
        "ssl": {"kind": "simclr", "projector_hidden": 16, "projector_dim": 8},
        "train": {"max_steps": 2, "batch_size": 8},
        "eval": [{"kind": "linear_probe", "task": "rhythm", "epochs": 1, "bootstrap": 0},
                 {"kind": "finetune", "task": "rhythm", "bootstrap": 0}],
    }


def _splits() -> dict:
    import tomllib

    return tomllib.loads(f"s = {SPLITS}")["s"]


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def _errors(res: object) -> list[str]:
    assert res.exit_code == 2, res.output  # type: ignore[attr-defined]
    assert "Traceback" not in res.output  # type: ignore[attr-defined]
    return [ln for ln in res.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]


def _nothing_trained(run_dir: Path) -> None:
    written = {p.name for p in run_dir.rglob("*")} if run_dir.exists() else set()
    assert not written & {"checkpoints", "results.json", "encoder.safetensors", "metrics.jsonl", "resolved.toml"}, written


def test_a_sound_recipe_passes(cache: Path, tmp_path: Path) -> None:
    res = cli.invoke(app, ["validate", str(_write(tmp_path, _raw(cache)))])
    assert res.exit_code == 0 and "ok" in res.output and "not checked" not in res.output, res.output


MISTAKES = [
    ("eval.0.task", '"rhythmm"', "eval[0].task: 'rhythmm' is not a label set of {cache} (has: conduction, rhythm, "
                                 "sex; meta tasks: age); did you mean 'rhythm'?"),
    ("eval.0.test_split", '"tst"', "eval[0].test_split: split 'tst' is not one of data.splits (train, val, test); "
                                   "did you mean 'test'?"),
    ("eval.1.val_split", '"vall"', "eval[1].val_split: split 'vall' is not one of data.splits (train, val, test); "
                                   "did you mean 'val'?"),
]


@pytest.mark.parametrize(("key", "value", "line"), MISTAKES, ids=[m[0] for m in MISTAKES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_and_run_refuse_a_mistake_in_one_line_before_training(
        cache: Path, tmp_path: Path, key: str, value: str, line: str, command: str) -> None:
    recipe, run_dir = _write(tmp_path, _raw(cache)), tmp_path / "run"
    argv = [command, str(recipe), "--set", f"{key}={value}"] + (["--out", str(run_dir)] if command == "run" else [])
    assert _errors(cli.invoke(app, argv)) == [f"error: {recipe}: {line.format(cache=cache)}"]
    _nothing_trained(run_dir)


def test_every_problem_is_reported_at_once(cache: Path, tmp_path: Path) -> None:
    recipe = _write(tmp_path, _raw(cache))
    sets = [a for key, value, _ in MISTAKES for a in ("--set", f"{key}={value}")]
    lines = _errors(cli.invoke(app, ["validate", str(recipe), *sets]))
    assert sorted(lines) == sorted(f"error: {recipe}: {line.format(cache=cache)}" for _, _, line in MISTAKES)


def test_a_split_typo_is_refused_by_run_before_the_run_directory_or_the_cache(cache: Path, tmp_path: Path) -> None:
    """The recipe-only checks come first: no cache is built from data.build and no run directory is made."""
    raw = _raw(tmp_path / "absent.h5", build=str(ROOT / "recipes" / "caches" / "synthetic.toml"))
    raw["eval"][0]["test_split"] = "tst"
    run_dir = tmp_path / "run"
    [line] = _errors(cli.invoke(app, ["run", str(_write(tmp_path, raw)), "--out", str(run_dir)]))
    assert "eval[0].test_split: split 'tst'" in line
    assert not run_dir.exists() and not (tmp_path / "absent.h5").exists()


def test_validate_without_the_cache_checks_splits_and_says_what_it_left(cache: Path, tmp_path: Path) -> None:
    raw = _raw(tmp_path / "absent.h5")
    res = cli.invoke(app, ["validate", str(_write(tmp_path, raw))])
    assert res.exit_code == 0, res.output
    assert "tasks, split sizes and leakage not checked" in res.output and "absent.h5 not built yet" in res.output
    raw["eval"][1]["val_split"] = "vall"
    [line] = _errors(cli.invoke(app, ["validate", str(_write(tmp_path, raw))]))
    assert "eval[1].val_split: split 'vall'" in line


def test_validate_of_a_cache_built_from_another_spec_leaves_the_cache_checks_to_run(cache: Path, tmp_path: Path) -> None:
    raw = _raw(cache, build=str(ROOT / "recipes" / "caches" / "synthetic.toml"))  # 200 patients, not 20
    raw["eval"][0]["task"] = "rhythmm"  # run stops at the spec mismatch first; this cache's label sets do not count
    res = cli.invoke(app, ["validate", str(_write(tmp_path, raw))])
    assert res.exit_code == 0 and "was built from another spec" in res.output, res.output


def _recipe(cache_file: Path, table: int = 0, **changes: object) -> Recipe:
    """`_raw` with ``changes`` to its ``[[eval]]`` table number ``table``."""
    raw = _raw(cache_file)
    raw["eval"][table].update(changes)
    return Recipe.model_validate(raw)


def test_a_task_needs_labelled_records_in_its_train_and_test_splits(cache: Path) -> None:
    c = Cache(cache)
    raw = _raw(cache)
    raw["data"]["splits"]["nobody"] = {"fold": [99]}
    raw["eval"][0].update(train_split="nobody", test_split="nobody")
    with pytest.raises(RecipeError) as exc:
        preflight.check(Recipe.model_validate(raw), "r.toml", c)
    assert str(exc.value).splitlines() == [
        f"r.toml: eval[0].{f}: task 'rhythm' has no labelled record in split 'nobody' of {cache} (0 records selected)"
        for f in ("train_split", "test_split")]


#: eval[1] of `_raw` fine-tuned on the sex of the women of folds 4 and 5: every draw holds one class.
WOMEN = {"kind": "finetune", "task": "sex", "train_split": "women", "label_fractions": [0.5, 1.0], "seeds": [0, 1],
         "bootstrap": 0}
WOMEN_LINE = ("eval[1].train_split: finetune task 'sex': the training subset of split 'women' at label fraction 0.5, "
              "seed 0 holds one class (F 4, M 0 of 4 records; 4 of 4 label fraction x seed draws alike); a head can "
              "learn nothing from it: choose a train_split or task with two classes")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_training_subset_of_one_class_is_refused_in_one_line_before_training(cache: Path, tmp_path: Path,
                                                                               command: str) -> None:
    raw = _raw(cache)
    raw["data"]["splits"]["women"] = {"fold": [4, 5]}
    raw["eval"][1] = WOMEN
    recipe, run_dir = _write(tmp_path, raw), tmp_path / "run"
    argv = [command, str(recipe)] + (["--out", str(run_dir)] if command == "run" else [])
    assert _errors(cli.invoke(app, argv)) == [f"error: {recipe}: {WOMEN_LINE}"]
    _nothing_trained(run_dir)
    raw["data"]["splits"]["women"] = {"fold": [4, 5, 6]}  # fold 6 adds two men: every draw holds both
    res = cli.invoke(app, ["validate", str(_write(tmp_path, raw))])
    assert res.exit_code == 0, res.output


def test_a_split_selecting_on_an_unknown_column_is_named(cache: Path) -> None:
    raw = _raw(cache)
    raw["data"]["splits"]["val"] = {"sitee": [1]}
    with pytest.raises(RecipeError) as exc:
        preflight.check(Recipe.model_validate(raw), "r.toml", Cache(cache))
    [line] = str(exc.value).splitlines()
    assert line.startswith(f"r.toml: data.splits.val: {cache}: split selects on unknown column 'sitee'")


def test_a_label_set_cannot_be_a_regression_task(cache: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        preflight.check(_recipe(cache, task_type="regression"), "r.toml", Cache(cache))
    assert str(exc.value) == "r.toml: eval[0].task_type: task 'rhythm': a label set cannot be a regression target"


class _ClassificationKNNConfig(KNNConfig):
    """A protocol that supports classification only (declared as every protocol config declares it)."""

    task_types: ClassVar[frozenset[str]] = frozenset({"multiclass", "multilabel"})


def test_a_task_of_a_type_the_protocol_does_not_support_is_refused(cache: Path) -> None:
    recipe = _recipe(cache)
    knn = _ClassificationKNNConfig(task="age")
    with pytest.raises(RecipeError) as exc:
        preflight.check(recipe.model_copy(update={"eval": [knn]}), "r.toml", Cache(cache))
    assert str(exc.value) == "r.toml: eval[0].task: 'age' is a regression task; knn supports multiclass, multilabel"
    preflight.check(recipe.model_copy(update={"eval": [knn.model_copy(update={"task": "rhythm"})]}), "r.toml",
                    Cache(cache))
    stated = knn.model_copy(update={"task": "rhythm", "task_type": "regression"})
    with pytest.raises(RecipeError, match=r"^r.toml: eval\[0\].task_type: knn supports multiclass, multilabel tasks, "
                                          "not regression$"):
        preflight.check(recipe.model_copy(update={"eval": [stated]}), "r.toml")  # known without the cache


def test_the_meta_tasks_are_the_ones_the_task_loader_reads_from_metadata(cache: Path) -> None:
    c = Cache(cache)
    for task in preflight.META_TASKS:
        if task not in c.labels:
            assert len(task_targets(c, task, list(range(len(c)))).indices) > 0, task


def test_a_supervised_objective_task_is_checked_against_the_pretraining_split(cache: Path) -> None:
    raw = _raw(cache)
    raw["ssl"] = {"kind": "supervised", "task": "rythm"}
    with pytest.raises(RecipeError) as exc:
        preflight.check(Recipe.model_validate(raw), "r.toml", Cache(cache))
    [line] = str(exc.value).splitlines()
    assert line.startswith("r.toml: ssl.task: 'rythm' is not a label set of") and "did you mean 'rhythm'?" in line
    raw["ssl"]["task"] = "rhythm"
    raw["data"]["splits"]["nobody"] = {"fold": [99]}
    raw["data"]["pretrain_split"] = "nobody"
    with pytest.raises(RecipeError, match="^r.toml: data.pretrain_split: task 'rhythm' has no labelled record"):
        preflight.check(Recipe.model_validate(raw), "r.toml", Cache(cache))


def test_an_evaluation_cache_that_is_absent_fails_a_run_and_is_a_note_for_validate(cache: Path, tmp_path: Path) -> None:
    recipe = _recipe(cache, 1, cache=str(tmp_path / "other.h5"))
    with pytest.raises(RecipeError) as exc:
        preflight.check(recipe, "r.toml", Cache(cache))
    [line] = str(exc.value).splitlines()
    assert line.startswith(f"r.toml: eval[1].cache: {tmp_path / 'other.h5'}: no such cache file")
    notes = preflight.check(recipe, "r.toml", Cache(cache), strict=False).notes
    assert notes == [f"eval[1].cache: {tmp_path / 'other.h5'} not built yet: its tasks and leakage not checked "
                     "(run checks them)"]
    shutil.copy(cache, tmp_path / "other.h5")  # built: its tasks are checked too
    with pytest.raises(RecipeError, match=r"eval\[1\].task: 'rhythmm' is not a label set of .*other.h5"):
        preflight.check(recipe.model_copy(update={"eval": [recipe.eval[0], recipe.eval[1].model_copy(
            update={"task": "rhythmm"})]}), "r.toml", Cache(cache))


def test_identification_zero_shot_names_no_training_split() -> None:
    from ecgforge.evaluation import PROTOCOLS

    cfg = PROTOCOLS.config("identification")
    assert preflight.split_fields(cfg(mode="zero_shot", split="ptbxl")) == {"split": "ptbxl"}
    assert preflight.split_fields(cfg(mode="arcface", split="a", train_split="b")) == {"split": "a", "train_split": "b"}


# --------------------------------------------------------------------------- a misnamed component class

_PLUGIN = '''
from typing import Literal
from pydantic import BaseModel
from torch import nn

class {config_name}(BaseModel, extra="forbid", frozen=True):
    kind: Literal["{declared}"] = "{declared}"

class Flip(nn.Module):
    {config_line}

    def __init__(self, cfg, ctx):
        super().__init__()
'''


@pytest.mark.parametrize(("command", "config_name", "config_line", "declared", "says"), [
    ("validate", "FlipCfg", "pass", "flip",  # neither `Config =` nor the <Name>Config that the transition finds
     "badplug:Flip: a registered class names its config as a class attribute `Config = <Name>Config` (a "
     "pydantic model with a kind field), and is built as cls(cfg, ctx); see CONTRIBUTING.md"),
    ("run", "FlipConfig", "Config = FlipConfig", "flipp", "badplug:Flip: FlipConfig.kind must default to 'flip', the name it is "
     "registered under (found 'flipp')"),
])
def test_a_misnamed_component_class_is_one_line_naming_it(cache: Path, tmp_path: Path, command: str, config_name: str,
                                                           config_line: str, declared: str, says: str) -> None:
    """A package registers an augmentation against the convention: every recipe is refused in one line that
    names the class, not with a traceback from the schema's import (a real process: entry points are read once)."""
    (tmp_path / "badplug.py").write_text(_PLUGIN.format(config_name=config_name, config_line=config_line,
                                                                declared=declared))
    dist = tmp_path / "badplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: badplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ecgforge.components]\naugment.flip = badplug:Flip\n")
    recipe = _write(tmp_path, _raw(cache))
    argv = [sys.executable, "-m", "ecgforge", command, str(recipe)]
    if command == "run":
        argv += ["--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "COLUMNS": "80"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {recipe}: {says}"), lines
    assert not (tmp_path / "run").exists()


def test_results_keep_the_allowed_overlap_lines(cache: Path) -> None:
    raw = _raw(cache, pretrain_split="all", allow_overlap=["pretrain", "test"], allow_overlap_reason="why")
    raw["data"]["splits"]["all"] = {}
    checked = preflight.check(Recipe.model_validate(raw), "r.toml", Cache(cache))
    assert checked.allowed_overlap is not None and checked.allowed_overlap["reason"] == "why"
    assert json.dumps(checked.allowed_overlap)  # as results.json stores it


def test_a_monitor_subset_of_one_class_is_refused_before_training(cache: Path, tmp_path: Path) -> None:
    """``[train.monitor]`` on the sex of women only: its probe would score a constant, so the run is refused in
    one line at ``train.monitor`` (drawn as the run draws it, `train.monitor.draw_positions`); on folds with men
    and women, it passes."""
    raw = _raw(cache)
    raw["data"]["splits"]["women"] = {"fold": [4, 5]}
    raw["train"]["monitor"] = {"every_steps": 1, "task": "sex", "split": "women", "n_records": 200}
    recipe, run_dir = _write(tmp_path, raw), tmp_path / "run"
    [line] = _errors(cli.invoke(app, ["run", str(recipe), "--out", str(run_dir)]))
    assert line.startswith(f"error: {recipe}: train.monitor: task 'sex' on split 'women': the probe-train part at "
                           "label fraction 1 holds F "), line
    assert "a probe learns nothing from one class" in line
    _nothing_trained(run_dir)
    raw["data"]["splits"]["women"] = {"fold": [1, 2, 3, 4, 5, 6, 7, 8]}  # men too, in both parts
    res = cli.invoke(app, ["validate", str(_write(tmp_path, raw))])
    assert res.exit_code == 0, res.output
