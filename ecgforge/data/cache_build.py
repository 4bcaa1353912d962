"""Building an HDF5 dataset cache from a source: reader processes, scratch files, one atomic rename.

The layout is described in ``data.cache`` (the reader).
"""

from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import itertools
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import socket
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecgforge.data.cache import LAYOUT_VERSION, SCALE_MV, CacheError, seal_metadata, str_array
from ecgforge.data.cache_spec import CacheRecipe
from ecgforge.data.dsp import preprocess
from ecgforge.data.leads import CANONICAL_LEADS, canonicalize
from ecgforge.data.record import RecordError, RecordRef
from ecgforge.data.sources import SOURCES
from ecgforge.data.wfdb_io import read_record
from ecgforge.errors import Failure
from ecgforge.fsio import as_if_opened, pid_alive
from ecgforge.interrupts import StopOnSignal
from ecgforge.registry import build
from ecgforge.version import __version__

_INT16_MAX = 32767


@dataclass
class Processed:
    """One record ready to store, or the reason it was skipped."""

    index: int
    signal: np.ndarray | None = None  # (T, n_leads) int16, until a `_Scratch` stores it
    present: np.ndarray | None = None  # (n_leads,) bool
    reason: str = ""
    clipped: int = 0
    # Where `_Scratch.store` put the samples: scratch file number, byte offset, rows, CRC32 of the bytes.
    stored: tuple[int, int, int, int] | None = None


class _Scratch:
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


def process_record(index: int, path: str, recipe: CacheRecipe) -> Processed:
    """Read, check, canonicalise, filter, resample and quantise the record at ``path`` (WFDB, without extension).
    Never raises for bad data."""
    sig = recipe.signal
    try:
        raw = read_record(path)
        if raw.data.ndim != 2 or raw.data.shape[1] == 0:
            raise RecordError("empty signal")
        data12, present12 = canonicalize(raw)
        if not np.isfinite(data12).all():
            bad = int((~np.isfinite(data12)).sum())
            raise RecordError(f"{bad} NaN/infinite samples")
        if tuple(sig.leads) == CANONICAL_LEADS:  # the usual 12 leads: no copy
            data, present = data12, present12
        else:
            pick = [CANONICAL_LEADS.index(lead) for lead in sig.leads]
            data, present = data12[pick], present12[pick]
        if not present.any():
            raise RecordError(f"none of the leads {sig.leads} is in the record")
        if (data.max(axis=-1) - data.min(axis=-1))[present].max() < 1e-4:
            raise RecordError("flat line: every lead is constant")
        duration = data.shape[1] / raw.fs_hz
        if duration < sig.min_duration_s:
            raise RecordError(f"too short: {duration:.2f} s < min_duration_s {sig.min_duration_s}")
        if sig.max_duration_s is not None and duration > sig.max_duration_s:
            data = data[:, : int(round(sig.max_duration_s * raw.fs_hz))]
        out = preprocess(data, raw.fs_hz, sig.fs_hz, sig.filter)
        if not present.all():
            out[~present] = 0.0
        q = out / SCALE_MV
        np.rint(q, out=q)
        clipped = 0
        if q.max() > _INT16_MAX or q.min() < -_INT16_MAX:  # two reductions, no temporary: clipping is rare
            clipped = int(np.count_nonzero(np.abs(q) > _INT16_MAX))
            np.clip(q, -_INT16_MAX, _INT16_MAX, out=q)
        return Processed(index, q.T.astype(np.int16, order="C"), present, clipped=clipped)
    except RecordError as exc:
        return Processed(index, reason=str(exc))
    except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:
        # A reader bug or an odd file must not end a build of 800,000 records: report it as the reason.
        return Processed(index, reason=f"{type(exc).__name__}: {exc}".splitlines()[0])


@dataclass
class _Batch:
    """What a reader reports for records ``start .. start + k - 1``: one small message per batch, not per record."""

    start: int
    stored: np.ndarray  # (k, 4) int64: scratch file, byte offset, rows, CRC32; all -1 for a skipped record
    present: np.ndarray  # (k, n_leads) bool
    clipped: int
    reasons: dict[int, str]  # record index -> why it was skipped
    refs: list[RecordRef] | None = None  # the records as the reader completed them (sources with `complete`)


Completer = Callable[[RecordRef], RecordRef]


def _process_range(start: int, items: Sequence[str] | Sequence[RecordRef], recipe: CacheRecipe, scratch: _Scratch,
                   complete: Completer | None = None) -> _Batch:
    """Process records ``start .. start + len(items) - 1`` in order, their samples appended to ``scratch``.

    ``items`` are record paths, or, for a source that leaves part of the listing to the readers (``complete``:
    e.g. the CinC source parses each header there), its records, returned completed in the batch."""
    refs = [complete(r) for r in items] if complete is not None else None  # type: ignore[arg-type]
    paths: Sequence[str] = [r.path for r in refs] if refs is not None else items  # type: ignore[assignment]
    stored = np.full((len(paths), 4), -1, dtype=np.int64)
    present = np.zeros((len(paths), len(recipe.signal.leads)), dtype=bool)
    clipped, reasons = 0, {}
    for k, path in enumerate(paths):
        p = scratch.store(process_record(start + k, path, recipe))
        if p.stored is None:
            reasons[start + k] = p.reason
        else:
            stored[k], present[k] = p.stored, p.present
            clipped += p.clipped
    scratch.flush()
    return _Batch(start, stored, present, clipped, reasons, refs)


def _reader_main(number: int, conn: Any, recipe: CacheRecipe, scratch_path: str, inherited: list[int],
                 complete: Completer | None) -> None:
    """A reader process: ``(start, paths)`` tasks in, ``("ok", _Batch)`` or ``("error", exception)`` out, until
    ``None`` or the parent's end of the pipe closes (the parent died: nothing more to do)."""
    # The parent handles Ctrl-C and SIGTERM (to the whole process group) and then ends its readers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in inherited:  # the parent's ends of the other readers' pipes: held here, they would hide its death
        with contextlib.suppress(OSError):
            os.close(fd)
    scratch = _Scratch(number, scratch_path)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", _process_range(*task, recipe, scratch, complete))
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


class _Readers:
    """``n`` reader processes, supervised: a reader that dies ends the build at once, naming it.

    ``multiprocessing.Pool`` replaces a dead worker silently and waits forever for the task it held, which is
    how a reader killed by a full disk or the OOM killer hung builds. Here each reader has its own pipe, the
    parent waits on the pipes and the processes' sentinels together, and keeps at most ``depth`` tasks queued
    per reader (a few records each: the pipes never fill, and tasks can be cut as the listing streams in).
    """

    def __init__(self, n: int, recipe: CacheRecipe, scratch_paths: list[str], complete: Completer | None = None,
                 depth: int = 2) -> None:
        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
        self.depth, self.procs, self.conns, self.queued = depth, [], [], []
        parents: list[int] = []
        for number in range(n):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_reader_main, name=f"ecgforge-reader-{number}", daemon=True,
                               args=(number, theirs, recipe, scratch_paths[number], parents + [mine.fileno()], complete))
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

    def run(self, tasks: Iterator[tuple[int, list[str]]], stop: StopOnSignal, poll_s: float = 0.2) -> Iterator[_Batch]:
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


# ------------------------------------------------------------------------------------------- building


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


def _remove_stale_scratch(out: Path) -> None:
    """Delete scratch files beside ``out`` left by builds on this host whose process is gone (SIGKILL, SIGTERM,
    power loss): a killed build of a large dataset would otherwise leave gigabytes behind at every attempt."""
    prefix = f".{out.name}.{_host()}."
    for p in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix):].split(".", 1)[0]
        if p.suffix in (".building", ".samples", ".spool") and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@dataclass
class BuildSummary:
    path: Path
    n_records: int
    n_skipped: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clipped_samples: int = 0
    seconds: float = 0.0


def _copy_range(src: int, dst: int, dst_offset: int, nbytes: int, src_offset: int = 0) -> None:
    """Copy ``nbytes`` of file ``src`` from ``src_offset`` to ``dst`` at ``dst_offset`` (file descriptors).

    ``os.copy_file_range`` keeps the bytes in the kernel (no user-space round trip of the whole cache);
    where the file system refuses it, 4 MiB blocks are read and written instead.
    """
    done = 0
    try:
        while done < nbytes:
            n = os.copy_file_range(src, dst, nbytes - done, src_offset + done, dst_offset + done)
            if n == 0:
                raise OSError(f"scratch file ended after {done} of {nbytes} bytes")
            done += n
    except OSError as exc:
        if exc.errno is None:
            raise
        while done < nbytes:  # EXDEV, ENOSYS, EINVAL...: the portable way, from where it stopped
            chunk = os.pread(src, min(1 << 22, nbytes - done), src_offset + done)
            if not chunk:
                raise OSError(f"scratch file ended after {done} of {nbytes} bytes") from None
            done += os.pwrite(dst, chunk, dst_offset + done)


def _gather(scratch_paths: list[str], stored: Iterable[np.ndarray], dst: int, dst_offset: int, row_bytes: int) -> None:
    """Copy each record's samples from the scratch files into ``dst`` at ``dst_offset``, back to back in the
    order of ``stored`` (pieces of ``(k, 4)`` rows ``(file, offset, rows, crc)``, one per record); adjacent
    ranges of one file are copied in one go (a worker's chunk of consecutive records is contiguous in its file)."""
    fds = [os.open(path, os.O_RDONLY) for path in scratch_paths]
    try:
        pos, run = dst_offset, None  # run: [file, start, nbytes, destination] being extended
        for piece in stored:
            for number, offset, rows, _ in piece.tolist():
                nbytes = rows * row_bytes
                if run is not None and run[0] == number and run[1] + run[2] == offset:
                    run[2] += nbytes
                else:
                    if run is not None:
                        _copy_range(fds[run[0]], dst, run[3], run[2], src_offset=run[1])
                    run = [number, offset, nbytes, pos]
                pos += nbytes
        if run is not None:
            _copy_range(fds[run[0]], dst, run[3], run[2], src_offset=run[1])
    finally:
        for fd in fds:
            os.close(fd)


class _Spool:
    """What the cache stores of each kept record besides its samples, on disk in record order.

    The parent holds no object per record until the end (at 10^6 records a `RecordRef` each was gigabytes):
    records are appended here as their batches complete, ``PIECE`` at a time, each piece one pickle per column,
    so writing an HDF5 column reads back only that column, one piece at a time.
    """

    PIECE = 1024

    def __init__(self, path: str) -> None:
        self.file = open(path, "w+b")  # noqa: SIM115 - closed by `close`
        self.pieces: list[tuple[int, dict[str, tuple[int, int]]]] = []  # (records, column -> (offset, nbytes))
        self.pending: list[tuple[RecordRef, np.ndarray, np.ndarray]] = []
        self.n = 0  # records appended
        self.total_rows = 0  # their samples per lead, summed
        # Extra meta column -> [records having it, int values, numeric values]: the column's type at the end.
        self.meta_stats: dict[str, list[int]] = {}

    def add(self, ref: RecordRef, stored: np.ndarray, present: np.ndarray) -> None:
        """Append a kept record: its listing, ``stored`` (4,) = (scratch file, offset, rows, crc), ``present``."""
        self.pending.append((ref, stored, present))
        self.n += 1
        self.total_rows += int(stored[2])
        if len(self.pending) >= self.PIECE:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        refs = [r for r, _, _ in self.pending]
        cols: dict[str, Any] = {
            "stored": np.stack([s for _, s, _ in self.pending]),
            "present": np.stack([p for _, _, p in self.pending]),
            "record_id": [r.record_id for r in refs],
            "patient_id": [r.patient_id for r in refs],
            "source": [r.source for r in refs],
            "sex": [str(r.meta.get("sex", "")) for r in refs],
            "fold": [int(r.meta.get("fold", -1)) for r in refs],
            "age": [float(r.meta.get("age", np.nan)) for r in refs],
            "labels": [r.labels for r in refs],
        }
        for key in sorted({k for r in refs for k in r.meta} - {"sex", "fold", "age"}):
            values = [r.meta.get(key) for r in refs]
            stats = self.meta_stats.setdefault(key, [0, 0, 0])
            stats[0] += sum(v is not None for v in values)
            stats[1] += sum(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
            stats[2] += sum(isinstance(v, (int, float, np.number)) for v in values)
            cols[f"meta/{key}"] = values
        where: dict[str, tuple[int, int]] = {}
        self.file.seek(0, os.SEEK_END)
        for name, value in cols.items():
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            where[name] = (self.file.tell(), len(blob))
            self.file.write(blob)
        self.pieces.append((len(refs), where))
        self.pending.clear()

    def column(self, name: str) -> Iterator[Any]:
        """Column ``name`` piece by piece, in record order (a piece without it: ``None`` per record)."""
        self.flush()
        for k, where in self.pieces:
            if name not in where:
                yield [None] * k
                continue
            offset, nbytes = where[name]
            self.file.seek(offset)
            yield pickle.loads(self.file.read(nbytes))

    def meta_kind(self, key: str) -> str:
        """``"int"``, ``"float"`` or ``"str"``: int where every record has an int, float where every one a number."""
        have, ints, nums = self.meta_stats[key]
        if have == self.n and ints == self.n:
            return "int"
        return "float" if have == self.n and nums == self.n else "str"

    def close(self) -> None:
        self.file.close()


def _write_column(h5: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, pieces: Iterable[Any]) -> None:
    """Dataset ``name`` of ``shape`` written piece by piece (each piece an array of ``dtype``); a single piece
    is written whole, as one assignment (the bytes of a small cache do not depend on the spool)."""
    it = iter(pieces)
    first = next(it)
    second = next(it, None)
    if second is None:
        h5[name] = np.asarray(first, dtype=dtype) if dtype is not h5py.string_dtype("utf-8") else first
        return
    dset = h5.create_dataset(name, shape=shape, dtype=dtype)
    start = 0
    for piece in itertools.chain([first, second], it):
        if getattr(piece, "size", 1):  # an empty selection (a label set without labels) writes nothing
            dset[start : start + len(piece)] = piece
        start += len(piece)


def build_cache(
    recipe: CacheRecipe,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    progress: Any | None = None,
) -> BuildSummary:
    """Build the cache a cache recipe describes; atomic (temporary file renamed into place at the end).

    Args:
        recipe: validated cache recipe.
        out: output path (default ``recipe.out``).
        workers: reader processes (default: ``recipe.workers`` or the CPU count); 1 reads in-process.
        progress: optional callable ``progress(done, total)`` called as records complete.
    """
    # Ctrl-C and SIGTERM set a flag that the build checks at safe points (between batches, before the rename):
    # raised wherever the main thread happens to be, a KeyboardInterrupt is swallowed inside h5py's code
    # ("Exception ignored"; see ecgforge.interrupts). The readers ignore both signals (a scheduler's SIGTERM
    # goes to the whole process group): the parent stops, kills them and removes every scratch file.
    with _frozen_heap(), StopOnSignal((signal.SIGINT, signal.SIGTERM)) as stop:
        return _build(recipe, out, workers, progress, stop)


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off every object that exists when a build starts.

    With torch imported that is ~300,000 objects, which each full collection traverses: a few of them during
    the listing and in every reader process cost more than the listing itself, and in forked readers the
    traversal also un-shares memory pages (copy on write). `gc.freeze` is Python's tool for this case.
    """
    if gc.get_freeze_count():  # the caller manages frozen objects: leave their arrangement alone
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _build(
    recipe: CacheRecipe, out: str | Path | None, workers: int | None, progress: Any | None, stop: StopOnSignal
) -> BuildSummary:
    t0 = time.perf_counter()
    out = Path(out or recipe.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = build(SOURCES, recipe.source)
    # A source may leave part of each record's listing to the readers (the CinC source: parsing its header).
    complete: Completer | None = getattr(source, "complete", None)
    n_leads = len(recipe.signal.leads)
    workers = max(1, workers or recipe.workers or os.cpu_count() or 1)

    _remove_stale_scratch(out)
    scratch = f".{out.name}.{_host()}.{os.getpid()}."  # whose they are, for _remove_stale_scratch
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".building")  # fd: kept to the end
    tmp = Path(tmp_name)
    scratch_paths: list[str] = []
    spool: _Spool | None = None
    try:
        for _ in range(workers):
            sfd, name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".samples")
            os.close(sfd)
            scratch_paths.append(name)
        sfd, spool_name = tempfile.mkstemp(dir=out.parent, prefix=scratch, suffix=".spool")
        os.close(sfd)
        scratch_paths.append(spool_name)  # unlinked with the scratch files
        spool = _Spool(spool_name)
        listing = _listing(source)
        # Per-record state in the parent is bounded by the records in flight: a task's records wait in
        # `in_flight` until their batch returns, then (in record order) go to the spool or to `skipped`.
        in_flight: dict[int, list[RecordRef]] = {}
        arrived: dict[int, tuple[list[RecordRef], _Batch]] = {}
        skipped: list[tuple[str, str]] = []
        observed: dict[str, set[str]] = {}  # label set -> labels the readers found (sources with `complete`)
        listed = next_start = clipped = done = 0

        def tasks() -> Iterator[tuple[int, list[Any]]]:
            """Consecutive records in tasks cut as the listing streams in: a few records while few are known
            (every reader gets work early), up to 64 (one message per 64 records)."""
            nonlocal listed
            while True:
                refs = list(itertools.islice(listing, max(1, min(64, listed // (workers * 8)))))
                if not refs:
                    return
                start, listed = listed, listed + len(refs)
                in_flight[start] = refs
                yield start, (refs if complete is not None else [r.path for r in refs])

        def settle(refs: list[RecordRef], b: _Batch) -> None:
            for k, ref in enumerate(refs):
                if complete is not None:
                    for set_name, labs in ref.labels.items():
                        observed.setdefault(set_name, set()).update(labs)
                if b.stored[k, 2] >= 0:
                    spool.add(ref, b.stored[k], b.present[k])  # type: ignore[union-attr]
                else:
                    skipped.append((ref.record_id, b.reasons[b.start + k]))

        def consume(stream: Iterator[_Batch]) -> None:
            nonlocal clipped, done, next_start
            for b in stream:
                if stop.is_set():
                    raise stop.interrupted()
                refs = in_flight.pop(b.start)
                arrived[b.start] = (b.refs if b.refs is not None else refs, b)
                clipped, done = clipped + b.clipped, done + len(b.stored)
                while next_start in arrived:  # batches come in any order; the spool takes them in record order
                    refs, ready = arrived.pop(next_start)
                    settle(refs, ready)
                    next_start += len(refs)
                if progress is not None:
                    progress(done, listed)  # the total grows while the listing streams

        # Pass 1: process records in batches of consecutive records; each process appends the samples to
        # its own scratch file and reports where they are.
        if workers == 1:
            with contextlib.closing(_Scratch(0, scratch_paths[0])) as sink:
                consume(_process_range(start, items, recipe, sink, complete) for start, items in tasks())
        else:
            readers = _Readers(workers, recipe, scratch_paths[:workers], complete)
            try:
                consume(readers.run(tasks(), stop))
            except BaseException:
                readers.close(kill=True)  # at once: the build has failed, their work is of no use
                raise
            readers.close()
        spool.flush()
        repeated = _repeated_id(spool, skipped)
        if repeated is not None:
            raise CacheError(f"source.path: record {repeated!r} is listed twice")
        try:
            label_names = source.label_names(observed) if complete is not None else source.label_names()
        except (OSError, ValueError) as exc:
            raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if spool.n == 0:
            raise CacheError(_nothing_found(recipe, listed, skipped))
        n = spool.n

        # Pass 2: the HDF5 file, with the signals as one contiguous dataset of known size.
        with h5py.File(tmp, "w") as h5, ThreadPoolExecutor(1) as flusher:  # `fd` is this same file
            _small_metadata_cache(h5)
            h5.attrs.update(
                layout_version=LAYOUT_VERSION,
                spec_hash=recipe.spec_hash(),
                spec=recipe.model_dump_json(),
                fs_hz=float(recipe.signal.fs_hz),
                leads=json.dumps(recipe.signal.leads),
                units="mV",
                scale_mv=SCALE_MV,
                ecgforge_version=__version__,
                n_records=n,
                source_kind=recipe.source.kind,
                name=recipe.name,
                n_skipped=len(skipped),
                clipped_samples=clipped,
            )
            # The samples' place in the file is fixed now. The kernel copies them there from the scratch files
            # (HDF5 never writes that range: no fill values), then a thread flushes them to disk while HDF5
            # writes the metadata, and the scratch files' pages are freed.
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dset = h5.create_dataset("signals", shape=(spool.total_rows, n_leads), dtype="<i2", dcpl=dcpl,
                                     fill_time="never")
            _gather(scratch_paths[:workers], spool.column("stored"), fd, dset.id.get_offset(), n_leads * 2)
            flushed = flusher.submit(os.fsync, fd)
            _unlink(scratch_paths[:workers])

            def offsets() -> Iterator[np.ndarray]:
                end = 0
                for piece in spool.column("stored"):
                    starts = end + np.concatenate([[0], np.cumsum(piece[:, 2])[:-1]])
                    end += int(piece[:, 2].sum())
                    yield starts.astype(np.int64)

            _write_column(h5, "offsets", (n,), np.int64, offsets())
            _write_column(h5, "lengths", (n,), np.int64, (p[:, 2] for p in spool.column("stored")))
            _write_column(h5, "present", (n, n_leads), bool, spool.column("present"))
            _write_column(h5, "checksum", (n,), np.uint32, (p[:, 3].astype(np.uint32) for p in spool.column("stored")))
            _write_columns(h5, spool, label_names)
            h5["skipped/record_id"] = str_array([rid for rid, _ in skipped])
            h5["skipped/reason"] = str_array([reason for _, reason in skipped])
            # Last: the CRC of every part written above, read back as a reader will see it.
            seal_metadata(h5)
            flushed.result()
        spool.close()
        _unlink([spool_name])  # before the rename: a build killed there leaves only its HDF5 scratch file
        os.fsync(fd)  # what HDF5 wrote meanwhile: the metadata
        as_if_opened(fd)
        if stop.is_set():
            raise stop.interrupted()
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
        if spool is not None:
            spool.close()
        _unlink(scratch_paths)
    return BuildSummary(
        path=out,
        n_records=n,
        n_skipped=len(skipped),
        skipped=skipped,
        clipped_samples=clipped,
        seconds=time.perf_counter() - t0,
    )


def _repeated_id(spool: _Spool, skipped: list[tuple[str, str]]) -> str | None:
    """A record id listed twice (kept or skipped), or None. Checked once the listing is done, on 8-byte hashes of
    the ids (a sort of 8 bytes per record), so the building process holds no set of ids while it streams."""

    def hashes(ids: Sequence[str]) -> np.ndarray:
        return np.frombuffer(b"".join(hashlib.blake2b(i.encode(), digest_size=8).digest() for i in ids),
                             dtype=np.uint64)

    def pieces() -> Iterator[list[str]]:
        yield from spool.column("record_id")
        yield [rid for rid, _ in skipped]

    h = np.sort(np.concatenate([hashes(p) for p in pieces()]))
    suspects = set(h[1:][h[1:] == h[:-1]].tolist())
    if not suspects:
        return None
    seen: set[str] = set()  # only the ids whose hash repeats: a true repeat, or (rarely) a hash collision
    for piece in pieces():
        for rid, value in zip(piece, hashes(piece).tolist(), strict=True):
            if value in suspects:
                if rid in seen:
                    return rid
                seen.add(rid)
    return None


def _small_metadata_cache(h5: h5py.File, max_bytes: int = 1 << 20) -> None:
    """Cap HDF5's metadata cache of ``h5`` (default: adaptive up to 32 MiB). Writing variable-length strings
    fills it with global heap collections, which made the building process's peak grow with the record count
    (by ~8 MiB from 10,000 to 200,000 records); the file written is the same."""
    config = h5.id.get_mdc_config()
    config.set_initial_size = True
    config.initial_size = config.min_size = max_bytes
    config.max_size = max_bytes
    h5.id.set_mdc_config(config)


def _listing(source: Any) -> Iterator[RecordRef]:
    """The source's records one at a time (``iter_records`` where it streams, else ``records()``); a listing
    failure becomes a one-line `CacheError` (sources name the field)."""
    try:
        yield from (source.iter_records() if hasattr(source, "iter_records") else iter(source.records()))
    except (OSError, ValueError) as exc:  # "source.labels_csv: x.csv not found"
        raise CacheError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _nothing_found(recipe: CacheRecipe, n_listed: int, skipped: list[tuple[str, str]]) -> str:
    """Why a build has no record to store, and where the source looked."""
    where = f"source {recipe.source.kind!r}"
    path = getattr(recipe.source, "path", None)
    if path:
        where += f" looked in {Path(path).resolve()}"
    if n_listed == 0:
        return f"no records found: {where} and listed none (is source.path the dataset's top folder?)"
    first = skipped[0][1] if skipped else "?"
    return f"no readable record: {where}, listed {n_listed} and none could be read (the first: {first})"


def _unlink(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _write_columns(h5: h5py.File, spool: _Spool, label_names: dict[str, list[str]]) -> None:
    """What the source knows of each stored record: ids, sex, fold, age, ``meta/*`` and ``labels/*``, written
    one column at a time from the spool (the same bytes as whole arrays where the cache fits in one piece)."""
    n, strs = spool.n, h5py.string_dtype("utf-8")
    for name in ("record_id", "patient_id", "source", "sex"):
        _write_column(h5, name, (n,), strs, (str_array(p) for p in spool.column(name)))
    _write_column(h5, "fold", (n,), np.int64, (np.array(p, dtype=np.int64) for p in spool.column("fold")))
    _write_column(h5, "age", (n,), np.float64, (np.array(p, dtype=np.float64) for p in spool.column("age")))
    meta = h5.create_group("meta")
    for col in sorted(spool.meta_stats):
        pieces = spool.column(f"meta/{col}")
        kind = spool.meta_kind(col)
        if kind == "int":
            _write_column(meta, col, (n,), np.int64, (np.array(p, dtype=np.int64) for p in pieces))
        elif kind == "float":
            _write_column(meta, col, (n,), np.float64, (np.array(p, dtype=np.float64) for p in pieces))
        else:
            _write_column(meta, col, (n,), strs,
                          (str_array(["" if v is None else str(v) for v in p]) for p in pieces))
    labels = h5.create_group("labels")
    for set_name, names in label_names.items():
        col = {name: j for j, name in enumerate(names)}

        def multi_hot(piece: list[dict[str, list[str]]], set_name: str = set_name,
                      col: dict[str, int] = col) -> np.ndarray:
            mat = np.zeros((len(piece), len(col)), dtype=np.uint8)
            for row, labs in enumerate(piece):
                for lab in labs.get(set_name, []):
                    if lab in col:
                        mat[row, col[lab]] = 1
            return mat

        _write_column(labels, set_name, (n, len(names)), np.uint8, (multi_hot(p) for p in spool.column("labels")))
        labels[set_name].attrs["names"] = json.dumps(list(names))
