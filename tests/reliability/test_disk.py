"""A full disk during a cache build and during a checkpoint write: one clear line, the previous state intact.

Two ways to fill the disk:
- a real, small file system: a tmpfs of a chosen size, mounted in a private mount namespace (``unshare -rm``,
  no root needed where unprivileged user namespaces are allowed; skipped with the reason where they are not);
- a simulated ``OSError(ENOSPC)`` at exact points (pass 1 scratch writes, the final fsync, the checkpoint's
  ``progress.json``), which runs everywhere.
After the failure the previous cache is byte for byte the same, no scratch file is left, and once space is
freed the same command (``--resume`` for a run) completes with the result of an undisturbed run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ecgforge.cli import app
from ecgforge.data.cache import Cache
from ecgforge.data.cache_inspect import verify
from tests.reliability.ledger import TRACEBACK, record
from tests.train.conftest import ROOT, env, losses
from tests.train.test_resume import assert_same_run

PY = shlex.quote(sys.executable)
FULL = "error: no space left on device"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_fs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``run(size_kb, script)``: ``script`` (sh) with a fresh tmpfs of ``size_kb`` at ``$MNT``, in a private mount
    namespace; skips the test where this machine does not allow one."""
    if shutil.which("unshare") is None:
        pytest.skip("no size-limited file system here (no `unshare` command); the simulated ENOSPC tests cover "
                    "the same code paths")
    probe_dir = tmp_path_factory.mktemp("probe")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe_dir}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no size-limited file system here (unshare -rm + tmpfs: {probe.stderr.strip()[:120]}); "
                    "the simulated ENOSPC tests cover the same code paths")

    def run(mnt: Path, size_kb: int, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
        mnt.mkdir(parents=True, exist_ok=True)
        full = f"set -u; MNT={shlex.quote(str(mnt))}; mount -t tmpfs -o size={size_kb}k tmpfs \"$MNT\"; {script}"
        return subprocess.run(["unshare", "-rm", "sh", "-c", full], cwd=ROOT, env=env(), capture_output=True,
                              text=True, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def build_inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """270 real PTB-XL records (linked) and a previous complete cache of them at 50 Hz (3.3 MB)."""
    d = tmp_path_factory.mktemp("disk")
    folder = d / "wfdb"
    folder.mkdir()
    for p in (shared_data / "ptb-xl" / "records100" / "00000").iterdir():
        (folder / p.name).symlink_to(p)
    spec = d / "spec.toml"
    spec.write_text(f'name = "full"\nout = "{d / "unused.h5"}"\n[source]\nkind = "wfdb_folder"\npath = "{folder}"\n'
                    '[signal]\nfs_hz = 100\n')
    prev = d / "prev.h5"
    res = CliRunner().invoke(app, ["cache", "build", str(spec), "--out", str(prev), "--set", "signal.fs_hz=50",
                                   "--workers", "1"])
    assert res.exit_code == 0, res.output
    return spec, prev


def _check_full_disk_message(code: int, stderr: str, then: str) -> bool:
    lines = [x for x in stderr.splitlines() if x.strip() and "━" not in x]  # progress-bar frames aside
    return code == 1 and len(lines) == 1 and lines[0].startswith(FULL) and then in lines[0] and TRACEBACK not in stderr


# ---------------------------------------------------------------------------------------- cache build


@pytest.mark.data
@pytest.mark.parametrize(("size_kb", "where"), [(8000, "scratch samples"), (12000, "HDF5 file")])
def test_cache_build_on_a_full_file_system(small_fs: Any, build_inputs: tuple[Path, Path], tmp_path: Path,
                                           size_kb: int, where: str) -> None:
    """The previous cache (3.3 MB) fills part of a small tmpfs; the new one (6.5 MB + as much scratch) cannot fit:
    at 8 MB the scratch sample file fills it, at 12 MB the HDF5 file does."""
    spec, prev = build_inputs
    t = shlex.quote(str(tmp_path))
    build = f"{PY} -m ecgforge cache build {shlex.quote(str(spec))} --workers 2 --out \"$MNT/c.h5\""
    script = (f"cp {shlex.quote(str(prev))} \"$MNT/c.h5\"; {build} 2> {t}/err1; echo $? > {t}/rc1; "
              f"sha256sum \"$MNT/c.h5\" | cut -d' ' -f1 > {t}/sum1; ls -A \"$MNT\" > {t}/ls1; "
              # free some space (the file system grows), then the same command again
              f"mount -o remount,size=65536k \"$MNT\"; {build} 2> {t}/err2; echo $? > {t}/rc2; "
              f"cp \"$MNT/c.h5\" {t}/after.h5; ls -A \"$MNT\" > {t}/ls2")
    proc = small_fs(tmp_path / "mnt", size_kb, script)
    assert proc.returncode == 0, proc.stderr
    rc1, err1 = int((tmp_path / "rc1").read_text()), (tmp_path / "err1").read_text()
    intact = (tmp_path / "sum1").read_text().strip() == sha256(prev)
    left = (tmp_path / "ls1").read_text().split()
    clean = _check_full_disk_message(rc1, err1, "rerun the command")
    record("disk", f"cache build, disk full in the {where}: " + ("one line, previous cache intact" if clean and intact
           else f"exit {rc1}"), output=err1, lost=int(not intact))
    assert clean, err1[-3000:]
    assert intact and left == ["c.h5"], left  # the previous cache, and no scratch file left behind
    rc2 = int((tmp_path / "rc2").read_text())
    assert rc2 == 0, (tmp_path / "err2").read_text()[-2000:]
    after = tmp_path / "after.h5"
    assert verify(after) == [] and Cache(after).fs_hz == 100 and len(Cache(after)) == 270
    assert (tmp_path / "ls2").read_text().split() == ["c.h5"]


@pytest.mark.data
@pytest.mark.parametrize("point", ["scratch write", "final fsync"])
def test_cache_build_simulated_enospc(build_inputs: tuple[Path, Path], tmp_path: Path, point: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spec, prev = build_inputs
    out = tmp_path / "c.h5"
    out.write_bytes(prev.read_bytes())
    before = sha256(out)
    if point == "scratch write":
        real_writev, budget = os.writev, {"left": 1_000_000}

        def writev(fd: int, buffers: list[bytes]) -> int:  # the readers' scratch samples, until the disk is full
            n = sum(len(b) for b in buffers)
            if n > budget["left"]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            budget["left"] -= n
            return real_writev(fd, buffers)

        monkeypatch.setattr(os, "writev", writev)
    else:
        def fsync(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", fsync)
    res = CliRunner().invoke(app, ["cache", "build", str(spec), "--out", str(out), "--workers", "1"])
    escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
    intact = sha256(out) == before
    clean = _check_full_disk_message(res.exit_code, res.stderr, "rerun the command") and not escaped
    record("disk", f"cache build, simulated ENOSPC at the {point}: " + ("one line, previous cache intact"
           if clean and intact else f"exit {res.exit_code}"), output=res.stderr, traceback=escaped, lost=int(not intact))
    assert clean, res.output
    assert intact and sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.slow
def test_checkpoint_write_simulated_enospc_then_resume(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """``progress.json`` of step 6 cannot be written: the run stops with one line, step 3 stays the last
    checkpoint, and ``--resume`` (space freed) ends as an uninterrupted run."""
    recipe, ref = reference
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.entry_points", "enospc-at-checkpoint", "6",
                           "run", str(recipe), "--out", str(out)], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=240)
    clean = _check_full_disk_message(proc.returncode, proc.stderr, "--resume")
    steps = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    record("disk", "checkpoint write, simulated ENOSPC: " + ("one line, previous checkpoint intact"
           if clean and steps == [3] else f"exit {proc.returncode}"), output=proc.stderr, lost=int(steps != [3]))
    assert clean, proc.stderr[-3000:]
    assert "progress.json" in proc.stderr and steps == [3] and not (out / ".lock").exists()
    resumed = subprocess.run([sys.executable, "-m", "ecgforge", "run", str(recipe), "--out", str(out), "--resume"],
                             cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(ref, out)


@pytest.mark.slow
def test_checkpoint_write_on_a_full_file_system_then_resume(small_fs: Any, reference: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    """The run directory lies on a tmpfs with room for one checkpoint and a half: the second checkpoint (written
    beside the first, then renamed) fills it. After the file system grows, ``--resume`` completes the run."""
    recipe, ref = reference
    ckpt = ref / "checkpoints" / "step_12"
    files = [f for f in ckpt.rglob("*") if f.is_file()]
    ckpt_kb = sum(f.stat().st_size // 1024 + 4 for f in files)  # tmpfs allocates whole 4 KiB pages
    size_kb = int(1.5 * ckpt_kb) + 64  # + recipe, resolved.toml, env.json, metrics
    t = shlex.quote(str(tmp_path))
    run = f"{PY} -m ecgforge run {shlex.quote(str(recipe))} --out \"$MNT/run\""
    script = (f"{run} 2> {t}/err1; echo $? > {t}/rc1; cp -r \"$MNT/run\" {t}/after_full; "
              f"mount -o remount,size=65536k \"$MNT\"; {run} --resume 2> {t}/err2; echo $? > {t}/rc2; "
              f"cp -r \"$MNT/run\" {t}/final")
    proc = small_fs(tmp_path / "mnt", size_kb, script)
    assert proc.returncode == 0, proc.stderr
    rc1, err1 = int((tmp_path / "rc1").read_text()), (tmp_path / "err1").read_text()
    after = tmp_path / "after_full"
    steps = sorted(int(p.name.split("_")[1]) for p in (after / "checkpoints").glob("step_*"))
    complete = all((after / "checkpoints" / f"step_{s}" / "progress.json").is_file() for s in steps)
    clean = _check_full_disk_message(rc1, err1, "--resume")
    record("disk", "checkpoint write, disk full: " + ("one line, previous checkpoint intact" if clean and steps
           and complete else f"exit {rc1}"), output=err1, lost=int(not (steps and complete)))
    assert clean, err1[-3000:]
    assert steps and complete and not (after / "results.json").exists() and not (after / ".lock").exists(), steps
    assert max(losses(after)) >= steps[-1]
    rc2 = int((tmp_path / "rc2").read_text())
    assert rc2 == 0, (tmp_path / "err2").read_text()[-3000:]
    assert_same_run(ref, tmp_path / "final")
