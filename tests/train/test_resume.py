"""Crash and resume: a run killed with SIGKILL (or stopped with Ctrl-C) mid-epoch and resumed with --resume
ends with the same encoder weights, train losses and evaluation as an uninterrupted run of the same seed,
bit for bit on CPU. That needs the RNG states of every process, the optimiser and schedule, the data-loader
position (epoch, batches consumed) and the partly written log window in each checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import ROOT, cli, env, losses, recipe_dict, run_cli, write_recipe

# 16 records, batches of 4: 4 steps per epoch, 3 epochs = 12 steps; checkpoints at steps 3, 6, 9, 12.


@pytest.fixture(scope="module")
def reference(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(d / "r.toml", recipe_dict(tiny_cache, eval_=True))
    proc = run_cli("run", str(recipe), "--out", str(d / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, d / "run"


def interrupt_at(recipe: Path, out: Path, step: int, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Start ``ecgforge run``, send ``sig`` once train.jsonl shows ``step``; returns the finished process."""
    proc = subprocess.Popen(cli("run", str(recipe), "--out", str(out)), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "metrics" / "train.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and any(json.loads(x)["step"] >= step for x in log.read_text().splitlines() if x.endswith("}")):
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "encoder.safetensors")), load_file(str(b / "encoder.safetensors"))
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"weights differ after resume: {differ[:5]}"
    assert losses(a) == losses(b)
    ea, eb = (json.loads((d / "results.json").read_text())["eval"] for d in (a, b))
    assert [row["metrics"] for row in ea] == [row["metrics"] for row in eb]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(reference: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, ref = reference
    out = tmp_path / "run"
    killed = interrupt_at(recipe, out, step=7, sig=signal.SIGKILL)  # epoch 1, after the step-6 checkpoint
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "results.json").exists()
    last = max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert 6 <= last < 12 and last % 4, f"checkpoint step {last} is not mid-epoch"
    resumed = run_cli("run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume from step_{last}" in resumed.stderr
    assert_same_run(ref, out)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes(reference: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, ref = reference
    out = tmp_path / "run"
    stopped = interrupt_at(recipe, out, step=4, sig=signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    assert [x for x in stopped.stderr.splitlines() if "interrupted" in x] and "--resume" in stopped.stderr
    saved = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    # The loop stops at the end of the step in progress and saves that step, whichever it was (the signal
    # lands a few steps after step 4 on a busy machine): the last checkpoint is the last logged step.
    assert saved and 4 <= saved[-1] < 12, saved
    assert saved[-1] == max(losses(out)), (saved, max(losses(out)))
    assert not (out / "results.json").exists()
    resumed = run_cli("run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(ref, out)


@pytest.mark.slow
def test_a_run_its_time_budget_stops_says_so_and_resumes_to_its_last_step(reference: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    """Issue 28: train.time_budget_s stops pretraining early: the console and results.json say at which step and
    why; --resume continues it to its step budget, ending as the run without a budget would."""
    recipe, ref = reference
    raw = recipe_dict(Path(json.loads((ref / "env.json").read_text())["cache"]), eval_=True)
    raw["train"]["time_budget_s"] = 0.001  # spent by the first step
    budgeted = write_recipe(tmp_path / "budget.toml", raw)
    out = tmp_path / "run"
    first = run_cli("run", str(budgeted), "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["pretraining"]["stopped_by"] == "time_budget_s"
    assert results["pretraining"]["steps"] == 1 and results["pretraining"]["max_steps"] == 12
    said = " ".join((first.stdout + first.stderr).split())  # rich may wrap the line
    assert "pretraining stopped at step 1 of 12: train.time_budget_s = 0.001 s ran out" in said
    assert "--resume` continues it to step 12" in said
    assert any("time_budget_s" in w for w in results["warnings"])
    resumed = run_cli("run", str(budgeted), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "it was stopped by train.time_budget_s; continuing to step 12" in " ".join(resumed.stderr.split())
    results = json.loads((out / "results.json").read_text())
    assert results["pretraining"]["stopped_by"] is None and results["pretraining"]["steps"] == 12
    assert not any("time_budget_s" in w for w in results.get("warnings", []))
    assert_same_run(ref, out)
