"""The online monitor (``[train.monitor]``): probe scores at step 0, every N steps and the last, with a random-init
reference at step 0; and it never changes the training: the weights are bit-identical with it on or off, also
across a kill and resume."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ecgforge.app.run import Run
from ecgforge.recipe import Recipe
from ecgforge.train.monitor import rng_preserved
from tests.train.conftest import recipe_dict, run_cli, write_recipe
from tests.train.test_resume import interrupt_at

MONITOR = {"every_steps": 5, "task": "label", "probes": ["knn", "linear"], "split": "val", "n_records": 8,
           "test_frac": 0.5, "k": 3, "linear_epochs": 5,
           "label_fractions": [0.5, 1.0]}


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics" / "train.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "encoder.safetensors"))


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"weights differ: {differ[:5]}"


def test_rng_preserved_restores_every_global_generator() -> None:
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    with rng_preserved():
        torch.rand(5), np.random.rand(5), random.random()
        torch.manual_seed(99)
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_monitor_logs_probe_scores_and_leaves_the_weights_bit_identical(tiny_cache: Path, tmp_path: Path) -> None:
    off = recipe_dict(tiny_cache, epochs=3)  # 12 steps
    on = recipe_dict(tiny_cache, epochs=3)
    on["train"]["monitor"] = MONITOR
    Run(Recipe.model_validate(off), tmp_path / "off").run()
    Run(Recipe.model_validate(on), tmp_path / "on").run()
    _same_weights(tmp_path / "off", tmp_path / "on")
    timing = ("samples_per_s", "data_wait_frac", "elapsed_s")
    train_rows = [{k: v for k, v in r.items() if k not in timing} for r in _rows(tmp_path / "on") if "loss" in r]
    assert train_rows == [{k: v for k, v in r.items() if k not in timing} for r in _rows(tmp_path / "off")]
    mon = [r for r in _rows(tmp_path / "on") if "monitor/knn/label/macro_auroc" in r]
    assert [r["step"] for r in mon] == [0, 5, 10, 12]
    for probe in ("knn", "linear", "knn_0.5", "linear_0.5"):
        values = [r[f"monitor/{probe}/label/macro_auroc"] for r in mon]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert f"monitor/{probe}/label/macro_auroc/random" in mon[0]
    assert all(r["monitor/embed/std"] > 0 and r["monitor/embed/erank"] >= 1 for r in mon)  # the subset's statistics
    assert mon[0]["monitor/embed/erank/random"] >= 1
    assert not any(k.endswith("/random") for r in mon[1:] for k in r)
    assert not any(k.startswith("monitor/") for r in _rows(tmp_path / "off") for k in r)


@pytest.mark.slow
def test_kill_and_resume_with_the_monitor_on_is_bit_identical(tiny_cache: Path, tmp_path: Path) -> None:
    r = recipe_dict(tiny_cache)  # 12 steps, checkpoints at 3, 6, 9, 12
    r["train"]["monitor"] = {**MONITOR, "every_steps": 2}
    recipe = write_recipe(tmp_path / "r.toml", r)
    ref = run_cli("run", str(recipe), "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    off = recipe_dict(tiny_cache)
    plain = run_cli("run", str(write_recipe(tmp_path / "off.toml", off)), "--out", str(tmp_path / "off"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    _same_weights(tmp_path / "ref", tmp_path / "off")
    out = tmp_path / "run"
    killed = interrupt_at(recipe, out, step=7, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_cli("run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume from step_" in resumed.stderr
    _same_weights(tmp_path / "ref", out)
    strip = ("samples_per_s", "data_wait_frac", "elapsed_s", "monitor/seconds")
    rows = [{k: v for k, v in x.items() if k not in strip} for x in _rows(out)]
    assert rows == [{k: v for k, v in x.items() if k not in strip} for x in _rows(tmp_path / "ref")]


def test_a_misspelled_monitor_task_or_split_is_one_line_naming_the_field(tiny_cache: Path) -> None:
    from ecgforge.app import preflight
    from ecgforge.data.cache import Cache
    from ecgforge.errors import UserError

    r = recipe_dict(tiny_cache)
    r["train"]["monitor"] = {**MONITOR, "task": "lable"}
    with pytest.raises(UserError) as err:
        preflight.check(Recipe.model_validate(r), "r.toml", Cache(tiny_cache))
    assert "r.toml: train.monitor.task: 'lable' is not a label set" in str(err.value)
    r["train"]["monitor"] = {**MONITOR, "split": "vla"}
    with pytest.raises(ValueError, match="train.monitor.split 'vla' is not one of data.splits"):
        Recipe.model_validate(r)
