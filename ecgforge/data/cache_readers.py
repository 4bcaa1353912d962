"""The reader side of a cache build: records processed in batches, their samples appended to a scratch file per
process, and the supervised pool of reader processes that does it in parallel."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgforge.data.cache_record import Processed, process_record
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.record import RecordRef
from ecgforge.data.sources import SOURCES
from ecgforge.data.sources.base import Source
from ecgforge.errors import Failure
from ecgforge.interrupts import StopOnSignal
from ecgforge.registry import build


class Scratch:
    """One process's append-only scratch file of samples.

    Each reader process stores its records' samples itself, so only a few numbers per record travel back to
    the parent, which at the end copies the byte ranges into the HDF5 file in record order. Samples are
    written once per batch (`flush`, one ``writev``): a write per record costs twice as much.
    """

    def __init__(self, number: int, path: str) -> None:
        self.number, self.fd, self.pos = number, os.open(path, os.O_WRONLY | os.O_APPEND), 0
        self.pending: list[memoryview] = []

    def store(self, p: Processed) -> Processed:
        if p.signal is not None:
            buf = memoryview(p.signal).cast("B")
            self.pending.append(buf)
            p.stored = (self.number, self.pos, p.signal.shape[0], zlib.crc32(buf))
            self.pos += len(buf)
            p.signal = None
        return p

    def flush(self) -> None:
        """Write everything stored since the last flush."""
        for start in range(0, len(self.pending), 512):  # below every system's IOV_MAX (Linux: 1024)
            bufs = self.pending[start : start + 512]
            done = os.writev(self.fd, bufs)
            if done < sum(len(b) for b in bufs):  # a short write (rare on regular files): the rest in one piece
                rest = b"".join(bufs)[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
        self.pending.clear()

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Batch:
    """What a reader reports for records ``start .. start + k - 1``: one small message per batch, not per record."""

    start: int
    stored: np.ndarray  # (k, 4) int64: scratch file, byte offset, rows, CRC32; all -1 for a skipped record
    present: np.ndarray  # (k, n_leads) bool
    clipped: int
    reasons: dict[int, str]  # record index -> why it was skipped
    refs: list[RecordRef] | None = None  # the records as the reader completed them (sources with `completes`)


# A task: the first record's index and the records, as locators (or as `RecordRef`s for a source with `completes`).
Task = tuple[int, list[str] | list[RecordRef]]


def process_range(start: int, items: Sequence[str] | Sequence[RecordRef], recipe: CacheRecipe, source: Source,
                  scratch: Scratch) -> Batch:
    """Process records ``start .. start + len(items) - 1`` in order, their samples appended to ``scratch``.

    ``items`` are record locators, or, for a source that leaves part of the listing to the readers
    (``source.completes``: e.g. the CinC source parses each header there), its records, returned completed."""
    refs = [source.complete(r) for r in items] if source.completes else None  # type: ignore[arg-type]
    locators: Sequence[str] = [r.locator for r in refs] if refs is not None else items  # type: ignore[assignment]
    stored = np.full((len(locators), 4), -1, dtype=np.int64)
    present = np.zeros((len(locators), len(recipe.signal.leads)), dtype=bool)
    clipped, reasons = 0, {}
    for k, locator in enumerate(locators):
        p = scratch.store(process_record(start + k, locator, source, recipe.signal))
        if p.stored is None:
            reasons[start + k] = p.reason
        else:
            stored[k], present[k] = p.stored, p.present
            clipped += p.clipped
    scratch.flush()
    return Batch(start, stored, present, clipped, reasons, refs)


def _reader_main(number: int, conn: Any, recipe: CacheRecipe, scratch_path: str, inherited: list[int]) -> None:
    """A reader process: builds the source from the recipe's config, then ``(start, items)`` tasks in,
    ``("ok", Batch)`` or ``("error", exception)`` out, until ``None`` or the parent's end of the pipe closes (the
    parent died: nothing more to do)."""
    # The parent handles Ctrl-C and SIGTERM (to the whole process group) and then ends its readers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in inherited:  # the parent's ends of the other readers' pipes: held here, they would hide its death
        with contextlib.suppress(OSError):
            os.close(fd)
    scratch = Scratch(number, scratch_path)
    source: Source | None = None
    failed: Exception | None = None
    try:
        source = build(SOURCES, recipe.source)
    except Exception as exc:  # a plugin source that cannot be built here: the parent raises it
        failed = exc
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            if failed is not None:
                raise failed
            reply: tuple[str, Any] = ("ok", process_range(*task, recipe, source, scratch))  # type: ignore[arg-type]
        except Exception as exc:  # e.g. ENOSPC writing the scratch file: the parent raises it
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
        except Exception:  # an exception that does not pickle: its text
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


class ReaderDied(Failure):
    """A reader process ended while the build needed it (killed by the OOM killer or a user, crashed)."""


class Readers:
    """``n`` reader processes, supervised: a reader that dies ends the build at once, naming it.

    ``multiprocessing.Pool`` replaces a dead worker silently and waits forever for the task it held, which is
    how a reader killed by a full disk or the OOM killer hung builds. Here each reader has its own pipe, the
    parent waits on the pipes and the processes' sentinels together, and keeps at most ``depth`` tasks queued
    per reader (a few records each: the pipes never fill, and tasks can be cut as the listing streams in).
    Each reader builds its own source from ``recipe.source`` (a config travels to a spawned process; a source
    with open files would not).
    """

    def __init__(self, n: int, recipe: CacheRecipe, scratch_paths: list[str], depth: int = 2) -> None:
        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
        self.depth, self.procs, self.conns, self.queued = depth, [], [], []
        parents: list[int] = []
        for number in range(n):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_reader_main, name=f"ecgforge-reader-{number}", daemon=True,
                               args=(number, theirs, recipe, scratch_paths[number], parents + [mine.fileno()]))
            proc.start()
            theirs.close()
            parents.append(mine.fileno())
            self.procs.append(proc)
            self.conns.append(mine)
            self.queued.append(0)

    def _died(self, number: int) -> ReaderDied:
        proc = self.procs[number]
        proc.join(1)
        code = proc.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
            hint = (" (the system's OOM killer sends it when memory runs out: see `dmesg`; fewer --workers or a "
                    "lower signal.fs_hz need less)") if -code == signal.SIGKILL else ""
        else:
            how, hint = f"exited with code {code}", ""
        return ReaderDied(f"cache reader {number} (pid {proc.pid}) {how}{hint}; the build stopped and nothing was "
                          "written: rerun the command")

    def run(self, tasks: Iterator[Task], stop: StopOnSignal, poll_s: float = 0.2) -> Iterator[Batch]:
        """Send ``tasks`` to the readers as they have room, and yield their batches as they come (any order).
        Raises the reader's exception, `ReaderDied`, or `Interrupted` (within ``poll_s`` of a signal)."""
        pending, todo = 0, iter(tasks)
        while True:
            for number, conn in enumerate(self.conns):  # keep every reader busy
                while todo is not None and self.queued[number] < self.depth:
                    task = next(todo, None)
                    if task is None:
                        todo = None
                        break
                    try:
                        conn.send(task)
                    except OSError:
                        raise self._died(number) from None
                    self.queued[number] += 1
                    pending += 1
                if stop.is_set():
                    raise stop.interrupted()
            if todo is None and pending == 0:
                return
            ready = mp_connection.wait(self.conns + [p.sentinel for p in self.procs], timeout=poll_s)
            if stop.is_set():
                raise stop.interrupted()
            for number, conn in enumerate(self.conns):
                if conn not in ready:
                    continue
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    raise self._died(number) from None
                if kind == "error":
                    raise value
                self.queued[number] -= 1
                pending -= 1
                yield value
            for number, proc in enumerate(self.procs):  # a death with nothing left in its pipe
                if proc.sentinel in ready and not self.conns[number].poll():
                    raise self._died(number)

    def close(self, kill: bool = False) -> None:
        """End every reader (a finished build asks them to; a failed one kills them) and reap them."""
        for proc, conn in zip(self.procs, self.conns, strict=True):
            if kill:
                with contextlib.suppress(OSError):
                    proc.kill()
            else:
                with contextlib.suppress(OSError):
                    conn.send(None)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
