"""The runner in this process: same seed -> same weights, bf16 autocast on CPU, experiment trackers."""

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


def test_tracker_without_its_package_is_a_one_line_error(tiny_cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import ecgforge.train.loop as runner

    monkeypatch.setattr(runner, "is_tensorboard_available", lambda: False)
    with pytest.raises(UserError, match=r"train\.trackers: 'tensorboard'.*pip install 'ecgforge\[tensorboard\]'") as err:
        Runner(Recipe.model_validate(recipe_dict(tiny_cache, trackers=["tensorboard"])), tmp_path / "tb")
    assert "\n" not in str(err.value)


def test_tensorboard_true_is_read_as_the_tensorboard_tracker(tiny_cache: Path) -> None:
    r = Recipe.model_validate(recipe_dict(tiny_cache, tensorboard=True))
    assert r.train.trackers == ["tensorboard"]
    assert Recipe.model_validate(recipe_dict(tiny_cache, tensorboard=False)).train.trackers == []
    both = Recipe.model_validate(recipe_dict(tiny_cache, tensorboard=True, trackers=["mlflow", "tensorboard"]))
    assert both.train.trackers == ["mlflow", "tensorboard"]
    with pytest.raises(ValueError, match="names a tracker twice"):
        Recipe.model_validate(recipe_dict(tiny_cache, trackers=["mlflow", "mlflow"]))


def _tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((run_dir / "tb").rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event files under {run_dir / 'tb'}"
    out: dict[str, list[tuple[int, float]]] = {}
    for f in events:
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_tensorboard_tracker_logs_the_losses_and_the_recipe(tiny_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra: pip install 'ecgforge[tensorboard]'")
    run(recipe_dict(tiny_cache, max_steps=3, trackers=["tensorboard"]), tmp_path / "tbrun")
    scalars = _tb_scalars(tmp_path / "tbrun")
    rows = [json.loads(x) for x in (tmp_path / "tbrun" / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["loss"]] == pytest.approx([row["loss"] for row in rows], rel=1e-6)
    assert "lr/encoder" in scalars
    hparams = next((tmp_path / "tbrun" / "tb").rglob("hparams.yml")).read_text()
    assert "train.batch_size: 4" in hparams and "ssl.kind: simclr" in hparams  # the resolved recipe as config


def test_mlflow_tracker_logs_to_a_local_store_in_the_run(tiny_cache: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is an optional extra: pip install 'ecgforge[mlflow]'")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run(recipe_dict(tiny_cache, max_steps=2, trackers=["mlflow"]), tmp_path / "mlrun")
    store = f"sqlite:///{(tmp_path / 'mlrun' / 'mlflow.db').resolve()}"  # offline: a file in the run directory
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (found,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert found.info.run_name == "mlrun" and found.info.status == "FINISHED"
    assert found.data.params["train.batch_size"] == "4" and found.data.params["seed"] == "7"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "loss")] == [1, 2]


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
