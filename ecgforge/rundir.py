"""The run directory and safe file writing.

Layout of ``runs/<name>/``::

    recipe.toml         the recipe as given (verbatim)
    resolved.toml       validated, with defaults and overrides: rerunnable as it is
    env.json            versions, device, world size, precision, cache hash
    checkpoints/        step_<N>/ (Accelerate state + progress.json), the last few kept
    encoder.safetensors the pretrained encoder's weights, with encoder.json (its config and input contract)
    metrics/train.jsonl one JSON object per logged step
    results.json        evaluation rows (see README)
    plots/              PNG figures
    .lock               held by the process that runs in this directory

Files are written atomically (``ecgforge.fsio``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ecgforge.errors import UserError
from ecgforge.fsio import atomic_write_text, json_default


class RunDirError(UserError):
    """A run-directory problem a user can fix (exists, locked); one line."""


_HELD: set[int] = set()  # descriptors of the run locks this process holds


def _close_locks_in_child() -> None:
    """In a forked child (DataLoader worker, reader process): close the inherited run-lock descriptors. A flock
    belongs to the open file, which a child's copy keeps open: a child that outlives a SIGKILLed parent would
    otherwise hold the lock and refuse the rerun."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


class RunLock:
    """An exclusive lock on a run directory, which the kernel releases when its process ends, however it ends.

    ``fcntl.flock`` on ``.lock``; the file also holds the owner's PID, for the message a second process gets.
    A PID alone would be wrong twice: a reused PID looks alive, and two processes taking over one stale file at
    the same instant could both believe they hold it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = os.pread(fd, 32, 0).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    raise RunDirError(
                        f"{self.path.parent}: another ecgforge process (pid {owner}) is running in this directory"
                    ) from None
                raise RunDirError(f"{self.path}: cannot lock: {exc.strerror}") from None
            # The holder may have released (removed) the file between our open and our lock: lock the new one.
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked, so no one holds the removed file
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MetricsLog:
    """Append-only JSON lines (``metrics/train.jsonl``); each line is flushed as it is written.

    On resume, lines past the checkpoint's step are dropped so the log matches the resumed state.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if row.get("step", 0) <= resume_step:
                    kept.append(line)
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=json_default) + "\n")
            f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless told to; ``overwrite`` clears it, ``resume`` keeps it."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite are mutually exclusive")
    occupied = run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir())
    if occupied and not (resume or overwrite):
        raise RunDirError(f"{run_dir}: a run already exists here; pass --resume to continue it or --overwrite to replace it")
    if overwrite and run_dir.exists():
        for child in run_dir.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
