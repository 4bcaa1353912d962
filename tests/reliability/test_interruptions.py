"""Jobs the cluster kills: SIGKILL at seeded random points of a cache build and of a training run, and Ctrl-C.

A killed build leaves no file at the output path, or the previous complete cache byte for byte; the next
build succeeds and equals an uninterrupted one. A killed training run resumes (taking over the lock the dead
process left) and ends with the weights, losses and evaluation of an uninterrupted run. Ctrl-C prints one
clean line (no traceback) and leaves a state that a rerun completes.

Kill points are drawn from seeded RNGs (reproducible in CI): delays scaled to a measured reference build, and
exact points inside the build (after the k-th record, while the HDF5 file is written, just before the rename).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import ecgforge.data.cache_writer as writer_mod
from ecgforge.data.cache import Cache
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import verify
from ecgforge.data.cache_spec import CacheRecipe
from tests.reliability.ledger import TRACEBACK, record
from tests.train.conftest import ROOT, cli, env, losses, run_cli
from tests.train.test_resume import assert_same_run, interrupt_at

SEED = 20261129


# ------------------------------------------------------------------------------------------ cache build


def spec_file(folder: Path, out: Path, fs_hz: int) -> Path:
    """A cache recipe with filtering, so that reading records is a visible share of the build."""
    path = out.parent / f"spec-{fs_hz}.toml"
    path.write_text(f'name = "kill"\nout = "{out}"\n[source]\nkind = "wfdb_folder"\npath = "{folder}"\n'
                    f'[signal]\nfs_hz = {fs_hz}\nfilter = {{ highpass_hz = 0.5, notch_hz = 50 }}\n')
    return path


def fingerprint(path: Path) -> tuple[str, list[str], list[int]]:
    """What must equal between an interrupted-then-rerun build and an uninterrupted one."""
    c = Cache(path)
    return c.spec_hash, list(c.record_id), [int(x) for x in c.checksum]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_cmd(spec: Path) -> list[str]:
    return cli("cache", "build", str(spec), "--workers", "2")


def run_and_kill(cmd: list[str], out: Path, delay_s: float) -> int:
    """Start ``cmd`` in its own process group and SIGKILL the whole group (reader pool included, as a cluster's
    OOM killer or scheduler would) ``delay_s`` after the build started (its scratch files beside ``out``
    appeared; interpreter start-up is not worth killing into). Returns the exit status."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(f".{out.name}.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.returncode


@pytest.fixture(scope="module")
def references(records_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple]:
    """Uninterrupted builds at 100 Hz and 50 Hz: fingerprints, and how long the build itself takes here
    (its own timer, without interpreter start-up), which scales the random kill delays."""
    d = tmp_path_factory.mktemp("reference-builds")
    refs: dict[int, tuple] = {}
    for fs in (100, 50):
        out = d / f"ref{fs}.h5"
        spec = CacheRecipe.model_validate(tomllib.loads(spec_file(records_folder, out, fs).read_text()))
        summary = build_cache(spec, workers=2)
        refs[fs] = (fingerprint(out), summary.seconds * 1.2)
    return refs


@pytest.mark.data
def test_sigkill_at_random_times_of_a_first_build(records_folder: Path, references: dict[int, tuple],
                                                  tmp_path: Path) -> None:
    """Each attempt is killed at a seeded random time, and each next attempt starts from what the kill left."""
    out = tmp_path / "c.h5"
    spec = spec_file(records_folder, out, 100)
    ref, duration = references[100]
    rng = random.Random(SEED)
    for _ in range(4):
        delay = rng.uniform(0.0, duration)
        status = run_and_kill(build_cmd(spec), out, delay)
        complete = out.exists() and fingerprint(out) == ref and verify(out) == []
        record("interruptions", "build killed: no file at output" if not out.exists() else
               "build killed after its rename: complete cache" if complete else "half cache at output",
               lost=int(out.exists() and not complete))
        # A kill after the rename (or a build that finished first) leaves the complete cache, never part of one.
        assert not out.exists() or complete, f"kill after {delay:.2f} s (status {status}) left a bad {out}"
        if out.exists():
            out.unlink()  # start the next point from nothing again
    proc = subprocess.run(build_cmd(spec), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    record("interruptions", "rerun after kills: complete" if proc.returncode == 0 else "rerun failed",
           output=proc.stderr, lost=int(proc.returncode != 0))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert fingerprint(out) == ref and verify(out) == []
    assert not list(tmp_path.glob(".c.h5.*")), "scratch files of the killed builds are left"


@pytest.mark.data
def test_sigkill_at_random_times_of_a_rebuild_keeps_the_previous_cache(records_folder: Path, references: dict[int, tuple],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    first = subprocess.run(build_cmd(spec_file(records_folder, out, 50)), cwd=ROOT, env=env(), capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = sha256(out)
    spec = spec_file(records_folder, out, 100)
    ref, duration = references[100]
    previous = out.read_bytes()
    rng = random.Random(SEED + 1)
    for _ in range(3):
        delay = rng.uniform(0.0, duration)
        run_and_kill(build_cmd(spec), out, delay)
        if sha256(out) != before:  # the kill came after the rename: the new cache must then be complete
            complete = fingerprint(out) == ref and verify(out) == []
            record("interruptions", "rebuild killed after its rename: complete cache", lost=int(not complete))
            assert complete
            out.write_bytes(previous)  # start the next point from the previous cache again
            continue
        kept = sha256(out) == before
        record("interruptions", "rebuild killed: previous cache untouched" if kept else "previous cache changed",
               lost=int(not kept))
        assert kept, f"kill after {delay:.2f} s changed the previous cache"
        assert verify(out) == []
    proc = subprocess.run(build_cmd(spec), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    record("interruptions", "rerun after kills: complete" if proc.returncode == 0 else "rerun failed",
           output=proc.stderr, lost=int(proc.returncode != 0))
    assert proc.returncode == 0 and fingerprint(out) == ref, proc.stderr[-2000:]


def _killed_build(spec: CacheRecipe, point: str, k: int) -> None:
    """In a forked child: build, and SIGKILL this process at ``point`` (never returns normally)."""

    def die(*_: object, **__: object) -> None:
        # Say where the kill landed (the parent checks the phase): scratch files present, HDF5 scratch size.
        mine = list(Path(spec.out).parent.glob(f".{Path(spec.out).name}.*.{os.getpid()}.*.building"))
        Path(spec.out).with_name(f"killed-{point}").write_text(str(mine[0].stat().st_size if mine else -1))
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "after_record":
        build_cache(spec, workers=1, progress=lambda done, total: die() if done >= k else None)  # batches of records
    elif point == "writing_hdf5":
        real = writer_mod.copy_range
        calls = {"n": 0}

        def copy_range(*a: object, **kw: object) -> None:
            calls["n"] += 1
            if calls["n"] == k:  # the samples being copied from the scratch file into the HDF5 file
                die()
            real(*a, **kw)

        writer_mod.copy_range = copy_range  # type: ignore[assignment]  (this child dies anyway)
        build_cache(spec, workers=1)
    elif point == "before_rename":
        os.replace = die  # type: ignore[assignment]  (this child dies anyway)
        build_cache(spec, workers=1)
    os._exit(3)  # reached only if the kill point was never hit


@pytest.mark.data
@pytest.mark.parametrize("previous", [False, True], ids=["first-build", "rebuild"])
def test_sigkill_at_exact_points_inside_a_build(records_folder: Path, tmp_path: Path, previous: bool) -> None:
    """Points a timer rarely hits: after the k-th record (seeded), during the HDF5 copy, just before the rename."""
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(records_folder.iterdir())[:80]:  # 40 records: the fork runs one reader, keep it short
        (small / p.name).symlink_to(p.resolve())
    out = tmp_path / "c.h5"
    spec = CacheRecipe.model_validate({"name": "k", "out": str(out), "source": {"kind": "wfdb_folder", "path": str(small)},
                                       "signal": {"fs_hz": 100}})
    if previous:
        build_cache(spec.model_copy(update={"signal": spec.signal.model_copy(update={"fs_hz": 50.0})}), workers=1)
    before = sha256(out) if previous else None
    rng = random.Random(SEED + 2)
    ctx = mp.get_context("fork")
    for point, k in (("after_record", rng.randint(1, 40)), ("writing_hdf5", 1), ("before_rename", 0)):
        child = ctx.Process(target=_killed_build, args=(spec, point, k))
        child.start()
        child.join(120)
        assert child.exitcode == -signal.SIGKILL, (point, child.exitcode)
        scratch_size = int((tmp_path / f"killed-{point}").read_text())
        # after a record: the HDF5 scratch file exists, still empty; before the rename: it is complete
        assert {"after_record": scratch_size == 0, "writing_hdf5": scratch_size >= 0,
                "before_rename": scratch_size > 0}[point], (point, scratch_size)
        intact = (sha256(out) == before) if previous else not out.exists()
        record("interruptions", ("exact point: previous cache untouched" if previous else "exact point: no file at output")
               if intact else "exact point: output changed by a killed build", lost=int(not intact))
        assert intact, point
    # A SIGKILL leaves its scratch files; each next build removes those of dead builds: only the last kill's remain.
    # That kill came just before the rename, when the samples' scratch files are already copied and removed.
    assert [p.suffix for p in tmp_path.glob(".c.h5.*")] == [".building"], sorted(os.listdir(tmp_path))
    summary = build_cache(spec, workers=1)
    record("interruptions", "rerun after kills: complete", lost=int(summary.n_records != 40))
    assert summary.n_records == 40 and verify(out) == [] and Cache(out).fs_hz == 100
    assert not list(tmp_path.glob(".c.h5.*")), sorted(os.listdir(tmp_path))


@pytest.mark.data
def test_ctrl_c_during_a_build_is_one_clean_line(records_folder: Path, references: dict[int, tuple], tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole foreground process group, reader pool included) at seeded points of the build."""
    out = tmp_path / "c.h5"
    spec = spec_file(records_folder, out, 100)
    rng = random.Random(SEED + 3)
    for _ in range(3):
        proc = subprocess.Popen(build_cmd(spec), cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        deadline = time.monotonic() + 120  # wait for the build to start (its scratch file), then a seeded delay
        while not list(tmp_path.glob(".c.h5.*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        os.killpg(proc.pid, signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            record("interruptions", "Ctrl-C during build: hung", lost=1)
            raise AssertionError("the build did not stop within 60 s of Ctrl-C") from None
        lines = [x for x in stderr.splitlines() if "interrupted" in x]
        # A Ctrl-C that lands after the cache was renamed into place, while the interpreter exits, ends the
        # process by the signal (-SIGINT) rather than 0: the work is done, and the cache must be complete.
        complete = proc.returncode in (0, -signal.SIGINT) and fingerprint(out) == references[100][0]
        clean = proc.returncode == 130 and len(lines) == 1 and not out.exists() and not list(tmp_path.glob(".c.h5.*"))
        record("interruptions", "Ctrl-C during build: exit 130, nothing written" if clean else
               "Ctrl-C after the build: complete cache" if complete else f"Ctrl-C during build: exit {proc.returncode}",
               output=stdout + stderr, lost=int(not (clean or complete)))
        assert TRACEBACK not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
        assert clean or complete, (proc.returncode, stderr[-2000:], sorted(os.listdir(tmp_path)))
        assert "--resume" not in "".join(lines)  # cache build has no --resume: rerunning is the remedy
        if out.exists():
            out.unlink()
    rerun = subprocess.run(build_cmd(spec), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and fingerprint(out) == references[100][0], rerun.stderr[-2000:]


# ----------------------------------------------------------------------------------------------- training

# The tiny run of tests/train: 16 records in batches of 4, 3 epochs = 12 steps; checkpoints at 3, 6, 9, 12.
TOTAL_STEPS = 12


def _after_kill(out: Path) -> tuple[int, int]:
    """State a killed run leaves: only complete checkpoints, no results, the dead process's lock. Returns
    (last complete checkpoint step, pid in the lock)."""
    assert not (out / "results.json").exists()
    steps = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert all((out / "checkpoints" / f"step_{s}" / "progress.json").is_file() for s in steps)
    pid = int((out / ".lock").read_text())
    return (steps[-1] if steps else 0), pid


def _resume_and_compare(recipe: Path, out: Path, ref: Path, what: str) -> None:
    resumed = run_cli("run", str(recipe), "--out", str(out), "--resume")
    same = resumed.returncode == 0
    if same:
        try:
            assert_same_run(ref, out)
        except AssertionError:
            same = False
    record("interruptions", f"{what}: resumed, same as uninterrupted" if same else f"{what}: resume differs",
           output=resumed.stderr, lost=int(not same))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(ref, out)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume(reference: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, ref = reference
    out = tmp_path / "run"
    step = random.Random(SEED + 4).randint(1, TOTAL_STEPS - 1)
    killed = interrupt_at(recipe, out, step=step, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last, pid = _after_kill(out)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the lock's owner is dead: --resume must take the lock over
    assert last <= max(losses(out))
    _resume_and_compare(recipe, out, ref, f"SIGKILL at step >= {step}")


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_then_resume(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """The kill lands after the model and optimiser files of step 6 are saved, before the checkpoint is complete."""
    recipe, ref = reference
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.entry_points", "kill-at-checkpoint", "6",
                           "run", str(recipe), "--out", str(out)], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last, _ = _after_kill(out)
    assert last == 3 and (out / "checkpoints" / ".step_6.tmp").is_dir(), sorted(os.listdir(out / "checkpoints"))
    _resume_and_compare(recipe, out, ref, "SIGKILL inside checkpoint write")
    assert not list((out / "checkpoints").glob(".step_*")), "scratch checkpoint left after resume"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_at_a_random_step_then_resume(reference: tuple[Path, Path], tmp_path: Path,
                                                        sig: signal.Signals) -> None:
    """Ctrl-C, or the SIGTERM a scheduler sends before its SIGKILL (preemption): stop at the step, save, resume."""
    recipe, ref = reference
    out = tmp_path / "run"
    step = random.Random(SEED + 5 + int(sig)).randint(1, TOTAL_STEPS - 2)
    stopped = interrupt_at(recipe, out, step=step, sig=sig)
    lines = [x for x in stopped.stderr.splitlines() if "interrupted" in x]
    what = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    record("interruptions", f"{what} during training: exit {stopped.returncode}", output=stopped.stderr)
    assert stopped.returncode == 130 and TRACEBACK not in stopped.stderr, stopped.stderr[-2000:]
    assert len(lines) == 1 and "--resume" in lines[0], lines
    assert not (out / ".lock").exists(), "a clean stop releases the run lock"
    saved = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert saved and saved[-1] == max(losses(out))  # the step it stopped at is saved
    _resume_and_compare(recipe, out, ref, f"{what} at step >= {step}")
