"""Reader processes that die during a cache build, and SIGTERM to a pooled build: stop at once, one line.

A reader killed with SIGKILL (what the OOM killer sends) at seeded points of a ``--workers 2`` build of real
PTB-XL records: the build exits 1 within seconds with one line naming the reader and the signal, nothing at
the output path, no scratch file beside it, and no process of it left. SIGTERM to the whole process group
(a scheduler) or to the build alone: one line, exit 143, nothing left.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.ledger import TRACEBACK, record
from tests.reliability.test_interruptions import build_cmd, spec_file
from tests.train.conftest import ROOT, env

SEED = 20261204


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def start_build(spec: Path, out: Path) -> tuple[subprocess.Popen, list[int]]:
    """Start a ``--workers 2`` build in its own session; return it once its two readers and scratch files exist."""
    proc = subprocess.Popen(build_cmd(spec), cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        readers = children(proc.pid)
        if len(readers) >= 2 and list(out.parent.glob(f".{out.name}.*.samples")):
            return proc, readers
        time.sleep(0.005)
    raise AssertionError(f"the build did not start its readers (exit {proc.poll()})")


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, float]:
    """Wait for ``proc`` at most ``timeout`` s (else kill its group and fail): (exit status, stderr, seconds)."""
    t0 = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"the build did not stop within {timeout} s") from None
    return proc.returncode, stderr, time.monotonic() - t0


def lines_of(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.strip() and "━" not in x]  # progress-bar frames aside


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.data
def test_sigkill_of_a_reader_stops_the_build_with_one_line(records_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    spec = spec_file(records_folder, out, 500)  # upsampled and filtered: a build of a few seconds here
    rng = random.Random(SEED)
    hit, late = 0, 0
    # Until two kills have landed while the readers worked (at most 10 builds): after each kill that came too late
    # (the build had finished: a quiet machine builds this in well under the first 0.3 s window), the window
    # halves, so the test tests the same thing on a fast machine as on a loaded one.
    for attempt in range(10):
        if hit >= 2:
            break
        proc, readers = start_build(spec, out)
        time.sleep(rng.uniform(0.0, 0.3 * 0.5**late))
        victim = readers[rng.randrange(len(readers))]
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:  # the build finished first
            pass
        code, stderr, seconds = finish(proc)
        lines = lines_of(stderr)
        clean = (code == 1 and len(lines) == 1 and f"pid {victim}) was killed by SIGKILL" in lines[0]
                 and "cache reader" in lines[0] and not out.exists() and TRACEBACK not in stderr
                 and sorted(os.listdir(tmp_path)) == ["spec-500.toml"] and seconds < 30)
        finished = code == 0 and out.exists()
        record("workers", "reader SIGKILLed: one line, exit 1, nothing written" if clean else
               "reader SIGKILLed after its work: complete cache" if finished else f"reader SIGKILLed: exit {code}",
               output=stderr, lost=int(not (clean or finished)))
        assert clean or finished, (attempt, code, seconds, stderr[-2000:], sorted(os.listdir(tmp_path)))
        assert group_gone(proc.pid) or not [p for p in readers if Path(f"/proc/{p}").exists()], "readers left"
        hit += clean
        late += finished
        if out.exists():
            out.unlink()
    assert hit >= 2, "too few kills landed while the build ran: the test no longer tests anything"


@pytest.mark.data
@pytest.mark.parametrize("to_group", [True, False], ids=["process-group", "build-only"])
def test_sigterm_during_a_pooled_build(records_folder: Path, tmp_path: Path, to_group: bool) -> None:
    out = tmp_path / "c.h5"
    spec = spec_file(records_folder, out, 500)
    rng = random.Random(SEED + int(to_group))
    for _ in range(2):
        proc, readers = start_build(spec, out)
        time.sleep(rng.uniform(0.0, 0.3))
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        code, stderr, seconds = finish(proc)
        lines = lines_of(stderr)
        clean = (code == 143 and len(lines) == 1 and "SIGTERM" in lines[0] and not out.exists()
                 and sorted(os.listdir(tmp_path)) == ["spec-500.toml"] and TRACEBACK not in stderr)
        complete = code in (0, -signal.SIGTERM) and out.exists()  # it landed after the rename
        record("interruptions", "SIGTERM during a pooled build: one line, exit 143, nothing written" if clean else
               "SIGTERM after the build: complete cache" if complete else f"SIGTERM during a pooled build: exit {code}",
               output=stderr, lost=int(not (clean or complete)))
        assert clean or complete, (code, stderr[-2000:], sorted(os.listdir(tmp_path)))
        time.sleep(0.2)
        assert not [p for p in readers if Path(f"/proc/{p}").exists() and "Z" not in
                    Path(f"/proc/{p}/stat").read_text().split()[2]], "readers left"
        if out.exists():
            out.unlink()


def _scratch_bytes(folder: Path) -> int:
    """Bytes in the build's scratch sample files (a file removed while counting counts 0)."""
    total = 0
    for f in folder.glob(".ptbxl.h5.*.samples"):
        with contextlib.suppress(FileNotFoundError):
            total += f.stat().st_size
    return total


@pytest.mark.data
def test_sigkill_of_a_reader_of_the_shipped_ptbxl_build(shared_data: Path, tmp_path: Path) -> None:
    """The shipped recipe ``recipes/caches/ptbxl.toml`` (``ptbxl`` source, ../shared/data/ptb-xl), two readers:
    one SIGKILLed at a seeded moment of the build makes it exit non-zero within 30 s, with one line naming the
    reader and nothing at the output path (nor any scratch file beside it)."""
    from tests.train.conftest import cli

    out = tmp_path / "ptbxl.h5"
    rng = random.Random(SEED + 16)
    for attempt in range(2):
        proc = subprocess.Popen(cli("cache", "build", "recipes/caches/ptbxl.toml", "--out", str(out), "--workers", "2"),
                                cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        readers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            readers = children(proc.pid)
            if len(readers) >= 2 and list(tmp_path.glob(".ptbxl.h5.*.samples")):
                break
            time.sleep(0.005)
        assert len(readers) >= 2, f"the build did not start its readers (exit {proc.poll()})"
        # A seeded moment by progress, not by time: on a quiet machine the whole build takes well under a second.
        # The readers append the samples (about 160 MB in all) to scratch files: kill when they hold 2-50 % of it.
        target = rng.uniform(0.02, 0.5) * 160e6
        while proc.poll() is None and _scratch_bytes(tmp_path) < target:
            time.sleep(0.001)
        assert proc.poll() is None, f"the build ended (exit {proc.returncode}) before the kill"
        victim = readers[rng.randrange(2)]
        os.kill(victim, signal.SIGKILL)
        code, stderr, seconds = finish(proc, timeout=30)
        lines = lines_of(stderr)
        clean = (code != 0 and len(lines) == 1 and "cache reader" in lines[0]
                 and f"(pid {victim}) was killed by SIGKILL" in lines[0] and not out.exists()
                 and os.listdir(tmp_path) == [] and TRACEBACK not in stderr)
        record("workers", "reader of the shipped PTB-XL build SIGKILLed: one line, exit 1, nothing written" if clean
               else f"reader of the PTB-XL build SIGKILLed: exit {code}", output=stderr, lost=int(not clean))
        assert clean, (attempt, code, seconds, stderr[-2000:], os.listdir(tmp_path))
        assert seconds < 30
        time.sleep(0.2)
        assert not [p for p in readers if Path(f"/proc/{p}").exists() and "Z" not in
                    Path(f"/proc/{p}/stat").read_text().split()[2]], "readers left"
