"""Things that run at the same time: two runs on one run directory, readers beside a build, DataLoader workers.

- A second ``ecgforge run`` on a directory that a live run holds is refused with one line naming that
  process, whatever its flags (``--resume``, ``--overwrite``), and the first run ends exactly as if alone. A
  lock whose owner is dead is taken over.
- Readers of a cache see the same samples while another cache is built at a different path, and the path
  being built is either absent or a complete cache to them, never a partial one.
- DataLoader workers (> 0, forked and spawned) read the HDF5 caches of every source kind (PTB-XL, CinC, a WFDB
  folder, synthetic) and yield exactly the batches of an in-process loader, from disk and from memory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.data.cache import Cache, CacheError
from ecgforge.data.cache_build import build_cache
from ecgforge.data.cache_inspect import verify
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.dataset import RandomWindows, TiledWindows, collate_windows
from ecgforge.rundir import RunDirError, RunLock
from tests.reliability.ledger import TRACEBACK, record
from tests.train.conftest import ROOT, cli, env
from tests.train.test_resume import assert_same_run

# ------------------------------------------------------------------------------------------ run lock


def _wait_for(predicate: object, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)
    assert predicate(), "timed out waiting"  # type: ignore[operator]


@pytest.mark.slow
def test_second_run_on_a_live_run_directory_is_refused(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """The first run is paused (SIGSTOP) once it trains, so the second certainly meets it alive; then it goes on."""
    recipe, ref = reference
    out = tmp_path / "run"
    first = subprocess.Popen(cli("run", str(recipe), "--out", str(out)), cwd=ROOT, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "metrics" / "train.jsonl"
    _wait_for(lambda: first.poll() is not None or (log.is_file() and log.read_text().strip()))
    first.send_signal(signal.SIGSTOP)
    try:
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
        # A real second process, as a user or a scheduler would start it.
        second = subprocess.run(cli("run", str(recipe), "--out", str(out)), cwd=ROOT, env=env(), capture_output=True,
                                text=True, timeout=240)
        lines = [x for x in second.stderr.splitlines() if x.strip()]
        refused = second.returncode == 2 and len(lines) == 1 and f"pid {first.pid}" in lines[0]
        record("concurrency", "second run refused (lock held)" if refused else f"second run: exit {second.returncode}",
               output=second.stdout + second.stderr)
        assert TRACEBACK not in second.stderr and refused, second.stderr[-2000:]
        assert "another ecgforge process" in lines[0] and str(out) in lines[0]
        # --resume and --overwrite do not get past the lock either (overwrite must not delete a live run's files).
        for flag in ("--resume", "--overwrite"):
            res = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), flag])
            escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
            ok = res.exit_code == 2 and f"pid {first.pid}" in res.stderr and not escaped
            record("concurrency", f"second run {flag} refused" if ok else f"second run {flag}: exit {res.exit_code}",
                   traceback=escaped)
            assert res.exit_code == 2 and f"pid {first.pid}" in res.stderr, res.output
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
        assert (out / ".lock").read_text() == str(first.pid)
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=240)
    lost = first.returncode != 0
    record("concurrency", "first run completed as if alone" if not lost else "first run failed", output=stderr,
           lost=int(lost))
    assert first.returncode == 0, stderr[-3000:]
    assert not (out / ".lock").exists()
    assert_same_run(ref, out)


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # Files no live process holds a lock on, whatever they say: a dead PID, nothing, garbage, and a live PID
    # (pytest's parent process): a PID that is alive again after reuse must not keep a run out.
    cases = {"dead pid": str(dead.pid), "empty file": "", "garbage": "not a pid\n", "live pid, no lock": str(os.getppid())}
    for what, content in cases.items():
        d = tmp_path / what.replace(" ", "_").replace(",", "")
        d.mkdir()
        (d / ".lock").write_text(content)
        with RunLock(d):
            taken = (d / ".lock").read_text() == str(os.getpid())
        record("concurrency", f"stale lock ({what}) taken over" if taken else f"stale lock ({what}) kept", lost=0)
        assert taken and not (d / ".lock").exists(), what


def test_lock_held_by_a_live_process_is_refused_until_it_dies(tmp_path: Path) -> None:
    live = tmp_path / "live"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ecgforge.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
         "print('held', flush=True); time.sleep(600)", str(live)],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"^{re.escape(str(live))}: another ecgforge process \(pid {holder.pid}\)"):
            RunLock(live).acquire()
        record("concurrency", "live lock refused")
        assert (live / ".lock").read_text() == str(holder.pid)
    finally:
        holder.kill()  # SIGKILL: no release() runs, the kernel drops the lock
        holder.wait()
    with RunLock(live):
        taken = (live / ".lock").read_text() == str(os.getpid())
    record("concurrency", "lock of a killed process taken over" if taken else "lock of a killed process kept")
    assert taken


def test_two_processes_racing_for_one_lock_never_both_hold_it(tmp_path: Path) -> None:
    """Six processes try the same (stale) lock at once, 10 rounds: at most one holds it at any time."""
    script = (
        "import os, sys, time\n"
        "from ecgforge.rundir import RunDirError, RunLock\n"
        "d, log = sys.argv[1], sys.argv[2]\n"
        "while not os.path.exists(os.path.join(d, 'go')): time.sleep(0.001)\n"
        "try:\n"
        "    with RunLock(d):\n"
        "        with open(log, 'a') as f: f.write(f'in {os.getpid()} {time.monotonic()}\\n')\n"
        "        time.sleep(0.02)\n"
        "        with open(log, 'a') as f: f.write(f'out {os.getpid()} {time.monotonic()}\\n')\n"
        "except RunDirError:\n"
        "    pass\n"
    )
    for round_ in range(10):
        d, log = tmp_path / f"r{round_}", tmp_path / f"r{round_}.log"
        d.mkdir()
        (d / ".lock").write_text("999999999")  # stale
        procs = [subprocess.Popen([sys.executable, "-c", script, str(d), str(log)], cwd=ROOT, env=env()) for _ in range(6)]
        time.sleep(0.3)  # let them start and wait at the line
        (d / "go").touch()
        assert all(p.wait(60) == 0 for p in procs)
        events = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
        holders, overlap = 0, False
        for kind, _, _ in sorted(events, key=lambda e: float(e[2])):
            holders += 1 if kind == "in" else -1
            overlap |= holders > 1
        record("concurrency", "racing for a stale lock: one holder at a time" if not overlap else "racing: two holders",
               lost=int(overlap))
        assert events and not overlap, events


# ---------------------------------------------------------------------------------- readers and builds


def _spec(path: Path, out: Path, fs_hz: int = 100, **source: object) -> CacheRecipe:
    return CacheRecipe.model_validate({"name": out.stem, "out": str(out), "signal": {"fs_hz": fs_hz},
                                       "source": {"kind": "wfdb_folder", "path": str(path), **source}})


@pytest.mark.data
def test_readers_of_a_cache_while_another_is_built(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "ptb-xl" / "records100" / "00000"
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(folder.iterdir())[:40]:
        (small / p.name).symlink_to(p)
    a = build_cache(_spec(small, tmp_path / "a.h5"), workers=1).path
    snapshot = [Cache(a).read(i) for i in range(len(Cache(a)))]
    b = tmp_path / "b.h5"
    spec = tmp_path / "b.toml"
    spec.write_text(f'name = "b"\nout = "{b}"\n[source]\nkind = "wfdb_folder"\npath = "{folder}"\n[signal]\nfs_hz = 100\n'
                    'filter = { highpass_hz = 0.5 }\n')
    builder = subprocess.Popen(cli("cache", "build", str(spec), "--workers", "2"), cwd=ROOT, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reads, changed, absent, partial = 0, 0, 0, 0
    while builder.poll() is None:  # read passes until the build ends (how many depends on the machine)
        c = Cache(a)
        changed += int(not all(np.array_equal(c.read(i), x) for i, x in enumerate(snapshot)))
        reads += 1
        try:  # the path being built: absent until complete
            Cache(b)
            partial += int(builder.poll() is None and verify(b) != [])
        except CacheError:
            absent += 1
        time.sleep(0.05)
    record("concurrency", "cache readers beside a build: same samples in every pass" if reads and not changed
           else "cache readers beside a build: samples changed", lost=changed)
    assert builder.returncode == 0, builder.stderr.read() if builder.stderr else ""
    record("concurrency", "cache built beside readers: complete", lost=int(verify(b) != []))
    assert reads > 0 and changed == 0 and partial == 0 and verify(b) == [] and len(Cache(b)) == 270, (reads, absent, partial)


# -------------------------------------------------------------------------------- DataLoader workers


@pytest.fixture(scope="module")
def caches(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small cache per source kind, each built from its real layout (PTB-XL and CinC subsets linked, not copied)."""
    root = tmp_path_factory.mktemp("kinds")
    ptb = root / "ptb-xl"
    (ptb / "records100" / "00000").mkdir(parents=True)
    db = pd.read_csv(shared_data / "ptb-xl" / "ptbxl_database.csv")
    db = db[db["filename_lr"].str.startswith("records100/00000/")].head(24)
    db.to_csv(ptb / "ptbxl_database.csv", index=False)
    shutil.copy(shared_data / "ptb-xl" / "scp_statements.csv", ptb / "scp_statements.csv")
    for name in db["filename_lr"]:
        for ext in (".hea", ".dat"):
            (ptb / f"{name}{ext}").symlink_to(shared_data / "ptb-xl" / f"{name}{ext}")
    cinc = root / "cinc"
    src = shared_data / "cinc2021-sample"
    (cinc / "evaluation-2021").mkdir(parents=True)
    shutil.copy(src / "evaluation-2021" / "dx_mapping_scored.csv", cinc / "evaluation-2021")
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("evaluation")):
        (cinc / sub.name).mkdir()
        for hea in sorted(sub.glob("*.hea"))[:2]:
            for f in (hea, hea.with_suffix(".mat")):
                (cinc / sub.name / f.name).symlink_to(f)
    specs = {
        "ptbxl": {"kind": "ptbxl", "path": str(ptb), "label_sets": ["superdiagnostic"]},
        "cinc": {"kind": "cinc", "path": str(cinc), "label_sets": ["scored", "dx"]},
        "wfdb_folder": {"kind": "wfdb_folder", "path": str(ptb / "records100")},
        "synthetic": {"kind": "synthetic", "path": str(root / "synthetic"), "n_patients": 4, "records_per_patient": 2,
                      "duration_s": 6.0},
    }
    out = {}
    for kind, source in specs.items():
        spec = CacheRecipe.model_validate({"name": kind, "out": str(root / f"{kind}.h5"), "source": source,
                                           "signal": {"fs_hz": 100}})
        out[kind] = build_cache(spec, workers=1).path
        assert len(Cache(out[kind])) >= 8, kind
    return out


def _batches(ds: torch.utils.data.Dataset, workers: int, context: str | None = None) -> list[dict[str, torch.Tensor]]:
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers, collate_fn=collate_windows,
                        multiprocessing_context=context if workers else None)
    return list(loader)


def _same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b, strict=True))


@pytest.mark.data
@pytest.mark.parametrize("kind", ["ptbxl", "cinc", "wfdb_folder", "synthetic"])
@pytest.mark.parametrize("in_memory", [False, True], ids=["from-disk", "in-memory"])
def test_dataloader_workers_read_every_kind_of_cache(caches: dict[str, Path], kind: str, in_memory: bool) -> None:
    cache = Cache(caches[kind], in_memory=in_memory)
    indices = np.arange(len(cache))
    datasets = {
        "random windows": RandomWindows(cache, indices, window=200, seed=3),
        "random segments": RandomWindows(cache, indices, window=150, n_segments=2, seed=4),
        "tiles": TiledWindows(cache, indices, window=250, stride=200),
    }
    for name, ds in datasets.items():
        alone = _batches(ds, 0)
        workers = _batches(ds, 2)
        same = _same(alone, workers)
        record("concurrency", "DataLoader workers: same batches" if same else "DataLoader workers: batches differ",
               lost=int(not same))
        assert same, (kind, name)
        assert all(torch.isfinite(b["x"]).all() for b in workers)


@pytest.mark.data
def test_spawned_dataloader_workers_reopen_the_cache(caches: dict[str, Path]) -> None:
    """Spawn (the default on macOS) pickles the dataset: the cache must reopen its file in each worker."""
    cache = Cache(caches["cinc"])
    cache.read(0)  # the parent's descriptor is open: it must not travel to the workers
    ds = TiledWindows(cache, np.arange(len(cache)), window=500, stride=500)
    same = _same(_batches(ds, 0), _batches(ds, 2, "spawn"))
    record("concurrency", "spawned DataLoader workers: same batches" if same else "spawned workers: batches differ",
           lost=int(not same))
    assert same
