"""Runs whose training subsets or test splits lack a class (evaluation/training_classes.py): the protocols refuse
what the pre-flight refuses, from the same draws; a row that leaves classes out of its macro AUROC says which and
why in results.json and is marked in the results table, the run's warnings and the report; a run whose splits
hold every class writes the rows it wrote before."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from ecgforge.app import preflight
from ecgforge.cli import app
from ecgforge.config_files import RecipeError
from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.leads import CANONICAL_LEADS
from ecgforge.errors import UserError
from ecgforge.evaluation import PROTOCOLS
from ecgforge.evaluation.context import EvalContext
from ecgforge.evaluation.rows import EXCLUDED_LEGEND, EXCLUDED_MARK
from ecgforge.recipe import Recipe
from ecgforge.registry import build
from ecgforge.rundir import RunDir
from tests.app.test_preflight import WOMEN, WOMEN_LINE, _raw, _splits, _write
from tests.test_encoder_files import make_cache

cli = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pre-flight tests' cache: 20 patients x 2 records, folds 1-10 (fold 5 and 6 hold no afib, fold 9 no
    sinus rhythm, folds 4 and 5 women only)."""
    return make_cache(tmp_path_factory.mktemp("excluded"), "syn")


def _context(cache: Path, splits: dict) -> EvalContext:
    def no_encoder(init: str, seed: int) -> torch.nn.Module:
        raise AssertionError("an encoder was asked for: something was about to be embedded or trained")

    return EvalContext(cache=Cache(cache), splits=splits, window=250, stride=250, make_encoder=no_encoder,
                       device=torch.device("cpu"))


def test_a_protocol_refuses_what_the_preflight_refuses_from_the_same_draws(cache: Path) -> None:
    """Run without the pre-flight (the library, not the CLI): the protocol refuses the same draw, counts and all,
    before it asks for an encoder."""
    splits = {**_splits(), "women": {"fold": [4, 5]}}
    for kind in ("finetune", "knn"):
        cfg = PROTOCOLS.config(kind)(**{**WOMEN, "kind": kind})
        with pytest.raises(UserError) as exc:
            build(PROTOCOLS, cfg).run(_context(cache, splits))
        assert str(exc.value) == WOMEN_LINE.split(": ", 1)[1].replace("finetune", kind)


def _dx_cache(root: Path) -> Path:
    """An arrays cache whose multilabel set ``dx`` has A on every record and B only on patient 0 (fold 1 holds
    patients 0-9, two records each; fold 2 patients 10 and 11)."""
    rng = np.random.default_rng(0)
    n = 24
    np.save(root / "x.npy", rng.normal(0, 0.4, (n, 12, 1500)).round(3).astype(np.float32))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rec", "pid", "fold", "dx"])
        for i in range(n):
            w.writerow([i, f"p{i // 2}", 1 if i < 20 else 2, "A;B" if i < 2 or i == 20 else "A"])
    spec = CacheRecipe.model_validate({
        "name": "dx", "out": str(root / "dx.h5"), "signal": {"fs_hz": 100},
        "source": {"kind": "arrays", "path": str(root / "x.npy"), "fs_hz": 500, "leads": list(CANONICAL_LEADS),
                   "units": "mV", "labels_csv": str(root / "labels.csv"), "id_column": "rec", "patient_column": "pid",
                   "fold_column": "fold", "label_sets": {"dx": "dx"}}})
    return build_cache(spec, workers=1).path


def test_a_label_fraction_that_teaches_nothing_is_named_at_label_fractions(tmp_path: Path) -> None:
    """The whole train split teaches B; at 1 % the draw is patient 0 alone, where A and B are on every record."""
    path = _dx_cache(tmp_path)
    raw = _raw(path)
    raw["data"]["splits"] = {"train": {"fold": [1]}, "val": {"fold": [1]}, "test": {"fold": [2]}}
    raw["data"]["pretrain_split"] = "val"
    raw["eval"] = [{"kind": "knn", "task": "dx", "label_fractions": [1.0, 0.01], "bootstrap": 0}]
    recipe = Recipe.model_validate(raw)
    with pytest.raises(RecipeError) as exc:
        preflight.check(recipe, "r.toml", Cache(path))
    assert str(exc.value) == (
        "r.toml: eval[0].label_fractions: knn task 'dx': the training subset of split 'train' at label fraction "
        "0.01, seed 0 has no class with both positive and negative records (positives: A 2, B 2 of 2 records; 1 of 2 "
        "label fraction x seed draws alike); a head can learn nothing from it: raise the label fraction")
    raw["eval"][0]["label_fractions"] = [1.0]
    preflight.check(Recipe.model_validate(raw), "r.toml", Cache(path))


def _run(tmp_path: Path, cache: Path, splits: dict, tables: list[dict]) -> tuple[Path, dict, str]:
    """`ecgforge run` (no pretraining) of ``tables`` on ``cache``: ``(run_dir, results.json, what it printed)``."""
    raw = _raw(cache)
    del raw["ssl"]
    raw["data"]["splits"] = splits
    raw["eval"] = tables
    run_dir = tmp_path / "run"
    res = cli.invoke(app, ["run", str(_write(tmp_path, raw)), "--out", str(run_dir)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return run_dir, json.loads((run_dir / "results.json").read_text()), res.output


def _stored(run_dir: Path) -> list[tuple[dict, dict]]:
    """Each results.json row with the test targets and scores its metrics were computed from."""
    return [(s.row.to_json(), dict(s.evidence.data)) for s in RunDir(run_dir).read_scores() or []]


def test_a_row_leaving_classes_out_names_them_and_is_marked(cache: Path, tmp_path: Path) -> None:
    """Folds 5 and 6 hold no afib: the multilabel k-NN and the fine-tune leave it out; fold 9 holds no sinus rhythm
    either, so the multiclass probe tested there leaves out both, each with its reason."""
    splits = {"train": {"fold": [5, 6]}, "val": {"fold": [7, 8]}, "test": {"fold": [9, 10]}, "test9": {"fold": [9]}}
    tables = [{"kind": "knn", "task": "rhythm", "task_type": "multilabel", "k": 3, "bootstrap": 20},
              {"kind": "linear_probe", "task": "rhythm", "test_split": "test9", "epochs": 2, "bootstrap": 0},
              {"kind": "finetune", "task": "rhythm", "inits": ["pretrained"], "head_epochs": 0, "steps": 2,
               "bootstrap": 0}]
    run_dir, results, printed = _run(tmp_path, cache, splits, tables)
    stored = _stored(run_dir)
    assert len(stored) == len(results["eval"]) == 5
    for row, data in stored:
        names = data["names"]
        if row["kind"] == "finetune":
            assert row["excluded_classes"] == {"without_training_positives": ["afib"]}
            expected = np.mean([roc_auc_score(data["y"] == names.index(c), data["scores"][:, names.index(c)])
                                for c in ("sinus", "brady", "tachy")])
        elif row["kind"] == "knn":
            assert row["excluded_classes"] == {"without_training_positives": ["afib"]}
            assert row["dropped_classes"] == ["afib"]
            kept = [names.index(c) for c in ("sinus", "brady", "tachy")]
            expected = roc_auc_score(data["y"][:, kept], data["scores"][:, kept], average="macro")
        else:
            assert row["excluded_classes"] == {"without_training_positives": ["afib"], "undefined_in_test": ["sinus"]}
            assert row["dropped_classes"] == ["sinus", "afib"]
            expected = np.mean([roc_auc_score(data["y"] == names.index(c), data["scores"][:, names.index(c)])
                                for c in ("brady", "tachy")])
        assert row["metrics"]["macro_auroc"] == pytest.approx(expected)
    assert results["warnings"] == [
        f"eval [0] knn rhythm: macro_auroc leaves classes out in 2 of 2 rows (without training positives: afib); "
        f"those rows are marked {EXCLUDED_MARK} and their excluded_classes in results.json say which",
        f"eval [1] linear_probe rhythm: macro_auroc leaves classes out in 2 of 2 rows (without training positives: "
        f"afib; undefined in test: sinus); those rows are marked {EXCLUDED_MARK} and their excluded_classes in "
        "results.json say which",
        f"eval [2] finetune rhythm: macro_auroc leaves classes out in 1 of 1 rows (without training positives: "
        f"afib); those rows are marked {EXCLUDED_MARK} and their excluded_classes in results.json say which"]
    table = [ln for ln in printed.splitlines() if ln.startswith("│")]
    assert len(table) == 5 and all(f"{EXCLUDED_MARK} │" in ln for ln in table), printed
    assert " ".join(EXCLUDED_LEGEND.split()) in " ".join(printed.split())
    res = cli.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert EXCLUDED_LEGEND in report and report.count(f"{EXCLUDED_MARK} ± ") == 5
    card = report[report.index("## Score card"):]
    card = card[:card.index("\n## ")] if "\n## " in card else card
    marked_cells = [ln for ln in card.splitlines() if ln.startswith("| ") and EXCLUDED_MARK in ln]
    assert len(marked_cells) == 3 and EXCLUDED_LEGEND in card  # the card's pretrained cells: knn, probe, finetune


def test_a_run_whose_splits_hold_every_class_is_unchanged(cache: Path, tmp_path: Path) -> None:
    """Train folds 1-6 and test folds 9-10 hold every rhythm: nothing is left out, nothing marked or warned, and
    the macro AUROC is scikit-learn's over every class of the stored scores."""
    tables = [{"kind": "knn", "task": "rhythm", "task_type": "multilabel", "k": 3, "label_fractions": [0.5, 1.0],
               "bootstrap": 20},
              {"kind": "linear_probe", "task": "rhythm", "epochs": 2, "bootstrap": 20}]
    run_dir, results, printed = _run(tmp_path, cache, _splits(), tables)
    stored = _stored(run_dir)
    assert len(stored) == len(results["eval"]) == 6
    for row, data in stored:
        assert "excluded_classes" not in row and row["dropped_classes"] == [] and "exclude" not in data
        y = data["y"] if row["task_type"] == "multilabel" else np.eye(4)[data["y"]]
        assert row["metrics"]["macro_auroc"] == pytest.approx(roc_auc_score(y, data["scores"], average="macro"))
    assert not [w for w in results["warnings"] if "macro_auroc" in w]
    assert EXCLUDED_MARK not in printed
