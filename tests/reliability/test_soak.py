"""Soak: one training run and one cache build, each SIGKILLed at 20 seeded random points and restarted every time.

Not in the default suite (marker ``soak``, deselected by ``addopts``; a few minutes on 2 CPU cores): the nox
``smoke`` session runs them (``pytest -m soak``).

- Training: the tiny run of ``tests/train`` lengthened to 60 steps (checkpoints every 3). Each point is drawn
  from a seeded ``random.Random``: a quarter at a random moment of start-up (interpreter, Accelerate, loading
  the last checkpoint; before the process first writes its metrics log), the rest at a random moment of a
  step 1 to 3 steps past the last logged one (inside a step, a log write or a checkpoint write). After every
  kill: only complete checkpoints, and ``--resume`` continues; after the 20th, ``--resume`` runs to the end,
  which must equal an uninterrupted run bit for bit (weights, every logged loss, the evaluation).
- Cache build: 270 real PTB-XL records (filtered, two readers), the whole process group SIGKILLed at a random
  moment of each attempt (from when its scratch files appear, up to 1.1 x the measured time from there to the
  rename; a kill after the rename leaves a complete cache, which the next attempt rebuilds); after the 20th, the same
  command runs to the end: byte for byte the uninterrupted build, no scratch file left.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.ledger import TRACEBACK, record
from tests.reliability.test_interruptions import build_cmd, run_and_kill, spec_file
from tests.train.conftest import ROOT, cli, env, recipe_dict, run_cli, write_recipe
from tests.train.test_resume import assert_same_run

pytestmark = pytest.mark.soak
SEED = 20261207
KILLS = 20
STEPS = 60  # 16 records in batches of 4: 4 steps per epoch, 15 epochs


def logged_step(out: Path) -> int:
    log = out / "metrics" / "train.jsonl"
    if not log.exists():
        return 0
    return max((json.loads(x)["step"] for x in log.read_text().splitlines() if x.endswith("}")), default=0)


def complete_checkpoints(out: Path) -> list[int]:
    """Steps of the checkpoints present; each must be complete (its progress.json is written last)."""
    steps = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert all((out / "checkpoints" / f"step_{s}" / "progress.json").is_file() for s in steps), steps
    return steps


def log_stamp(out: Path) -> tuple[int, int]:
    """(mtime, size) of the run's train.jsonl: changes when a process writes to it."""
    try:
        st = (out / "metrics" / "train.jsonl").stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def kill_run_at(cmd: list[str], out: Path, rng: random.Random, startup_s: float, step_s: float) -> tuple[str, int]:
    """Start ``cmd`` and SIGKILL it at a random point; (where the kill landed, exit status).

    The points are bounded by the run's own progress, not only by a clock (the machine's load varies): a start-up
    kill lands at a random moment before this process first writes its metrics log; a step kill at a random
    moment after step ``target`` is logged and before step ``target + 1`` is."""
    before = log_stamp(out)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if rng.random() < 0.25:
            where, until = "start-up", time.monotonic() + rng.uniform(0.0, startup_s)
            while time.monotonic() < until and log_stamp(out) == before and proc.poll() is None:
                time.sleep(0.002)
        else:
            target = min(logged_step(out) + rng.randint(1, 3), STEPS - 1)
            where = f"step {target}"
            deadline = time.monotonic() + 240
            while logged_step(out) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            until = time.monotonic() + rng.uniform(0.0, step_s)  # inside the next step, its log or checkpoint
            while time.monotonic() < until and logged_step(out) <= target and proc.poll() is None:
                time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert TRACEBACK not in stderr, stderr[-3000:]
    return where, proc.returncode


def timed_reference(recipe: Path, out: Path) -> tuple[float, float]:
    """Run ``recipe`` uninterrupted into ``out``: (seconds from launch to the first logged step, seconds per step)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cli("run", str(recipe), "--out", str(out)), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and logged_step(out) >= 1:
            first = time.monotonic() - t0
        time.sleep(0.01)
    _, stderr = proc.communicate()
    assert proc.returncode == 0 and first is not None, stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics" / "train.jsonl").read_text().splitlines()]
    return first, rows[-1]["elapsed_s"] / STEPS


def test_training_killed_at_20_random_points_ends_as_an_uninterrupted_run(tiny_cache: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.toml", recipe_dict(tiny_cache, eval_=True, epochs=STEPS // 4))
    startup_s, step_s = timed_reference(recipe, tmp_path / "ref")
    out = tmp_path / "run"
    rng = random.Random(SEED)
    landed: list[str] = []
    for k in range(KILLS):
        cmd = cli("run", str(recipe), "--out", str(out), *(["--resume"] if k else []))
        where, status = kill_run_at(cmd, out, rng, startup_s, step_s)
        ok = status == -signal.SIGKILL
        if (out / "checkpoints").exists():
            complete_checkpoints(out)
        ended = (out / "results.json").exists()  # killed after the run's end: not a kill inside the run
        record("soak", f"training SIGKILL at {'start-up' if where == 'start-up' else 'a step'}: "
               + ("after the end of the run" if ended else "only complete checkpoints left" if ok
                  else f"exit {status}"), lost=int(not ok))
        assert ok, (k, where, status)
        landed.append(f"{where} -> {logged_step(out)}")
    print(f"\ntraining kills (point -> last logged step after the kill): {landed}")
    assert not (out / "results.json").exists(), "the run ended before the 20th kill: the kill points no longer test it"
    resumed = run_cli("run", str(recipe), "--out", str(out), "--resume", timeout=600)
    same = resumed.returncode == 0
    if same:
        try:
            assert_same_run(tmp_path / "ref", out)
        except AssertionError:
            same = False
    record("soak", f"training resumed after {KILLS} SIGKILLs: " + ("bit-identical to the uninterrupted run" if same
           else "differs"), output=resumed.stderr, lost=int(not same))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "ref", out)
    assert logged_step(out) == STEPS


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.data
def test_cache_build_killed_at_20_random_points_ends_byte_identical(records_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    spec = spec_file(records_folder, out, 100)  # the recipe (with its `out`) is stored in the cache: the same one
    first = subprocess.Popen(build_cmd(spec), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    while not list(tmp_path.glob(".c.h5.*")) and first.poll() is None:  # the build proper starts
        time.sleep(0.001)
    t0 = time.monotonic()
    while not out.exists() and first.poll() is None:  # ... and ends with the rename
        time.sleep(0.001)
    # What `run_and_kill`'s delays count from (the scratch files) to the rename; not the interpreter's exit.
    duration = time.monotonic() - t0
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    reference = sha256(out)
    out.unlink()
    rng = random.Random(SEED + 1)
    outcomes: list[str] = []
    for _ in range(KILLS):
        # From when the build's scratch files appear: up to its whole length (a kill may land after the rename).
        status = run_and_kill(build_cmd(spec), out, rng.uniform(0.0, 1.1 * duration))
        outcome = ("no file at the output path" if not out.exists() else "a bad cache at the output path"
                   if sha256(out) != reference else "finished before the kill: complete cache" if status == 0
                   else "killed after its rename: complete cache")
        record("soak", f"cache build SIGKILL: {outcome}", lost=int(outcome.startswith("a bad")))
        assert not outcome.startswith("a bad"), status
        outcomes.append(outcome)
    print(f"\ncache build kills: {outcomes}")
    proc = subprocess.run(build_cmd(spec), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    same = proc.returncode == 0 and sha256(out) == reference
    record("soak", f"cache build rerun after {KILLS} SIGKILLs: " + ("byte-identical to the uninterrupted build"
           if same else "differs"), output=proc.stderr, lost=int(not same))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert same
    assert sorted(os.listdir(tmp_path)) == ["c.h5", "spec-100.toml"], "scratch files left behind"
