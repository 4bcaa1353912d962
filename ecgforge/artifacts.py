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

Every file is written to a temporary name in the same directory and renamed into place, so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecgforge.errors import UserError


class RunDirError(UserError):
    """A run-directory problem a user can fix (exists, locked); one line."""


def as_if_opened(path_or_fd: str | Path | int, *, directory: bool = False) -> None:
    """Give a scratch file or folder from ``tempfile.mkstemp``/``mkdtemp`` (private: 0600/0700) the mode a plain
    ``open()``/``mkdir()`` would have given it (0666/0777 less the umask), before it is renamed into place:
    caches, results and exports are shared with a team, and the rename must not make them private."""
    umask = os.umask(0)
    os.umask(umask)
    mode = (0o777 if directory else 0o666) & ~umask
    if isinstance(path_or_fd, int):
        os.fchmod(path_or_fd, mode)
    else:
        os.chmod(path_or_fd, mode)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a scratch path beside ``path`` to write a file at; when the block completes, that file is flushed to
    disk, given the mode a plain ``open()`` would have, and renamed to ``path``. On any error (or Ctrl-C) it is
    removed, and ``path`` keeps what it had."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
            as_if_opened(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` (whole) when the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        as_if_opened(tmp, directory=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


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

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked, so no one holds the removed file
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
            f.write(json.dumps(row, default=_json_default) + "\n")
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
