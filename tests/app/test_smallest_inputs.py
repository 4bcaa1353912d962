"""Every command accepts the smallest input it can get (issue 28): one run, one seed, one label fraction, and an
evaluation whose test split holds one class (its AUROC undefined: shown as such, not a crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.train.conftest import recipe_dict, write_recipe, write_tiny_cache

runner = CliRunner()


@pytest.mark.slow
def test_one_class_in_the_test_split_one_seed_one_fraction_one_run(tmp_path: Path) -> None:
    from ecgforge.cli import app

    raw = recipe_dict(write_tiny_cache(tmp_path), eval_=True, max_steps=1)
    raw["data"]["splits"]["test"] = {"record_id": ["r20", "r22"]}  # both label A
    raw["eval"][0].update(inits=["pretrained", "random"], label_fractions=[1.0], seeds=[0], bootstrap=20)
    recipe, run_dir = write_recipe(tmp_path / "one.toml", raw), tmp_path / "run"
    res = runner.invoke(app, ["run", str(recipe), "--out", str(run_dir)])
    assert res.exit_code == 0, res.output
    rows = json.loads((run_dir / "results.json").read_text())["eval"]
    assert [(r["init"], r["label_fraction"], r["seed"]) for r in rows] == [("pretrained", 1.0, 0), ("random", 1.0, 0)]
    assert all(r["metrics"]["macro_auroc"] is None and r["dropped_classes"] == ["A", "B"] for r in rows)
    assert "Pretraining bought" not in res.stdout  # no claim on an undefined metric
    for args in (["eval", str(run_dir)], ["report", str(run_dir)], ["export", str(run_dir), "--out", str(tmp_path / "x")],
                 ["embed", str(tmp_path / "x"), "--cache", raw["data"]["cache"], "--out", str(tmp_path / "e.h5")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
    assert (run_dir / "report" / "report.md").is_file()
