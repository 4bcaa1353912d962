"""The quickstart as shipped (issues 14 and 28): ``ecgforge run recipes/quickstart.toml`` in a fresh directory, once
per session of this module. Its results.json carries ``versus.random`` on every pretrained row and
``n_val_records`` on every row; the pretrained encoder is ahead of random at every label fraction and seed, with
the paired interval (averaged over the seeds, as the score card and the console average it) above 0; the
console ends with that sentence; ``ecgforge report`` accepts the one run.

Marked ``slow``: the whole recipe (cache of 800 records, 150 pretraining steps, 6 probes), about a minute and a
half of CPU. The soak test at the end (marker ``soak``, nox ``smoke``) runs it twice more: beside a CPU-bound
process, and SIGKILLed mid-pretraining then resumed; both must give the same metrics.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgforge.cli import app

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
FRACTIONS = tomllib.loads(QUICKSTART.read_text())["eval"][0]["label_fractions"]
SEEDS = tomllib.loads(QUICKSTART.read_text())["eval"][0]["seeds"]


def fresh_directory(root: Path) -> Path:
    """A directory holding this checkout's recipes, where the quickstart builds its own cache and run."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "recipes", root / "recipes")
    return root


def quickstart_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecgforge", "run", "recipes/quickstart.toml", *args]


def quickstart_env() -> dict[str, str]:
    """This checkout's ecgforge, one thread (as the numbers in the recipe and README were measured), wide lines."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def run_quickstart(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(quickstart_cmd(*args), cwd=cwd, env=quickstart_env(), capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The run directory of the shipped quickstart, and its process (stdout, stderr)."""
    root = fresh_directory(tmp_path_factory.mktemp("quickstart") / "fresh")
    proc = run_quickstart(root)
    return root / "runs" / "quickstart", proc


@pytest.fixture(scope="module")
def results(quickstart: tuple[Path, subprocess.CompletedProcess]) -> dict:
    return json.loads((quickstart[0] / "results.json").read_text())


def pretrained(results: dict) -> list[dict]:
    return [r for r in results["eval"] if r["init"] == "pretrained"]


@pytest.mark.slow
def test_every_pretrained_row_carries_versus_random(results: dict) -> None:
    rows = results["eval"]
    pre = pretrained(results)
    # one linear_probe table, inits pretrained and random
    assert sorted((r["label_fraction"], r["seed"]) for r in pre) == sorted((f, s) for f in FRACTIONS for s in SEEDS)
    for r in pre:
        v = r["versus"]["random"]
        assert set(v) == {"delta", "ci95", "p_value"}
        ref = next(o for o in rows if o["init"] == "random" and o["label_fraction"] == r["label_fraction"]
                   and o["seed"] == r["seed"])
        for metric, value in r["metrics"].items():
            if math.isfinite(value) and math.isfinite(ref["metrics"][metric]):
                assert v["delta"][metric] == pytest.approx(value - ref["metrics"][metric])
            lo, hi = v["ci95"][metric]
            assert lo <= hi and 0.0 < v["p_value"][metric] <= 1.0


@pytest.mark.slow
def test_every_row_carries_n_val_records(results: dict) -> None:
    rows = results["eval"]
    assert rows and all(isinstance(r["n_val_records"], int) and r["n_val_records"] > 0 for r in rows)
    full = max(r["n_val_records"] for r in rows)
    # subsample_val (the default): a fraction of the labels selects on fewer validation records than 100 %
    assert all(r["n_val_records"] < full for r in rows if r["label_fraction"] < 1.0)


def over_seeds(results: dict) -> dict[float, tuple[float, float, float]]:
    """Label fraction -> the pretrained rows' paired difference to random in macro AUROC: (delta, lo, hi), each
    the mean over the seeds."""
    out = {}
    for f in FRACTIONS:
        vs = [r["versus"]["random"] for r in pretrained(results) if r["label_fraction"] == f]
        out[f] = tuple(float(np.mean(x)) for x in zip(*[(v["delta"]["macro_auroc"], *v["ci95"]["macro_auroc"])
                                                         for v in vs], strict=True))
    return out


@pytest.mark.slow
def test_pretraining_is_ahead_of_random_at_every_fraction(results: dict) -> None:
    """The point of the quickstart: its pretrained encoder beats a random one, the paired interval above 0."""
    assert results["pretraining"] == {**results["pretraining"], "steps": 150, "max_steps": 150, "stopped_by": None}
    for r in pretrained(results):
        assert r["versus"]["random"]["delta"]["macro_auroc"] > 0, (r["label_fraction"], r["seed"])
        assert r["n_test_records"] == 240
    for f, (delta, lo, hi) in over_seeds(results).items():
        assert delta > 0 and lo > 0, (f, delta, lo, hi)


@pytest.mark.slow
def test_the_console_ends_with_what_pretraining_bought(quickstart: tuple[Path, subprocess.CompletedProcess],
                                                       results: dict) -> None:
    _, proc = quickstart
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    claim, how = lines[-2], lines[-1]
    (f0, (d, lo, hi)), *rest = over_seeds(results).items()
    assert claim.startswith(f"Pretraining bought {d:+.3f} macro AUROC over a random encoder at {f0 * 100:g} % of the "
                            f"labels (95 % CI {lo:+.3f} to {hi:+.3f})"), claim
    assert all(f" {dd:+.3f} at {f * 100:g} % ({ll:+.3f} to {hh:+.3f})" in claim for f, (dd, ll, hh) in rest), claim
    assert how.startswith(f"linear_probe on rhythm, 240 test records, {len(SEEDS)} seeds, means over seeds; the "
                          "intervals are paired"), how


@pytest.mark.slow
def test_report_of_the_one_run(quickstart: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    run_dir, _ = quickstart
    res = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    assert "nothing to compare" in res.stdout
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Score card" in md and "| rhythm |" in md
    assert {"scorecard.png", "label_efficiency_linear_probe_macro_auroc.png"} <= {p.name for p in (tmp_path / "report").glob("*.png")}


@pytest.mark.slow
def test_the_run_keeps_the_test_scores_of_every_row(results: dict) -> None:
    """Issue 26: `ecgforge run` keeps what `ecgforge report A B` pairs on, named in results.json."""
    assert results["scores"]["files"] == ["eval_0.npz"] and results["scores"]["id"]


@pytest.mark.slow
def test_the_quickstart_monitor_logs_probe_scores_with_a_random_reference(
        quickstart: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Issue 29: the online monitor is on in the quickstart: k-NN scores at two or more steps (step 0 to the last),
    the random-init reference at step 0, and the report draws them (plots/training.png)."""
    run_dir, _ = quickstart
    rows = [json.loads(x) for x in (run_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    key = "monitor/knn/rhythm/macro_auroc"
    steps = [r["step"] for r in rows if key in r]
    assert len(steps) >= 2 and steps[0] == 0 and steps[-1] == 150
    assert all(0.0 <= r[key] <= 1.0 for r in rows if key in r)
    assert 0.0 <= next(r for r in rows if r["step"] == 0 and key in r)[f"{key}/random"] <= 1.0
    assert (run_dir / "plots" / "training.png").stat().st_size > 10_000


def metrics(results: dict) -> list[tuple]:
    """What must be identical between two runs: every row's metrics, intervals and paired comparison."""
    return [(r["init"], r["label_fraction"], r["metrics"], r["ci95"], r.get("versus")) for r in results["eval"]]


@pytest.mark.soak
def test_identical_beside_a_cpu_bound_process_and_after_sigkill_and_resume(
        quickstart: tuple[Path, subprocess.CompletedProcess], results: dict, tmp_path: Path) -> None:
    """Issue 28's "done when": no time budget, so neither the machine's load nor an interruption changes a result."""
    root = fresh_directory(tmp_path / "fresh")
    shutil.copytree(quickstart[0].parent.parent / "cache", root / "cache")  # the same cache: built once is enough
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run_quickstart(root, "--out", "runs/loaded")
    finally:
        busy.kill()
        busy.wait()
    assert metrics(json.loads((root / "runs" / "loaded" / "results.json").read_text())) == metrics(results)

    out = root / "runs" / "killed"
    proc = subprocess.Popen(quickstart_cmd("--out", str(out)), cwd=root, env=quickstart_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, deadline = out / "metrics" / "train.jsonl", time.monotonic() + 3600
    while proc.poll() is None and time.monotonic() < deadline:  # past the step-50 checkpoint, mid-epoch
        if log.exists() and any(json.loads(x)["step"] >= 60 for x in log.read_text().splitlines() if x.endswith("}")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    resumed = run_quickstart(root, "--out", str(out), "--resume")
    assert "resume from step_50" in resumed.stderr or "resume from step_75" in resumed.stderr, resumed.stderr[-2000:]
    assert metrics(json.loads((out / "results.json").read_text())) == metrics(results)
