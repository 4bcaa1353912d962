"""The runner in this process: same seed -> same weights, bf16 autocast on CPU, optional TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from ecgforge.app.run import Run as Runner
from ecgforge.errors import UserError
from ecgforge.recipe import Recipe
from ecgforge.train.optim import make_schedule
from tests.train.conftest import recipe_dict


def run(recipe: dict[str, Any], out: Path) -> dict[str, torch.Tensor]:
    """One run in this process; returns the saved encoder weights."""
    Runner(Recipe.model_validate(recipe), out).run()
    return load_file(str(out / "encoder.safetensors"))


@pytest.mark.slow
def test_same_seed_gives_same_weights_and_another_seed_does_not(tiny_cache: Path, tmp_path: Path) -> None:
    r = recipe_dict(tiny_cache, max_steps=4)
    a, b = run(r, tmp_path / "a"), run(r, tmp_path / "b")
    c = run({**r, "seed": 8}, tmp_path / "c")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "same recipe and seed, different weights"
    assert not all(torch.equal(a[k], c[k]) for k in a), "the seed changes nothing"
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all(0 <= row["data_wait_frac"] <= 1 and row["samples_per_s"] > 0 for row in rows)
    env = json.loads((tmp_path / "a" / "env.json").read_text())
    assert env["world_size"] == 1 and env["device"] == "cpu" and env["precision"] == "no" and env["torch"]


def test_bf16_autocast_runs_on_cpu(tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dtypes: set[torch.dtype] = set()
    conv1d = torch.nn.functional.conv1d

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = conv1d(*args, **kwargs)
        if torch.is_grad_enabled():  # training forward passes, not the evaluation below
            dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "conv1d", spy)
    weights = run(recipe_dict(tiny_cache, max_steps=2, precision="bf16"), tmp_path / "bf16")
    assert torch.bfloat16 in dtypes, f"convolutions ran in {dtypes}, not under bf16 autocast"
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())  # master weights
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)


def test_tensorboard_without_the_package_is_a_one_line_error(tiny_cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import ecgforge.train.loop as runner

    monkeypatch.setattr(runner, "is_tensorboard_available", lambda: False)
    with pytest.raises(UserError, match=r"train\.tensorboard.*pip install 'ecgforge\[tensorboard\]'") as err:
        Runner(Recipe.model_validate(recipe_dict(tiny_cache, tensorboard=True)), tmp_path / "tb")
    assert "\n" not in str(err.value)


def test_schedule_warms_up_then_follows_a_cosine_to_the_floor() -> None:
    from ecgforge.recipe import ScheduleConfig

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_schedule(ScheduleConfig(kind="cosine", warmup_steps=4, min_lr_ratio=0.1), opt, total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half way down
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False)) and lrs[-1] > 0.1
