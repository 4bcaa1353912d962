"""Issue 14's "done when": results.json of the quickstart recipe carries ``versus.random`` (delta, ci95, p_value for
every metric) on every pretrained row and ``n_val_records`` on every row. The recipe runs as shipped, its
[[eval]] tables untouched, shrunk only in size (cache, encoder width, steps, bootstrap resamples, probe epochs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomli_w

from ecgforge.app.recipes import load_run_recipe
from ecgforge.app.run import Run
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_spec import CacheRecipe

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
pytestmark = pytest.mark.slow  # a whole run (2 pretraining steps + the probe), end to end


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("quickstart")
    raw = {"name": "synthetic-100hz", "out": str(root / "synthetic.h5"),
           "source": {"kind": "synthetic", "path": str(root / "wfdb"), "n_patients": 30, "records_per_patient": 2,
                      "seed": 0},
           "signal": {"fs_hz": 100.0}}
    (root / "synthetic.toml").write_text(tomli_w.dumps(raw))
    build_cache(CacheRecipe.model_validate(raw), workers=1)
    recipe = load_run_recipe(QUICKSTART, [
        f'data.cache="{root / "synthetic.h5"}"', f'data.build="{root / "synthetic.toml"}"',
        "model.encoder.width=8", "train.max_steps=2", "train.batch_size=8", "train.log_every_steps=1",
        "eval.0.bootstrap=30", "eval.0.epochs=3",
    ])
    out = root / "run"
    Run(recipe, out).run()
    return {**json.loads((out / "results.json").read_text()), "run_dir": str(out)}


def test_every_pretrained_row_carries_versus_random(results: dict) -> None:
    rows = results["eval"]
    pre = [r for r in rows if r["init"] == "pretrained"]
    # quickstart: one linear_probe table, label fractions 0.1 and 1.0, seed 0, inits pretrained and random
    assert len(pre) == 2 and {r["label_fraction"] for r in pre} == {0.1, 1.0}
    for r in pre:
        v = r["versus"]["random"]
        assert set(v) == {"delta", "ci95", "p_value"}
        for metric, value in r["metrics"].items():
            ref = next(o for o in rows if o["init"] == "random" and o["label_fraction"] == r["label_fraction"])
            if math.isfinite(value) and math.isfinite(ref["metrics"][metric]):
                assert v["delta"][metric] == pytest.approx(value - ref["metrics"][metric])
            lo, hi = v["ci95"][metric]
            assert lo <= hi and 0.0 < v["p_value"][metric] <= 1.0


def test_every_row_carries_n_val_records(results: dict) -> None:
    rows = results["eval"]
    assert rows and all(isinstance(r["n_val_records"], int) and r["n_val_records"] > 0 for r in rows)
    full = max(r["n_val_records"] for r in rows)
    # subsample_val (the default): 10 % of the labels selects on fewer validation records than 100 %
    assert all(r["n_val_records"] < full for r in rows if r["label_fraction"] == 0.1)


def test_the_run_keeps_the_test_scores_of_every_row(results: dict) -> None:
    """Issue 26: `ecgforge run` keeps what `ecgforge report A B` pairs on, named in results.json."""
    assert results["scores"]["files"] == ["eval_0.npz"] and len(results["scores"]["id"]) == 32


def test_the_quickstart_monitor_logs_probe_scores_with_a_random_reference(results: dict) -> None:
    """The online monitor is on in the quickstart: k-NN scores at two or more steps (step 0 and the last, here
    2), the random-init reference at step 0, and the report draws them (plots/training.png)."""
    run = Path(results["run_dir"])
    rows = [json.loads(x) for x in (run / "metrics" / "train.jsonl").read_text().splitlines()]
    key = "monitor/knn/rhythm/macro_auroc"
    steps = [r["step"] for r in rows if key in r]
    assert len(steps) >= 2 and steps[0] == 0 and steps[-1] == 2
    assert all(0.0 <= r[key] <= 1.0 for r in rows if key in r)
    assert 0.0 <= next(r for r in rows if r["step"] == 0 and key in r)[f"{key}/random"] <= 1.0
    assert (run / "plots" / "training.png").stat().st_size > 10_000
